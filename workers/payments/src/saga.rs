//! The payment step's part in the order saga, as business rules over the step's ledger and the
//! provider's PaymentIntents:
//!
//! - a placed order records what it owes;
//! - once its stock is reserved, its total is authorized on the customer's card
//!   (`PaymentAuthorized`: the order becomes PAID), the card is declined (`PaymentDeclined`: the
//!   order is cancelled, which releases its stock), or the bank wants the customer to
//!   authenticate (`PaymentActionRequired`: the order waits, and the answer comes later through
//!   a webhook or the reconciler);
//! - an admin's shipment is captured first (`PaymentCaptured`: the order ships), or the failure
//!   is reported (`PaymentCaptureFailed`: the order stays PAID);
//! - an admin's refund gives the capture back in full (`PaymentRefunded`: REFUNDED);
//! - a cancelled order's authorization is released (`PaymentVoided`), or its capture refunded if
//!   it was taken meanwhile: no money is kept for an order that will not ship.
//!
//! Each order's payment is locked while one of these runs, so an event, a webhook and the
//! reconciler never act on it at once. The provider is called inside that transaction; the
//! intent's id is committed apart, before the intent is confirmed, and every later step reads
//! the intent's status (or its refunds) before it acts, so a redelivered event or a restart
//! between the provider's answer and the commit never charges, captures or refunds twice. A
//! provider that is away fails the event as transient: the loop retries it with backoff, and
//! the order waits where it is.

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use oms_saga::{
    consumer::{Handler, HandlerError, payload},
    event::{
        Event, EventRecord, OrderCancelled, OrderPlaced, OrderStatus, OrderStatusChanged,
        PaymentActionRequired, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured,
        PaymentDeclined, PaymentRefunded, PaymentVoided, RefundRequested, ShipmentRequested,
    },
    money::Currency,
    outbox,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    ledger::{self, Payment, state},
    stripe::{IntentStatus, PaymentIntent, Stripe, StripeError},
};

/// Reacts to the `orders` topic, to the provider's webhooks and to its own reconciler, and
/// writes its outcomes to the payments topic.
#[derive(Debug, Clone)]
pub struct Payments {
    /// For the one write that must commit before the provider is asked (the intent's id), and
    /// for the webhooks' and the reconciler's own transactions.
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

fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

#[async_trait]
impl Handler for Payments {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        let cause = Some(event);
        match event.event_type.as_str() {
            OrderPlaced::TYPE => self.owe(&payload(event)?, event).await,
            OrderStatusChanged::TYPE => {
                let changed: OrderStatusChanged = payload(event)?;
                if changed.new_status != OrderStatus::Reserved {
                    return Ok(());
                }
                self.authorize(tx, cause, changed.order_id).await
            }
            ShipmentRequested::TYPE => {
                let asked: ShipmentRequested = payload(event)?;
                self.capture(tx, cause, asked.order_id).await
            }
            RefundRequested::TYPE => {
                let asked: RefundRequested = payload(event)?;
                let payment = self.locked(tx, asked.order_id).await?;
                match payment.state.as_str() {
                    state::CAPTURED => self.refund(tx, cause, &payment).await,
                    state::REFUNDED => Ok(()),
                    other => Err(HandlerError::Poison(format!(
                        "order {} cannot be refunded: its payment is {other}, not captured",
                        payment.order_id
                    ))),
                }
            }
            OrderCancelled::TYPE => {
                let cancelled: OrderCancelled = payload(event)?;
                self.void(tx, cause, cancelled.order_id).await
            }
            _ => Ok(()),
        }
    }
}

