//! The transactional outbox.
//!
//! A service writes its events with [`enqueue`] in the same database transaction as the change they
//! describe, so an event exists if and only if the change committed. Each event is a row of
//! `outbox`, kept a while after it went out ([`RelayConfig::keep_published`]) and then pruned, and
//! its id in `outbox_pending`, the queue of what is still to go out. The [`Relay`] publishes the
//! queue to the bus in insertion order and takes the ids off it only after the broker acknowledged
//! them: deleting a narrow row costs the database a fraction of what updating the event's own row
//! did. If the broker is down, events wait and orders keep being accepted; once it is back they go
//! out, in order. A crash between the acknowledgement and the delete republishes a batch, which is
//! why consumers deduplicate by event id.
//!
//! Several relays (one per service instance) may run against one database. A transaction-scoped
//! advisory lock lets only one relay publish at a time: two relays publishing interleaved
//! batches could reorder one order's events.
//!
//! A relay looks for rows when a commit in its own process wakes it. A relay that finds another
//! publishing tries again shortly rather than at its next poll, since the other may have chosen
//! its batch before this process's rows committed: so every process's events go out promptly,
//! and the poll is left to catch the rows of a process that stopped before relaying them.

use std::{borrow::Borrow, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use opentelemetry::trace::SpanKind;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::{
    Result,
    bus::{EventBus, TopicSpec},
    event::{self, Codec, EventRecord},
    plan::PlannedPerCall,
    retention::Prune,
    schedule::Wake,
    trace::Tracer,
};

/// Writes `record` to the outbox, and queues it for the relay, inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, record: &EventRecord) -> Result<()> {
    sqlx::query(
        "WITH e AS (INSERT INTO outbox (event_id, topic, message_key, event_type, payload, \
         occurred_at, correlation_id, causation_id, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id) \
         INSERT INTO outbox_pending (id) SELECT id FROM e",
    )
    .bind(record.event_id)
    .bind(&record.topic)
    .bind(&record.key)
    .bind(&record.event_type)
    .bind(&record.payload)
    .bind(record.occurred_at)
    .bind(record.correlation_id)
    .bind(record.causation_id)
    .bind(&record.traceparent)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes `records`, in their order, to the outbox inside the caller's transaction, in one
/// statement. A single record is written as [`enqueue`] does: PostgreSQL takes about twice as
/// long over one row unnested from arrays as over one row of values. The records may be owned
/// or borrowed, so a caller that keeps its own need not copy them.
pub async fn enqueue_all<R: Borrow<EventRecord>>(
    conn: &mut PgConnection,
    records: &[R],
) -> Result<()> {
    match records {
        [] => return Ok(()),
        [record] => return enqueue(conn, record.borrow()).await,
        _ => {}
    }
    fn column<'a, R: Borrow<EventRecord>, T>(
        records: &'a [R],
        field: impl Fn(&'a EventRecord) -> T,
    ) -> Vec<T> {
        records.iter().map(|r| field(r.borrow())).collect()
    }
    sqlx::query(
        "WITH e AS (INSERT INTO outbox (event_id, topic, message_key, event_type, payload, \
         occurred_at, correlation_id, causation_id, traceparent) \
         SELECT event_id, topic, message_key, event_type, payload, occurred_at, correlation_id, \
         causation_id, traceparent FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
         $5::jsonb[], $6::timestamptz[], $7::uuid[], $8::uuid[], $9::text[]) WITH ORDINALITY \
         AS e(event_id, topic, message_key, event_type, payload, occurred_at, correlation_id, \
         causation_id, traceparent, n) ORDER BY n RETURNING id) \
         INSERT INTO outbox_pending (id) SELECT id FROM e",
    )
    .bind(column(records, |r| r.event_id))
    .bind(column(records, |r| r.topic.as_str()))
    .bind(column(records, |r| r.key.as_str()))
    .bind(column(records, |r| r.event_type.as_str()))
    .bind(column(records, |r| &r.payload))
    .bind(column(records, |r| r.occurred_at))
    .bind(column(records, |r| r.correlation_id))
    .bind(column(records, |r| r.causation_id))
    .bind(column(records, |r| r.traceparent.as_deref()))
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Rows published per broker round trip.
    pub batch_size: i64,
    /// How long an idle relay waits before looking again, unless a commit in its own process
    /// wakes it first: the bound on how long the events of a process that stopped before relaying
    /// them wait for another instance's relay.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a published event's row stays in the outbox (for `oms check` and for looking
    /// back), before the relay's pruning job deletes it.
    #[serde(with = "humantime_serde")]
    pub keep_published: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(250),
            keep_published: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one step of a relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// Published this many events; none were waiting if 0.
    Published(usize),
    /// Another relay is publishing from this database.
    Busy,
}

