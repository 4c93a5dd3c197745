//! Starts a real payment step for a test: its own database and topic, consuming the given orders
//! topic, on a port of its own, with the Stripe API of `OMS_TEST_STRIPE_URL` (localstripe).

use oms_saga::{
    config::BusConfig,
    testing::{self, TestService},
};

use crate::PaymentsConfig;

#[derive(Debug)]
pub struct TestPayments {
    pub service: TestService,
    pub config: PaymentsConfig,
    pub db: testing::TestDatabase,
}

/// The Stripe API tests use: localstripe, which scripts/test starts.
pub fn stripe_url() -> String {
    std::env::var("OMS_TEST_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

impl TestPayments {
    /// A payment step on `bus` (whose registry must be up) reacting to `orders_topic`.
    pub async fn spawn(bus: BusConfig, orders_topic: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = PaymentsConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.topic = testing::unique("payments");
        config.partitions = 3;
        config.consumer.group = testing::unique("payments");
        config.consumer.topics = vec![orders_topic.to_owned()];
        config.stripe.base_url = stripe_url();
        config.trace = oms_saga::testing::trace_config();
        let run = config.clone();
        let service = TestService::start_on(listener, move |listener, shutdown| {
            crate::run(run.clone(), listener, shutdown)
        });
        Self {
            service,
            config,
            db,
        }
    }
}
