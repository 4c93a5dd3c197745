//! The payment step's part in the order saga. A placed order records what it owes; once its
//! stock is reserved, its total is authorized on the customer's card (`PaymentAuthorized`, and the
//! order becomes PAID) or the card is declined (`PaymentDeclined`, and the order is cancelled,
//! which releases its stock). A cancelled order's authorization is released (`PaymentVoided`), so
//! no money is held for an order that will not ship. A card that needs the customer to
//! authenticate leaves the order waiting until its payment deadline cancels it.
//!
//! The provider is called inside the consume loop's transaction; the intent's id is committed
//! apart, before the intent is confirmed, and a redelivered event looks the intent up instead of
//! making another. A provider that is away fails the event as transient: the loop retries it
//! with backoff, and the order waits, RESERVED.

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use oms_saga::{
    consumer::{Handler, HandlerError, payload},
    event::{
        Event, EventRecord, OrderCancelled, OrderPlaced, OrderStatus, OrderStatusChanged,
        PaymentAuthorized, PaymentDeclined, PaymentVoided,
    },
    money::Currency,
    outbox,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    ledger::{self, Payment},
    stripe::{IntentStatus, PaymentIntent, Stripe, StripeError},
};

/// Reacts to the `orders` topic and writes its outcomes to the payments topic.
#[derive(Debug, Clone)]
pub struct Payments {
    /// For the one write that must commit before the provider is asked: the intent's id.
    pub pool: PgPool,
    pub stripe: Stripe,
    pub topic: String,
}

/// A provider's failure as the consume loop should treat it.
fn failed(e: StripeError) -> HandlerError {
    match e {
        StripeError::Unavailable(why) => {
            HandlerError::Transient(format!("payment provider: {why}"))
        }
        other => HandlerError::Poison(format!("payment provider: {other}")),
    }
}

#[async_trait]
impl Handler for Payments {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            OrderPlaced::TYPE => self.owe(&payload(event)?).await,
            OrderStatusChanged::TYPE => {
                let changed: OrderStatusChanged = payload(event)?;
                if changed.new_status != OrderStatus::Reserved {
                    return Ok(());
                }
                self.authorize(tx, event, changed.order_id).await
            }
            OrderCancelled::TYPE => {
                let cancelled: OrderCancelled = payload(event)?;
                self.void(tx, event, cancelled.order_id).await
            }
            _ => Ok(()),
        }
    }
}

