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
                return self
                    .reserve_all(tx, std::slice::from_ref(&event))
                    .await
                    .map_err(|(_, e)| e);
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

    /// Runs of OrderPlaced, which is most of what the topic carries, are answered together;
    /// everything else one by one, in order.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        let mut start = 0;
        while let Some(first) = events.get(start) {
            let placed = events[start..]
                .iter()
                .take_while(|event| event.event_type == OrderPlaced::TYPE)
                .count();
            if placed == 0 {
                self.handle(tx, first).await.map_err(|e| (start, e))?;
                start += 1;
            } else {
                self.reserve_all(tx, &events[start..start + placed])
                    .await
                    .map_err(|(fine, e)| (start + fine, e))?;
                start += placed;
            }
        }
        Ok(())
    }
}

impl Inventory {
    /// Answers OrderPlaced events with StockReserved or StockRejected, in their order, in one
    /// read of the stock, one update, and one write each of reservations and answers. On
    /// failure, says how many went fine before: those before an event that does not decode, or
    /// none if the database failed.
    async fn reserve_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        let mut orders = Vec::with_capacity(events.len());
        for (fine, event) in events.iter().enumerate() {
            let placed: OrderPlaced = payload(event).map_err(|e| (fine, e))?;
            let wanted =
                stock::wanted(placed.items.into_iter().map(|l| (l.product_id, l.quantity)));
            orders.push((placed.order_id, wanted));
        }
        let reservations = stock::reserve_all(tx, &orders)
            .await
            .map_err(|e| (0, e.into()))?;
        let at = Utc::now().trunc_subsecs(3);
        let answers: Vec<EventRecord> = events
            .iter()
            .zip(&orders)
            .zip(reservations)
            .map(|((event, (order_id, _)), reservation)| match reservation {
                Reservation::Reserved(items) => EventRecord::following(
                    &self.topic,
                    &StockReserved {
                        order_id: *order_id,
                        items,
                        at,
                    },
                    event,
                ),
                Reservation::Rejected(lines) => EventRecord::following(
                    &self.topic,
                    &StockRejected {
                        order_id: *order_id,
                        lines,
                        at,
                    },
                    event,
                ),
            })
            .collect();
        outbox::enqueue_all(tx, &answers)
            .await
            .map_err(|e| (0, e.into()))
    }
}
