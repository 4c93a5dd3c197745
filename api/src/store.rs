//! The orders database. Every change writes its event to the outbox in the same transaction.
//!
//! Orders placed without an idempotency key at the same time are written together: each joins a
//! queue, and a writer (two may write at once) takes everything queued and writes it in one
//! transaction, one statement per table (a group commit). Under load that turns a transaction,
//! two statements and a wait for the log's flush per order into the same per batch; alone, an
//! order is written at once, as before. The writes run in tasks of their own, so a client that
//! goes away fails no one else's order. A batch that fails is written again an order at a time,
//! so that one order's error is its own, unless the database was out of reach. A keyed
//! placement, which may have to answer with an earlier order instead, is written on its own.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, SubsecRound, Utc};
use oms_saga::{
    event::{
        EventRecord, OrderCancelled, OrderPlaced, OrderStatusChanged, RefundRequested,
        ShipmentRequested,
    },
    identity::Caller,
    outbox,
    plan::PlannedPerCall,
    schedule::Wake,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, types::Json};
use tokio::sync::{Semaphore, oneshot};
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
    /// ISO 4217: the currency of the total and of every line's price.
    #[schema(example = "USD")]
    pub currency: String,
    /// What pays for it: the payment provider's payment method.
    pub payment_method: Option<String>,
    /// Why the order reached its current status, when someone said (a cancellation reason).
    pub status_reason: Option<String>,
    /// Why the payment provider would not take the money when the order was to ship; the
    /// order stays PAID with it until it ships or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_issue: Option<String>,
    /// While the customer must authenticate the payment (3-D Secure): what their browser needs
    /// to do it. Shown to the order's owner only ([`Order::seen_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_client_secret: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// The order as `caller` may see it: the payment's client secret is its owner's alone.
    pub fn seen_by(mut self, caller: Caller) -> Self {
        if caller != Caller::Customer(self.customer_id) {
            self.payment_client_secret = None;
        }
        self
    }
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: Uuid,
    status: String,
    items: Json<Vec<OrderLine>>,
    total: Decimal,
    currency: String,
    payment_method: Option<String>,
    status_reason: Option<String>,
    payment_issue: Option<String>,
    payment_client_secret: Option<String>,
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
            currency: row.currency,
            payment_method: row.payment_method,
            status_reason: row.status_reason,
            payment_issue: row.payment_issue,
            payment_client_secret: row.payment_client_secret,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str = "id, customer_id, status, items, total, currency, payment_method, \
     status_reason, payment_issue, payment_client_secret, version, created_at, updated_at";

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
    placements: Arc<Placements>,
    /// How long an idempotency key answers for its first request; after it, the key is free.
    idempotency_ttl: std::time::Duration,
}

/// How many batches of placements may be written at once: one fills while another commits.
const PLACEMENT_WRITERS: usize = 2;
/// The most orders one placement transaction writes.
const MAX_PLACEMENT_BATCH: usize = 256;

/// A new order as it is written: its row and its OrderPlaced.
#[derive(Debug)]
struct Created {
    id: Uuid,
    new: NewOrder,
    placed_at: DateTime<Utc>,
    record: EventRecord,
}

/// An order waiting to be written, and where its outcome goes.
#[derive(Debug)]
struct Placement {
    created: Created,
    done: oneshot::Sender<Result<Order>>,
}

/// The queue of placements and the permits to write them.
#[derive(Debug)]
struct Placements {
    waiting: Mutex<Vec<Placement>>,
    writers: Semaphore,
}

impl Store {
    pub fn new(pool: PgPool, orders_topic: String) -> Self {
        Self {
            pool,
            orders_topic,
            wake: Wake::default(),
            placements: Arc::new(Placements {
                waiting: Mutex::new(Vec::new()),
                writers: Semaphore::new(PLACEMENT_WRITERS),
            }),
            idempotency_ttl: crate::config::IDEMPOTENCY_TTL,
        }
    }

