//! The invariant checker: reads the services' databases and the dead-letter topics and says, with
//! figures, whether the saga kept its promises. Usable at any time (`oms check`); the failure
//! scenarios end with it.
//!
//! The rules are [`evaluate`], a pure function over a [`Snapshot`], so they are tested without
//! services; [`snapshot`] reads one from the real databases.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use oms_saga::event::{EventRecord, OrderStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

/// Where the checker reads: the `[cli.databases]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Databases {
    pub orders: Option<oms_saga::config::Secret>,
    pub inventory: Option<oms_saga::config::Secret>,
    pub notifications: Option<oms_saga::config::Secret>,
    /// The payment step's; without it, payments are not checked.
    pub payments: Option<oms_saga::config::Secret>,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub status: OrderStatus,
    /// Units per product.
    pub lines: BTreeMap<String, i64>,
    /// The payment deadline, while one is pending.
    pub deadline: Option<DateTime<Utc>>,
    /// What the order says it costs.
    pub total: Decimal,
    /// Its lines' quantities times the unit prices they were bought at.
    pub lines_total: Decimal,
    /// Its total in minor units of its currency, when the card pays for it (orders placed
    /// before orders named a payment method were never charged).
    pub card_total_minor: Option<i64>,
}

/// The payment provider's own record, read through its API: what it holds, took and gave
/// back for each order of ours.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Each order's confirmed PaymentIntents (by the order id in their metadata): id, amount
    /// captured.
    pub intents: HashMap<Uuid, Vec<(String, i64)>>,
    /// Intents never confirmed, per order: drafts that never held money. Stripe answers a
    /// retried creation with its first intent (the Idempotency-Key); a server that ignores the
    /// key (localstripe) makes another when the first answer was lost to a timeout.
    pub drafts: HashMap<Uuid, usize>,
    /// What was refunded of each intent.
    pub refunded: HashMap<String, i64>,
}

impl Ledger {
    /// How many confirmed intents an order has, and what the provider kept of its money:
    /// captured less refunded.
    fn kept(&self, order: Uuid) -> (usize, i64) {
        let intents = self
            .intents
            .get(&order)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let kept = intents
            .iter()
            .map(|(id, captured)| captured - self.refunded.get(id).copied().unwrap_or(0))
            .sum();
        (intents.len(), kept)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    pub product_id: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub received: i64,
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub order_id: Uuid,
    pub product_id: String,
    pub quantity: i64,
    /// HELD, RELEASED or SOLD.
    pub state: String,
}

/// What the databases and topics held at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub orders: Vec<Order>,
    pub stock: Vec<Stock>,
    pub reservations: Vec<Reservation>,
    /// Outbox rows not yet published, per database.
    pub unpublished: BTreeMap<String, i64>,
    /// The order events a customer must be told about: event id, kind.
    pub telling_events: Vec<(Uuid, &'static str)>,
    /// Notifications per causing event id: how many, and their states.
    pub notifications: HashMap<Uuid, Vec<String>>,
    /// Dead letters per topic.
    pub dead_letters: BTreeMap<String, usize>,
    /// Each order's payment state, as the payment step records it (when it is checked).
    pub payments: HashMap<Uuid, String>,
    /// The payment provider's record (when it is checked).
    pub ledger: Option<Ledger>,
}

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub invariant: &'static str,
    pub holds: bool,
    /// What was counted.
    pub figures: String,
    /// The orders, products or events that break it (the first 20).
    pub offenders: Vec<String>,
}

const SHOWN: usize = 20;

fn verdict(invariant: &'static str, figures: String, offenders: Vec<String>) -> Verdict {
    Verdict {
        invariant,
        holds: offenders.is_empty(),
        figures,
        offenders: offenders.into_iter().take(SHOWN).collect(),
    }
}

