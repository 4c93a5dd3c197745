//! Running a saga worker, written once: its consumer, its outbox relay and its periodic jobs in
//! the background, its HTTP side in front, all stopped together. A worker supplies its handler,
//! its jobs and its routes. One [`Wake`] joins them: what the consumer or a job commits is
//! relayed (and sent, for a job that asks to be woken) without waiting for a poll.

use std::{future::Future, sync::Arc};

use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Result, avro,
    bus::{self, TopicSpec},
    config::BusConfig,
    consumer::{Consumer, ConsumerConfig, Handler},
    outbox::{Relay, RelayConfig},
    schedule::{self, Periodic, Wake},
    trace::Tracer,
};

/// What a worker writes, and where.
#[derive(Debug, Clone)]
pub struct Output<'a> {
    /// The topic its events go to, created with this many partitions if missing.
    pub topic: TopicSpec,
    /// Their types, whose schemas are registered before anything runs.
    pub event_types: &'a [&'a str],
}

/// A saga worker: its database, where it listens and writes, and its rules.
#[derive(Debug)]
pub struct Worker<'a, H> {
    pub pool: PgPool,
    pub bus: &'a BusConfig,
    pub output: Output<'a>,
    pub relay: RelayConfig,
    pub consumer: ConsumerConfig,
    pub handler: H,
    /// Jobs on a clock (deadlines, sending), run beside the consumer.
    pub periodic: Vec<Arc<dyn Periodic>>,
    /// Whose spans the relay and the consumer make.
    pub tracer: Tracer,
}

impl<H: Handler + 'static> Worker<'_, H> {
    /// Registers the worker's schemas, then runs its handler on its consumer group and relays the
    /// database's outbox, while serving `router` on `listener`, until `shutdown` resolves.
    pub async fn serve(
        self,
        router: Router,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Worker {
            pool,
            bus: bus_config,
            output,
            relay,
            consumer,
            handler,
            periodic,
            tracer,
        } = self;
        let bus = bus::connect(bus_config)?;
        let ready = crate::server::Readiness::database(pool.clone())
            .bus(bus.clone())
            .registry(bus_config.registry.url.clone());
        let router = router.route(
            "/health/ready",
            axum::routing::get(move || async move { ready.respond(Default::default()).await }),
        );
        avro::register(&bus_config.registry, &output.topic.name, output.event_types).await?;
        let codec = Arc::new(avro::AvroCodec::new(&bus_config.registry)?);
        let stop = CancellationToken::new();
        let wake = Wake::default();
        let relay = Relay::new(pool.clone(), bus.clone(), codec.clone(), relay)
            .traced(tracer.clone())
            .ensuring(vec![output.topic])
            .woken_by(&wake);
        let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
        let group = consumer.group.clone();
        let consumer = Consumer::new(pool, bus, codec, handler, consumer)
            .traced(tracer)
            .waking(wake.clone());
        let consumer = tokio::spawn(consumer.run(stop.clone().cancelled_owned()));
        let periodic: Vec<_> = periodic
            .into_iter()
            .map(|job| {
                let stopped = stop.clone().cancelled_owned();
                tokio::spawn(schedule::run(job, wake.clone(), stopped))
            })
            .collect();

        tracing::info!(addr = ?listener.local_addr().ok(), %group, "worker running");
        let served = crate::server::serve(listener, router, shutdown).await;
        stop.cancel();
        let _ = relay.await;
        for job in periodic {
            let _ = job.await;
        }
        if let Ok(Err(e)) = consumer.await {
            tracing::error!(error = %e, %group, "the consumer stopped");
        }
        served
    }
}
