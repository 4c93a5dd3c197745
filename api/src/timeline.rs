//! The saga timeline: every event of an order's saga, from every topic, in the order they
//! happened, with who wrote them, what caused them and in which trace.
//!
//! The order service cannot read the other services' databases, and should not: it reads their
//! topics instead. A consumer of its own ([`Recorder`], group `timeline.group`) records each event
//! of the configured topics in `saga_events`, keyed by the event's id, so a redelivered event is
//! recorded once; that key is its deduplication, and the loop keeps no inbox rows for it. The
//! table is a projection: emptied, a rewind of the group rebuilds it.
//! The live stream an admin watches reads the same table, so a reconnecting client resumes from
//! the last event it saw and misses nothing.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oms_saga::{
    consumer::{ConsumerConfig, Handler, HandlerError},
    event::{self, Event, EventRecord, PaymentActionRequired, ProductPriced},
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimelineConfig {
    /// Records the timeline; off, the order service only reads what is recorded.
    pub enabled: bool,
    /// The consumer: its group, and the topics whose events make up the sagas.
    pub consumer: ConsumerConfig,
    /// How often a live stream looks for new events.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consumer: ConsumerConfig {
                group: "order-timeline".into(),
                topics: vec![
                    event::ORDERS_TOPIC.into(),
                    event::INVENTORY_TOPIC.into(),
                    event::PAYMENTS_TOPIC.into(),
                    event::NOTIFICATIONS_TOPIC.into(),
                ],
                ..ConsumerConfig::default()
            },
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// One event of a saga, as the timeline shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The order of recording; a live stream's event id.
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub topic: String,
    /// The service that wrote it: `orders`, `inventory`, `payments` or `notifications`.
    pub producer: String,
    pub occurred_at: DateTime<Utc>,
    /// The saga: the id of its first event.
    pub correlation_id: Uuid,
    /// The event this one answers, if any.
    pub causation_id: Option<Uuid>,
    /// The trace it belongs to (Zipkin shows it under this id).
    pub trace_id: Option<String>,
    /// Whether it undoes an earlier step: a cancellation, stock released.
    #[sqlx(skip)]
    pub compensation: bool,
    /// The order it is about.
    pub order_id: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Records every saga event it is given; a batch of them in one statement, skipping those
/// already recorded. The catalog's `ProductPriced`, which shares the inventory's topic but is
/// about a product rather than an order, is no part of a saga. A payment's client secret is
/// its order's owner's alone: the timeline, which admins read too, keeps the event without it.
#[derive(Debug)]
pub struct Recorder;

#[async_trait]
impl Handler for Recorder {
    fn deduplicates(&self) -> bool {
        true
    }

    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        self.handle_all(tx, &[event]).await.map_err(|(_, e)| e)
    }

    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        let events: Vec<&EventRecord> = events
            .iter()
            .copied()
            .filter(|e| e.event_type != ProductPriced::TYPE)
            .collect();
        let events = events.as_slice();
        if events.is_empty() {
            return Ok(());
        }
        fn column<'a, T>(
            events: &[&'a EventRecord],
            field: impl Fn(&'a EventRecord) -> T,
        ) -> Vec<T> {
            events.iter().map(|e| field(e)).collect()
        }
        sqlx::query(
            "INSERT INTO saga_events (event_id, order_key, event_type, topic, producer, \
             occurred_at, correlation_id, causation_id, trace_id, payload) \
             SELECT event_id, order_key, event_type, topic, producer, occurred_at, correlation_id, \
             causation_id, trace_id, payload FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::timestamptz[], $7::uuid[], $8::uuid[], $9::text[], $10::jsonb[]) \
             WITH ORDINALITY AS e(event_id, order_key, event_type, topic, producer, occurred_at, \
             correlation_id, causation_id, trace_id, payload, n) ORDER BY n \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(column(events, |e| e.event_id))
        .bind(column(events, |e| e.key.as_str()))
        .bind(column(events, |e| e.event_type.as_str()))
        .bind(column(events, |e| e.topic.as_str()))
        .bind(column(events, |e| event::producer_of(&e.event_type)))
        .bind(column(events, |e| e.occurred_at))
        .bind(column(events, |e| e.correlation_id))
        .bind(column(events, |e| e.causation_id))
        .bind(column(events, |e| e.traceparent.as_deref().and_then(event::trace_id)))
        .bind(column(events, |e| redacted(e)).iter().map(|p| p.as_ref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(|e| (0, e.into()))?;
        Ok(())
    }
}

/// What the timeline keeps of an event's payload.
fn redacted(event: &EventRecord) -> std::borrow::Cow<'_, serde_json::Value> {
    if event.event_type != PaymentActionRequired::TYPE {
        return std::borrow::Cow::Borrowed(&event.payload);
    }
    let mut payload = event.payload.clone();
    if let Some(fields) = payload.as_object_mut() {
        fields.remove("clientSecret");
    }
    std::borrow::Cow::Owned(payload)
}

const COLUMNS: &str = "seq, event_id, event_type, topic, producer, occurred_at, correlation_id, \
     causation_id, trace_id, order_key AS order_id, payload";

fn marked(mut entries: Vec<Entry>) -> Vec<Entry> {
    for entry in &mut entries {
        entry.compensation = event::is_compensation(&entry.event_type);
    }
    entries
}

/// An order's saga, in the order it happened.
pub async fn of_order(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM saga_events WHERE order_key = $1 ORDER BY occurred_at, seq"
    ))
    .bind(order_id.to_string())
    .fetch_all(pool)
    .await
    .map(marked)
}

/// Up to `limit` events recorded after `seq`, in the order they were recorded.
pub async fn after(pool: &PgPool, seq: i64, limit: i64) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM saga_events WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(seq)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map(marked)
}

/// The last event recorded so far: where a new live stream starts.
pub async fn last_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM saga_events")
        .fetch_one(pool)
        .await
}
