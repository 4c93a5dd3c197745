//! The notification service's part in the saga: each order event worth telling becomes one
//! notification row, written in the transaction that records the event in the inbox. Sending
//! happens afterwards ([`crate::send`]), so a slow or absent sender never holds the consumer up.

use async_trait::async_trait;
use oms_saga::{
    consumer::{Handler, HandlerError},
    event::{Channel, EventRecord},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::notice::{self, Notice};

#[derive(Debug, Clone, Copy)]
pub struct Notifier;

#[async_trait]
impl Handler for Notifier {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        let Some(notice) = notice::notice(event)? else {
            return Ok(());
        };
        let customer_id = customer_of(tx, &notice).await?;
        // The event id is unique: a second row for one event cannot exist, whatever redelivers.
        sqlx::query(
            "INSERT INTO notifications (id, event_id, order_id, customer_id, kind, channel, message, \
             correlation_id, traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(event.event_id)
        .bind(notice.order_id)
        .bind(customer_id)
        .bind(notice.kind)
        .bind(channel_name(notice.channel))
        .bind(&notice.message)
        .bind(event.correlation_id)
        .bind(&event.traceparent)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Who the notice is for: named by the event (and remembered for the order's later events), or
/// remembered from its OrderPlaced.
async fn customer_of(tx: &mut PgConnection, notice: &Notice) -> Result<Uuid, HandlerError> {
    if let Some(customer_id) = notice.customer_id {
        sqlx::query(
            "INSERT INTO order_customers (order_id, customer_id) VALUES ($1, $2) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(notice.order_id)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        return Ok(customer_id);
    }
    sqlx::query_scalar("SELECT customer_id FROM order_customers WHERE order_id = $1")
        .bind(notice.order_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            HandlerError::Poison(format!(
                "no OrderPlaced was seen for order {}, so its customer is unknown",
                notice.order_id
            ))
        })
}

pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "EMAIL",
        Channel::Sms => "SMS",
    }
}
