//! The order service: places orders, serves them (through a Redis read cache), and moves them
//! through their status state machine on admin request. Every change writes its event to the
//! transactional outbox, and the outbox relay running in this process publishes it to the
//! `orders` topic.
//!
//! - [`domain`]: validation and the state machine, with no I/O.
//! - [`store`]: the `orders` database.
//! - [`prices`]: the order service's copy of the catalog's prices, which every order is priced at.
//! - [`cache`]: the Redis read cache, which degrades to the database.
//! - [`availability`]: the inventory check before accepting an order, behind a circuit breaker.
//! - [`http`]: the routes.
//! - [`stats`]: orders per status and saga outcomes, for Prometheus.
//! - [`timeline`]: every event of each order's saga, read from every topic.

pub mod availability;
pub mod cache;
pub mod config;
pub mod domain;
mod error;
pub mod http;
pub mod prices;
pub mod stats;
pub mod store;
pub mod timeline;

use std::{future::Future, sync::Arc};

use oms_saga::{
    avro::{self, AvroCodec},
    bus::{self, TopicSpec},
    consumer::Consumer,
    event::{
        Event, OrderCancelled, OrderPlaced, OrderStatusChanged, RefundRequested, ShipmentRequested,
    },
    outbox::Relay,
    schedule::Wake,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
pub use error::{Error, Result};

/// The migrations of the `orders` database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

/// The events this service writes to its topic (the API and the status worker alike: both
/// relay its outbox).
pub const EVENT_TYPES: [&str; 5] = [
    OrderPlaced::TYPE,
    OrderStatusChanged::TYPE,
    OrderCancelled::TYPE,
    ShipmentRequested::TYPE,
    RefundRequested::TYPE,
];

/// Registers the service's schemas, then serves the API on `listener` and runs the outbox relay,
/// the order counts and the timeline's consumer until `shutdown` resolves; then stops accepting,
/// drains in-flight requests, and stops them. A schema the registry refuses stops the service
/// before it serves anything.
pub async fn run(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let pool = config.database.connect_lazy()?;
    let tracer = oms_saga::trace::Tracer::new("api", &config.trace)?;
    let bus = bus::connect(&config.bus)?;
    let cache = cache::OrderCache::new(&config.cache)
        .map_err(|e| oms_saga::Error::Config(format!("cache.url: {e}")))?;
    avro::register(&config.bus.registry, &config.topics.orders, &EVENT_TYPES).await?;
    let codec = Arc::new(AvroCodec::new(&config.bus.registry)?);

    // In the background until shutdown: the relay, the order counts, forgetting expired
    // idempotency keys, the timeline's consumer.
    let stop = CancellationToken::new();
    // What a request commits is relayed at once.
    let wake = Wake::default();
    let relay = Relay::new(
        pool.clone(),
        bus.clone(),
        codec.clone(),
        config.relay.clone(),
    )
    .traced(tracer.clone())
    .ensuring(vec![TopicSpec::new(
        &config.topics.orders,
        config.topics.partitions,
    )])
    .woken_by(&wake);
    let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    let stats = stats::OrderStats {
        pool: pool.clone(),
        interval: config.stats_interval,
    };
    let stats = tokio::spawn(oms_saga::schedule::run(
        Arc::new(stats),
        wake.clone(),
        stop.clone().cancelled_owned(),
    ));
    let expired_keys = tokio::spawn(oms_saga::schedule::run(
        Arc::new(store::expired_idempotency_keys(
            pool.clone(),
            config.idempotency_ttl,
        )),
        wake.clone(),
        stop.clone().cancelled_owned(),
    ));
    let timeline = config.timeline.enabled.then(|| {
        let recorder = Consumer::new(
            pool.clone(),
            bus.clone(),
            codec,
            timeline::Recorder,
            config.timeline.consumer.clone(),
        )
        .traced(tracer.clone());
        tokio::spawn(recorder.run(stop.clone().cancelled_owned()))
    });

    let availability = availability::Availability::new(&config.availability)
        .map_err(|e| oms_saga::Error::Config(format!("availability: {e}")))?;
    let state = Arc::new(http::AppState {
        store: store::Store::new(pool.clone(), config.topics.orders.clone())
            .waking(wake)
            .keeping_keys_for(config.idempotency_ttl),
        cache,
        availability,
        ready: oms_saga::server::Readiness::database(pool)
            .bus(bus)
            .registry(config.bus.registry.url.clone()),
        timeline_poll: config.timeline.poll_interval,
    });
    let router = http::app(state, config.max_body_bytes, tracer);
    tracing::info!(addr = %listener.local_addr().map_err(oms_saga::Error::Serve)?, "order API listening");
    let served = oms_saga::server::serve(listener, router, shutdown).await;
    stop.cancel();
    let _ = relay.await;
    let _ = stats.await;
    let _ = expired_keys.await;
    if let Some(timeline) = timeline
        && let Ok(Err(e)) = timeline.await
    {
        tracing::error!(error = %e, "the timeline consumer stopped");
    }
    Ok(served?)
}

#[cfg(feature = "testing")]
pub mod testing;
