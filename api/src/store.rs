//! The orders database. Every change writes its event to the outbox in the same transaction.

use chrono::{DateTime, SubsecRound, Utc};
use oms_saga::{
    event::{EventRecord, OrderCancelled, OrderPlaced, OrderStatusChanged},
    outbox,
    schedule::Wake,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use crate::{
    domain::{self, NewOrder, OrderLine, OrderStatus},
    error::{Error, Result},
};

/// An order as the API returns it and the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    #[schema(value_type = String, example = "39.98")]
    pub total: Decimal,
    /// Why the order reached its current status, when someone said (a cancellation reason).
    pub status_reason: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: Uuid,
    status: String,
    items: Json<Vec<OrderLine>>,
    total: Decimal,
    status_reason: Option<String>,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for Order {
    type Error = Error;

    fn try_from(row: OrderRow) -> Result<Self> {
        let status = row
            .status
            .parse()
            .map_err(|e: String| Error::Database(sqlx::Error::Decode(e.into())))?;
        Ok(Self {
            id: row.id,
            customer_id: row.customer_id,
            status,
            items: row.items.0,
            total: row.total,
            status_reason: row.status_reason,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str =
    "id, customer_id, status, items, total, status_reason, version, created_at, updated_at";

/// Where a change comes from, carried into its event.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The user the gateway vouched for, if any.
    pub actor: Option<String>,
    /// The W3C trace context of the request.
    pub traceparent: Option<String>,
    /// The event that caused the change, when a saga worker makes it.
    pub cause: Option<Uuid>,
}

/// A client's Idempotency-Key, with a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// A filter and a page for listing orders.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub customer_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
    /// Orders older than this one (ids are time-ordered).
    pub after: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    orders_topic: String,
    wake: Wake,
}

impl Store {
    pub fn new(pool: PgPool, orders_topic: String) -> Self {
        Self {
            pool,
            orders_topic,
            wake: Wake::default(),
        }
    }

    /// Wakes `wake` (the outbox relay's) when a change and its events commit.
    pub fn waking(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes a new CREATED order and its OrderPlaced event. With an idempotency key, a repeat of
    /// the same request returns the first order (`true` = replayed).
    pub async fn place(
        &self,
        new: &NewOrder,
        idempotency: Option<&IdempotencyKey>,
        origin: &Origin,
    ) -> Result<(Order, bool)> {
        if let Some(key) = idempotency
            && let Some(order) = self.replay(new.customer_id, key).await?
        {
            return Ok((order, true));
        }
        let id = Uuid::now_v7();
        // Millisecond precision: what the database, the API and the event all keep alike.
        let placed_at = Utc::now().trunc_subsecs(3);
        let event = OrderPlaced {
            order_id: id,
            customer_id: new.customer_id,
            items: new.items.clone(),
            total: new.total(),
            placed_at,
            placed_by: origin.actor.clone(),
        };
        let record =
            EventRecord::new(&self.orders_topic, &event).traced(origin.traceparent.as_deref());
        let mut tx = self.pool.begin().await?;
        let row: OrderRow = sqlx::query_as(&format!(
            "INSERT INTO orders (id, customer_id, status, items, total, correlation_id, created_at, updated_at) \
             VALUES ($1, $2, 'CREATED', $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(new.customer_id)
        .bind(Json(&new.items))
        .bind(event.total)
        .bind(record.correlation_id)
        .bind(placed_at)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(key) = idempotency {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (scope, request_hash, order_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope) DO NOTHING",
            )
            .bind(scope(new.customer_id, key))
            .bind(&key.request_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                // A concurrent request with the same key won the race: answer with its order.
                tx.rollback().await?;
                return match self.replay(new.customer_id, key).await? {
                    Some(order) => Ok((order, true)),
                    None => Err(Error::Database(sqlx::Error::RowNotFound)),
                };
            }
        }
        let order = Order::try_from(row)?;
        outbox::enqueue(&mut tx, &record).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok((order, false))
    }

    /// The order a earlier request with this key placed, if any; an error if the key came with
    /// a different request.
    pub async fn replay(&self, customer_id: Uuid, key: &IdempotencyKey) -> Result<Option<Order>> {
        let found: Option<(Vec<u8>, Uuid)> =
            sqlx::query_as("SELECT request_hash, order_id FROM idempotency_keys WHERE scope = $1")
                .bind(scope(customer_id, key))
                .fetch_optional(&self.pool)
                .await?;
        match found {
            None => Ok(None),
            Some((hash, _)) if hash != key.request_hash => Err(Error::IdempotencyKeyReused {
                key: key.key.clone(),
            }),
            Some((_, order_id)) => self
                .get(order_id)
                .await?
                .map(Some)
                .ok_or(Error::NotFound(order_id)),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Order>> {
        let row: Option<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Order::try_from).transpose()
    }

    /// Newest first, keyset-paged by id.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Order>> {
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM orders \
             WHERE ($1::uuid IS NULL OR customer_id = $1) \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(query.customer_id)
        .bind(query.status.map(OrderStatus::as_str))
        .bind(query.after)
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// Moves an order through the state machine in a transaction of its own.
    pub async fn change_status(
        &self,
        id: Uuid,
        to: OrderStatus,
        reason: Option<String>,
        origin: &Origin,
    ) -> Result<Order> {
        let mut tx = self.pool.begin().await?;
        let order = change_status_in(&mut tx, &self.orders_topic, id, to, reason, origin).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok(order)
    }
}

/// Moves an order through the state machine on `tx` (an API request's transaction, or a saga
/// worker's, beside its inbox record) and writes OrderStatusChanged with it, and OrderCancelled
/// for a cancellation. The row lock serialises changes to one order, so its events enter the
/// outbox in order.
pub async fn change_status_in(
    tx: &mut PgConnection,
    orders_topic: &str,
    id: Uuid,
    to: OrderStatus,
    reason: Option<String>,
    origin: &Origin,
) -> Result<Order> {
    let current: Option<(String, Uuid)> =
        sqlx::query_as("SELECT status, correlation_id FROM orders WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (status, correlation_id) = current.ok_or(Error::NotFound(id))?;
    let from: OrderStatus = status
        .parse()
        .map_err(|e: String| Error::Database(sqlx::Error::Decode(e.into())))?;
    let to = domain::transition(from, to).map_err(|transition| Error::IllegalTransition {
        order_id: id,
        transition,
    })?;
    let row: OrderRow = sqlx::query_as(&format!(
        "UPDATE orders SET status = $2, status_reason = $3, version = version + 1, \
         updated_at = date_trunc('milliseconds', clock_timestamp()) \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(&reason)
    .fetch_one(&mut *tx)
    .await?;
    let order = Order::try_from(row)?;
    // Recorded as the transition is written: a transaction rolled back and retried would count
    // twice, which a latency histogram can bear.
    crate::stats::record_ended(&order);
    let in_saga = |record: EventRecord| {
        let record = record
            .correlated(correlation_id)
            .traced(origin.traceparent.as_deref());
        match origin.cause {
            Some(cause) => record.caused_by(cause),
            None => record,
        }
    };
    let changed = OrderStatusChanged {
        order_id: id,
        old_status: from,
        new_status: to,
        reason: reason.clone(),
        at: order.updated_at,
    };
    outbox::enqueue(tx, &in_saga(EventRecord::new(orders_topic, &changed))).await?;
    if to == OrderStatus::Cancelled {
        // The compensation trigger. Sent for every cancellation, not only of RESERVED or PAID
        // orders: the inventory may still be about to reserve a CREATED one, and it handles
        // one order's events in order, so this releases whatever that reservation took.
        let cancelled = OrderCancelled {
            order_id: id,
            customer_id: order.customer_id,
            previous_status: from,
            reason: reason.unwrap_or_else(|| "CANCELLED".to_owned()),
            // A paid order is refunded in full (simulated: the event is the record).
            refund: (from == OrderStatus::Paid).then_some(order.total),
            at: order.updated_at,
        };
        outbox::enqueue(tx, &in_saga(EventRecord::new(orders_topic, &cancelled))).await?;
    }
    Ok(order)
}

fn scope(customer_id: Uuid, key: &IdempotencyKey) -> String {
    format!("{customer_id}:{}", key.key)
}
