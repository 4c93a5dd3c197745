use std::net::SocketAddr;

use oms_api::cache::CacheConfig;
use oms_saga::{
    config::{BusConfig, DatabaseConfig, LogConfig},
    consumer::ConsumerConfig,
    event::{INVENTORY_TOPIC, ORDERS_TOPIC, PAYMENTS_TOPIC},
    outbox::RelayConfig,
};
use serde::{Deserialize, Serialize};

use crate::deadline::PaymentConfig;

/// The status worker's settings: the `[status]` section, or `OMS_STATUS__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Health and metrics.
    pub listen: SocketAddr,
    /// The order service's database: this worker is the order service's side of the saga.
    pub database: DatabaseConfig,
    /// The order service's read cache, refreshed after each change.
    pub cache: CacheConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    /// The group, and the topics it consumes: the inventory's and the payment step's.
    pub consumer: ConsumerConfig,
    /// Where the order events it writes go, and the partition count to create that topic with
    /// if this worker starts first (the order service's `topics.partitions`).
    pub orders_topic: String,
    pub orders_partitions: i32,
    /// The payment deadline of reserved orders.
    pub payment: PaymentConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8085)),
            database: DatabaseConfig::named("oms_orders"),
            cache: CacheConfig::default(),
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig {
                group: "order-status".into(),
                topics: vec![INVENTORY_TOPIC.into(), PAYMENTS_TOPIC.into()],
                ..ConsumerConfig::default()
            },
            orders_topic: ORDERS_TOPIC.into(),
            orders_partitions: 6,
            payment: PaymentConfig::default(),
            log: LogConfig::default(),
            trace: Default::default(),
        }
    }
}

oms_saga::service_config!(StatusConfig);
