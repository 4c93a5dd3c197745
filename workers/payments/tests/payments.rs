//! The payment step in the saga, against real PostgreSQL, a real broker and registry, and a
//! server that speaks Stripe's API (localstripe). The test plays the order service: it publishes
//! order events as the order API's relay would, and reads the step's outcomes from its topic.

use std::time::Duration;

use chrono::Utc;
use oms_payments::{
    Stripe, StripeConfig, ledger,
    stripe::IntentStatus,
    testing::{TestPayments, stripe_url},
};
use oms_registry::testing::TestRegistry;
use oms_saga::{
    event::*,
    testing::{self, TopicWriter},
};
use uuid::Uuid;

struct Saga {
    _registry: TestRegistry,
    /// Plays the order service.
    orders: TopicWriter,
    payments: TestPayments,
    stripe: Stripe,
}

impl Saga {
    async fn new() -> Self {
        let registry = TestRegistry::spawn().await;
        let mut bus = testing::bus_config();
        bus.registry.url = registry.url();
        let order_events = [
            OrderPlaced::TYPE,
            OrderStatusChanged::TYPE,
            OrderCancelled::TYPE,
        ];
        let orders = TopicWriter::new(&bus, "orders", &order_events).await;
        let payments = TestPayments::spawn(bus, &orders.topic).await;
        let stripe = Stripe::new(&StripeConfig {
            base_url: stripe_url(),
            ..StripeConfig::default()
        })
        .expect("client");
        Self {
            _registry: registry,
            orders,
            payments,
            stripe,
        }
    }

    /// An order of 24.00 USD paid with `payment_method`, placed.
    fn placed(&self, payment_method: &str) -> EventRecord {
        let placed = OrderPlaced {
            order_id: Uuid::new_v4(),
            customer_id: Uuid::new_v4(),
            items: vec![OrderLine {
                product_id: "SKU-MUG".into(),
                quantity: 2,
                unit_price: "12.00".parse().expect("dec"),
            }],
            total: "24.00".parse().expect("dec"),
            placed_at: Utc::now(),
            placed_by: None,
            currency: "USD".into(),
            payment_method: Some(payment_method.into()),
        };
        EventRecord::new(&self.orders.topic, &placed)
    }

    fn order_id(placed: &EventRecord) -> Uuid {
        placed.key.parse().expect("order id")
    }

    fn reserved(&self, placed: &EventRecord) -> EventRecord {
        let changed = OrderStatusChanged {
            order_id: Self::order_id(placed),
            old_status: OrderStatus::Created,
            new_status: OrderStatus::Reserved,
            reason: None,
            at: Utc::now(),
        };
        EventRecord::following(&self.orders.topic, &changed, placed)
    }

    fn cancelled(&self, placed: &EventRecord) -> EventRecord {
        let cancelled = OrderCancelled {
            order_id: Self::order_id(placed),
            customer_id: Uuid::new_v4(),
            previous_status: OrderStatus::Reserved,
            reason: "PAYMENT_TIMEOUT".into(),
            refund: None,
            at: Utc::now(),
        };
        EventRecord::following(&self.orders.topic, &cancelled, placed)
    }

    /// The step's first `count` outcomes.
    async fn outcomes(&self, count: usize) -> Vec<EventRecord> {
        self.orders.read(&self.payments.config.topic, count).await
    }

    async fn payment(&self, placed: &EventRecord) -> ledger::Payment {
        ledger::get(&self.payments.db.pool, Self::order_id(placed))
            .await
            .expect("read")
            .expect("a payment")
    }

    async fn wait_for_state(&self, placed: &EventRecord, state: &str) -> ledger::Payment {
        testing::eventually(Duration::from_secs(30), state, || async {
            ledger::get(&self.payments.db.pool, Self::order_id(placed))
                .await
                .expect("read")
                .filter(|payment| payment.state == state)
        })
        .await
    }
}

