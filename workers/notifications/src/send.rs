//! Sending, at most once per event. A round claims waiting notifications, taking them off the
//! queue of waiting ones (`notifications_pending`) and committing them as SENDING before
//! anything goes out; only then does the [`Sender`] run. A crash after the claim leaves a
//! notification SENDING, never sent twice: for a customer a missing message is better than a
//! repeated one, and SENDING rows say exactly which messages may be missing. A sent
//! notification becomes SENT and writes NotificationSent through the outbox; a refused one
//! becomes FAILED with the sender's reason. A round records these for all its notifications in
//! one transaction, after sending them.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use oms_saga::{
    event::{Channel, EventRecord, NotificationSent},
    outbox,
    plan::PlannedPerCall,
    schedule::Periodic,
    service::BoxError,
};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::SendingConfig;

/// A notification as stored, sent and listed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub kind: String,
    pub channel: String,
    pub message: String,
    /// `CUSTOMER`, or `ADMINS` for what the shop's admins must look at.
    pub audience: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl Notification {
    pub fn channel(&self) -> Channel {
        if self.channel == "SMS" {
            Channel::Sms
        } else {
            Channel::Email
        }
    }
}

/// Delivers a message to a customer (an email or SMS gateway in production).
#[async_trait]
pub trait Sender: std::fmt::Debug + Send + Sync + 'static {
    /// Sends it, or says why it was refused.
    async fn send(&self, notification: &Notification) -> Result<(), String>;
}

/// The default sender: the message is logged, and the database row is its record.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSender;

#[async_trait]
impl Sender for LogSender {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        tracing::info!(customer_id = %n.customer_id, order_id = %n.order_id, channel = %n.channel,
            audience = %n.audience, kind = %n.kind, message = %n.message, "notification sent");
        Ok(())
    }
}

/// Sends what waits.
#[derive(Debug)]
pub struct Dispatch {
    pub pool: PgPool,
    pub sender: Arc<dyn Sender>,
    pub topic: String,
    pub config: SendingConfig,
}

#[async_trait]
impl Periodic for Dispatch {
    fn name(&self) -> &'static str {
        "send_notifications"
    }

    fn interval(&self) -> Duration {
        self.config.poll_interval
    }

    /// Notifications wait from the consumer's commit: it wakes the round that sends them.
    fn woken(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        usize::try_from(self.config.batch_size).unwrap_or(1)
    }

    async fn round(&self) -> Result<usize, BoxError> {
        // The claim commits on its own: from here on, these are never sent again. The rows are
        // looked up by id, planned at each call with the table as it is.
        let mut claimed: Vec<(Notification, Uuid, Option<String>)> =
            sqlx::query_as::<_, ClaimedRow>(
                "WITH queued AS (DELETE FROM notifications_pending WHERE id IN ( \
               SELECT id FROM notifications_pending ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
               RETURNING id) \
             UPDATE notifications SET state = 'SENDING' \
             WHERE id = ANY(ARRAY(SELECT id FROM queued)) \
             RETURNING id, event_id, order_id, customer_id, kind, channel, message, audience, \
               state, created_at, sent_at, correlation_id, traceparent",
            )
            .planned_per_call()
            .bind(self.config.batch_size)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| (row.notification, row.correlation_id, row.traceparent))
            .collect();
        if claimed.is_empty() {
            return Ok(0);
        }
        claimed.sort_by_key(|(n, ..)| (n.created_at, n.id));
        let mut outcomes = Outcomes::default();
        for (notification, correlation_id, traceparent) in &claimed {
            let outcome = self.sender.send(notification).await;
            let result = if outcome.is_ok() { "sent" } else { "failed" };
            metrics::counter!("oms_notifications_total", "channel" => notification.channel.clone(), "outcome" => result)
                .increment(1);
            outcomes.ids.push(notification.id);
            match outcome {
                Ok(()) => {
                    let at = Utc::now().trunc_subsecs(3);
                    let told = NotificationSent {
                        notification_id: notification.id,
                        order_id: notification.order_id,
                        customer_id: notification.customer_id,
                        channel: notification.channel(),
                        kind: notification.kind.clone(),
                        causation_id: notification.event_id,
                        at,
                    };
                    outcomes.states.push("SENT");
                    outcomes.sent_at.push(Some(at));
                    outcomes.errors.push(None);
                    outcomes.told.push(
                        EventRecord::new(&self.topic, &told)
                            .correlated(*correlation_id)
                            .caused_by(notification.event_id)
                            .traced(traceparent.as_deref()),
                    );
                }
                Err(reason) => {
                    tracing::warn!(notification_id = %notification.id, %reason, "the sender refused a notification");
                    outcomes.states.push("FAILED");
                    outcomes.sent_at.push(None);
                    outcomes.errors.push(Some(reason));
                }
            }
        }
        outcomes.record(&self.pool).await?;
        Ok(claimed.len())
    }
}

/// What became of a round's notifications, column by column as they are written: SENT at a
/// time, or FAILED with the sender's reason.
#[derive(Debug, Default)]
struct Outcomes {
    ids: Vec<Uuid>,
    states: Vec<&'static str>,
    sent_at: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<String>>,
    /// The NotificationSent of each one sent.
    told: Vec<EventRecord>,
}

impl Outcomes {
    /// Writes them in one transaction: one commit a round, not one a notification. Until it
    /// commits, the round's notifications stay SENDING, and a crash before it leaves them so:
    /// never sent twice, and SENDING says which messages may be missing, as after a crash in
    /// the middle of sending.
    async fn record(&self, pool: &PgPool) -> Result<(), BoxError> {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "UPDATE notifications SET state = o.state, sent_at = o.sent_at, error = o.error \
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[]) \
             AS o(id, state, sent_at, error) WHERE notifications.id = o.id",
        )
        .planned_per_call()
        .bind(&self.ids)
        .bind(&self.states)
        .bind(&self.sent_at)
        .bind(&self.errors)
        .execute(&mut *tx)
        .await?;
        outbox::enqueue_all(&mut tx, &self.told).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    notification: Notification,
    correlation_id: Uuid,
    traceparent: Option<String>,
}
