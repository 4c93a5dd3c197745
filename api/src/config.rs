use std::net::SocketAddr;

use oms_saga::{
    config::{BusConfig, DatabaseConfig, LogConfig},
    event::ORDERS_TOPIC,
    outbox::RelayConfig,
};
use serde::{Deserialize, Serialize};

use crate::{availability::AvailabilityConfig, cache::CacheConfig};

/// The order service's settings: the `[api]` section, or `OMS_API__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    pub topics: TopicsConfig,
    /// The inventory check before an order is accepted.
    pub availability: AvailabilityConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
    /// Larger bodies get 413 before they are parsed.
    pub max_body_bytes: usize,
    /// The saga timeline's consumer.
    pub timeline: crate::timeline::TimelineConfig,
    /// How often orders per status and saga outcomes are counted for `/metrics`.
    #[serde(with = "humantime_serde")]
    pub stats_interval: std::time::Duration,
    /// How long an `Idempotency-Key` answers for its first request; after that it is forgotten
    /// (deleted in the background) and a request with it is a new one.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: std::time::Duration,
}

/// Stripe's rule: a key is remembered for 24 hours.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            database: DatabaseConfig::named("oms_orders"),
            cache: CacheConfig::default(),
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            topics: TopicsConfig::default(),
            availability: AvailabilityConfig::default(),
            log: LogConfig::default(),
            trace: Default::default(),
            max_body_bytes: 64 * 1024,
            timeline: Default::default(),
            stats_interval: std::time::Duration::from_secs(10),
            idempotency_ttl: IDEMPOTENCY_TTL,
        }
    }
}

/// The topics the service writes, with the partition count it creates them with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    pub orders: String,
    pub partitions: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            orders: ORDERS_TOPIC.into(),
            partitions: 6,
        }
    }
}

oms_saga::service_config!(ApiConfig);
