//! The payment step's own record of each order's payment: what it owes, its PaymentIntent, and
//! where the money is. The provider's word is final, but this record is what makes the step
//! exactly-once: one intent per order, found again rather than made twice.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Where an order's money is.
pub mod state {
    /// Owed; the provider not yet asked.
    pub const DUE: &str = "DUE";
    /// Held on the card, to be captured or released.
    pub const AUTHORIZED: &str = "AUTHORIZED";
    /// The customer must authenticate before the bank answers.
    pub const ACTION_REQUIRED: &str = "ACTION_REQUIRED";
    /// The card said no; nothing is held.
    pub const DECLINED: &str = "DECLINED";
    /// Released after the order was cancelled.
    pub const VOIDED: &str = "VOIDED";
    /// Taken: the order shipped.
    pub const CAPTURED: &str = "CAPTURED";
    /// Given back in full.
    pub const REFUNDED: &str = "REFUNDED";
}

/// One order's payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    pub order_id: Uuid,
    /// Whose order it is, and its saga (both unknown for payments recorded before they were kept).
    pub customer_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub intent_id: Option<String>,
    pub state: String,
}

const COLUMNS: &str = "order_id, customer_id, correlation_id, amount_minor, currency, \
     payment_method, intent_id, state";

/// Records what a placed order owes; a second record of the same order changes nothing.
pub async fn owe(conn: &mut PgConnection, payment: &Payment) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payments (order_id, customer_id, correlation_id, amount_minor, currency, \
         payment_method) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment.order_id)
    .bind(payment.customer_id)
    .bind(payment.correlation_id)
    .bind(payment.amount_minor)
    .bind(&payment.currency)
    .bind(&payment.payment_method)
    .execute(conn)
    .await?;
    Ok(())
}

/// The order's payment.
pub async fn get(conn: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Option<Payment>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await
}

/// The order's payment, locked until `conn`'s transaction ends: what the step does with one
/// order's money, it does one thing at a time (an event, a webhook, the reconciler).
pub async fn lock(conn: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Option<Payment>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await
}

/// The order of an intent, if it is one of ours.
pub async fn order_of(conn: impl PgExecutor<'_>, intent_id: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT order_id FROM payments WHERE intent_id = $1")
        .bind(intent_id)
        .fetch_optional(conn)
        .await
}

/// Up to `limit` orders whose payment waits for the customer, the longest waiting first.
pub async fn waiting(conn: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT order_id FROM payments WHERE state = 'ACTION_REQUIRED' \
         ORDER BY updated_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Keeps `intent_id` as the order's intent, committed on its own before the intent is used, unless
/// the order has one already; returns the one it has now.
pub async fn keep_intent(
    conn: impl PgExecutor<'_>,
    order_id: Uuid,
    intent_id: &str,
) -> sqlx::Result<String> {
    sqlx::query_scalar(
        "UPDATE payments SET intent_id = coalesce(intent_id, $2), updated_at = now() \
         WHERE order_id = $1 RETURNING intent_id",
    )
    .bind(order_id)
    .bind(intent_id)
    .fetch_one(conn)
    .await
}

pub async fn set_state(conn: &mut PgConnection, order_id: Uuid, state: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET state = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(state)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a webhook event as taken; `false` if it was taken before.
pub async fn take_webhook(conn: &mut PgConnection, id: &str, kind: &str) -> sqlx::Result<bool> {
    let taken = sqlx::query(
        "INSERT INTO webhook_events (id, type) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}
