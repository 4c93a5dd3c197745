//! The inventory service. It owns the `inventory` database and the `inventory` topic, and takes
//! part in the order saga without being told to: an `OrderPlaced` reserves every line or none
//! (`StockReserved` or `StockRejected`), an `OrderCancelled` releases exactly that order's
//! reservation (`StockReleased`, once), and an order that ships turns its reserved stock into
//! sold stock.
//!
//! - [`stock`]: the rules on the database.
//! - [`catalog`]: products and their prices, each change published as `ProductPriced`.
//! - [`saga`]: what each order event does.
//! - [`http`]: stock levels and the availability check.

pub mod catalog;
pub mod config;
pub mod http;
pub mod saga;
pub mod stock;
#[cfg(feature = "testing")]
pub mod testing;

use std::{future::Future, sync::Arc};

use oms_saga::{
    bus::TopicSpec,
    event::{Event, ProductPriced, StockRejected, StockReleased, StockReserved},
    worker,
};
use tokio::net::TcpListener;

pub use config::InventoryConfig;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/inventory");

/// The events this service writes.
pub const EVENT_TYPES: [&str; 4] = [
    StockReserved::TYPE,
    StockRejected::TYPE,
    StockReleased::TYPE,
    ProductPriced::TYPE,
];

/// Registers the schemas, then consumes order events, relays its answers and serves HTTP until
/// `shutdown` resolves.
pub async fn run(
    config: InventoryConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let tracer = oms_saga::trace::Tracer::new("inventory", &config.trace)?;
    let output = worker::Output {
        topic: TopicSpec::new(&config.topic, config.partitions),
        event_types: &EVENT_TYPES,
    };
    let handler = saga::Inventory {
        topic: config.topic.clone(),
    };
    let router = http::app(
        Arc::new(http::AppState {
            pool: pool.clone(),
            topic: config.topic.clone(),
        }),
        config.max_body_bytes,
        tracer.clone(),
    );
    let worker = worker::Worker {
        pool,
        bus: &config.bus,
        output,
        relay: config.relay,
        consumer: config.consumer,
        handler,
        periodic: Vec::new(),
        tracer,
    };
    worker.serve(router, listener, shutdown).await
}
