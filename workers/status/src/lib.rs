//! The status worker: the order service's side of the saga. It consumes the inventory's answers
//! and moves each order through the order service's own state machine: `StockReserved` makes a
//! CREATED order RESERVED and starts its payment deadline, `StockRejected` cancels it with
//! OUT_OF_STOCK, and a deadline that passes unpaid cancels it with PAYMENT_TIMEOUT (each
//! cancellation writes OrderCancelled, which releases the stock). The payment step's answers
//! move it on: `PaymentAuthorized` makes a RESERVED order PAID, `PaymentDeclined` cancels it with
//! PAYMENT_DECLINED. It also keeps the order service's copy of the catalog's prices from the
//! inventory's `ProductPriced`. It writes to the order
//! service's database and outbox, and refreshes its read cache after each commit.
//!
//! - [`saga`]: what each answer does.
//! - [`deadline`]: payment deadlines.

pub mod config;
pub mod deadline;
pub mod saga;

use std::{future::Future, sync::Arc};

use axum::Router;
use oms_saga::{bus::TopicSpec, worker};
use tokio::net::TcpListener;

pub use config::StatusConfig;

/// Consumes the inventory's answers, fires payment deadlines, and relays the order service's
/// outbox (a second relay is safe: one per database publishes at a time), until `shutdown`
/// resolves.
pub async fn run(
    config: StatusConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let tracer = oms_saga::trace::Tracer::new("status", &config.trace)?;
    let cache = oms_api::cache::OrderCache::new(&config.cache)
        .map_err(|e| oms_saga::Error::Config(format!("cache.url: {e}")))?;
    let output = worker::Output {
        topic: TopicSpec::new(&config.orders_topic, config.orders_partitions),
        event_types: &oms_api::EVENT_TYPES,
    };
    let store = oms_api::store::Store::new(pool.clone(), config.orders_topic.clone());
    let cache = Arc::new(cache);
    let handler = saga::OrderStatusWorker {
        store: store.clone(),
        orders_topic: config.orders_topic.clone(),
        cache: cache.clone(),
        payment_timeout: config.payment.timeout,
    };
    let deadlines = deadline::PaymentDeadlines {
        store,
        orders_topic: config.orders_topic.clone(),
        cache,
        config: config.payment,
    };
    let router = oms_saga::server::standard(Router::new(), 1024, tracer.clone());
    let worker = worker::Worker {
        pool,
        bus: &config.bus,
        output,
        relay: config.relay,
        consumer: config.consumer,
        handler,
        periodic: vec![Arc::new(deadlines)],
        tracer,
    };
    worker.serve(router, listener, shutdown).await
}

#[cfg(feature = "testing")]
pub mod testing;