impl Payments {
    /// Records what a placed order owes. Committed on its own: the record is idempotent, and
    /// the intent's id, kept apart before the intent is confirmed, needs the row to exist.
    async fn owe(&self, placed: &OrderPlaced) -> Result<(), HandlerError> {
        // Orders placed before orders named a payment method have none to take.
        let Some(payment_method) = placed.payment_method.clone() else {
            return Ok(());
        };
        let currency = Currency::parse(&placed.currency).map_err(HandlerError::Poison)?;
        let amount_minor = currency
            .to_minor(placed.total)
            .map_err(HandlerError::Poison)?;
        if amount_minor <= 0 {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        ledger::owe(
            &mut conn,
            &Payment {
                order_id: placed.order_id,
                amount_minor,
                currency: currency.code.to_owned(),
                payment_method,
                intent_id: None,
                state: "DUE".into(),
            },
        )
        .await?;
        Ok(())
    }

    /// The order's intent: the one it has, as the provider has it now, or a new one, kept
    /// before it is returned.
    async fn intent(&self, payment: &Payment) -> Result<PaymentIntent, HandlerError> {
        if let Some(id) = &payment.intent_id {
            return self.stripe.intent(id).await.map_err(failed);
        }
        let created = self
            .stripe
            .create_intent(
                payment.order_id,
                payment.amount_minor,
                &payment.currency,
                &payment.payment_method,
            )
            .await
            .map_err(failed)?;
        let kept = ledger::keep_intent(&self.pool, payment.order_id, &created.id).await?;
        if kept == created.id {
            Ok(created)
        } else {
            self.stripe.intent(&kept).await.map_err(failed)
        }
    }

    async fn authorize(
        &self,
        tx: &mut PgConnection,
        cause: &EventRecord,
        order_id: Uuid,
    ) -> Result<(), HandlerError> {
        let Some(payment) = ledger::get(&mut *tx, order_id).await? else {
            return Ok(());
        };
        if payment.state != "DUE" {
            return Ok(());
        }
        let mut intent = self.intent(&payment).await?;
        if intent.status == IntentStatus::RequiresConfirmation {
            intent = match self.stripe.confirm(order_id, &intent.id).await {
                Ok(confirmed) => confirmed,
                Err(StripeError::Declined { code, .. }) => {
                    return self.declined(tx, cause, order_id, code).await;
                }
                Err(e) => return Err(failed(e)),
            };
        }
        let at = Utc::now().trunc_subsecs(3);
        match intent.status {
            IntentStatus::RequiresCapture | IntentStatus::Succeeded => {
                ledger::set_state(tx, order_id, "AUTHORIZED").await?;
                let authorized = PaymentAuthorized {
                    order_id,
                    intent_id: intent.id,
                    amount_minor: intent.amount,
                    currency: payment.currency,
                    at,
                };
                self.answer(tx, &authorized, cause).await
            }
            // The customer must authenticate; until then the order waits for its deadline.
            IntentStatus::RequiresAction => {
                ledger::set_state(tx, order_id, "ACTION_REQUIRED").await?;
                Ok(())
            }
            // Confirmed and declined before a redelivery of this event.
            IntentStatus::RequiresPaymentMethod => {
                self.declined(tx, cause, order_id, "card_declined".into())
                    .await
            }
            IntentStatus::Canceled => Ok(()),
            IntentStatus::RequiresConfirmation | IntentStatus::Processing => {
                Err(HandlerError::Transient(format!(
                    "intent {} is still {:?}",
                    intent.id, intent.status
                )))
            }
        }
    }

    async fn declined(
        &self,
        tx: &mut PgConnection,
        cause: &EventRecord,
        order_id: Uuid,
        code: String,
    ) -> Result<(), HandlerError> {
        ledger::set_state(tx, order_id, "DECLINED").await?;
        let declined = PaymentDeclined {
            order_id,
            code,
            at: Utc::now().trunc_subsecs(3),
        };
        self.answer(tx, &declined, cause).await
    }

    /// Releases what a cancelled order holds, if anything.
    async fn void(
        &self,
        tx: &mut PgConnection,
        cause: &EventRecord,
        order_id: Uuid,
    ) -> Result<(), HandlerError> {
        let Some(payment) = ledger::get(&mut *tx, order_id).await? else {
            return Ok(());
        };
        let held = matches!(
            payment.state.as_str(),
            "DUE" | "AUTHORIZED" | "ACTION_REQUIRED"
        );
        let Some(intent_id) = payment.intent_id.filter(|_| held) else {
            if held {
                // Never asked of the provider: nothing is held there.
                ledger::set_state(tx, order_id, "VOIDED").await?;
            }
            return Ok(());
        };
        let intent = self.stripe.intent(&intent_id).await.map_err(failed)?;
        match intent.status {
            IntentStatus::Canceled => {}
            IntentStatus::Succeeded => {
                return Err(HandlerError::Poison(format!(
                    "order {order_id} was cancelled after its payment {intent_id} was captured"
                )));
            }
            _ => {
                self.stripe
                    .cancel(order_id, &intent_id)
                    .await
                    .map_err(failed)?;
            }
        }
        ledger::set_state(tx, order_id, "VOIDED").await?;
        let voided = PaymentVoided {
            order_id,
            intent_id,
            at: Utc::now().trunc_subsecs(3),
        };
        self.answer(tx, &voided, cause).await
    }

    async fn answer<E: Event>(
        &self,
        tx: &mut PgConnection,
        event: &E,
        cause: &EventRecord,
    ) -> Result<(), HandlerError> {
        outbox::enqueue(tx, &EventRecord::following(&self.topic, event, cause)).await?;
        Ok(())
    }
}
