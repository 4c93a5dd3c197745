//! The order service's side of the saga: what the inventory's answers do to an order. The state
//! machine and the events a change writes are the order service's own (`oms_api::store`).

use std::sync::Arc;

use async_trait::async_trait;
use oms_api::{
    Error as OrderError,
    cache::OrderCache,
    store::{self, Origin, Store},
};
use oms_saga::{
    consumer::{Handler, HandlerError, payload},
    event::{Event, EventRecord, OrderStatus, StockRejected, StockReserved},
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Why a rejected order is cancelled.
pub const OUT_OF_STOCK: &str = oms_saga::event::cancel_reason::OUT_OF_STOCK;

#[derive(Debug)]
pub struct OrderStatusWorker {
    pub store: Store,
    pub orders_topic: String,
    pub cache: Arc<OrderCache>,
    /// How long a reserved order has to be paid.
    pub payment_timeout: std::time::Duration,
}

/// Where an inventory answer sends its order.
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
        let Some(Move {
            order_id,
            to,
            reason,
        }) = decision(event)?
        else {
            return Ok(());
        };
        let origin = Origin {
            actor: None,
            traceparent: event.traceparent.clone(),
            cause: Some(event.event_id),
        };
        match store::change_status_in(
            tx,
            &self.orders_topic,
            order_id,
            to,
            reason.map(str::to_owned),
            &origin,
        )
        .await
        {
            Ok(_) if to == OrderStatus::Reserved => {
                crate::deadline::start(
                    tx,
                    order_id,
                    self.payment_timeout,
                    event.event_id,
                    event.traceparent.as_deref(),
                )
                .await?;
                Ok(())
            }
            Ok(_) => Ok(()),
            // The order moved on meanwhile (an admin cancelled it while it was CREATED). Its
            // OrderCancelled already tells the inventory to release what this answer reserved.
            Err(OrderError::IllegalTransition { transition, .. }) => {
                tracing::info!(%order_id, from = %transition.from, to = %transition.to, event = event.event_type, "order moved on; answer ignored");
                Ok(())
            }
            Err(OrderError::NotFound(id)) => Err(HandlerError::Poison(format!("no order {id}"))),
            Err(e) => Err(HandlerError::Transient(e.to_string())),
        }
    }

    /// The API serves orders from Redis: store the new version now that it is committed.
    async fn after_commit(&self, event: &EventRecord) {
        let Ok(Some(Move { order_id, .. })) = decision(event) else {
            return;
        };
        if let Ok(Some(order)) = self.store.get(order_id).await {
            self.cache.put(&order).await;
        }
    }
}