    /// Keys answer for their first request for `ttl` (24 hours by default, as Stripe's do); a
    /// key used again after that is a new request.
    pub fn keeping_keys_for(mut self, ttl: std::time::Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
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
            currency: new.currency.clone(),
            payment_method: Some(new.payment_method.clone()),
        };
        let record =
            EventRecord::new(&self.orders_topic, &event).traced(origin.traceparent.as_deref());
        let created = Created {
            id,
            new: new.clone(),
            placed_at,
            record,
        };
        let Some(key) = idempotency else {
            return Ok((self.place_together(created).await?, false));
        };
        let mut tx = self.pool.begin().await?;
        let order = insert_orders(&mut tx, &[&created]).await?.remove(0);
        // A key past its time is taken over, as if it had never been used.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, request_hash, order_id) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
             order_id = EXCLUDED.order_id, created_at = now() \
             WHERE idempotency_keys.created_at <= now() - make_interval(secs => $4)",
        )
        .bind(scope(new.customer_id, key))
        .bind(&key.request_hash)
        .bind(id)
        .bind(self.idempotency_ttl.as_secs_f64())
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
        outbox::enqueue(&mut tx, &created.record).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok((order, false))
    }

    /// Queues `created` and waits for it to be written, together with whatever else is queued
    /// when a writer gets to it.
    async fn place_together(&self, created: Created) -> Result<Order> {
        let (done, outcome) = oneshot::channel();
        self.placements
            .waiting
            .lock()
            .expect("the placement queue is never poisoned")
            .push(Placement { created, done });
        // A task of its own, which goes on if this request's client goes away: the batch it
        // writes may hold others' orders, and this one is never left in the queue.
        let store = self.clone();
        tokio::spawn(async move { store.write_waiting().await });
        outcome.await.unwrap_or_else(|_| {
            Err(Error::Database(sqlx::Error::Protocol(
                "the order's write was abandoned".into(),
            )))
        })
    }

    /// Once a writer's permit is free, writes whatever is queued: nothing, if the writers before
    /// took it all.
    async fn write_waiting(&self) {
        let Ok(_permit) = self.placements.writers.acquire().await else {
            return;
        };
        let batch: Vec<Placement> = {
            let mut waiting = self
                .placements
                .waiting
                .lock()
                .expect("the placement queue is never poisoned");
            let take = waiting.len().min(MAX_PLACEMENT_BATCH);
            waiting.drain(..take).collect()
        };
        if !batch.is_empty() {
            self.write_placements(batch).await;
        }
    }

    /// Writes `batch` in one transaction and tells each placement its order. If that fails,
    /// writes them one at a time, unless the database could not be reached: then each is told
    /// so at once, rather than after the attempts of those before it.
    async fn write_placements(&self, batch: Vec<Placement>) {
        metrics::histogram!("oms_orders_placed_per_transaction").record(batch.len() as f64);
        if batch.len() > 1 {
            let created: Vec<&Created> = batch.iter().map(|p| &p.created).collect();
            match self.insert_placed(&created).await {
                Ok(orders) => {
                    for (placement, order) in batch.into_iter().zip(orders) {
                        let _ = placement.done.send(Ok(order));
                    }
                    return;
                }
                Err(e) if e.is_database_unavailable() => {
                    for placement in batch {
                        let unreachable = std::io::Error::other(e.to_string());
                        let _ = placement
                            .done
                            .send(Err(Error::Database(sqlx::Error::Io(unreachable))));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, orders = batch.len(), "placing orders together failed; placing them one by one");
                }
            }
        }
        for placement in batch {
            let outcome = self.insert_placed(&[&placement.created]).await;
            let _ = placement
                .done
                .send(outcome.map(|mut orders| orders.remove(0)));
        }
    }

    /// Inserts `created` and their OrderPlaced events in one transaction.
    async fn insert_placed(&self, created: &[&Created]) -> Result<Vec<Order>> {
        let mut tx = self.pool.begin().await?;
        let orders = insert_orders(&mut tx, created).await?;
        let records: Vec<&EventRecord> = created.iter().map(|c| &c.record).collect();
        outbox::enqueue_all(&mut tx, &records).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok(orders)
    }

    /// The order an earlier request with this key placed within the key's time, if any; an error
    /// if the key came with a different request.
    pub async fn replay(&self, customer_id: Uuid, key: &IdempotencyKey) -> Result<Option<Order>> {
        let found: Option<(Vec<u8>, Uuid)> = sqlx::query_as(
            "SELECT request_hash, order_id FROM idempotency_keys \
                 WHERE scope = $1 AND created_at > now() - make_interval(secs => $2)",
        )
        .bind(scope(customer_id, key))
        .bind(self.idempotency_ttl.as_secs_f64())
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

    /// The orders of `ids` that exist, in no particular order.
    pub async fn get_all(&self, ids: &[Uuid]) -> Result<Vec<Order>> {
        let rows: Vec<OrderRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = ANY($1)"))
                .planned_per_call()
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Order::try_from).collect()
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
        .planned_per_call()
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

/// What became of an admin's status change.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// The order moved.
    Moved(Order),
    /// The move needs the payment step first (a capture to ship, a refund): it is asked for,
    /// and the order moves when the step answers.
    Requested(Order),
}