/// How soon a relay that found another publishing tries again; it waits twice as long each time
/// it finds it still publishing, up to its poll interval (the other may be waiting on a broker).
const BUSY_RETRY: Duration = Duration::from_millis(5);

/// How often the relay measures its backlog.
const BACKLOG_SAMPLE: Duration = Duration::from_secs(1);

/// Key of the advisory lock that elects the publishing relay of a database.
pub const RELAY_LOCK: i64 = 0x6f6d_735f_6f75_7462; // "oms_outb"

#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    bus: Arc<dyn EventBus>,
    codec: Arc<dyn Codec>,
    config: RelayConfig,
    /// Topics to create before the first publish.
    topics: Vec<TopicSpec>,
    tracer: Tracer,
    wake: Wake,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        bus: Arc<dyn EventBus>,
        codec: Arc<dyn Codec>,
        config: RelayConfig,
    ) -> Self {
        Self {
            pool,
            bus,
            codec,
            config,
            topics: Vec::new(),
            tracer: Tracer::silent("relay"),
            wake: Wake::default(),
        }
    }

    /// Looks for events at once when `wake` is woken, not only every poll interval.
    pub fn woken_by(mut self, wake: &Wake) -> Self {
        self.wake = wake.clone();
        self
    }

    /// Makes a producer span of `tracer`'s for each event published, a child of the span that
    /// wrote it, and hands that span on to the consumers in the event's `traceparent`.
    pub fn traced(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Creates these topics (idempotently) before publishing anything.
    pub fn ensuring(mut self, topics: Vec<TopicSpec>) -> Self {
        self.topics = topics;
        self
    }

    /// The job that deletes published rows older than [`RelayConfig::keep_published`], oldest
    /// first; a row still queued is never deleted, however old.
    pub fn pruning(&self) -> Prune {
        Prune::new(
            "published outbox rows",
            "outbox",
            self.pool.clone(),
            "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o \
             WHERE o.occurred_at <= now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id) \
             ORDER BY o.id LIMIT $2)",
            self.config.keep_published,
        )
        // The relay deletes the queue's rows as it publishes them.
        .vacuuming("outbox_pending")
    }

    /// Publishes until `shutdown` resolves, and prunes what it published ([`Relay::pruning`]).
    /// Failures (database or broker away) are retried with exponential backoff and jitter; rows
    /// are never skipped.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        crate::retention::alongside(self.pruning(), self.relay(shutdown)).await;
    }

    async fn relay(&self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let backoff = || crate::retry::backoff(Duration::from_millis(50), Duration::from_secs(5));
        let mut delays = backoff();
        let mut topics_ready = self.topics.is_empty();
        let mut idle = false;
        let mut busy_wait = BUSY_RETRY;
        let mut sampled = std::time::Instant::now() - BACKLOG_SAMPLE;
        let mut listener = self.wake.listen();
        loop {
            if sampled.elapsed() >= BACKLOG_SAMPLE {
                sampled = std::time::Instant::now();
                if let Err(e) = self.sample_backlog().await {
                    tracing::debug!(error = %e, "cannot measure the outbox backlog");
                }
            }
            listener.looking();
            // Shutdown may interrupt a publish that waits on a dead broker: the transaction rolls
            // back, and the rows go out again (at least once) after the restart.
            let step = tokio::select! {
                _ = &mut shutdown => return,
                step = self.step(&mut topics_ready, idle) => step,
            };
            idle = matches!(step, Ok(Relayed::Published(0)));
            if !matches!(step, Ok(Relayed::Busy)) {
                busy_wait = BUSY_RETRY;
            }
            match step {
                Ok(Relayed::Published(n)) if n as i64 >= self.config.batch_size => {}
                Ok(Relayed::Busy) => {
                    delays = backoff();
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(busy_wait) => {}
                    }
                    busy_wait = (busy_wait * 2).min(self.config.poll_interval);
                }
                // Woken or not, an idle relay asks first whether anything waits: not every
                // commit that wakes it wrote events.
                Ok(Relayed::Published(_)) => {
                    delays = backoff();
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = listener.sleep(self.config.poll_interval) => {}
                    }
                }
                // A wake does not cut a backoff short: commits go on while the broker is away.
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = ?delay, "outbox relay failed; will retry");
                    metrics::counter!("oms_outbox_relay_errors_total").increment(1);
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Creates the topics first if that has not succeeded yet, then relays one batch. When the
    /// last step found nothing, it first asks, in one statement outside a transaction, whether
    /// anything waits: most wakes find nothing (not every commit writes events), and relaying
    /// takes four statements.
    async fn step(&self, topics_ready: &mut bool, idle: bool) -> Result<Relayed> {
        if !*topics_ready {
            self.bus.ensure_topics(&self.topics).await?;
            *topics_ready = true;
        }
        if idle {
            let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox_pending)")
                .fetch_one(&self.pool)
                .await?;
            if !waiting {
                return Ok(Relayed::Published(0));
            }
        }
        self.relay_once().await
    }

    /// Sets the backlog gauges: how many events wait, and for how long the first queued has.
    async fn sample_backlog(&self) -> Result<()> {
        let (waiting, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), (SELECT occurred_at FROM outbox \
             WHERE id = (SELECT min(id) FROM outbox_pending)) FROM outbox_pending",
        )
        .planned_per_call()
        .fetch_one(&self.pool)
        .await?;
        let age = oldest.map_or(0.0, |oldest| event::age_seconds(oldest, Utc::now()));
        metrics::gauge!("oms_outbox_backlog").set(waiting as f64);
        metrics::gauge!("oms_outbox_oldest_age_seconds").set(age);
        Ok(())
    }

    /// Publishes one batch, unless another relay is publishing.
    pub async fn relay_once(&self) -> Result<Relayed> {
        let mut tx = self.pool.begin().await?;
        let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !elected {
            return Ok(Relayed::Busy);
        }
        // The outbox rows are looked up by id, whatever the planner believes of the two tables'
        // sizes: a join could walk the outbox, which only grows, from its first row. Planned at
        // each call, as a plan settled while the outbox was small would scan all of it.
        let rows = sqlx::query(
            "SELECT id, event_id, topic, message_key, event_type, payload, occurred_at, \
             correlation_id, causation_id, traceparent FROM outbox \
             WHERE id = ANY(ARRAY(SELECT id FROM outbox_pending ORDER BY id LIMIT $1)) ORDER BY id",
        )
        .planned_per_call()
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Relayed::Published(0));
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        let mut oldest: Option<DateTime<Utc>> = None;
        for row in &rows {
            ids.push(row.try_get::<i64, _>("id")?);
            let mut record = EventRecord {
                event_id: row.try_get::<Uuid, _>("event_id")?,
                event_type: row.try_get("event_type")?,
                topic: row.try_get("topic")?,
                key: row.try_get("message_key")?,
                occurred_at: row.try_get("occurred_at")?,
                correlation_id: row.try_get("correlation_id")?,
                causation_id: row.try_get("causation_id")?,
                traceparent: row.try_get("traceparent")?,
                payload: row.try_get("payload")?,
            };
            oldest = oldest
                .min(Some(record.occurred_at))
                .or(Some(record.occurred_at));
            let mut span = self.tracer.start(
                format!("publish {}", record.event_type),
                SpanKind::Producer,
                record.traceparent.as_deref(),
            );
            span.set("messaging.destination", record.topic.clone());
            span.set("event.id", record.event_id.to_string());
            record.traceparent = Some(span.traceparent());
            spans.push(span);
            messages.push(record.to_message(self.codec.as_ref()).await?);
        }
        if let Err(e) = self.bus.publish(messages).await {
            for span in &mut spans {
                span.fail(e.to_string());
            }
            return Err(e);
        }
        sqlx::query("DELETE FROM outbox_pending WHERE id = ANY($1)")
            .planned_per_call()
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("oms_outbox_published_total").increment(ids.len() as u64);
        if let Some(oldest) = oldest {
            metrics::histogram!("oms_outbox_publish_delay_seconds")
                .record(event::age_seconds(oldest, Utc::now()));
        }
        Ok(Relayed::Published(ids.len()))
    }
}
