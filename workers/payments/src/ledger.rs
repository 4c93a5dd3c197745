//! The payment step's own record of each order's payment: what it owes, its PaymentIntent, and
//! where the money is. The provider's word is final, but this record is what makes the step
//! exactly-once: one intent per order, found again rather than made twice.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One order's payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    pub order_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub intent_id: Option<String>,
    pub state: String,
}

/// Records what a placed order owes; a second record of the same order changes nothing.
pub async fn owe(conn: &mut PgConnection, payment: &Payment) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payments (order_id, amount_minor, currency, payment_method) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment.order_id)
    .bind(payment.amount_minor)
    .bind(&payment.currency)
    .bind(&payment.payment_method)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Option<Payment>> {
    sqlx::query_as(
        "SELECT order_id, amount_minor, currency, payment_method, intent_id, state \
         FROM payments WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(conn)
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