impl Store {
    /// An admin's status change. Shipping a paid order captures its payment first, and
    /// refunding a shipped or completed one refunds the capture: those write the request
    /// (`ShipmentRequested`, `RefundRequested`) for the payment step and leave the order where it
    /// is. An order with nothing to pay for (placed before orders named a payment method), and
    /// every other move, moves at once.
    pub async fn change_status_as_admin(
        &self,
        id: Uuid,
        to: OrderStatus,
        reason: Option<String>,
        origin: &Origin,
    ) -> Result<Changed> {
        if !matches!(to, OrderStatus::Shipped | OrderStatus::Refunded) {
            return self
                .change_status(id, to, reason, origin)
                .await
                .map(Changed::Moved);
        }
        let mut tx = self.pool.begin().await?;
        let row: Option<OrderRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let order = Order::try_from(row.ok_or(Error::NotFound(id))?)?;
        domain::transition(order.status, to).map_err(|transition| Error::IllegalTransition {
            order_id: id,
            transition,
        })?;
        if order.payment_method.is_none() {
            let moved =
                change_status_in(&mut tx, &self.orders_topic, id, to, reason, origin).await?;
            tx.commit().await?;
            self.wake.wake();
            return Ok(Changed::Moved(moved));
        }
        let correlation_id: Uuid =
            sqlx::query_scalar("SELECT correlation_id FROM orders WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let at = Utc::now().trunc_subsecs(3);
        let requested_by = origin.actor.clone();
        let record = if to == OrderStatus::Shipped {
            EventRecord::new(
                &self.orders_topic,
                &ShipmentRequested {
                    order_id: id,
                    requested_by,
                    at,
                },
            )
        } else {
            EventRecord::new(
                &self.orders_topic,
                &RefundRequested {
                    order_id: id,
                    reason,
                    requested_by,
                    at,
                },
            )
        };
        let record = record
            .correlated(correlation_id)
            .traced(origin.traceparent.as_deref());
        outbox::enqueue(&mut tx, &record).await?;
        tx.commit().await?;
        self.wake.wake();
        Ok(Changed::Requested(order))
    }
}

/// Keeps what the payment step said of an order on it: why a capture failed, or the client
/// secret of a payment that waits for the customer. Only while the order is `while_in`:
/// an answer that arrives after the order moved on has nothing left to say. Returns whether
/// it was kept.
pub async fn note_payment(
    tx: &mut PgConnection,
    id: Uuid,
    while_in: OrderStatus,
    issue: Option<&str>,
    client_secret: Option<&str>,
) -> Result<bool> {
    let noted = sqlx::query(
        "UPDATE orders SET payment_issue = coalesce($3, payment_issue), \
         payment_client_secret = coalesce($4, payment_client_secret), version = version + 1, \
         updated_at = date_trunc('milliseconds', clock_timestamp()) \
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(while_in.as_str())
    .bind(issue)
    .bind(client_secret)
    .execute(&mut *tx)
    .await?;
    Ok(noted.rows_affected() == 1)
}

/// A move of one order through the state machine, as an admin or a saga worker asks for it.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: Uuid,
    pub to: OrderStatus,
    /// Why, when someone said (a cancellation reason).
    pub reason: Option<String>,
    pub origin: Origin,
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
    let change = Change {
        id,
        to,
        reason,
        origin: origin.clone(),
    };
    // One outcome per change.
    change_status_all(tx, orders_topic, std::slice::from_ref(&change))
        .await?
        .pop()
        .unwrap_or(Err(Error::NotFound(id)))
}

/// Inserts `created` as CREATED orders on `tx`, in one statement; returns them in their order.
async fn insert_orders(tx: &mut PgConnection, created: &[&Created]) -> Result<Vec<Order>> {
    let rows: Vec<OrderRow> = if let [one] = created {
        // PostgreSQL takes about twice as long over one row unnested from arrays.
        vec![
            sqlx::query_as(&format!(
                "INSERT INTO orders (id, customer_id, status, items, total, currency, \
                 payment_method, correlation_id, created_at, updated_at) \
                 VALUES ($1, $2, 'CREATED', $3, $4, $7, $8, $5, $6, $6) RETURNING {COLUMNS}"
            ))
            .bind(one.id)
            .bind(one.new.customer_id)
            .bind(Json(&one.new.items))
            .bind(one.new.total())
            .bind(one.record.correlation_id)
            .bind(one.placed_at)
            .bind(&one.new.currency)
            .bind(&one.new.payment_method)
            .fetch_one(&mut *tx)
            .await?,
        ]
    } else {
        fn column<'a, T>(created: &[&'a Created], field: impl Fn(&'a Created) -> T) -> Vec<T> {
            created.iter().map(|c| field(c)).collect()
        }
        sqlx::query_as(&format!(
            "INSERT INTO orders (id, customer_id, status, items, total, currency, payment_method, \
             correlation_id, created_at, updated_at) \
             SELECT id, customer_id, 'CREATED', items, total, currency, payment_method, \
             correlation_id, placed_at, placed_at FROM unnest($1::uuid[], $2::uuid[], \
             $3::jsonb[], $4::numeric[], $5::uuid[], $6::timestamptz[], $7::text[], $8::text[]) \
             AS n(id, customer_id, items, total, correlation_id, placed_at, currency, \
             payment_method) \
             RETURNING {COLUMNS}"
        ))
        .bind(column(created, |c| c.id))
        .bind(column(created, |c| c.new.customer_id))
        .bind(column(created, |c| Json(&c.new.items)))
        .bind(column(created, |c| c.new.total()))
        .bind(column(created, |c| c.record.correlation_id))
        .bind(column(created, |c| c.placed_at))
        .bind(column(created, |c| c.new.currency.as_str()))
        .bind(column(created, |c| c.new.payment_method.as_str()))
        .fetch_all(&mut *tx)
        .await?
    };
    let mut orders: HashMap<Uuid, Order> = HashMap::with_capacity(rows.len());
    for row in rows {
        let order = Order::try_from(row)?;
        orders.insert(order.id, order);
    }
    created
        .iter()
        .map(|c| orders.remove(&c.id).ok_or(Error::NotFound(c.id)))
        .collect()
}

