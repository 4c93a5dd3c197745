//! The status worker: the order service's side of the saga. It consumes the inventory's answers
//! and moves each order through the order service's own state machine: `StockReserved` makes a
//! CREATED order RESERVED, `StockRejected` cancels it with OUT_OF_STOCK (which, like every
//! cancellation, writes OrderCancelled). It writes to the order service's database and outbox,
//! and refreshes its read cache after each commit.
//!
//! - [`saga`]: what each answer does.

pub mod config;
pub mod saga;

use std::{future::Future, sync::Arc};

use axum::{Router, routing::get};
use oms_saga::{
    avro::{self, AvroCodec},
    bus,
    consumer::Consumer,
    event::{Event, OrderCancelled, OrderStatusChanged},
    outbox::Relay,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::StatusConfig;

/// Consumes the inventory's answers, and relays the order service's outbox (a second relay is
/// safe: one per database publishes at a time), until `shutdown` resolves.
pub async fn run(
    config: StatusConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let bus = bus::connect(&config.bus)?;
    avro::register(
        &config.bus.registry,
        &config.orders_topic,
        &[OrderStatusChanged::TYPE, OrderCancelled::TYPE],
    )
    .await?;
    let codec = Arc::new(AvroCodec::new(&config.bus.registry)?);
    let cache = oms_api::cache::OrderCache::new(&config.cache)
        .map_err(|e| oms_saga::Error::Config(format!("cache.url: {e}")))?;

    let stop = CancellationToken::new();
    let relay = Relay::new(
        pool.clone(),
        bus.clone(),
        codec.clone(),
        config.relay.clone(),
    );
    let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    let worker = saga::OrderStatusWorker {
        store: oms_api::store::Store::new(pool.clone(), config.orders_topic.clone()),
        orders_topic: config.orders_topic.clone(),
        cache: Arc::new(cache),
    };
    let consumer = Consumer::new(pool, bus, codec, worker, config.consumer.clone());
    let consumer = tokio::spawn(consumer.run(stop.clone().cancelled_owned()));

    let router = oms_saga::server::standard(
        Router::new().route("/health/ready", get(|| async { "ok" })),
        1024,
    );
    tracing::info!(addr = ?listener.local_addr().ok(), "order status worker running");
    let served = oms_saga::server::serve(listener, router, shutdown).await;
    stop.cancel();
    let _ = relay.await;
    if let Ok(Err(e)) = consumer.await {
        tracing::error!(error = %e, "the inventory-answer consumer stopped");
    }
    served
}
