//! What a customer is told about their order, and by which channel. Pure rules: no I/O.
//!
//! Customers hear of the steps they care about: placed, reserved, paid, shipped, refunded, a
//! payment that waits for them to authenticate, and a cancellation with its reason (and what
//! was held for it). COMPLETED and the inventory's internals are not news to them. A
//! cancellation is told from OrderCancelled, which carries the reason and the amount; the
//! OrderStatusChanged to CANCELLED beside it says nothing more. The shop's admins hear of a
//! capture that failed: the order waits for one of them, PAID.

use oms_saga::{
    consumer::{HandlerError, payload},
    event::{
        Channel, Event, EventRecord, OrderCancelled, OrderPlaced, OrderStatus, OrderStatusChanged,
        PaymentActionRequired, PaymentCaptureFailed,
    },
};
use uuid::Uuid;

/// A notification decided on, before it is addressed and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub order_id: Uuid,
    /// Named by the event, or `None` when the event does not say (status changes).
    pub customer_id: Option<Uuid>,
    pub kind: &'static str,
    pub channel: Channel,
    pub message: String,
    pub audience: Audience,
}

/// Whom a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The order's customer.
    Customer,
    /// The shop's admins.
    Admins,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Customer => "CUSTOMER",
            Audience::Admins => "ADMINS",
        }
    }
}

/// What `event` tells its customer; `None` when it is not news to them.
pub fn notice(event: &EventRecord) -> Result<Option<Notice>, HandlerError> {
    match event.event_type.as_str() {
        OrderPlaced::TYPE => {
            let placed: OrderPlaced = payload(event)?;
            let message = format!(
                "We have your order {} for {:.2}, and are checking the stock.",
                short(placed.order_id),
                placed.total
            );
            Ok(Some(told(
                placed.order_id,
                Some(placed.customer_id),
                "PLACED",
                message,
            )))
        }
        OrderStatusChanged::TYPE => {
            let changed: OrderStatusChanged = payload(event)?;
            let id = short(changed.order_id);
            let (kind, message) = match changed.new_status {
                OrderStatus::Reserved => (
                    "RESERVED",
                    format!("Everything in order {id} is set aside for you. Pay to complete it."),
                ),
                OrderStatus::Paid => ("PAID", format!("Thank you: order {id} is paid.")),
                OrderStatus::Shipped => ("SHIPPED", format!("Order {id} is on its way.")),
                OrderStatus::Refunded => (
                    "REFUNDED",
                    format!("Order {id} is refunded in full to the card you paid with."),
                ),
                OrderStatus::Created | OrderStatus::Completed | OrderStatus::Cancelled => {
                    return Ok(None);
                }
            };
            Ok(Some(told(changed.order_id, None, kind, message)))
        }
        OrderCancelled::TYPE => {
            let cancelled: OrderCancelled = payload(event)?;
            let mut message = format!(
                "Order {} is cancelled: {}.",
                short(cancelled.order_id),
                why(&cancelled.reason)
            );
            if let Some(held) = cancelled.refund {
                message.push_str(&format!(" The {held:.2} held on your card is released."));
            }
            Ok(Some(told(
                cancelled.order_id,
                Some(cancelled.customer_id),
                "CANCELLED",
                message,
            )))
        }
        PaymentActionRequired::TYPE => {
            let action: PaymentActionRequired = payload(event)?;
            let message = format!(
                "Your bank asks you to confirm the payment for order {} before it is taken.",
                short(action.order_id)
            );
            Ok(Some(told(
                action.order_id,
                Some(action.customer_id),
                "PAYMENT_ACTION",
                message,
            )))
        }
        PaymentCaptureFailed::TYPE => {
            let failed: PaymentCaptureFailed = payload(event)?;
            let message = format!(
                "The payment for order {} could not be captured ({}), so it has not shipped: it \
                 stays PAID. Ship it again or cancel it.",
                short(failed.order_id),
                failed.reason
            );
            let notice = told(
                failed.order_id,
                Some(failed.customer_id),
                "CAPTURE_FAILED",
                message,
            );
            Ok(Some(Notice {
                audience: Audience::Admins,
                ..notice
            }))
        }
        _ => Ok(None),
    }
}

fn told(order_id: Uuid, customer_id: Option<Uuid>, kind: &'static str, message: String) -> Notice {
    Notice {
        order_id,
        customer_id,
        kind,
        channel: channel(kind),
        message,
        audience: Audience::Customer,
    }
}

/// Shipping news is wanted at once, so it goes by SMS; the rest by email.
fn channel(kind: &str) -> Channel {
    if kind == "SHIPPED" {
        Channel::Sms
    } else {
        Channel::Email
    }
}