/// Makes `changes` on `tx` as [`change_status_in`] would make them one after another, in a
/// few statements for the lot: one locking read, one update, one insert into the outbox. A
/// second change to an order already in the lot starts another such round, after the first
/// is written. Returns each change's outcome, in order: an order that is not there, or a move
/// its state forbids, fails that change alone. A database error fails them all.
pub async fn change_status_all(
    tx: &mut PgConnection,
    orders_topic: &str,
    changes: &[Change],
) -> Result<Vec<Result<Order>>> {
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut start = 0;
    while start < changes.len() {
        let mut seen = HashSet::new();
        let end = changes[start..]
            .iter()
            .position(|change| !seen.insert(change.id))
            .map_or(changes.len(), |repeat| start + repeat);
        outcomes.extend(change_round(tx, orders_topic, &changes[start..end]).await?);
        start = end;
    }
    Ok(outcomes)
}

/// [`change_status_all`] for changes to distinct orders.
async fn change_round(
    tx: &mut PgConnection,
    orders_topic: &str,
    changes: &[Change],
) -> Result<Vec<Result<Order>>> {
    let ids: Vec<Uuid> = changes.iter().map(|change| change.id).collect();
    // Locked in id order, so that two rounds over some of the same orders cannot deadlock.
    let current: HashMap<Uuid, (String, Uuid)> = sqlx::query_as::<_, (Uuid, String, Uuid)>(
        "SELECT id, status, correlation_id FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .planned_per_call()
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(id, status, correlation_id)| (id, (status, correlation_id)))
    .collect();
    // Where each change moves its order from and to, with the order's saga.
    let moves: Vec<Result<(OrderStatus, OrderStatus, Uuid)>> = changes
        .iter()
        .map(|change| {
            let (status, correlation_id) =
                current.get(&change.id).ok_or(Error::NotFound(change.id))?;
            let from: OrderStatus = status
                .parse()
                .map_err(|e: String| Error::Database(sqlx::Error::Decode(e.into())))?;
            let to = domain::transition(from, change.to).map_err(|transition| {
                Error::IllegalTransition {
                    order_id: change.id,
                    transition,
                }
            })?;
            Ok((from, to, *correlation_id))
        })
        .collect();
    // The update's columns: the orders that move, where to, and why.
    let (mut moving, mut statuses, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for (change, m) in changes.iter().zip(&moves) {
        if let Ok((_, to, _)) = m {
            moving.push(change.id);
            statuses.push(to.as_str());
            reasons.push(change.reason.as_deref());
        }
    }
    let rows: Vec<OrderRow> = if moving.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(&format!(
            "UPDATE orders SET status = u.new_status, status_reason = u.new_reason, \
             payment_issue = NULL, payment_client_secret = NULL, version = version + 1, updated_at = date_trunc('milliseconds', clock_timestamp()) \
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(order_id, new_status, new_reason) \
             WHERE id = u.order_id RETURNING {COLUMNS}"
        ))
        .planned_per_call()
        .bind(&moving)
        .bind(&statuses)
        .bind(&reasons)
        .fetch_all(&mut *tx)
        .await?
    };
    let mut changed = HashMap::with_capacity(rows.len());
    for row in rows {
        let order = Order::try_from(row)?;
        changed.insert(order.id, order);
    }
    let mut events = Vec::with_capacity(changed.len());
    let outcomes = changes
        .iter()
        .zip(moves)
        .map(|(change, m)| {
            let (from, _, correlation_id) = m?;
            // Locked above, so the update found it.
            let order = changed
                .remove(&change.id)
                .ok_or(Error::NotFound(change.id))?;
            // Recorded as the transition is written: a transaction rolled back and retried
            // would count twice, which a latency histogram can bear.
            crate::stats::record_ended(&order);
            events.extend(status_events(
                orders_topic,
                change,
                from,
                correlation_id,
                &order,
            ));
            Ok(order)
        })
        .collect();
    outbox::enqueue_all(tx, &events).await?;
    Ok(outcomes)
}

