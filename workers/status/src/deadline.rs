//! Payment deadlines. Reserving an order starts its clock, in the same transaction; an order
//! still RESERVED when its deadline passes is cancelled with PAYMENT_TIMEOUT, and that
//! cancellation releases its stock like any other. Deadlines are rows, so they outlive restarts,
//! and rounds claim them with `FOR UPDATE SKIP LOCKED`, so instances share them.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oms_api::{
    cache::OrderCache,
    store::{self, Origin, Store},
};
use oms_saga::{
    event::{EventRecord, OrderStatus},
    plan::PlannedPerCall,
    schedule::Periodic,
    service::BoxError,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// Why an unpaid order is cancelled.
pub const PAYMENT_TIMEOUT: &str = oms_saga::event::cancel_reason::PAYMENT_TIMEOUT;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentConfig {
    /// How long a reserved order has to be paid.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often due deadlines are looked for.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Deadlines fired per transaction.
    pub batch_size: i64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15 * 60),
            check_interval: Duration::from_secs(1),
            batch_size: 100,
        }
    }
}

/// Starts the clocks of newly reserved orders, each with the answer that reserved it, on the
/// transaction that reserves them.
pub async fn start_all(
    tx: &mut PgConnection,
    timeout: Duration,
    reserved: &[(Uuid, &EventRecord)],
) -> sqlx::Result<()> {
    if reserved.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO payment_deadlines (order_id, due_at, cause, traceparent) \
         SELECT order_id, now() + make_interval(secs => $4), cause, traceparent \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS d(order_id, cause, traceparent) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(reserved.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(reserved.iter().map(|(_, e)| e.event_id).collect::<Vec<_>>())
    .bind(
        reserved
            .iter()
            .map(|(_, e)| e.traceparent.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(timeout.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}

/// Fires due deadlines.
#[derive(Debug)]
pub struct PaymentDeadlines {
    pub store: Store,
    pub orders_topic: String,
    pub cache: Arc<OrderCache>,
    pub config: PaymentConfig,
}

#[async_trait]
impl Periodic for PaymentDeadlines {
    fn name(&self) -> &'static str {
        "payment_deadlines"
    }

    fn interval(&self) -> Duration {
        self.config.check_interval
    }

    fn batch_size(&self) -> usize {
        usize::try_from(self.config.batch_size).unwrap_or(1)
    }

    async fn round(&self) -> Result<usize, BoxError> {
        let mut tx = self.store.pool().begin().await?;
        // Locking the order too (not only the deadline) keeps a concurrent payment from landing
        // between reading RESERVED and cancelling; an order being changed right now is skipped
        // and looked at next round.
        let due: Vec<(Uuid, String, Uuid, Option<String>)> = sqlx::query_as(
            "SELECT d.order_id, o.status, d.cause, d.traceparent \
             FROM payment_deadlines d JOIN orders o ON o.id = d.order_id \
             WHERE d.due_at <= now() ORDER BY d.due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        // Paid, or cancelled by someone else: the deadline ends without effect.
        let changes: Vec<store::Change> = due
            .iter()
            .filter(|(_, status, ..)| status == OrderStatus::Reserved.as_str())
            .map(|(order_id, _, cause, traceparent)| store::Change {
                id: *order_id,
                to: OrderStatus::Cancelled,
                reason: Some(PAYMENT_TIMEOUT.to_owned()),
                origin: Origin {
                    actor: None,
                    traceparent: traceparent.clone(),
                    cause: Some(*cause),
                },
            })
            .collect();
        // Locked and RESERVED: every move is legal.
        let cancelled = store::change_status_all(&mut tx, &self.orders_topic, &changes)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Uuid> = due.iter().map(|(id, ..)| *id).collect();
        sqlx::query("DELETE FROM payment_deadlines WHERE order_id = ANY($1)")
            .planned_per_call()
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for order in &cancelled {
            tracing::info!(order_id = %order.id, "payment deadline passed; order cancelled");
        }
        self.cache.put_all(&cancelled).await;
        Ok(due.len())
    }
}
