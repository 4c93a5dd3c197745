//! The consume loop every saga worker shares, so that a worker is only its [`Handler`].
//!
//! For each delivery, in partition order:
//! 1. decode it; bytes that are not an event go straight to the dead-letter topic;
//! 2. in one database transaction, record the event id in the `inbox` (a redelivered event finds
//!    it there and is skipped) and let the handler write its effects and outgoing events (through
//!    the outbox) on the same transaction; a handler whose effect is a row keyed by the event id
//!    deduplicates by that key instead ([`Handler::deduplicates`]);
//! 3. commit, and only then acknowledge the delivery, so a crash anywhere before redelivers it.
//!
//! Under load, the deliveries that have already arrived when one is taken (up to
//! `batch_size`) are applied together, in their order, in one transaction: a commit is the
//! costly part of handling an event, and one commit for a batch keeps every guarantee above,
//! since the batch commits or vanishes as a whole. If an event in a batch does not go smoothly
//! (it does not decode, its handler fails), the run before it commits together, that event goes
//! the one-at-a-time way, which knows how to retry and dead-letter, and the rest are batched
//! again.
//!
//! A transient failure (database or broker away) is retried with exponential backoff and jitter,
//! without ever skipping the event. A handler's rejection ([`HandlerError::Poison`]) is tried a
//! bounded number of times, then the event goes to `<topic>.dlq` with headers saying why and
//! where from, and the partition goes on. So does a message the broker delivered too often
//! unacknowledged, which is what a message that crashes its consumer looks like. The later events
//! of a dead-lettered event's key wait behind it ([`park`]) until [`release`] sends it back.

pub mod park;

use std::{
    collections::HashSet,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::FutureExt;
use opentelemetry::trace::SpanKind;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    Error, Result,
    bus::{Delivery, EventBus, Message, Subscription},
    event::{self, Codec, Event, EventRecord, header},
    schedule::Wake,
    trace::{Span, Tracer},
};
pub use park::{Action, release_header};
use park::{Origin, Parks, Release};

/// Headers a dead letter carries besides the original ones.
pub mod dlq_header {
    pub const REASON: &str = "dlq-reason";
    pub const ORIGIN_TOPIC: &str = "dlq-origin-topic";
    pub const ORIGIN_PARTITION: &str = "dlq-origin-partition";
    pub const ORIGIN_OFFSET: &str = "dlq-origin-offset";
    pub const CONSUMER: &str = "dlq-consumer";
    pub const ATTEMPTS: &str = "dlq-attempts";
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Will fail again however often it is retried (invalid content, an impossible request).
    #[error("poison event: {0}")]
    Poison(String),
    /// May succeed later (a dependency is away).
    #[error("transient failure: {0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Transient(e.to_string())
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        HandlerError::Transient(e.to_string())
    }
}

/// The payload of an event the handler expects to be an `E`; anything else is poison.
pub fn payload<E: Event>(event: &EventRecord) -> Result<E, HandlerError> {
    match event.payload_as::<E>() {
        Some(Ok(payload)) => Ok(payload),
        Some(Err(e)) => Err(HandlerError::Poison(format!("invalid {}: {e}", E::TYPE))),
        None => Err(HandlerError::Poison(format!(
            "expected {}, got {}",
            E::TYPE,
            event.event_type
        ))),
    }
}

/// A worker's business rules: what one event does, inside the transaction the loop opened.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Applies `event`: its effects and outgoing events are written through `tx`, and commit
    /// together with the inbox record.
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError>;

    /// Applies the events of a batch that are new, in their order, on one transaction; on
    /// failure, says how many of them went fine before the one that failed. One by one with
    /// [`Handler::handle`] unless a handler knows better: one whose events each write a row of
    /// their own may write them all in one statement (and say 0 went fine if it fails).
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        for (fine, event) in events.iter().enumerate() {
            self.handle(tx, event).await.map_err(|e| (fine, e))?;
        }
        Ok(())
    }

    /// Runs after the transaction that handled `events` committed, for effects outside the
    /// database (refreshing a cache). Best effort: it cannot undo the commit.
    async fn after_commit(&self, _events: &[&EventRecord]) {}

    /// Whether the handler's own writes already refuse an event twice (a row keyed by the
    /// event's id, inserted or left alone), so that the loop need not record events in the
    /// inbox: a second row per event that only says what the first already does. Its
    /// redelivered events count as handled, since only the handler knows they changed nothing.
    fn deduplicates(&self) -> bool {
        false
    }
}

