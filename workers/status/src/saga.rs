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
        Event, EventRecord, OrderStatus, PaymentAuthorized, PaymentDeclined, ProductPriced,
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
        _ => return Ok(None),
    };
    Ok(Some(Move {
        order_id,
        to,
        reason,
    }))
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
        for (i, event) in events.iter().enumerate() {
            if event.event_type == ProductPriced::TYPE {
                priced.push(payload::<ProductPriced>(event).map_err(|e| (i, e))?);
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
        let ids: Vec<Uuid> = events
            .iter()
            .filter_map(|event| decision(event).ok().flatten())
            .map(|m| m.order_id)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Ok(orders) = self.store.get_all(&ids).await {
            self.cache.put_all(&orders).await;
        }
    }
}