/// Checks every invariant; `expected_dead_letters` is what a scenario injected on purpose.
pub fn evaluate(s: &Snapshot, now: DateTime<Utc>, expected_dead_letters: usize) -> Vec<Verdict> {
    vec![
        no_oversell(s),
        stock_conserved(s),
        orders_settled(s, now),
        reservations_match(s),
        events_accounted(s, expected_dead_letters),
        totals_add_up(s),
        no_money_held_for_cancelled_orders(s),
    ]
    .into_iter()
    .chain(s.ledger.as_ref().map(|ledger| provider_agrees(s, ledger)))
    .collect()
}

/// The provider's ledger against the orders: at most one confirmed PaymentIntent per order;
/// money taken only for an order that shipped (SHIPPED or later), and all of it given back for
/// one that was refunded or cancelled; so what the provider kept is exactly the totals of the
/// shipped and completed orders.
fn provider_agrees(s: &Snapshot, ledger: &Ledger) -> Verdict {
    let mut offenders = Vec::new();
    let (mut kept_total, mut shipped_total, mut intents, mut drafts) = (0i64, 0i64, 0usize, 0usize);
    for order in &s.orders {
        let (count, kept) = ledger.kept(order.id);
        intents += count;
        drafts += ledger.drafts.get(&order.id).copied().unwrap_or(0);
        kept_total += kept;
        if count > 1 {
            offenders.push(format!(
                "order {}: {count} confirmed PaymentIntents",
                order.id
            ));
        }
        let owed = match order.status {
            OrderStatus::Shipped | OrderStatus::Completed => order.card_total_minor.unwrap_or(0),
            _ => 0,
        };
        shipped_total += owed;
        if kept != owed {
            offenders.push(format!(
                "order {}: {} but the provider kept {kept} (minor units) of it, not {owed}",
                order.id, order.status
            ));
        }
    }
    verdict(
        "the payment provider's ledger agrees with the orders",
        format!(
            "{intents} confirmed PaymentIntents for {} orders ({drafts} drafts never confirmed, \
             which hold nothing); captured less refunded {kept_total}, shipped and completed \
             orders' totals {shipped_total} (minor units)",
            s.orders.len()
        ),
        offenders,
    )
}

fn no_money_held_for_cancelled_orders(s: &Snapshot) -> Verdict {
    let offenders = s
        .orders
        .iter()
        .filter(|o| o.status == OrderStatus::Cancelled)
        .filter(|o| {
            s.payments
                .get(&o.id)
                .is_some_and(|state| state == "AUTHORIZED")
        })
        .map(|o| format!("order {}: CANCELLED, its payment still AUTHORIZED", o.id))
        .collect();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for state in s.payments.values() {
        *states.entry(state).or_default() += 1;
    }
    let states = states
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    verdict(
        "no money held for a cancelled order",
        format!("{} payments: {states}", s.payments.len()),
        offenders,
    )
}

fn totals_add_up(s: &Snapshot) -> Verdict {
    let offenders = s
        .orders
        .iter()
        .filter(|o| o.total != o.lines_total)
        .map(|o| {
            format!(
                "{}: total {} but its lines come to {}",
                o.id, o.total, o.lines_total
            )
        })
        .collect();
    verdict(
        "every total is its lines at the prices bought at",
        format!("{} orders", s.orders.len()),
        offenders,
    )
}

fn no_oversell(s: &Snapshot) -> Verdict {
    let offenders = s
        .stock
        .iter()
        .filter(|p| p.reserved + p.sold > p.received)
        .map(|p| {
            format!(
                "{}: reserved {} + sold {} > received {}",
                p.product_id, p.reserved, p.sold, p.received
            )
        })
        .collect();
    let taken: i64 = s.stock.iter().map(|p| p.reserved + p.sold).sum();
    let received: i64 = s.stock.iter().map(|p| p.received).sum();
    verdict(
        "no oversell",
        format!(
            "{} products; reserved + sold {taken} of {received} received",
            s.stock.len()
        ),
        offenders,
    )
}