/// What a change that moved `order` from `from` tells the others: OrderStatusChanged, and
/// OrderCancelled for a cancellation.
fn status_events(
    orders_topic: &str,
    change: &Change,
    from: OrderStatus,
    correlation_id: Uuid,
    order: &Order,
) -> Vec<EventRecord> {
    let origin = &change.origin;
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
        order_id: order.id,
        old_status: from,
        new_status: order.status,
        reason: change.reason.clone(),
        at: order.updated_at,
    };
    let mut events = vec![in_saga(EventRecord::new(orders_topic, &changed))];
    if order.status == OrderStatus::Cancelled {
        // The compensation trigger. Sent for every cancellation, not only of RESERVED or PAID
        // orders: the inventory may still be about to reserve a CREATED one, and it handles
        // one order's events in order, so this releases whatever that reservation took.
        let cancelled = OrderCancelled {
            order_id: order.id,
            customer_id: order.customer_id,
            previous_status: from,
            reason: change
                .reason
                .clone()
                .unwrap_or_else(|| "CANCELLED".to_owned()),
            // What a paid order held on the customer's card, which the payment step releases.
            refund: (from == OrderStatus::Paid).then_some(order.total),
            at: order.updated_at,
        };
        events.push(in_saga(EventRecord::new(orders_topic, &cancelled)));
    }
    events
}

/// The job that deletes idempotency keys older than `ttl`, oldest first, a batch at a time.
pub fn expired_idempotency_keys(
    pool: PgPool,
    ttl: std::time::Duration,
) -> oms_saga::retention::Prune {
    oms_saga::retention::Prune::new(
        "expired idempotency keys",
        "idempotency_keys",
        pool,
        "DELETE FROM idempotency_keys WHERE scope IN (SELECT scope FROM idempotency_keys \
         WHERE created_at <= now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2)",
        ttl,
    )
}

fn scope(customer_id: Uuid, key: &IdempotencyKey) -> String {
    format!("{customer_id}:{}", key.key)
}