/// A shared handler, for workers that keep a handle to inspect or configure it.
#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        (**self).handle(tx, event).await
    }

    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        (**self).handle_all(tx, events).await
    }

    async fn after_commit(&self, events: &[&EventRecord]) {
        (**self).after_commit(events).await
    }

    fn deduplicates(&self) -> bool {
        (**self).deduplicates()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer group; also the name under which the inbox records processed events.
    pub group: String,
    pub topics: Vec<String>,
    /// Attempts at a poison event before it is dead-lettered.
    pub max_attempts: u32,
    /// Deliveries of one message, as the broker counts them, before it is dead-lettered
    /// unhandled: a message that every consumer taking it stopped on (a crash it causes) must
    /// not stop its partition forever. Only JetStream counts deliveries.
    pub max_deliveries: u32,
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// The most deliveries applied in one transaction; 1 applies each on its own.
    pub batch_size: usize,
    /// Members of the group this consumer runs, each with its share of the partitions and its
    /// own transactions: while one waits (on a provider, a commit), the others go on. Per-key
    /// order holds, since a partition is one member's at a time. More lanes than partitions
    /// leave the extra ones idle.
    pub lanes: usize,
    /// How long the inbox remembers a handled event's id. A message can be delivered again only
    /// while the broker keeps it, so this must be at least the bus's retention (the consumer
    /// refuses to start otherwise); older records are deleted in the background.
    #[serde(with = "humantime_serde")]
    pub inbox_keep: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: String::new(),
            topics: Vec::new(),
            max_attempts: 3,
            max_deliveries: 10,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            batch_size: 100,
            lanes: 1,
            // The bus keeps messages 7 days (8 at most on Kafka, whose segments roll daily).
            inbox_keep: Duration::from_secs(8 * 24 * 3600),
        }
    }
}

/// The event type a delivery's headers name, for spans, logs and metrics.
fn event_type(delivery: &Delivery) -> &str {
    delivery
        .message
        .headers
        .get_str(header::EVENT_TYPE)
        .unwrap_or("unknown")
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    Duplicate,
    DeadLettered,
    /// Stored behind an earlier event of its key that was dead-lettered.
    Parked,
    /// A dead letter an operator discarded, releasing what it parked.
    Discarded,
    /// A dead letter discarded for another group, or whose park is gone.
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Parked => "parked",
            Outcome::Discarded => "discarded",
            Outcome::Ignored => "ignored",
        }
    }
}

pub struct Consumer<H> {
    pool: PgPool,
    bus: Arc<dyn EventBus>,
    codec: Arc<dyn Codec>,
    handler: H,
    config: ConsumerConfig,
    tracer: Tracer,
    wake: Wake,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Consumer<H> {
    pub fn new(
        pool: PgPool,
        bus: Arc<dyn EventBus>,
        codec: Arc<dyn Codec>,
        handler: H,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            pool,
            bus,
            codec,
            handler,
            config,
            tracer: Tracer::silent("consumer"),
            wake: Wake::default(),
        }
    }