fn stock_conserved(s: &Snapshot) -> Verdict {
    let mut held: HashMap<&str, i64> = HashMap::new();
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for r in &s.reservations {
        match r.state.as_str() {
            "HELD" => *held.entry(&r.product_id).or_default() += r.quantity,
            "SOLD" => *sold.entry(&r.product_id).or_default() += r.quantity,
            _ => {}
        }
    }
    let mut offenders = Vec::new();
    for p in &s.stock {
        let total = p.available + p.reserved + p.sold;
        if total != p.received {
            offenders.push(format!(
                "{}: available {} + reserved {} + sold {} = {total}, received {}",
                p.product_id, p.available, p.reserved, p.sold, p.received
            ));
        }
        let (h, d) = (
            held.get(p.product_id.as_str()).copied().unwrap_or(0),
            sold.get(p.product_id.as_str()).copied().unwrap_or(0),
        );
        if h != p.reserved || d != p.sold {
            offenders.push(format!(
                "{}: reserved {} but reservations hold {h}; sold {} but reservations sold {d}",
                p.product_id, p.reserved, p.sold
            ));
        }
    }
    let units: i64 = s.stock.iter().map(|p| p.received).sum();
    verdict(
        "stock is conserved",
        format!(
            "available + reserved + sold = received for {} products ({units} units), \
             matching {} reservation lines",
            s.stock.len(),
            s.reservations.len()
        ),
        offenders,
    )
}

fn orders_settled(s: &Snapshot, now: DateTime<Utc>) -> Verdict {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    let mut offenders = Vec::new();
    for o in &s.orders {
        *by_status.entry(o.status.as_str()).or_default() += 1;
        let waits = match o.status {
            OrderStatus::Completed | OrderStatus::Cancelled | OrderStatus::Refunded => true,
            // Awaiting shipment or completion: the admin's move.
            OrderStatus::Paid | OrderStatus::Shipped => true,
            // Awaiting payment, before its deadline.
            OrderStatus::Reserved => o.deadline.is_some_and(|due| due > now),
            OrderStatus::Created => false,
        };
        if !waits {
            let why = match (o.status, o.deadline) {
                (OrderStatus::Reserved, Some(due)) => format!("RESERVED past its deadline {due}"),
                (OrderStatus::Reserved, None) => "RESERVED without a payment deadline".into(),
                _ => "still CREATED: the saga never decided it".into(),
            };
            offenders.push(format!("order {}: {why}", o.id));
        }
    }
    let figures = by_status
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    verdict(
        "every order is settled",
        format!("{} orders: {figures}", s.orders.len()),
        offenders,
    )
}

