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
    bus::TopicSpec,
    event::{Event, OrderCancelled, OrderStatusChanged},
    worker,
};
use tokio::net::TcpListener;

pub use config::StatusConfig;

/// Consumes the inventory's answers, and relays the order service's outbox (a second relay is
/// safe: one per database publishes at a time), until `shutdown` resolves.
pub async fn run(
    config: StatusConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let cache = oms_api::cache::OrderCache::new(&config.cache)
        .map_err(|e| oms_saga::Error::Config(format!("cache.url: {e}")))?;
    let output = worker::Output {
        topic: TopicSpec::new(&config.orders_topic, config.orders_partitions),
        event_types: &[OrderStatusChanged::TYPE, OrderCancelled::TYPE],
    };
    let handler = saga::OrderStatusWorker {
        store: oms_api::store::Store::new(pool.clone(), config.orders_topic.clone()),
        orders_topic: config.orders_topic.clone(),
        cache: Arc::new(cache),
    };
    let router = oms_saga::server::standard(
        Router::new().route("/health/ready", get(|| async { "ok" })),
        1024,
    );
    let worker = worker::Worker {
        pool,
        bus: &config.bus,
        output,
        relay: config.relay,
        consumer: config.consumer,
        handler,
    };
    worker.serve(router, listener, shutdown).await
}
