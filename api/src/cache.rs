//! The read cache for single orders, in Redis.
//!
//! Entries are hashes of the order and its version, written only by a script that refuses to
//! replace a newer version with an older one. A change writes the new version as soon as it
//! commits (so the old one is gone), and a read that filled the cache from an older snapshot
//! can no longer put it back over the change.
//!
//! Redis is an optimisation, never a dependency: every failure (down, slow, refusing) is logged,
//! counted in `oms_cache_requests_total{result="error"}`, and the read falls back to PostgreSQL.
//! Each call is bounded by a short timeout, and a lost connection is re-opened at most once per
//! `reconnect_interval`, so a dead Redis costs a request almost nothing.

use std::time::{Duration, Instant};

use redis::{AsyncCommands, aio::MultiplexedConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::store::Order;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `None` disables caching.
    pub url: Option<oms_saga::config::Secret>,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            url: Some(oms_saga::config::Secret::new("redis://127.0.0.1:6379")),
            ttl: Duration::from_secs(300),
            timeout: Duration::from_millis(100),
            reconnect_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub struct OrderCache {
    redis: Option<Redis>,
}

#[derive(Debug)]
struct Redis {
    client: redis::Client,
    config: CacheConfig,
    connection: Mutex<Connection>,
}

#[derive(Debug, Default)]
struct Connection {
    open: Option<MultiplexedConnection>,
    last_attempt: Option<Instant>,
}

fn key(id: Uuid) -> String {
    format!("oms:order:{id}")
}

#[derive(Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    Error,
}

fn count(outcome: Outcome) {
    let result = match outcome {
        Outcome::Hit => "hit",
        Outcome::Miss => "miss",
        Outcome::Error => "error",
    };
    metrics::counter!("oms_cache_requests_total", "result" => result).increment(1);
}

impl OrderCache {
    pub fn new(config: &CacheConfig) -> Result<Self, redis::RedisError> {
        let redis = match &config.url {
            None => None,
            Some(url) => Some(Redis {
                client: redis::Client::open(url.expose())?,
                config: config.clone(),
                connection: Mutex::new(Connection::default()),
            }),
        };
        Ok(Self { redis })
    }

    pub fn disabled() -> Self {
        Self { redis: None }
    }

    /// The cached order, or `None` on a miss or any failure.
    pub async fn get(&self, id: Uuid) -> Option<Order> {
        let redis = self.redis.as_ref()?;
        let cached: Option<Option<String>> = redis
            .run("get", |mut c| async move { c.hget(key(id), "order").await })
            .await;
        match cached {
            Some(Some(json)) => match serde_json::from_str(&json) {
                Ok(order) => {
                    count(Outcome::Hit);
                    Some(order)
                }
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "unreadable cache entry; reading the database");
                    count(Outcome::Error);
                    None
                }
            },
            Some(None) => {
                count(Outcome::Miss);
                None
            }
            None => {
                count(Outcome::Error);
                None
            }
        }
    }

    /// Stores `order` unless the cache already holds this version or a newer one.
    pub async fn put(&self, order: &Order) {
        let Some(redis) = &self.redis else { return };
        let Ok(json) = serde_json::to_string(order) else {
            return;
        };
        let ttl = redis.config.ttl.as_secs().max(1);
        let (id, version) = (order.id, order.version);
        let _: Option<i32> = redis
            .run("put", |mut c| async move {
                PUT_IF_NEWER
                    .key(key(id))
                    .arg(version)
                    .arg(json)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
    }

    /// Stores each of `orders` as [`OrderCache::put`] does, all at once.
    pub async fn put_all(&self, orders: &[Order]) {
        futures::future::join_all(orders.iter().map(|order| self.put(order))).await;
    }
}

/// KEYS[1] = the order's key; ARGV = version, order JSON, TTL in seconds.
static PUT_IF_NEWER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local cached = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
        if cached >= tonumber(ARGV[1]) then return 0 end
        redis.call('HSET', KEYS[1], 'version', ARGV[1], 'order', ARGV[2])
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        return 1
        ",
    )
});

impl Redis {
    /// Runs one command with the timeout; `None` on any failure, which is logged.
    async fn run<T, F, Fut>(&self, op: &'static str, command: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(self.config.timeout, command(connection)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::warn!(op, error = %e, "redis command failed; falling back to the database");
                self.drop_connection().await;
                None
            }
            Err(_) => {
                tracing::warn!(op, timeout = ?self.config.timeout, "redis timed out; falling back to the database");
                self.drop_connection().await;
                None
            }
        }
    }

    async fn connection(&self) -> Option<MultiplexedConnection> {
        let mut state = self.connection.lock().await;
        if let Some(open) = &state.open {
            return Some(open.clone());
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.config.reconnect_interval)
        {
            return None;
        }
        state.last_attempt = Some(Instant::now());
        let connecting = self.client.get_multiplexed_async_connection();
        match tokio::time::timeout(self.config.timeout, connecting).await {
            Ok(Ok(open)) => {
                tracing::info!("connected to redis");
                state.open = Some(open.clone());
                Some(open)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis unreachable; reads fall back to the database");
                None
            }
            Err(_) => {
                tracing::warn!("redis connect timed out; reads fall back to the database");
                None
            }
        }
    }

    async fn drop_connection(&self) {
        self.connection.lock().await.open = None;
    }
}