fn reservations_match(s: &Snapshot) -> Verdict {
    let mut held: HashMap<Uuid, BTreeMap<String, i64>> = HashMap::new();
    let mut sold: HashMap<Uuid, BTreeMap<String, i64>> = HashMap::new();
    for r in &s.reservations {
        let into = match r.state.as_str() {
            "HELD" => &mut held,
            "SOLD" => &mut sold,
            _ => continue,
        };
        *into
            .entry(r.order_id)
            .or_default()
            .entry(r.product_id.clone())
            .or_default() += r.quantity;
    }
    let none = BTreeMap::new();
    let mut offenders = Vec::new();
    for o in &s.orders {
        let (h, d) = (
            held.get(&o.id).unwrap_or(&none),
            sold.get(&o.id).unwrap_or(&none),
        );
        let problem = match o.status {
            OrderStatus::Reserved | OrderStatus::Paid if *h != o.lines || !d.is_empty() => {
                Some(format!(
                    "{} holds {h:?}, sold {d:?}, ordered {:?}",
                    o.status, o.lines
                ))
            }
            OrderStatus::Shipped | OrderStatus::Completed if *d != o.lines || !h.is_empty() => {
                Some(format!(
                    "{} sold {d:?}, holds {h:?}, ordered {:?}",
                    o.status, o.lines
                ))
            }
            OrderStatus::Cancelled | OrderStatus::Created if !h.is_empty() || !d.is_empty() => {
                Some(format!("{} still holds {h:?}, sold {d:?}", o.status))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            offenders.push(format!("order {}: {problem}", o.id));
        }
    }
    let holding = s
        .orders
        .iter()
        .filter(|o| {
            matches!(
                o.status,
                OrderStatus::Reserved
                    | OrderStatus::Paid
                    | OrderStatus::Shipped
                    | OrderStatus::Completed
            )
        })
        .count();
    verdict(
        "reservations match orders",
        format!(
            "{holding} reserved or later orders hold or sold exactly their lines; \
             cancelled ones hold nothing"
        ),
        offenders,
    )
}

fn events_accounted(s: &Snapshot, expected_dead_letters: usize) -> Verdict {
    let mut offenders: Vec<String> = s
        .unpublished
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(db, n)| format!("{db}: {n} outbox rows never published"))
        .collect();
    let told: HashSet<Uuid> = s.telling_events.iter().map(|(id, _)| *id).collect();
    // A notice is sent at most once: one claimed by a sender that crashed mid-send stays SENDING
    // (in doubt) rather than being sent again, and one the sender refused is FAILED. Both were
    // caused exactly once; a PENDING one after the saga settled was never picked up.
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for (event_id, kind) in &s.telling_events {
        match s.notifications.get(event_id).map(Vec::as_slice) {
            None | Some([]) => offenders.push(format!("{kind} event {event_id}: never told")),
            Some([state]) if state == "PENDING" => {
                offenders.push(format!("{kind} event {event_id}: notice still PENDING"));
            }
            Some([state]) => *states.entry(state).or_default() += 1,
            Some(many) => offenders.push(format!("{kind} event {event_id}: notices {many:?}")),
        }
    }
    let states = states
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    for event_id in s.notifications.keys().filter(|id| !told.contains(id)) {
        offenders.push(format!(
            "a notice for {event_id}, which is no telling order event"
        ));
    }
    let dead: usize = s.dead_letters.values().sum();
    if dead != expected_dead_letters {
        offenders.push(format!(
            "{dead} dead letters ({:?}), {expected_dead_letters} injected",
            s.dead_letters
        ));
    }
    let outbox: i64 = s.unpublished.values().sum();
    verdict(
        "events are accounted for",
        format!(
            "{outbox} unpublished outbox rows; {} telling events, {} notices ({states}); \
             {dead} dead letters ({expected_dead_letters} injected)",
            s.telling_events.len(),
            s.notifications.values().map(Vec::len).sum::<usize>()
        ),
        offenders,
    )
}

