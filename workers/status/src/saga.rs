//! The order service's side of the saga: what the inventory's answers do to an order, and the
//! catalog's prices it keeps for placing orders. The state machine, the events a change writes
//! and the price read model are the order service's own (`oms_api::store`, `oms_api::prices`).

use std::sync::Arc;

use async_trait::async_trait;
use oms_api::{
    Error as OrderError,
    cache::OrderCache,
    store::{self, Origin, Store},
};
use oms_saga::{
    consumer::{Handler, HandlerError, payload},
    event::{
        Event, EventRecord, OrderStatus, PaymentActionRequired, PaymentAuthorized,
        PaymentCaptureFailed, PaymentCaptured, PaymentDeclined, PaymentRefunded, ProductPriced,
        StockRejected, StockReserved,
    },
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Why a rejected order is cancelled.
pub const OUT_OF_STOCK: &str = oms_saga::event::cancel_reason::OUT_OF_STOCK;
/// Why an order whose card was declined is cancelled.
pub const PAYMENT_DECLINED: &str = oms_saga::event::cancel_reason::PAYMENT_DECLINED;

#[derive(Debug)]
pub struct OrderStatusWorker {
    pub store: Store,
    pub orders_topic: String,
    pub cache: Arc<OrderCache>,
    /// How long a reserved order has to be paid.
    pub payment_timeout: std::time::Duration,
}

/// Where an answer of the inventory or the payment step sends its order.
#[derive(Debug, Clone, Copy)]
struct Move {
    order_id: Uuid,
    to: OrderStatus,
    reason: Option<&'static str>,
}

/// The move an answer asks for; `None` for events this worker does not act on.
fn decision(event: &EventRecord) -> Result<Option<Move>, HandlerError> {
    let (order_id, to, reason) = match event.event_type.as_str() {
        StockReserved::TYPE => (
            payload::<StockReserved>(event)?.order_id,
            OrderStatus::Reserved,
            None,
        ),
        StockRejected::TYPE => (
            payload::<StockRejected>(event)?.order_id,
            OrderStatus::Cancelled,
            Some(OUT_OF_STOCK),
        ),
        PaymentAuthorized::TYPE => (
            payload::<PaymentAuthorized>(event)?.order_id,
            OrderStatus::Paid,
            None,
        ),
        PaymentDeclined::TYPE => (
            payload::<PaymentDeclined>(event)?.order_id,
            OrderStatus::Cancelled,
            Some(PAYMENT_DECLINED),
        ),
        PaymentCaptured::TYPE => (
            payload::<PaymentCaptured>(event)?.order_id,
            OrderStatus::Shipped,
            None,
        ),
        PaymentRefunded::TYPE => (
            payload::<PaymentRefunded>(event)?.order_id,
            OrderStatus::Refunded,
            None,
        ),
        _ => return Ok(None),
    };
    Ok(Some(Move {
        order_id,
        to,
        reason,
    }))
}

/// What the payment step said that an order shows without moving: why a capture failed (the
/// order stays PAID), or the client secret of a payment that waits for the customer (RESERVED).
#[derive(Debug, Clone)]
struct Note {
    order_id: Uuid,
    while_in: OrderStatus,
    issue: Option<String>,
    client_secret: Option<String>,
}

fn note(event: &EventRecord) -> Result<Option<Note>, HandlerError> {
    Ok(Some(match event.event_type.as_str() {
        PaymentCaptureFailed::TYPE => {
            let failed: PaymentCaptureFailed = payload(event)?;
            Note {
                order_id: failed.order_id,
                while_in: OrderStatus::Paid,
                issue: Some(format!("capture failed: {}", failed.reason)),
                client_secret: None,
            }
        }
        PaymentActionRequired::TYPE => {
            let action: PaymentActionRequired = payload(event)?;
            Note {
                order_id: action.order_id,
                while_in: OrderStatus::Reserved,
                issue: None,
                client_secret: Some(action.client_secret),
            }
        }
        _ => return Ok(None),
    }))
}

/// The order an event changes, if it changes one.
fn touched(event: &EventRecord) -> Option<Uuid> {
    match decision(event) {
        Ok(Some(m)) => Some(m.order_id),
        _ => note(event).ok().flatten().map(|n| n.order_id),
    }
}

#[async_trait]
impl Handler for OrderStatusWorker {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        self.handle_all(tx, &[event]).await.map_err(|(_, e)| e)
    }

    /// The batch's answers move their orders together (`store::change_status_all`), and the
    /// orders they reserve start their payment clocks together.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        let mut changes = Vec::with_capacity(events.len());
        // Which event asked for each change, and where it is in the batch.
        let mut asked = Vec::with_capacity(events.len());
        let mut priced = Vec::new();
        let mut notes = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if event.event_type == ProductPriced::TYPE {
                priced.push(payload::<ProductPriced>(event).map_err(|e| (i, e))?);
                continue;
            }
            if let Some(note) = note(event).map_err(|e| (i, e))? {
                notes.push(note);
                continue;
            }
            let Some(Move {
                order_id,
                to,
                reason,
            }) = decision(event).map_err(|e| (i, e))?
            else {
                continue;
            };
            changes.push(store::Change {
                id: order_id,
                to,
                reason: reason.map(str::to_owned),
                origin: Origin {
                    actor: None,
                    traceparent: event.traceparent.clone(),
                    cause: Some(event.event_id),
                },
            });
            asked.push((i, *event));
        }
        // Prices touch no order: they can be kept before or after the batch's moves alike.
        oms_api::prices::apply_all(tx, &priced)
            .await
            .map_err(|e| (0, e.into()))?;
        // A note is about the order as it is before the batch's moves: one that the batch
        // moves on has nothing left to show.
        for note in &notes {
            let kept = store::note_payment(
                tx,
                note.order_id,
                note.while_in,
                note.issue.as_deref(),
                note.client_secret.as_deref(),
            )
            .await
            .map_err(|e| (0, HandlerError::Transient(e.to_string())))?;
            if !kept {
                tracing::info!(order_id = %note.order_id, "order moved on; payment note not kept");
            }
        }
        let outcomes = store::change_status_all(tx, &self.orders_topic, &changes)
            .await
            .map_err(|e| (0, HandlerError::Transient(e.to_string())))?;
        let mut reserved = Vec::new();
        for ((outcome, &(at, event)), change) in outcomes.into_iter().zip(&asked).zip(&changes) {
            match outcome {
                Ok(order) if order.status == OrderStatus::Reserved => {
                    reserved.push((order.id, event));
                }
                Ok(_) => {}
                // The order moved on meanwhile (an admin cancelled it while it was CREATED). Its
                // OrderCancelled already tells the inventory to release what this answer reserved.
                Err(OrderError::IllegalTransition { transition, .. }) => {
                    tracing::info!(order_id = %change.id, from = %transition.from, to = %transition.to, event = event.event_type, "order moved on; answer ignored");
                }
                Err(OrderError::NotFound(id)) => {
                    return Err((at, HandlerError::Poison(format!("no order {id}"))));
                }
                Err(e) => return Err((at, HandlerError::Transient(e.to_string()))),
            }
        }
        crate::deadline::start_all(tx, self.payment_timeout, &reserved)
            .await
            .map_err(|e| (0, e.into()))
    }

    /// The API serves orders from Redis: store the new versions now that they are committed.
    async fn after_commit(&self, events: &[&EventRecord]) {
        let ids: Vec<Uuid> = events.iter().filter_map(|event| touched(event)).collect();
        if ids.is_empty() {
            return;
        }
        if let Ok(orders) = self.store.get_all(&ids).await {
            self.cache.put_all(&orders).await;
        }
    }
}
