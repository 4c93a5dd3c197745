use std::net::SocketAddr;

use oms_saga::{
    config::{BusConfig, DatabaseConfig, LogConfig},
    consumer::ConsumerConfig,
    event::{ORDERS_TOPIC, PAYMENTS_TOPIC},
    outbox::RelayConfig,
};
use serde::{Deserialize, Serialize};

use crate::{stripe::StripeConfig, webhook::WebhookConfig};

/// The payment step's settings: the `[payments]` section, or `OMS_PAYMENTS__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Health and metrics.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub relay: RelayConfig,
    /// The group and topics it consumes (the order events).
    pub consumer: ConsumerConfig,
    /// The topic it writes its outcomes to, and its partition count.
    pub topic: String,
    pub partitions: i32,
    /// The payment provider.
    pub stripe: StripeConfig,
    /// Its webhooks, and the reconciler that asks when none comes.
    pub webhooks: WebhookConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8086)),
            database: DatabaseConfig::named("oms_payments"),
            bus: BusConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig {
                group: "payments".into(),
                topics: vec![ORDERS_TOPIC.into()],
                // Each order waits on two calls to the provider: three lanes wait at once, and
                // share the orders topic's six partitions evenly.
                lanes: 3,
                ..ConsumerConfig::default()
            },
            topic: PAYMENTS_TOPIC.into(),
            partitions: 6,
            stripe: StripeConfig::default(),
            webhooks: WebhookConfig::default(),
            log: LogConfig::default(),
            trace: Default::default(),
        }
    }
}

oms_saga::service_config!(PaymentsConfig);
