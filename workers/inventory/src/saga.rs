//! The inventory's part in the order saga: what each order event does to stock, and what it
//! answers. The consume loop (dedup, transaction, retries, dead letters) is `oms-saga`'s.

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use oms_saga::{
    consumer::{Handler, HandlerError, payload},
    event::{
        Event, EventRecord, OrderCancelled, OrderPlaced, OrderStatus, OrderStatusChanged,
        StockRejected, StockReleased, StockReserved,
    },
    outbox,
};
use sqlx::PgConnection;

use crate::stock::{self, Reservation};

/// Reacts to the `orders` topic and writes its answers to the inventory topic.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub topic: String,
}

#[async_trait]
impl Handler for Inventory {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        let at = Utc::now().trunc_subsecs(3);
        let answer = match event.event_type.as_str() {
            OrderPlaced::TYPE => {
                let placed: OrderPlaced = payload(event)?;
                let wanted =
                    stock::wanted(placed.items.into_iter().map(|l| (l.product_id, l.quantity)));
                match stock::reserve(tx, placed.order_id, &wanted).await? {
                    Reservation::Reserved(items) => EventRecord::following(
                        &self.topic,
                        &StockReserved {
                            order_id: placed.order_id,
                            items,
                            at,
                        },
                        event,
                    ),
                    Reservation::Rejected(lines) => EventRecord::following(
                        &self.topic,
                        &StockRejected {
                            order_id: placed.order_id,
                            lines,
                            at,
                        },
                        event,
                    ),
                }
            }
            OrderCancelled::TYPE => {
                let cancelled: OrderCancelled = payload(event)?;
                let items = stock::release(tx, cancelled.order_id).await?;
                // Compensation is idempotent: an order that holds nothing has nothing to release.
                if items.is_empty() {
                    return Ok(());
                }
                let released = StockReleased {
                    order_id: cancelled.order_id,
                    items,
                    reason: cancelled.reason,
                    at,
                };
                EventRecord::following(&self.topic, &released, event)
            }
            OrderStatusChanged::TYPE => {
                let changed: OrderStatusChanged = payload(event)?;
                if changed.new_status == OrderStatus::Shipped {
                    stock::sell(tx, changed.order_id).await?;
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        outbox::enqueue(tx, &answer).await?;
        Ok(())
    }
}
