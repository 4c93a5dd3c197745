//! Starts real inventory services for a test: their own database and topic, consuming the given
//! orders topic, on ports of their own.

use oms_saga::{
    config::BusConfig,
    testing::{self, TestService},
};

use crate::InventoryConfig;

#[derive(Debug)]
pub struct TestInventory {
    pub service: TestService,
    pub config: InventoryConfig,
    pub db: testing::TestDatabase,
}

impl TestInventory {
    /// An inventory on `bus` (whose registry must be up) reacting to `orders_topic`.
    pub async fn spawn(bus: BusConfig, orders_topic: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::spawn_on(listener, bus, orders_topic, testing::unique("inventory")).await
    }

    /// The same, serving on `listener` and writing to `topic`.
    pub async fn spawn_on(
        listener: tokio::net::TcpListener,
        bus: BusConfig,
        orders_topic: &str,
        topic: String,
    ) -> Self {
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = InventoryConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.topic = topic;
        config.partitions = 3;
        config.consumer.group = testing::unique("inventory");
        config.consumer.topics = vec![orders_topic.to_owned()];
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

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }
}