/// A cancellation reason in words a customer reads.
fn why(reason: &str) -> String {
    match reason {
        "OUT_OF_STOCK" => "some items are out of stock".into(),
        "PAYMENT_TIMEOUT" => "it was not paid in time".into(),
        other => other.to_lowercase().replace('_', " "),
    }
}

/// The last eight hex digits of an order id: enough for a customer to tell their orders apart
/// (the first ones of a time-ordered id are the same for orders placed close together).
fn short(order_id: Uuid) -> String {
    let id = order_id.simple().to_string();
    id[id.len() - 8..].to_owned()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use oms_saga::event::OrderLine;

    use super::*;

    const TOPIC: &str = "orders";

    fn changed(to: OrderStatus) -> EventRecord {
        let event = OrderStatusChanged {
            order_id: Uuid::new_v4(),
            old_status: OrderStatus::Created,
            new_status: to,
            reason: None,
            at: Utc::now(),
        };
        EventRecord::new(TOPIC, &event)
    }

    #[test]
    fn a_failed_capture_is_for_the_admins_and_an_authentication_for_the_customer() {
        let (order_id, customer_id) = (Uuid::new_v4(), Uuid::new_v4());
        let failed = PaymentCaptureFailed {
            order_id,
            customer_id,
            intent_id: "pi_1".into(),
            reason: "the authorization expired".into(),
            at: Utc::now(),
        };
        let told = notice(&EventRecord::new("payments", &failed))
            .expect("valid")
            .expect("news");
        assert_eq!(
            (told.kind, told.audience),
            ("CAPTURE_FAILED", Audience::Admins)
        );
        assert_eq!(told.customer_id, Some(customer_id));
        assert!(
            told.message.contains("the authorization expired"),
            "{}",
            told.message
        );
        let action = PaymentActionRequired {
            order_id,
            customer_id,
            intent_id: "pi_1".into(),
            client_secret: "pi_1_secret_x".into(),
            at: Utc::now(),
        };
        let told = notice(&EventRecord::new("payments", &action))
            .expect("valid")
            .expect("news");
        assert_eq!(
            (told.kind, told.audience),
            ("PAYMENT_ACTION", Audience::Customer)
        );
        assert!(!told.message.contains("secret"), "{}", told.message);
    }

    #[test]
    fn customers_hear_of_the_steps_they_care_about_and_shipping_by_sms() {
        let told: Vec<_> = OrderStatus::ALL
            .into_iter()
            .map(|to| {
                notice(&changed(to))
                    .expect("valid")
                    .map(|n| (n.kind, n.channel))
            })
            .collect();
        assert_eq!(
            told,
            vec![
                None,
                Some(("RESERVED", Channel::Email)),
                Some(("PAID", Channel::Email)),
                Some(("SHIPPED", Channel::Sms)),
                None,
                None,
                Some(("REFUNDED", Channel::Email)),
            ],
            "in the order of OrderStatus::ALL"
        );
    }

    #[test]
    fn a_placed_order_names_its_customer_and_a_cancellation_its_reason_and_refund() {
        let customer = Uuid::new_v4();
        let placed = OrderPlaced {
            order_id: Uuid::new_v4(),
            customer_id: customer,
            items: vec![OrderLine {
                product_id: "SKU-1".into(),
                quantity: 2,
                unit_price: "4.50".parse().expect("price"),
            }],
            total: "9.0000".parse().expect("total"),
            placed_at: Utc::now(),
            placed_by: None,
            currency: "USD".into(),
            payment_method: None,
        };
        let notice = notice(&EventRecord::new(TOPIC, &placed))
            .expect("valid")
            .expect("news");
        assert_eq!(
            (notice.kind, notice.customer_id),
            ("PLACED", Some(customer))
        );
        assert!(notice.message.contains("9.00"), "{}", notice.message);
        let tail = &placed.order_id.simple().to_string()[24..];
        assert!(
            notice.message.contains(tail),
            "names the order: {}",
            notice.message
        );

        let cancelled = OrderCancelled {
            order_id: placed.order_id,
            customer_id: customer,
            previous_status: OrderStatus::Paid,
            reason: "PAYMENT_TIMEOUT".into(),
            refund: Some("9.0000".parse().expect("refund")),
            at: Utc::now(),
        };
        let notice = super::notice(&EventRecord::new(TOPIC, &cancelled))
            .expect("valid")
            .expect("news");
        assert_eq!(notice.kind, "CANCELLED");
        assert!(
            notice.message.contains("not paid in time"),
            "{}",
            notice.message
        );
        assert!(
            notice
                .message
                .contains("9.00 held on your card is released"),
            "{}",
            notice.message
        );
    }

    #[test]
    fn an_order_event_that_does_not_parse_is_poison() {
        let mut record = changed(OrderStatus::Paid);
        record.payload = serde_json::json!({ "orderId": "not a uuid" });
        assert!(matches!(notice(&record), Err(HandlerError::Poison(_))));
    }
}
