use std::{net::SocketAddr, time::Duration};

use oms_saga::{
    config::{BusConfig, DatabaseConfig, LogConfig},
    consumer::ConsumerConfig,
    event::{ORDERS_TOPIC, PAYMENTS_TOPIC},
    outbox::RelayConfig,
};
use serde::{Deserialize, Serialize};

pub use oms_saga::event::NOTIFICATIONS_TOPIC;

/// The notification service's settings: the `[notifications]` section, or
/// `OMS_NOTIFICATIONS__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    /// The group and topics it consumes (the order events).
    pub consumer: ConsumerConfig,
    /// The topic it writes to, and its partition count.
    pub topic: String,
    pub partitions: i32,
    pub sending: SendingConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
    pub max_body_bytes: usize,
}

/// How waiting notifications are picked up and sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendingConfig {
    /// Notifications claimed per round.
    pub batch_size: i64,
    /// How long an idle sender waits before looking again, unless the consumer's commit of new
    /// notifications wakes it first.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for SendingConfig {
    fn default() -> Self {
        Self {
            batch_size: 50,
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
            database: DatabaseConfig::named("oms_notifications"),
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig {
                group: "notifications".into(),
                topics: vec![ORDERS_TOPIC.into(), PAYMENTS_TOPIC.into()],
                ..ConsumerConfig::default()
            },
            topic: NOTIFICATIONS_TOPIC.into(),
            partitions: 6,
            sending: SendingConfig::default(),
            log: LogConfig::default(),
            trace: Default::default(),
            max_body_bytes: 16 * 1024,
        }
    }
}

oms_saga::service_config!(NotificationsConfig);
