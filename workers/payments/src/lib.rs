//! The payment step of the order saga. It owns the `payments` database and the `payments` topic,
//! and the conversation with the payment provider: Stripe's REST API, or any server that speaks
//! it (localstripe here and in CI). Once an order's stock is reserved it authorizes the order's
//! total (the status worker then makes the order PAID) or reports the decline (the order is
//! cancelled and its stock released); a cancelled order's authorization is released.
//!
//! - [`stripe`]: a small typed client of the calls the step makes: a PaymentIntent authorized
//!   with manual capture, then captured or cancelled, and refunds. Every call carries an
//!   Idempotency-Key derived from the order and the step, and its outcome is one of three kinds
//!   the step treats differently: a decline (the customer's card said no), a refusal (the request
//!   itself is wrong: retrying cannot help) and an unavailable provider (retry later).
//! - [`ledger`]: what each order owes and its intent, the step's own record.
//! - [`saga`]: what each order event does.
//! - [`webhook`]: the provider's webhooks, and the reconciler that asks when none comes.

pub mod config;
pub mod ledger;
pub mod saga;
pub mod stripe;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;

use std::future::Future;

use oms_saga::{
    bus::TopicSpec,
    event::{
        Event, PaymentActionRequired, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured,
        PaymentDeclined, PaymentRefunded, PaymentVoided,
    },
    worker,
};
use tokio::net::TcpListener;

pub use config::PaymentsConfig;
pub use stripe::{Stripe, StripeConfig, StripeError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/payments");

/// The events this service writes.
pub const EVENT_TYPES: [&str; 7] = [
    PaymentAuthorized::TYPE,
    PaymentDeclined::TYPE,
    PaymentVoided::TYPE,
    PaymentActionRequired::TYPE,
    PaymentCaptured::TYPE,
    PaymentCaptureFailed::TYPE,
    PaymentRefunded::TYPE,
];

/// Registers the schemas, then consumes order events, takes the provider's webhooks, reconciles
/// what waits, relays its outcomes and serves health and metrics until `shutdown` resolves.
pub async fn run(
    config: PaymentsConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let tracer = oms_saga::trace::Tracer::new("payments", &config.trace)?;
    let stripe = Stripe::new(&config.stripe)
        .map_err(|e| oms_saga::Error::Config(format!("payments.stripe: {e}")))?;
    let output = worker::Output {
        topic: TopicSpec::new(&config.topic, config.partitions),
        event_types: &EVENT_TYPES,
    };
    let handler = saga::Payments {
        pool: pool.clone(),
        stripe,
        topic: config.topic.clone(),
    };
    let reconciler = webhook::Reconciler {
        payments: handler.clone(),
        every: config.webhooks.reconcile_every,
    };
    let webhooks = webhook::routes(handler.clone(), config.webhooks.clone());
    // A Stripe event is a few kilobytes.
    let router = oms_saga::server::standard(webhooks, 64 * 1024, tracer.clone());
    let worker = worker::Worker {
        pool,
        bus: &config.bus,
        output,
        relay: config.relay,
        consumer: config.consumer,
        handler,
        periodic: vec![std::sync::Arc::new(reconciler)],
        tracer,
    };
    worker.serve(router, listener, shutdown).await
}