    /// Wakes `wake` whenever handled events commit: what they wrote (events in the outbox,
    /// work for a job) is then taken up at once.
    pub fn waking(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    /// Handles each delivery in a consumer span of `tracer`'s, a child of the publishing span;
    /// the events the handler derives continue the trace from there.
    pub fn traced(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<H> {
        crate::retry::backoff(self.config.min_backoff, self.config.max_backoff)
    }

    /// The job that deletes this group's inbox records older than [`ConsumerConfig::inbox_keep`].
    pub fn pruning(&self) -> crate::retention::Prune {
        crate::retention::Prune::new(
            "inbox records",
            "inbox",
            self.pool.clone(),
            "DELETE FROM inbox WHERE consumer = $3 AND event_id IN (SELECT event_id FROM inbox \
             WHERE consumer = $3 AND processed_at <= now() - make_interval(secs => $1) \
             ORDER BY processed_at LIMIT $2)",
            self.config.inbox_keep,
        )
        .scoped(self.config.group.clone())
    }

    /// Consumes until `shutdown` resolves, and prunes its inbox ([`Consumer::pruning`]). Stops
    /// between batches, never inside one. Refuses to start with an inbox that would forget a
    /// message the broker may still deliver, or with no lanes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        if self.config.lanes == 0 {
            return Err(Error::Config(format!(
                "consumer {}: lanes is 0; it needs at least one member of its group",
                self.config.group
            )));
        }
        if self.handler.deduplicates() {
            return self.consume(shutdown).await;
        }
        let retention = self.bus.retention();
        if self.config.inbox_keep < retention {
            return Err(Error::Config(format!(
                "consumer {}: inbox_keep ({}) is shorter than the bus keeps messages ({}): a \
                 message delivered again after its record is gone would be applied twice",
                self.config.group,
                humantime_serde::re::humantime::format_duration(self.config.inbox_keep),
                humantime_serde::re::humantime::format_duration(retention)
            )));
        }
        crate::retention::alongside(self.pruning(), self.consume(shutdown)).await
    }

    /// Runs the [`ConsumerConfig::lanes`] until `shutdown` resolves.
    async fn consume(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let stop = tokio_util::sync::CancellationToken::new();
        let lanes = futures::future::try_join_all(
            (0..self.config.lanes).map(|_| self.lane(stop.cancelled())),
        );
        tokio::pin!(shutdown, lanes);
        tokio::select! {
            _ = &mut shutdown => {
                stop.cancel();
                lanes.await.map(drop)
            }
            ended = &mut lanes => ended.map(drop),
        }
    }

