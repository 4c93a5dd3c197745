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
use oms_saga::{event::OrderStatus, schedule::Periodic, service::BoxError};
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

/// Starts the clock of a newly reserved order, on the transaction that reserves it.
pub async fn start(
    tx: &mut PgConnection,
    order_id: Uuid,
    timeout: Duration,
    cause: Uuid,
    traceparent: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payment_deadlines (order_id, due_at, cause, traceparent) \
         VALUES ($1, now() + make_interval(secs => $2), $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(timeout.as_secs_f64())
    .bind(cause)
    .bind(traceparent)
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
        let mut cancelled = Vec::new();
        for (order_id, status, cause, traceparent) in &due {
            // Paid, or cancelled by someone else: the deadline ends without effect.
            if status != OrderStatus::Reserved.as_str() {
                continue;
            }
            let origin = Origin {
                actor: None,
                traceparent: traceparent.clone(),
                cause: Some(*cause),
            };
            let to = OrderStatus::Cancelled;
            let reason = Some(PAYMENT_TIMEOUT.to_owned());
            // Locked and RESERVED: the move is legal, so any error is the database's.
            let order = store::change_status_in(
                &mut tx,
                &self.orders_topic,
                *order_id,
                to,
                reason,
                &origin,
            )
            .await?;
            cancelled.push(order);
        }
        let ids: Vec<Uuid> = due.iter().map(|(id, ..)| *id).collect();
        sqlx::query("DELETE FROM payment_deadlines WHERE order_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for order in &cancelled {
            tracing::info!(order_id = %order.id, "payment deadline passed; order cancelled");
            self.cache.put(order).await;
        }
        Ok(due.len())
    }
}
