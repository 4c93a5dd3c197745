//! Starts real inventory services for a test: their own database and topic, consuming the given
//! orders topic, on ports of their own.

use std::net::SocketAddr;

use oms_saga::{config::BusConfig, testing};
use tokio_util::sync::CancellationToken;

use crate::InventoryConfig;

#[derive(Debug)]
pub struct TestInventory {
    pub addr: SocketAddr,
    pub config: InventoryConfig,
    pub db: testing::TestDatabase,
    stop: CancellationToken,
}

impl TestInventory {
    /// An inventory on `bus` (whose registry must be up) reacting to `orders_topic`.
    pub async fn spawn(bus: BusConfig, orders_topic: &str) -> Self {
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = InventoryConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.topic = testing::unique("inventory");
        config.partitions = 3;
        config.consumer.group = testing::unique("inventory");
        config.consumer.topics = vec![orders_topic.to_owned()];
        let stop = CancellationToken::new();
        let addr = start(config.clone(), stop.clone()).await;
        Self {
            addr,
            config,
            db,
            stop,
        }
    }

    /// Another instance of the same service: same database, same consumer group.
    pub async fn another_instance(&self) -> SocketAddr {
        start(self.config.clone(), self.stop.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start(config: InventoryConfig, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(crate::run(config, listener, stop.cancelled_owned()));
    addr
}

impl Drop for TestInventory {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
