//! Starts a real order service for a test: its own migrated database and its own topic on the
//! shared broker (or a broker the test brings), on a port of its own.

use std::net::SocketAddr;

use oms_registry::testing::TestRegistry;
use oms_saga::{avro::AvroCodec, config::BusConfig, event::ProductPriced, testing};
use tokio_util::sync::CancellationToken;

use crate::ApiConfig;

#[derive(Debug)]
pub struct TestApi {
    pub addr: SocketAddr,
    pub config: ApiConfig,
    pub db: testing::TestDatabase,
    /// The schema registry this API registered its schemas in.
    pub registry: TestRegistry,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<crate::Result<()>>,
}

impl TestApi {
    /// An API on the shared broker, with Redis at its usual address.
    pub async fn spawn() -> Self {
        let (bus, _) = testing::shared_bus().await;
        Self::spawn_with(bus, |_| {}).await
    }

    /// An API on the given bus, after `customise` has adjusted its config.
    pub async fn spawn_with(bus: BusConfig, customise: impl FnOnce(&mut ApiConfig)) -> Self {
        let db = testing::database(&crate::MIGRATOR).await;
        let registry = TestRegistry::spawn().await;
        let mut config = ApiConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.bus.registry.url = registry.url();
        config.topics.orders = testing::unique("orders");
        config.topics.partitions = 3;
        // No inventory unless the test brings one (the usual port may be a running stack's).
        config.availability.inventory_url = None;
        config.trace = oms_saga::testing::trace_config();
        // Its own saga's timeline only, unless the test adds the other services' topics.
        config.timeline.consumer.group = testing::unique("timeline");
        config.timeline.consumer.topics = vec![config.topics.orders.clone()];
        config.timeline.poll_interval = std::time::Duration::from_millis(100);
        customise(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::run(
            config.clone(),
            listener,
            stop.clone().cancelled_owned(),
        ));
        Self {
            addr,
            config,
            db,
            registry,
            stop,
            task,
        }
    }

    /// Prices products in this API's copy of the catalog exactly as the status worker does on
    /// the inventory's `ProductPriced` (each call a newer version): `(product, minor units,
    /// currency, active)`.
    pub async fn price(&self, products: &[(&str, i64, &str, bool)]) {
        let version = chrono::Utc::now().timestamp_micros();
        let events: Vec<ProductPriced> = products
            .iter()
            .map(
                |&(product_id, price_minor, currency, active)| ProductPriced {
                    product_id: product_id.to_owned(),
                    name: product_id.to_owned(),
                    price_minor,
                    currency: currency.to_owned(),
                    active,
                    version,
                    at: chrono::Utc::now(),
                },
            )
            .collect();
        let mut conn = self.db.pool.acquire().await.expect("a connection");
        crate::prices::apply_all(&mut conn, &events)
            .await
            .expect("prices kept");
    }

    /// A codec on this API's registry, to read its events.
    pub fn codec(&self) -> AvroCodec {
        AvroCodec::new(&self.config.bus.registry).expect("codec")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it the way SIGTERM does: drain, then stop the relay.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.expect("api task").expect("api exit");
    }
}