/// A read-only transaction that sees one moment of a database, so figures read from several
/// tables agree.
async fn moment(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Reads a snapshot from the three databases, each at one moment of its own (the saga moves
/// between them, so a settling saga may look inconsistent across them for a while); dead
/// letters are the caller's to add.
pub async fn snapshot(
    orders: &PgPool,
    inventory: &PgPool,
    notifications: &PgPool,
    payments: Option<&PgPool>,
) -> sqlx::Result<Snapshot> {
    let (mut orders, mut inventory, mut notifications) = (
        moment(orders).await?,
        moment(inventory).await?,
        moment(notifications).await?,
    );
    #[derive(sqlx::FromRow)]
    struct OrderRow {
        id: Uuid,
        status: String,
        items: Json<Vec<oms_saga::event::OrderLine>>,
        total: Decimal,
        currency: String,
        payment_method: Option<String>,
        due_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.id, o.status, o.items, o.total, o.currency, o.payment_method, d.due_at \
         FROM orders o LEFT JOIN payment_deadlines d ON d.order_id = o.id",
    )
    .fetch_all(&mut *orders)
    .await?;
    let mut snapshot = Snapshot::default();
    let mut payments_since: Option<DateTime<Utc>> = None;
    if let Some(payments) = payments {
        let mut payments = moment(payments).await?;
        let states: Vec<(Uuid, String)> = sqlx::query_as("SELECT order_id, state FROM payments")
            .fetch_all(&mut *payments)
            .await?;
        snapshot.payments = states.into_iter().collect();
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
            .fetch_one(&mut *payments)
            .await?;
        snapshot.unpublished.insert("payments".into(), unpublished);
        snapshot.telling_events = telling_events(&mut payments).await?;
        payments_since = oldest_event(&mut payments).await?;
    }
    for row in rows {
        let status = row
            .status
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
        let mut lines = BTreeMap::new();
        let mut lines_total = Decimal::ZERO;
        for line in row.items.0 {
            lines_total += line.unit_price * Decimal::from(line.quantity);
            *lines.entry(line.product_id).or_default() += i64::from(line.quantity);
        }
        let card_total_minor = row
            .payment_method
            .and_then(|_| oms_saga::money::Currency::parse(&row.currency).ok())
            .and_then(|currency| currency.to_minor(row.total).ok());
        snapshot.orders.push(Order {
            id: row.id,
            status,
            lines,
            deadline: row.due_at,
            total: row.total,
            lines_total,
            card_total_minor,
        });
    }
    let stock: Vec<(String, i32, i32, i32, i32)> =
        sqlx::query_as("SELECT product_id, available, reserved, sold, received FROM stock")
            .fetch_all(&mut *inventory)
            .await?;
    snapshot.stock = stock
        .into_iter()
        .map(|(product_id, a, r, s, t)| Stock {
            product_id,
            available: a.into(),
            reserved: r.into(),
            sold: s.into(),
            received: t.into(),
        })
        .collect();
    let reservations: Vec<(Uuid, String, i32, String)> =
        sqlx::query_as("SELECT order_id, product_id, quantity, state FROM reservations")
            .fetch_all(&mut *inventory)
            .await?;
    snapshot.reservations = reservations
        .into_iter()
        .map(|(order_id, product_id, quantity, state)| Reservation {
            order_id,
            product_id,
            quantity: quantity.into(),
            state,
        })
        .collect();
    for (name, tx) in [
        ("orders", &mut orders),
        ("inventory", &mut inventory),
        ("notifications", &mut notifications),
    ] {
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
            .fetch_one(&mut **tx)
            .await?;
        snapshot.unpublished.insert(name.to_owned(), unpublished);
    }
    snapshot
        .telling_events
        .extend(telling_events(&mut orders).await?);
    // The outboxes keep published events for a while only (`relay.keep_published`): from the
    // latest of their oldest events on, they hold every event, and a notice from before that
    // may be of an event pruned since, which is not held against it.
    let kept_since = oldest_event(&mut orders).await?.max(payments_since);
    let telling: HashSet<Uuid> = snapshot.telling_events.iter().map(|(id, _)| *id).collect();
    let notices: Vec<(Uuid, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_id, state, created_at FROM notifications")
            .fetch_all(&mut *notifications)
            .await?;
    for (event_id, state, created_at) in notices {
        if !telling.contains(&event_id) && kept_since.is_some_and(|since| created_at < since) {
            continue;
        }
        snapshot
            .notifications
            .entry(event_id)
            .or_default()
            .push(state);
    }
    Ok(snapshot)
}

/// When the oldest event an outbox still keeps occurred; `None` for an empty outbox.
async fn oldest_event(conn: &mut sqlx::PgConnection) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT min(occurred_at) FROM outbox")
        .fetch_one(conn)
        .await
}

/// The events the notification service must tell, by its own rules, read from the outbox of the
/// service that wrote them (every event is written there).
async fn telling_events(
    orders: &mut sqlx::PgConnection,
) -> sqlx::Result<Vec<(Uuid, &'static str)>> {
    #[derive(sqlx::FromRow)]
    struct OutboxRow {
        event_id: Uuid,
        topic: String,
        message_key: String,
        event_type: String,
        payload: serde_json::Value,
        occurred_at: DateTime<Utc>,
        correlation_id: Uuid,
        causation_id: Option<Uuid>,
        traceparent: Option<String>,
    }
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT event_id, topic, message_key, event_type, payload, occurred_at, correlation_id, \
         causation_id, traceparent FROM outbox",
    )
    .fetch_all(orders)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let record = EventRecord {
                event_id: row.event_id,
                event_type: row.event_type,
                topic: row.topic,
                key: row.message_key,
                occurred_at: row.occurred_at,
                correlation_id: row.correlation_id,
                causation_id: row.causation_id,
                traceparent: row.traceparent,
                payload: row.payload,
            };
            let notice = oms_notifications::notice::notice(&record).ok()??;
            Some((record.event_id, notice.kind))
        })
        .collect())
}

