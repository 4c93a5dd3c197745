use std::net::SocketAddr;

use oms_saga::{
    config::{BusConfig, DatabaseConfig, LogConfig},
    consumer::ConsumerConfig,
    event::ORDERS_TOPIC,
    outbox::RelayConfig,
};
use serde::{Deserialize, Serialize};

pub use oms_saga::event::INVENTORY_TOPIC;

/// The inventory service's settings: the `[inventory]` section, or `OMS_INVENTORY__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    /// The group and topics it consumes (the order events).
    pub consumer: ConsumerConfig,
    /// The topic it writes to, and its partition count.
    pub topic: String,
    pub partitions: i32,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
    pub max_body_bytes: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            database: DatabaseConfig::named("oms_inventory"),
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig {
                group: "inventory".into(),
                topics: vec![ORDERS_TOPIC.into()],
                ..ConsumerConfig::default()
            },
            topic: INVENTORY_TOPIC.into(),
            partitions: 6,
            log: LogConfig::default(),
            trace: Default::default(),
            max_body_bytes: 64 * 1024,
        }
    }
}

oms_saga::service_config!(InventoryConfig);