    /// One member of the group: takes deliveries in batches and processes each batch.
    async fn lane(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let mut subscription = self
            .bus
            .subscribe(&self.config.group, &self.config.topics)
            .await?;
        let mut batch = Vec::with_capacity(self.config.batch_size);
        loop {
            let delivery = tokio::select! {
                _ = &mut shutdown => {
                    subscription.close().await;
                    return Ok(());
                }
                next = subscription.next() => next,
            };
            match delivery {
                Ok(delivery) => batch.push(delivery),
                Err(e) => {
                    tracing::warn!(error = %e, "receiving failed; retrying");
                    tokio::time::sleep(self.config.min_backoff).await;
                    continue;
                }
            }
            // What has arrived already joins it; nothing is waited for.
            while batch.len() < self.config.batch_size {
                match subscription.next().now_or_never() {
                    Some(Ok(delivery)) => batch.push(delivery),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "receiving failed; handling what arrived");
                        break;
                    }
                    None => break,
                }
            }
            self.process_batch(&mut *subscription, &batch).await;
            batch.clear();
        }
    }

    /// Takes deliveries, in their order, to an outcome each and acknowledges them. Does not
    /// return before that happened: transient failures are retried for as long as they last.
    /// The longest run of them that applies smoothly commits together; the one it stumbled on
    /// goes alone, and the rest are batched again. A delivery of a parked key, or a release of
    /// one, goes its own way.
    async fn process_batch(&self, subscription: &mut dyn Subscription, batch: &[Delivery]) {
        let started = Instant::now();
        let mut spans: Vec<Span> = batch.iter().map(|d| self.span(d)).collect();
        metrics::histogram!("oms_consumer_batch_size", "consumer" => self.config.group.clone())
            .record(batch.len() as f64);
        // How long ago each event happened (committed with its change): what its relay, the
        // broker and this consumer's earlier work took before it was taken up. Beside
        // `oms_event_handling_seconds`, where the saga's time goes.
        let ages =
            metrics::histogram!("oms_event_age_seconds", "consumer" => self.config.group.clone());
        let now = chrono::Utc::now();
        for occurred in batch
            .iter()
            .filter_map(|d| event::occurred_at(&d.message.headers))
        {
            ages.record(event::age_seconds(occurred, now));
        }
        let mut parks = Parks::Unread;
        let mut done = 0;
        while done < batch.len() {
            let plain = batch[done..]
                .iter()
                .take_while(|d| self.plain(d, &parks))
                .count();
            if plain == 0 {
                self.read_parks(&mut parks, batch).await;
                let outcome = self.unplain(&batch[done], &spans[done], &mut parks).await;
                self.finish(
                    subscription,
                    &batch[done],
                    &mut spans[done],
                    outcome,
                    started,
                )
                .await;
                done += 1;
                continue;
            }
            let end = done + plain;
            let log = tracing::info_span!("batch", consumer = %self.config.group, size = plain);
            let Some(together) = self
                .apply_together(&batch[done..end], &spans[done..end], &parks)
                .instrument(log)
                .await
            else {
                // A key among them is parked: the batch goes on around the parks.
                self.read_parks(&mut parks, batch).await;
                continue;
            };
            for outcome in together {
                self.finish(
                    subscription,
                    &batch[done],
                    &mut spans[done],
                    outcome,
                    started,
                )
                .await;
                done += 1;
            }
            if done < end {
                let outcome = self
                    .settle_alone(&batch[done], &spans[done], &mut parks)
                    .await;
                self.finish(
                    subscription,
                    &batch[done],
                    &mut spans[done],
                    outcome,
                    started,
                )
                .await;
                done += 1;
            }
        }
    }

    /// Reads the parks among the keys of `batch`, unless they are read already.
    async fn read_parks(&self, parks: &mut Parks, batch: &[Delivery]) {
        if !parks.unread() {
            return;
        }
        let keys: Vec<&str> = batch.iter().map(|d| d.message.key.as_str()).collect();
        let group = &self.config.group;
        let parked = self
            .until_done("reading the parked keys", || {
                park::parked_among(&self.pool, group, &keys)
            })
            .await;
        *parks = Parks::Read(parked);
    }

    /// Whether `delivery` is an event to apply as it comes: not behind a parked key, as far as
    /// `parks` are read, and no dead letter sent back.
    fn plain(&self, delivery: &Delivery, parks: &Parks) -> bool {
        !parks.contains(&delivery.message.key)
            && !park::is_discarded(delivery)
            && Release::of(delivery, &self.config.group).is_none()
    }

    /// Takes a delivery that is not [`Consumer::plain`] to its outcome: a release of its key's
    /// park releases it, an event behind a park is parked, a discarded letter is ignored, and a
    /// letter redriven after its park is gone is the event again. The batch's `parks` are read.
    async fn unplain(&self, delivery: &Delivery, span: &Span, parks: &mut Parks) -> Outcome {
        let key = &delivery.message.key;
        if let Some(release) = Release::of(delivery, &self.config.group)
            && parks.get(key) == Some(&release.of)
        {
            return self.release(delivery, span, release, parks).await;
        }
        if park::is_discarded(delivery) {
            return Outcome::Ignored;
        }
        if parks.contains(key) {
            return self.park(delivery).await;
        }
        self.settle_alone(delivery, span, parks).await
    }

    /// Stores `delivery` behind the park of its key.
    async fn park(&self, delivery: &Delivery) -> Outcome {
        let group = &self.config.group;
        self.until_done("parking an event", || {
            park::park_event(&self.pool, group, delivery)
        })
        .await;
        tracing::info!(consumer = %group, key = delivery.message.key, partition = delivery.partition,
            offset = delivery.offset, "parked behind a dead letter of its key");
        Outcome::Parked
    }

    /// Releases the park of `letter`'s key: applies the letter (redrive) or not (discard), then
    /// what was parked behind it, in order, each alone. One that is dead-lettered again parks
    /// the key anew, and the rest stay parked behind it.
    async fn release(
        &self,
        letter: &Delivery,
        span: &Span,
        release: Release,
        parks: &mut Parks,
    ) -> Outcome {
        let group = &self.config.group;
        let key = &letter.message.key;
        let outcome = match release.action {
            Action::Redrive => self.settle_alone(letter, span, parks).await,
            Action::Discard => Outcome::Discarded,
        };
        tracing::info!(consumer = %group, key, action = ?release.action, outcome = outcome.as_str(),
            "a dead letter came back");
        if outcome == Outcome::DeadLettered {
            return outcome;
        }
        let started = Instant::now();
        while let Some(next) = self
            .until_done("reading a parked event", || {
                park::first_parked(&self.pool, group, key)
            })
            .await
        {
            let mut span = self.span(&next);
            let released = self.settle_alone(&next, &span, parks).await;
            self.record(&next, &mut span, released, started);
            if released == Outcome::DeadLettered {
                return outcome;
            }
            let origin = Origin::of(&next);
            self.until_done("unparking an event", || {
                park::unpark(&self.pool, group, &origin)
            })
            .await;
        }
        self.until_done("forgetting a park", || {
            park::forget(&self.pool, group, key, &release.of)
        })
        .await;
        parks.remove(key);
        outcome
    }

    /// Repeats `attempt` with backoff until it succeeds: for what may wait but is never
    /// skipped (a dead letter's publication, a statement of the parking).
    async fn until_done<T, E, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let mut delays = self.backoff();
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(e) => {
                    let delay = delays.next().unwrap_or(self.config.max_backoff);
                    tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The consumer span of a delivery, a child of the span that published it.
    fn span(&self, delivery: &Delivery) -> Span {
        let mut span = self.tracer.start(
            format!("handle {}", event_type(delivery)),
            SpanKind::Consumer,
            delivery.message.headers.get_str(header::TRACEPARENT),
        );
        span.set("messaging.consumer_group", self.config.group.clone());
        span.set("messaging.source", delivery.message.topic.clone());
        span.set("messaging.partition", i64::from(delivery.partition));
        span.set("messaging.offset", delivery.offset);
        span
    }

    /// [`Consumer::settle`], logged under the delivery's own span; it checks the delivery's key
    /// itself while the `parks` are unread. A dead letter parks its key.
    async fn settle_alone(&self, delivery: &Delivery, span: &Span, parks: &mut Parks) -> Outcome {
        let event_type = event_type(delivery);
        let log = tracing::info_span!("event", consumer = %self.config.group, event_type,
            partition = delivery.partition, offset = delivery.offset, trace_id = %span.trace_id());
        let outcome = self
            .settle(delivery, &span.traceparent(), parks.unread())
            .instrument(log)
            .await;
        if outcome == Outcome::DeadLettered && !delivery.message.key.is_empty() {
            parks.insert(&delivery.message.key, Origin::of(delivery));
        }
        outcome
    }

    /// Acknowledges a delivery, retrying until the broker takes the acknowledgement, and
    /// records its outcome.
    async fn finish(
        &self,
        subscription: &mut dyn Subscription,
        delivery: &Delivery,
        span: &mut Span,
        outcome: Outcome,
        started: Instant,
    ) {
        let mut delays = self.backoff();
        while let Err(e) = subscription.ack(delivery).await {
            let delay = delays.next().unwrap_or(self.config.max_backoff);
            tracing::warn!(error = %e, retry_in = ?delay, "acknowledging failed; retrying");
            tokio::time::sleep(delay).await;
        }
        self.record(delivery, span, outcome, started);
    }

    /// Records a delivery's outcome on its span and in the metrics.
    fn record(&self, delivery: &Delivery, span: &mut Span, outcome: Outcome, started: Instant) {
        span.set("outcome", outcome.as_str());
        if outcome == Outcome::DeadLettered {
            span.fail("dead-lettered");
        }
        let event_type = event_type(delivery);
        metrics::counter!("oms_events_total", "consumer" => self.config.group.clone(),
            "type" => event_type.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
        metrics::histogram!("oms_event_handling_seconds", "consumer" => self.config.group.clone())
            .record(started.elapsed().as_secs_f64());
        if let Some(behind) = delivery.behind {
            metrics::gauge!("oms_consumer_lag", "group" => self.config.group.clone(),
                "topic" => delivery.message.topic.clone(), "partition" => delivery.partition.to_string())
            .set(behind as f64);
        }
    }

    /// Applies the longest run from the start of `batch` that goes smoothly in one
    /// transaction, and returns its outcomes. It ends before a delivery that does not decode or
    /// was delivered too often, and before one that the handler or the database failed on.
    /// Fewer than two deliveries are left to the one-at-a-time way. While the `parks` are
    /// unread, the transaction checks the deliveries' keys, and `None` says one is parked.
    async fn apply_together(
        &self,
        batch: &[Delivery],
        spans: &[Span],
        parks: &Parks,
    ) -> Option<Vec<Outcome>> {
        if batch.len() < 2 {
            return Some(Vec::new());
        }
        let mut records = Vec::with_capacity(batch.len());
        for (delivery, span) in batch.iter().zip(spans) {
            if delivery.delivered > self.config.max_deliveries {
                break;
            }
            match EventRecord::from_delivery(delivery, self.codec.as_ref()).await {
                Ok(record) => records.push(record.traced(Some(&span.traceparent()))),
                Err(_) => break,
            }
        }
        let mut run = records.len();
        while run > 1 {
            match self.apply(&records[..run], parks.unread()).await {
                Ok(outcomes) => return Some(outcomes),
                Err(Unapplied::Parked) => return None,
                Err(Unapplied::Failed(fine, e)) => {
                    tracing::debug!(error = %e, run, fine, "a batch did not apply; shortening it");
                    run = fine;
                }
            }
        }
        Some(Vec::new())
    }

    /// Decodes and applies a delivery; the event the handler sees carries `traceparent`, the
    /// consumer span's, so that what it causes continues the trace from there. With `check`, a
    /// delivery whose key turns out to be parked is parked too, never applied or dead-lettered.
    async fn settle(&self, delivery: &Delivery, traceparent: &str, check: bool) -> Outcome {
        if delivery.delivered > self.config.max_deliveries {
            let reason = format!(
                "delivered {} times without being acknowledged",
                delivery.delivered
            );
            return self
                .set_aside(delivery, &reason, delivery.delivered, check)
                .await;
        }
        let mut delays = self.backoff();
        let record = loop {
            match EventRecord::from_delivery(delivery, self.codec.as_ref()).await {
                Ok(record) => break record.traced(Some(traceparent)),
                Err(e) if e.is_transient() => {
                    let delay = delays.next().unwrap_or(self.config.max_backoff);
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot decode yet; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return self.set_aside(delivery, &e.to_string(), 1, check).await,
            }
        };
        let mut delays = self.backoff();
        let mut poison_attempts = 0;
        loop {
            match self.apply(std::slice::from_ref(&record), check).await {
                Ok(outcomes) => return outcomes[0],
                Err(Unapplied::Parked) => return self.park(delivery).await,
                Err(Unapplied::Failed(_, HandlerError::Poison(reason))) => {
                    poison_attempts += 1;
                    tracing::warn!(event_id = %record.event_id, attempt = poison_attempts, %reason, "event rejected");
                    if poison_attempts >= self.config.max_attempts {
                        return self
                            .set_aside(delivery, &reason, poison_attempts, check)
                            .await;
                    }
                }
                Err(Unapplied::Failed(_, HandlerError::Transient(reason))) => {
                    tracing::warn!(event_id = %record.event_id, %reason, "transient failure; retrying");
                }
            }
            metrics::counter!("oms_event_retries_total", "consumer" => self.config.group.clone())
                .increment(1);
            tokio::time::sleep(delays.next().unwrap_or(self.config.max_backoff)).await;
        }
    }

    /// One attempt at `records`, in order, in one transaction: the inbox skips those already
    /// handled (a repeat within `records` too), unless the handler deduplicates them itself;
    /// the handler applies the others. Commits all or nothing; on failure, also says how many
    /// records before the failing one went fine. With `check`, it first makes sure that no key
    /// of theirs is parked, in the statement that records them in the inbox.
    async fn apply(&self, records: &[EventRecord], check: bool) -> Result<Vec<Outcome>, Unapplied> {
        let at_start = |e: sqlx::Error| Unapplied::Failed(0, HandlerError::from(e));
        let mut tx = self.pool.begin().await.map_err(at_start)?;
        let ids: Vec<Uuid> = records.iter().map(|r| r.event_id).collect();
        let keys: Vec<&str> = match check {
            true => records.iter().map(|r| r.key.as_str()).collect(),
            false => Vec::new(),
        };
        let group = &self.config.group;
        let (parked, inserted) = if self.handler.deduplicates() {
            let parked = check
                && !park::parked_among(&mut *tx, group, &keys)
                    .await
                    .map_err(at_start)?
                    .is_empty();
            (parked, ids)
        } else {
            // Nothing is recorded when a key is parked.
            sqlx::query_as(
                "WITH parked AS (SELECT FROM parked_keys WHERE consumer = $1 AND key = ANY($3) \
                 LIMIT 1), new AS (INSERT INTO inbox (consumer, event_id) \
                 SELECT $1, unnest($2::uuid[]) WHERE NOT EXISTS (SELECT FROM parked) \
                 ON CONFLICT DO NOTHING RETURNING event_id) \
                 SELECT EXISTS (SELECT FROM parked), ARRAY(SELECT event_id FROM new)",
            )
            .bind(group)
            .bind(&ids)
            .bind(&keys)
            .fetch_one(&mut *tx)
            .await
            .map_err(at_start)?
        };
        if parked {
            return Err(Unapplied::Parked);
        }
        let mut first_time: HashSet<Uuid> = inserted.into_iter().collect();
        let mut outcomes = Vec::with_capacity(records.len());
        // The new events, and where each is in `records`.
        let mut new = Vec::with_capacity(records.len());
        let mut at = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            if first_time.remove(&record.event_id) {
                new.push(record);
                at.push(i);
                outcomes.push(Outcome::Handled);
            } else {
                outcomes.push(Outcome::Duplicate);
            }
        }
        self.handler
            .handle_all(&mut tx, &new)
            .await
            // A handler that says more went fine than it was given is taken to have done none.
            .map_err(|(fine, e)| Unapplied::Failed(at.get(fine).copied().unwrap_or(0), e))?;
        tx.commit().await.map_err(at_start)?;
        if !new.is_empty() {
            self.wake.wake();
            self.handler.after_commit(&new).await;
        }
        Ok(outcomes)
    }

    /// Dead-letters `delivery`, unless (asked only with `check`) its key turns out to be parked
    /// already: then the delivery is parked behind the letter that came first.
    async fn set_aside(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
        check: bool,
    ) -> Outcome {
        if check && !delivery.message.key.is_empty() {
            let (group, keys) = (&self.config.group, [delivery.message.key.as_str()]);
            let parked = self
                .until_done("reading a parked key", || {
                    park::parked_among(&self.pool, group, &keys)
                })
                .await;
            if !parked.is_empty() {
                return self.park(delivery).await;
            }
        }
        self.dead_letter(delivery, reason, attempts).await
    }

    /// Publishes the delivery, untouched, to the dead-letter topic with why and where from, and
    /// parks its key behind it. Retried until the broker takes it: a dead letter is never
    /// dropped.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str, attempts: u32) -> Outcome {
        let mut message = delivery.message.clone();
        message.topic = dlq_topic(&delivery.message.topic);
        let headers = &mut message.headers;
        headers.insert(dlq_header::REASON, reason);
        headers.insert(dlq_header::ORIGIN_TOPIC, delivery.message.topic.clone());
        headers.insert(dlq_header::ORIGIN_PARTITION, delivery.partition.to_string());
        headers.insert(dlq_header::ORIGIN_OFFSET, delivery.offset.to_string());
        headers.insert(dlq_header::CONSUMER, self.config.group.clone());
        headers.insert(dlq_header::ATTEMPTS, attempts.to_string());
        tracing::error!(topic = %delivery.message.topic, partition = delivery.partition,
            offset = delivery.offset, %reason, "dead-lettering an event");
        self.until_done("dead-lettering", || self.publish_dead_letter(&message))
            .await;
        metrics::counter!("oms_dead_letters_total", "topic" => delivery.message.topic.clone())
            .increment(1);
        let key = &delivery.message.key;
        if !key.is_empty() {
            let (group, origin) = (&self.config.group, Origin::of(delivery));
            self.until_done("parking a key", || {
                park::park_key(&self.pool, group, key, &origin)
            })
            .await;
        }
        Outcome::DeadLettered
    }

    async fn publish_dead_letter(&self, message: &Message) -> Result<()> {
        let spec = crate::bus::TopicSpec::new(&message.topic, 1);
        self.bus.ensure_topics(std::slice::from_ref(&spec)).await?;
        self.bus.publish(vec![message.clone()]).await
    }
}

