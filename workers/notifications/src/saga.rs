//! The notification service's part in the saga: each order event worth telling becomes one
//! notification row, written in the transaction that records the event in the inbox. Sending
//! happens afterwards ([`crate::send`]), so a slow or absent sender never holds the consumer up.

use std::collections::HashMap;

use async_trait::async_trait;
use oms_saga::{
    consumer::{Handler, HandlerError},
    event::{Channel, EventRecord},
    plan::PlannedPerCall,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::notice::{self, Notice};

#[derive(Debug, Clone, Copy)]
pub struct Notifier;

#[async_trait]
impl Handler for Notifier {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        self.handle_all(tx, &[event]).await.map_err(|(_, e)| e)
    }

    /// A batch's notices are written together: a look-up of the customers the events do not
    /// name, one insert of those they name (remembered for the orders' later events), and one
    /// of the notifications, whatever the batch's length.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&EventRecord],
    ) -> Result<(), (usize, HandlerError)> {
        let mut told = Vec::with_capacity(events.len());
        for (fine, event) in events.iter().enumerate() {
            if let Some(notice) = notice::notice(event).map_err(|e| (fine, e))? {
                told.push((fine, *event, notice));
            }
        }
        if told.is_empty() {
            return Ok(());
        }
        let database = |e: sqlx::Error| (0, HandlerError::from(e));
        let customers = customers(tx, &told).await.map_err(database)?;
        let mut rows = Rows::default();
        for ((fine, event, notice), customer_id) in told.iter().zip(customers) {
            let customer_id = customer_id.ok_or_else(|| {
                let reason = format!(
                    "no OrderPlaced was seen for order {}, so its customer is unknown",
                    notice.order_id
                );
                (*fine, HandlerError::Poison(reason))
            })?;
            rows.push(event, notice, customer_id);
        }
        // The event id is unique: a second row for one event cannot exist, whatever redelivers.
        // Each new one joins the senders' queue.
        sqlx::query(
            "WITH n AS (INSERT INTO notifications (id, event_id, order_id, customer_id, kind, \
             channel, message, correlation_id, traceparent, audience) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], \
             $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[]) \
             ON CONFLICT (event_id) DO NOTHING RETURNING id) \
             INSERT INTO notifications_pending (id) SELECT id FROM n",
        )
        .bind(&rows.ids)
        .bind(&rows.event_ids)
        .bind(&rows.order_ids)
        .bind(&rows.customer_ids)
        .bind(&rows.kinds)
        .bind(&rows.channels)
        .bind(&rows.messages)
        .bind(&rows.correlation_ids)
        .bind(&rows.traceparents)
        .bind(&rows.audiences)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        Ok(())
    }
}

/// The customer of each notice, in their order, as handling them one by one would find it: named by
/// its event (and remembered, the first name of an order winning), or remembered from an
/// earlier event, in this batch or before it. `None` where no event named the order's customer.
async fn customers(
    tx: &mut PgConnection,
    told: &[(usize, &EventRecord, Notice)],
) -> sqlx::Result<Vec<Option<Uuid>>> {
    let unnamed: Vec<Uuid> = told
        .iter()
        .filter(|(_, _, notice)| notice.customer_id.is_none())
        .map(|(_, _, notice)| notice.order_id)
        .collect();
    let mut known: HashMap<Uuid, Uuid> = if unnamed.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as("SELECT order_id, customer_id FROM order_customers WHERE order_id = ANY($1)")
            .planned_per_call()
            .bind(&unnamed)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
    };
    let (orders, named): (Vec<Uuid>, Vec<Uuid>) = told
        .iter()
        .filter_map(|(_, _, notice)| notice.customer_id.map(|c| (notice.order_id, c)))
        .unzip();
    if !orders.is_empty() {
        sqlx::query(
            "INSERT INTO order_customers (order_id, customer_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&orders)
        .bind(&named)
        .execute(&mut *tx)
        .await?;
    }
    Ok(told
        .iter()
        .map(|(_, _, notice)| match notice.customer_id {
            Some(customer_id) => {
                known.entry(notice.order_id).or_insert(customer_id);
                Some(customer_id)
            }
            None => known.get(&notice.order_id).copied(),
        })
        .collect())
}

/// The notifications to insert, column by column.
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
    customer_ids: Vec<Uuid>,
    kinds: Vec<&'a str>,
    channels: Vec<&'a str>,
    messages: Vec<&'a str>,
    correlation_ids: Vec<Uuid>,
    traceparents: Vec<Option<&'a str>>,
    audiences: Vec<&'static str>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, event: &'a EventRecord, notice: &'a Notice, customer_id: Uuid) {
        self.ids.push(Uuid::now_v7());
        self.event_ids.push(event.event_id);
        self.order_ids.push(notice.order_id);
        self.customer_ids.push(customer_id);
        self.kinds.push(notice.kind);
        self.channels.push(channel_name(notice.channel));
        self.messages.push(&notice.message);
        self.correlation_ids.push(event.correlation_id);
        self.traceparents.push(event.traceparent.as_deref());
        self.audiences.push(notice.audience.as_str());
    }
}

pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "EMAIL",
        Channel::Sms => "SMS",
    }
}