impl Payments {
    /// Records what a placed order owes. Committed on its own: the record is idempotent, and
    /// the intent's id, kept apart before the intent is confirmed, needs the row to exist.
    async fn owe(&self, placed: &OrderPlaced, event: &EventRecord) -> Result<(), HandlerError> {
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
                customer_id: Some(placed.customer_id),
                correlation_id: Some(event.correlation_id),
                amount_minor,
                currency: currency.code.to_owned(),
                payment_method,
                intent_id: None,
                state: state::DUE.into(),
            },
        )
        .await?;
        Ok(())
    }

    /// The order's payment, locked for the rest of `tx`.
    async fn locked(&self, tx: &mut PgConnection, order_id: Uuid) -> Result<Payment, HandlerError> {
        ledger::lock(&mut *tx, order_id).await?.ok_or_else(|| {
            HandlerError::Poison(format!("order {order_id} has no payment on record"))
        })
    }

    /// The order's intent: the one it has, as the provider has it now, or a new one, kept
    /// (committed) before it is returned.
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
            return Ok(created);
        }
        // Another delivery kept its own first: this one is a draft no one will confirm.
        if let Err(e) = self.stripe.cancel(payment.order_id, &created.id).await {
            tracing::warn!(intent = %created.id, error = %e, "a spare draft intent was left");
        }
        self.stripe.intent(&kept).await.map_err(failed)
    }

    async fn authorize(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        order_id: Uuid,
    ) -> Result<(), HandlerError> {
        // Not locked yet: the intent's id is kept by another connection. Only this step's
        // consumer, one order's events at a time, moves a payment out of DUE.
        let Some(payment) = ledger::get(&mut *tx, order_id).await? else {
            return Ok(());
        };
        if payment.state != state::DUE {
            return Ok(());
        }
        let mut intent = self.intent(&payment).await?;
        let payment = self.locked(tx, order_id).await?;
        if intent.status == IntentStatus::RequiresConfirmation {
            intent = match self.stripe.confirm(order_id, &intent.id).await {
                Ok(confirmed) => confirmed,
                Err(StripeError::Declined { code, .. }) => {
                    return self.declined(tx, cause, &payment, code).await;
                }
                Err(e) => return Err(failed(e)),
            };
        }
        self.settle(tx, cause, &payment, intent).await
    }

    /// What an authorization's outcome, as the provider has it, does to the order's payment.
    async fn settle(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        payment: &Payment,
        intent: PaymentIntent,
    ) -> Result<(), HandlerError> {
        let order_id = payment.order_id;
        match intent.status {
            IntentStatus::RequiresCapture | IntentStatus::Succeeded => {
                ledger::set_state(tx, order_id, state::AUTHORIZED).await?;
                let authorized = PaymentAuthorized {
                    order_id,
                    intent_id: intent.id,
                    amount_minor: intent.amount,
                    currency: payment.currency.clone(),
                    at: now(),
                };
                self.answer(tx, &authorized, payment, cause).await
            }
            // The customer must authenticate; the answer comes by webhook or the reconciler,
            // unless the order's deadline cancels it first.
            IntentStatus::RequiresAction if payment.state != state::ACTION_REQUIRED => {
                ledger::set_state(tx, order_id, state::ACTION_REQUIRED).await?;
                let action = PaymentActionRequired {
                    order_id,
                    customer_id: customer(payment)?,
                    client_secret: intent.client_secret.unwrap_or_default(),
                    intent_id: intent.id,
                    at: now(),
                };
                self.answer(tx, &action, payment, cause).await
            }
            IntentStatus::RequiresAction | IntentStatus::Canceled => Ok(()),
            // Declined at confirmation, or the customer's authentication failed.
            IntentStatus::RequiresPaymentMethod => {
                self.declined(tx, cause, payment, "card_declined".into())
                    .await
            }
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
        cause: Option<&EventRecord>,
        payment: &Payment,
        code: String,
    ) -> Result<(), HandlerError> {
        ledger::set_state(tx, payment.order_id, state::DECLINED).await?;
        let declined = PaymentDeclined {
            order_id: payment.order_id,
            code,
            at: now(),
        };
        self.answer(tx, &declined, payment, cause).await
    }

    /// Takes the authorized money of an order an admin ships.
    async fn capture(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        order_id: Uuid,
    ) -> Result<(), HandlerError> {
        let payment = self.locked(tx, order_id).await?;
        let intent_id = match (payment.state.as_str(), &payment.intent_id) {
            // Asked twice: the first has shipped it.
            (state::CAPTURED | state::REFUNDED, _) => return Ok(()),
            (state::AUTHORIZED, Some(intent_id)) => intent_id.clone(),
            (other, _) => {
                let why = format!("the payment is {other}, not authorized");
                return self.capture_failed(tx, cause, &payment, why).await;
            }
        };
        let intent = self.stripe.intent(&intent_id).await.map_err(failed)?;
        let captured = match intent.status {
            IntentStatus::RequiresCapture => {
                match self.stripe.capture(order_id, &intent_id).await {
                    Ok(captured) => captured,
                    Err(e @ StripeError::Unavailable(_)) => return Err(failed(e)),
                    Err(
                        StripeError::Declined { message, .. }
                        | StripeError::Refused { message, .. },
                    ) => {
                        return self.capture_failed(tx, cause, &payment, message).await;
                    }
                }
            }
            // Captured before a redelivery of this event.
            IntentStatus::Succeeded => intent,
            IntentStatus::Canceled => {
                let why = "the authorization was cancelled at the payment provider (it expires \
                           after 7 days)";
                return self.capture_failed(tx, cause, &payment, why.into()).await;
            }
            other => {
                let why = format!("the payment provider has the payment as {other:?}");
                return self.capture_failed(tx, cause, &payment, why).await;
            }
        };
        ledger::set_state(tx, order_id, state::CAPTURED).await?;
        let event = PaymentCaptured {
            order_id,
            intent_id,
            amount_minor: captured.amount,
            currency: payment.currency.clone(),
            at: now(),
        };
        self.answer(tx, &event, &payment, cause).await
    }

    async fn capture_failed(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        payment: &Payment,
        reason: String,
    ) -> Result<(), HandlerError> {
        tracing::warn!(order_id = %payment.order_id, %reason, "capture failed");
        let event = PaymentCaptureFailed {
            order_id: payment.order_id,
            customer_id: customer(payment)?,
            intent_id: payment.intent_id.clone().unwrap_or_default(),
            reason,
            at: now(),
        };
        self.answer(tx, &event, payment, cause).await
    }

    /// Gives a captured payment back in full. The intent's refunds are read first: one made
    /// before a crash or a redelivery is the refund, not a reason to make another.
    async fn refund(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        payment: &Payment,
    ) -> Result<(), HandlerError> {
        let order_id = payment.order_id;
        let intent_id = payment.intent_id.clone().ok_or_else(|| {
            HandlerError::Poison(format!("order {order_id}'s captured payment has no intent"))
        })?;
        let earlier = self.stripe.refunds(&intent_id).await.map_err(failed)?;
        let refund = match earlier
            .into_iter()
            .find(|r| r.status != "failed" && r.status != "canceled")
        {
            Some(refund) => refund,
            None => self
                .stripe
                .refund(order_id, &intent_id)
                .await
                .map_err(failed)?,
        };
        ledger::set_state(tx, order_id, state::REFUNDED).await?;
        let event = PaymentRefunded {
            order_id,
            intent_id,
            refund_id: refund.id,
            amount_minor: refund.amount,
            currency: payment.currency.clone(),
            at: now(),
        };
        self.answer(tx, &event, payment, cause).await
    }

    /// Releases what a cancelled order holds, if anything; gives back what was taken.
    async fn void(
        &self,
        tx: &mut PgConnection,
        cause: Option<&EventRecord>,
        order_id: Uuid,
    ) -> Result<(), HandlerError> {
        let Some(payment) = ledger::lock(&mut *tx, order_id).await? else {
            return Ok(());
        };
        match payment.state.as_str() {
            state::DUE | state::AUTHORIZED | state::ACTION_REQUIRED => {}
            // Shipped and cancelled at once: the capture went first, so it goes back.
            state::CAPTURED => return self.refund(tx, cause, &payment).await,
            _ => return Ok(()),
        }
        let Some(intent_id) = payment.intent_id.clone() else {
            // Never asked of the provider: nothing is held there.
            ledger::set_state(tx, order_id, state::VOIDED).await?;
            return Ok(());
        };
        let intent = self.stripe.intent(&intent_id).await.map_err(failed)?;
        match intent.status {
            IntentStatus::Canceled => {}
            // Captured by a step whose commit was lost: the money goes back.
            IntentStatus::Succeeded => return self.refund(tx, cause, &payment).await,
            _ => {
                self.stripe
                    .cancel(order_id, &intent_id)
                    .await
                    .map_err(failed)?;
            }
        }
        ledger::set_state(tx, order_id, state::VOIDED).await?;
        let voided = PaymentVoided {
            order_id,
            intent_id,
            at: now(),
        };
        self.answer(tx, &voided, &payment, cause).await
    }

    /// Asks the provider where a payment that waits for the customer is now, and moves the
    /// saga on, on `tx`, if it has an answer: for a webhook about its intent, and for the
    /// reconciler (localstripe, for one, sends no webhook when a customer authenticates).
    /// `Ok(false)` when there was nothing to do.
    pub async fn reconcile(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<bool, HandlerError> {
        let Some(payment) = ledger::lock(&mut *tx, order_id).await? else {
            return Ok(false);
        };
        let Some(intent_id) = payment
            .intent_id
            .clone()
            .filter(|_| payment.state == state::ACTION_REQUIRED)
        else {
            return Ok(false);
        };
        let intent = self.stripe.intent(&intent_id).await.map_err(failed)?;
        if intent.status == IntentStatus::RequiresAction {
            return Ok(false);
        }
        self.settle(tx, None, &payment, intent).await?;
        Ok(true)
    }

    /// Writes `event` to the outbox: following the event that caused it, or, for the provider's
    /// own word, in the order's saga.
    async fn answer<E: Event>(
        &self,
        tx: &mut PgConnection,
        event: &E,
        payment: &Payment,
        cause: Option<&EventRecord>,
    ) -> Result<(), HandlerError> {
        let record = match cause {
            Some(cause) => EventRecord::following(&self.topic, event, cause),
            None => EventRecord::new(&self.topic, event)
                .correlated(payment.correlation_id.unwrap_or(payment.order_id)),
        };
        outbox::enqueue(tx, &record).await?;
        Ok(())
    }
}

/// Whose order a payment is for.
fn customer(payment: &Payment) -> Result<Uuid, HandlerError> {
    payment.customer_id.ok_or_else(|| {
        HandlerError::Poison(format!(
            "order {}'s payment was recorded without its customer",
            payment.order_id
        ))
    })
}
