//! The notification service. It owns the `notifications` database and topic, and tells each
//! customer what became of their order: placed, reserved, paid, shipped, cancelled and why. It
//! only listens to the `orders` topic, so while it is down orders go on; when it is back it
//! reads on from where its group stopped and catches up.
//!
//! Each telling event becomes one notification in the event's inbox transaction (so a
//! redelivery adds nothing), and a sending job sends it at most once.
//!
//! - [`notice`]: what a customer is told, by which channel.
//! - [`saga`]: the handler that records notifications.
//! - [`send`]: the sender trait and the at-most-once sending job.
//! - [`http`]: a customer's notifications.

pub mod config;
pub mod http;
pub mod notice;
pub mod saga;
pub mod send;
#[cfg(feature = "testing")]
pub mod testing;

use std::{future::Future, sync::Arc};

use oms_saga::{
    bus::TopicSpec,
    event::{Event, NotificationSent},
    worker,
};
use tokio::net::TcpListener;

pub use config::NotificationsConfig;
pub use send::{LogSender, Sender};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/notifications");

/// Serves with the default sender, which logs each message.
pub async fn run(
    config: NotificationsConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    run_with(config, Arc::new(LogSender), listener, shutdown).await
}

/// Registers the schema, then consumes order events, sends through `sender`, relays
/// NotificationSent and serves HTTP until `shutdown` resolves.
pub async fn run_with(
    config: NotificationsConfig,
    sender: Arc<dyn Sender>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let tracer = oms_saga::trace::Tracer::new("notifications", &config.trace)?;
    let dispatch = send::Dispatch {
        pool: pool.clone(),
        sender,
        topic: config.topic.clone(),
        config: config.sending,
    };
    let router = http::app(
        Arc::new(http::AppState { pool: pool.clone() }),
        config.max_body_bytes,
        tracer.clone(),
    );
    let worker = worker::Worker {
        pool,
        bus: &config.bus,
        output: worker::Output {
            topic: TopicSpec::new(&config.topic, config.partitions),
            event_types: &[NotificationSent::TYPE],
        },
        relay: config.relay,
        consumer: config.consumer,
        handler: saga::Notifier,
        periodic: vec![Arc::new(dispatch)],
        tracer,
    };
    worker.serve(router, listener, shutdown).await
}