/// Why [`Consumer::apply`] applied nothing.
enum Unapplied {
    /// A key among the events is parked (checked only when asked).
    Parked,
    /// The handler or the database failed on the event at this index; those before it went
    /// fine.
    Failed(usize, HandlerError),
}

/// How many dead letters `topic` has, as its dead-letter topic's broker counts them.
pub async fn dead_letter_count(bus: &dyn EventBus, topic: &str) -> Result<u64> {
    let dlq = dlq_topic(topic);
    bus.ensure_topics(&[crate::bus::TopicSpec::new(&dlq, 1)])
        .await?;
    bus.kept(&dlq).await
}

/// Reads every dead letter of `topic`, without moving any group's offsets. The broker says how
/// many it keeps, so an empty dead-letter topic is read at once; `idle` bounds the wait for each
/// letter after the first (whose wait covers joining the broker), and a letter that does not come
/// in time is an error, never a shorter list.
pub async fn dead_letters(
    bus: &dyn EventBus,
    topic: &str,
    idle: Duration,
) -> Result<Vec<Delivery>> {
    let dlq = dlq_topic(topic);
    let kept = dead_letter_count(bus, topic).await?;
    let mut letters = Vec::new();
    if kept == 0 {
        return Ok(letters);
    }
    let mut subscription = bus.browse(std::slice::from_ref(&dlq)).await?;
    let mut wait = idle + Duration::from_secs(10);
    while (letters.len() as u64) < kept {
        let next = tokio::time::timeout(wait, subscription.next())
            .await
            .map_err(|_| {
                Error::Bus(format!(
                    "{dlq} keeps {kept} messages, and only {} could be read",
                    letters.len()
                ))
            })?;
        letters.push(next?);
        wait = idle;
    }
    Ok(letters)
}

/// Sends dead letters back to the topic they came from, without their `dlq-*` headers, to
/// release what they parked ([`park`]). Redriven, a letter is tried afresh by the group that
/// dead-lettered it, and skipped by those that already handled it (by event id); discarded, it
/// is applied by none.
pub async fn release(bus: &dyn EventBus, letters: &[Delivery], action: Action) -> Result<usize> {
    let messages: Vec<Message> = letters
        .iter()
        .map(|letter| park::released(letter, action))
        .collect();
    let count = messages.len();
    bus.publish(messages).await?;
    Ok(count)
}