/// Reads the provider's ledger through its API, every page of its intents and refunds (at most
/// a million of each).
pub async fn ledger(stripe: &oms_payments::Stripe) -> Result<Ledger, oms_payments::StripeError> {
    let mut ledger = Ledger::default();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = stripe.intents(after.as_deref()).await?;
        for intent in &page.data {
            let Some(order) = intent.metadata.get("order_id").and_then(|o| o.parse().ok()) else {
                continue;
            };
            if !intent.was_confirmed() {
                *ledger.drafts.entry(order).or_default() += 1;
                continue;
            }
            let captured = if intent.status == oms_payments::stripe::IntentStatus::Succeeded {
                intent.amount
            } else {
                0
            };
            ledger
                .intents
                .entry(order)
                .or_default()
                .push((intent.id.clone(), captured));
        }
        after = page.data.last().map(|i| i.id.clone());
        if !page.has_more || after.is_none() {
            break;
        }
    }
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = stripe.all_refunds(after.as_deref()).await?;
        for refund in &page.data {
            if let Some(intent) = &refund.payment_intent
                && refund.status != "failed"
                && refund.status != "canceled"
            {
                *ledger.refunded.entry(intent.clone()).or_default() += refund.amount;
            }
        }
        after = page.data.last().map(|r| r.id.clone());
        if !page.has_more || after.is_none() {
            break;
        }
    }
    Ok(ledger)
}