#[tokio::test]
async fn a_reserved_order_is_authorized_once_and_its_cancellation_releases_the_money() {
    let saga = Saga::new().await;
    let placed = saga.placed("pm_card_visa");
    let reserved = saga.reserved(&placed);
    saga.orders.publish(&[&placed, &reserved]).await;
    let authorized: PaymentAuthorized = saga.outcomes(1).await[0]
        .payload_as()
        .expect("PaymentAuthorized")
        .expect("payload");
    assert_eq!(
        (authorized.amount_minor, authorized.currency.as_str()),
        (2400, "USD")
    );
    let payment = saga.wait_for_state(&placed, "AUTHORIZED").await;
    assert_eq!(
        payment.intent_id.as_deref(),
        Some(authorized.intent_id.as_str())
    );
    let intent = saga
        .stripe
        .intent(&authorized.intent_id)
        .await
        .expect("intent");
    assert_eq!(intent.status, IntentStatus::RequiresCapture);
    assert_eq!(
        intent.metadata["order_id"],
        Saga::order_id(&placed).to_string()
    );

    // The same reservation again asks nothing more; the cancellation releases the hold.
    let cancelled = saga.cancelled(&placed);
    saga.orders.publish(&[&reserved, &cancelled]).await;
    let outcomes = saga.outcomes(2).await;
    let voided: PaymentVoided = outcomes[1]
        .payload_as()
        .expect("PaymentVoided, not a second authorization")
        .expect("payload");
    assert_eq!(voided.intent_id, authorized.intent_id);
    assert_eq!(outcomes[1].causation_id, Some(cancelled.event_id));
    assert_eq!(outcomes[1].correlation_id, placed.correlation_id);
    let intent = saga
        .stripe
        .intent(&authorized.intent_id)
        .await
        .expect("intent");
    assert_eq!(intent.status, IntentStatus::Canceled);
    assert_eq!(saga.payment(&placed).await.state, "VOIDED");
}

#[tokio::test]
async fn a_declined_card_is_reported_and_holds_nothing() {
    let saga = Saga::new().await;
    let placed = saga.placed("pm_card_chargeCustomerFail");
    saga.orders
        .publish(&[&placed, &saga.reserved(&placed)])
        .await;
    let declined: PaymentDeclined = saga.outcomes(1).await[0]
        .payload_as()
        .expect("PaymentDeclined")
        .expect("payload");
    assert_eq!(declined.code, "card_declined");
    let payment = saga.wait_for_state(&placed, "DECLINED").await;
    let intent = saga
        .stripe
        .intent(payment.intent_id.as_deref().expect("its intent"))
        .await
        .expect("intent");
    assert_eq!(intent.status, IntentStatus::RequiresPaymentMethod);
}

/// The intent's id is kept before it is confirmed: a worker that stopped after the provider
/// authorized but before its own commit finds the same intent when the event comes again, and
/// neither makes another nor asks twice.
#[tokio::test]
async fn an_authorization_answered_but_never_committed_is_found_again_not_made_twice() {
    let saga = Saga::new().await;
    let placed = saga.placed("pm_card_visa");
    let order_id = Saga::order_id(&placed);
    saga.orders.publish(&[&placed]).await;
    saga.wait_for_state(&placed, "DUE").await;
    // What the stopped worker had done: the intent made, kept, and authorized at the provider.
    let intent = saga
        .stripe
        .create_intent(order_id, 2400, "USD", "pm_card_visa")
        .await
        .expect("intent");
    ledger::keep_intent(&saga.payments.db.pool, order_id, &intent.id)
        .await
        .expect("kept");
    saga.stripe
        .confirm(order_id, &intent.id)
        .await
        .expect("authorized");

    saga.orders.publish(&[&saga.reserved(&placed)]).await;
    let authorized: PaymentAuthorized = saga.outcomes(1).await[0]
        .payload_as()
        .expect("PaymentAuthorized")
        .expect("payload");
    assert_eq!(authorized.intent_id, intent.id);
    assert_eq!(
        saga.wait_for_state(&placed, "AUTHORIZED").await.intent_id,
        Some(intent.id)
    );
}
