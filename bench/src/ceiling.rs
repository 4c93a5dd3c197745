//! The ceilings: what this machine's PostgreSQL and broker do with nothing of the OMS in the
//! way. An accepted order costs at least one durable transaction writing the order and its
//! outbox row, and every saga step at least one message through the broker; the OMS figures
//! are printed as ratios to these.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use oms_saga::{
    bus::{EventBus, Headers, Message, TopicSpec},
    config::{DatabaseConfig, Secret},
};
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{Error, Result};

static ORDERS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    pub count: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl Rate {
    fn new(count: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            count,
            seconds,
            per_second: count as f64 / seconds.max(f64::EPSILON),
        }
    }
}

/// `clients` connections commit, back to back for `duration`, one transaction each that inserts
/// an order row and its outbox row, as the order API does, into a scratch database made from the
/// order service's migrations on the server of `admin_url` (dropped afterwards). Its connections
/// are pooled as the services pool theirs.
pub async fn postgres(admin_url: &str, clients: usize, duration: Duration) -> Result<Rate> {
    let name = format!("oms_bench_ceiling_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => return Err(Error::Setup(format!("{admin_url} names no database"))),
    };
    let rate = insert_orders(&url, clients, duration).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    rate
}

async fn insert_orders(url: &str, clients: usize, duration: Duration) -> Result<Rate> {
    let pool = DatabaseConfig {
        url: Secret::new(url),
        max_connections: u32::try_from(clients).unwrap_or(u32::MAX),
        ..DatabaseConfig::default()
    }
    .connect_lazy()?;
    ORDERS
        .run(&pool)
        .await
        .map_err(|e| Error::Setup(e.to_string()))?;
    let items = json!([{ "productId": "SKU-BENCH", "quantity": 1, "unitPrice": "4.50" }]);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (pool, items) = (pool.clone(), items.clone());
        workers.spawn(async move {
            let mut count = 0_u64;
            while started.elapsed() < duration {
                let (order, event) = (Uuid::now_v7(), Uuid::now_v7());
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO orders (id, customer_id, status, items, total, correlation_id)
                     VALUES ($1, $2, 'CREATED', $3, 4.50, $4)",
                )
                .bind(order)
                .bind(Uuid::new_v4())
                .bind(&items)
                .bind(event)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO outbox (event_id, topic, message_key, event_type, payload,
                                         occurred_at, correlation_id)
                     VALUES ($1, 'orders', $2, 'OrderPlaced', $3, now(), $1)",
                )
                .bind(event)
                .bind(order.to_string())
                .bind(json!({ "orderId": order, "items": items }))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                count += 1;
            }
            Ok::<_, sqlx::Error>(count)
        });
    }
    let mut count = 0;
    while let Some(done) = workers.join_next().await {
        count += done.map_err(|e| Error::Setup(e.to_string()))??;
    }
    let rate = Rate::new(count, started.elapsed());
    pool.close().await;
    Ok(rate)
}

/// Publishes `count` messages of `size` bytes, keyed over many keys, in batches of `batch` as
/// the outbox relay does, while one group reads and acknowledges them; the rate is from the
/// first publish to the last message read. Gives up after `limit`.
pub async fn broker(
    bus: Arc<dyn EventBus>,
    partitions: i32,
    count: u64,
    size: usize,
    batch: usize,
    limit: Duration,
) -> Result<Rate> {
    let topic = format!("bench-ceiling-{}", Uuid::new_v4().simple());
    bus.ensure_topics(&[TopicSpec::new(&topic, partitions)])
        .await?;
    let mut subscription = bus
        .subscribe(&format!("{topic}-reader"), std::slice::from_ref(&topic))
        .await?;
    // The clock starts once the reader has joined its group and read a first message.
    let warm_up = Message {
        topic: topic.clone(),
        key: "warm-up".into(),
        payload: vec![0x5a; size],
        headers: Headers::default(),
    };
    bus.publish(vec![warm_up]).await?;
    let first = tokio::time::timeout(limit, subscription.next())
        .await
        .map_err(|_| Error::Setup(format!("the broker ceiling read nothing within {limit:?}")))??;
    subscription.ack(&first).await?;
    let started = Instant::now();
    let publisher = {
        let (bus, topic) = (bus.clone(), topic.clone());
        tokio::spawn(async move {
            let mut sent = 0_u64;
            while sent < count {
                let n = (count - sent).min(batch as u64);
                let messages = (sent..sent + n)
                    .map(|i| {
                        let mut headers = Headers::default();
                        headers.insert("event-id", Uuid::new_v4().to_string());
                        headers.insert("event-type", "OrderPlaced");
                        Message {
                            topic: topic.clone(),
                            key: format!("order-{}", i % 10_000),
                            payload: vec![0x5a; size],
                            headers,
                        }
                    })
                    .collect();
                bus.publish(messages).await?;
                sent += n;
            }
            Ok::<_, oms_saga::Error>(())
        })
    };
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while read < count {
        let delivery = tokio::time::timeout_at(deadline, subscription.next())
            .await
            .map_err(|_| {
                Error::Setup(format!(
                    "the broker ceiling read {read} of {count} messages within {limit:?}"
                ))
            })??;
        subscription.ack(&delivery).await?;
        read += 1;
    }
    let rate = Rate::new(read, started.elapsed());
    publisher.await.map_err(|e| Error::Setup(e.to_string()))??;
    Ok(rate)
}
