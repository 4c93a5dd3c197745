//! The inventory service. It owns the `inventory` database and the `inventory` topic, and takes
//! part in the order saga without being told to: an `OrderPlaced` reserves every line or none
//! (`StockReserved` or `StockRejected`), an `OrderCancelled` releases exactly that order's
//! reservation (`StockReleased`, once), and an order that ships turns its reserved stock into
//! sold stock.
//!
//! - [`stock`]: the rules on the database.
//! - [`saga`]: what each order event does.
//! - [`http`]: stock levels and the availability check.

pub mod config;
pub mod http;
pub mod saga;
pub mod stock;
#[cfg(feature = "testing")]
pub mod testing;

use std::{future::Future, sync::Arc};

use oms_saga::{
    avro::{self, AvroCodec},
    bus::{self, TopicSpec},
    consumer::Consumer,
    event::{Event, StockRejected, StockReleased, StockReserved},
    outbox::Relay,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::InventoryConfig;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/inventory");

/// The events this service writes.
pub const EVENT_TYPES: [&str; 3] = [
    StockReserved::TYPE,
    StockRejected::TYPE,
    StockReleased::TYPE,
];

/// Registers the schemas, then consumes order events, relays its answers and serves HTTP until
/// `shutdown` resolves.
pub async fn run(
    config: InventoryConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let bus = bus::connect(&config.bus)?;
    avro::register(&config.bus.registry, &config.topic, &EVENT_TYPES).await?;
    let codec = Arc::new(AvroCodec::new(&config.bus.registry)?);

    let stop = CancellationToken::new();
    let relay = Relay::new(
        pool.clone(),
        bus.clone(),
        codec.clone(),
        config.relay.clone(),
    )
    .ensuring(vec![TopicSpec::new(&config.topic, config.partitions)]);
    let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    let handler = saga::Inventory {
        topic: config.topic.clone(),
    };
    let consumer = Consumer::new(pool.clone(), bus, codec, handler, config.consumer.clone());
    let consumer = tokio::spawn(consumer.run(stop.clone().cancelled_owned()));

    let router = http::app(Arc::new(http::AppState { pool }), config.max_body_bytes);
    tracing::info!(addr = ?listener.local_addr().ok(), "inventory listening");
    let served = oms_saga::server::serve(listener, router, shutdown).await;
    stop.cancel();
    let _ = relay.await;
    if let Ok(Err(e)) = consumer.await {
        tracing::error!(error = %e, "the order-event consumer stopped");
    }
    served
}