/// Prints the verdicts, one block each, and the overall PASS or FAIL; returns whether all hold.
pub fn report(verdicts: &[Verdict], out: &mut impl std::io::Write) -> std::io::Result<bool> {
    for v in verdicts {
        writeln!(
            out,
            "{} {}: {}",
            if v.holds { "ok  " } else { "FAIL" },
            v.invariant,
            v.figures
        )?;
        for offender in &v.offenders {
            writeln!(out, "       - {offender}")?;
        }
    }
    let holds = verdicts.iter().all(|v| v.holds);
    writeln!(out, "{}", if holds { "PASS" } else { "FAIL" })?;
    Ok(holds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: OrderStatus, lines: &[(&str, i64)]) -> Order {
        Order {
            id: Uuid::new_v4(),
            status,
            lines: lines.iter().map(|(p, q)| ((*p).to_owned(), *q)).collect(),
            deadline: None,
            total: Decimal::new(450, 2),
            lines_total: Decimal::new(450, 2),
            card_total_minor: Some(450),
        }
    }

    fn held(order: &Order, state: &str) -> Vec<Reservation> {
        order
            .lines
            .iter()
            .map(|(product_id, quantity)| Reservation {
                order_id: order.id,
                product_id: product_id.clone(),
                quantity: *quantity,
                state: state.into(),
            })
            .collect()
    }

    /// A consistent world: one order paid, one shipped, one cancelled, all told.
    fn consistent() -> Snapshot {
        let paid = order(OrderStatus::Paid, &[("A", 2)]);
        let shipped = order(OrderStatus::Shipped, &[("A", 1), ("B", 3)]);
        let cancelled = order(OrderStatus::Cancelled, &[("B", 1)]);
        let mut reservations = held(&paid, "HELD");
        reservations.extend(held(&shipped, "SOLD"));
        reservations.extend(held(&cancelled, "RELEASED"));
        let placed = Uuid::new_v4();
        Snapshot {
            orders: vec![paid, shipped, cancelled],
            stock: vec![
                Stock {
                    product_id: "A".into(),
                    available: 7,
                    reserved: 2,
                    sold: 1,
                    received: 10,
                },
                Stock {
                    product_id: "B".into(),
                    available: 2,
                    reserved: 0,
                    sold: 3,
                    received: 5,
                },
            ],
            reservations,
            unpublished: BTreeMap::from([("orders".into(), 0)]),
            telling_events: vec![(placed, "PLACED")],
            notifications: HashMap::from([(placed, vec!["SENT".into()])]),
            dead_letters: BTreeMap::new(),
            payments: HashMap::new(),
            ledger: None,
        }
    }

    /// The provider's ledger of [`consistent`]: the paid order authorized, the shipped one
    /// captured, the cancelled one released.
    fn ledger(s: &Snapshot) -> Ledger {
        let mut ledger = Ledger::default();
        for (order, captured) in s.orders.iter().zip([0, 450, 0]) {
            ledger.intents.insert(
                order.id,
                vec![(format!("pi_{}", order.id.simple()), captured)],
            );
        }
        ledger
    }

    fn broken(s: &Snapshot) -> Vec<&'static str> {
        evaluate(s, Utc::now(), 0)
            .into_iter()
            .filter(|v| !v.holds)
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn the_providers_ledger_must_agree_with_the_orders() {
        let mut s = consistent();
        s.ledger = Some(ledger(&s));
        assert!(broken(&s).is_empty(), "{:?}", evaluate(&s, Utc::now(), 0));
        let (paid, shipped, cancelled) = (s.orders[0].id, s.orders[1].id, s.orders[2].id);
        let agrees = "the payment provider's ledger agrees with the orders";

        // Money taken for a cancelled order, unless it is given back.
        let mut taken = s.clone();
        let ledger = taken.ledger.as_mut().expect("ledger");
        ledger.intents.get_mut(&cancelled).expect("intents")[0].1 = 450;
        assert_eq!(broken(&taken), [agrees]);
        let refunded = format!("pi_{}", cancelled.simple());
        taken
            .ledger
            .as_mut()
            .expect("ledger")
            .refunded
            .insert(refunded, 450);
        assert!(broken(&taken).is_empty());

        // A capture of an order that has not shipped; a shipped order not captured.
        let mut early = s.clone();
        early
            .ledger
            .as_mut()
            .expect("ledger")
            .intents
            .get_mut(&paid)
            .expect("intents")[0]
            .1 = 450;
        assert_eq!(broken(&early), [agrees]);
        let mut free = s.clone();
        free.ledger
            .as_mut()
            .expect("ledger")
            .intents
            .get_mut(&shipped)
            .expect("intents")[0]
            .1 = 0;
        assert_eq!(broken(&free), [agrees]);

        // A draft beside the order's intent holds nothing and breaks nothing.
        let mut drafted = s.clone();
        drafted
            .ledger
            .as_mut()
            .expect("ledger")
            .drafts
            .insert(paid, 2);
        assert!(broken(&drafted).is_empty());

        // Two confirmed intents for one order.
        let mut twice = s.clone();
        twice
            .ledger
            .as_mut()
            .expect("ledger")
            .intents
            .get_mut(&paid)
            .expect("intents")
            .push(("pi_second".into(), 0));
        assert_eq!(broken(&twice), [agrees]);
    }

    #[test]
    fn a_consistent_world_passes() {
        assert_eq!(broken(&consistent()), Vec::<&str>::new());
    }

    #[test]
    fn overselling_and_lost_units_are_caught() {
        let mut s = consistent();
        s.stock[0].received = 2;
        assert_eq!(broken(&s), ["no oversell", "stock is conserved"]);
        let mut s = consistent();
        s.stock[1].available = 3;
        assert_eq!(broken(&s), ["stock is conserved"]);
    }

    #[test]
    fn a_stuck_order_and_a_missed_deadline_are_caught() {
        let mut s = consistent();
        s.orders.push(order(OrderStatus::Created, &[]));
        let mut late = order(OrderStatus::Reserved, &[]);
        late.deadline = Some(Utc::now() - chrono::Duration::seconds(5));
        s.orders.push(late);
        let verdicts = evaluate(&s, Utc::now(), 0);
        let settled = &verdicts[2];
        assert!(!settled.holds);
        assert_eq!(settled.offenders.len(), 2, "{:?}", settled.offenders);
    }

    #[test]
    fn an_order_whose_total_is_not_its_lines_is_caught() {
        let mut s = consistent();
        s.orders[1].total = Decimal::new(1, 2);
        assert_eq!(
            broken(&s),
            ["every total is its lines at the prices bought at"]
        );
    }

    #[test]
    fn a_cancelled_order_whose_payment_is_still_held_is_caught() {
        let mut s = consistent();
        let cancelled = s.orders[2].id;
        s.payments.insert(cancelled, "VOIDED".into());
        assert_eq!(broken(&s), Vec::<&str>::new());
        s.payments.insert(cancelled, "AUTHORIZED".into());
        assert_eq!(broken(&s), ["no money held for a cancelled order"]);
    }

    #[test]
    fn a_cancelled_order_still_holding_stock_is_caught() {
        let mut s = consistent();
        let cancelled = s.orders[2].clone();
        s.reservations.retain(|r| r.order_id != cancelled.id);
        s.reservations.extend(held(&cancelled, "HELD"));
        s.stock[1].reserved += 1;
        s.stock[1].available -= 1;
        assert_eq!(broken(&s), ["reservations match orders"]);
    }

    #[test]
    fn a_notice_in_doubt_after_a_crash_mid_send_is_reported_not_resent() {
        let mut s = consistent();
        let (placed, _) = s.telling_events[0];
        s.notifications.insert(placed, vec!["SENDING".into()]);
        let verdicts = evaluate(&s, Utc::now(), 0);
        let events = &verdicts[4];
        assert!(events.holds, "{:?}", events.offenders);
        assert!(events.figures.contains("1 SENDING"), "{}", events.figures);
    }

    #[test]
    fn untold_twice_told_unpublished_and_dead_events_are_caught() {
        let mut s = consistent();
        let (placed, _) = s.telling_events[0];
        s.notifications
            .insert(placed, vec!["SENT".into(), "SENT".into()]);
        assert_eq!(broken(&s), ["events are accounted for"]);
        let mut s = consistent();
        s.telling_events.push((Uuid::new_v4(), "PAID"));
        assert_eq!(broken(&s), ["events are accounted for"]);
        let mut s = consistent();
        let (placed, _) = s.telling_events[0];
        s.notifications.insert(placed, vec!["PENDING".into()]);
        assert_eq!(broken(&s), ["events are accounted for"], "never picked up");
        let mut s = consistent();
        s.unpublished.insert("inventory".into(), 3);
        assert_eq!(broken(&s), ["events are accounted for"]);
        let mut s = consistent();
        s.dead_letters.insert("orders".into(), 1);
        assert_eq!(broken(&s), ["events are accounted for"]);
        assert!(
            evaluate(&s, Utc::now(), 1).iter().all(|v| v.holds),
            "one was injected"
        );
    }
}
