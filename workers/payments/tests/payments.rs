//! The payment step in the saga, against real PostgreSQL, a real broker and registry, and a
//! server that speaks Stripe's API (localstripe). The test plays the order service: it publishes
//! order events as the order API's relay would, and reads the step's outcomes from its topic.

use std::time::Duration;

use chrono::Utc;
use oms_payments::{
    PaymentsConfig, Stripe, StripeConfig, ledger,
    stripe::IntentStatus,
    testing::{TestPayments, authenticate, stripe_url, three_d_secure_method},
    webhook,
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

const WEBHOOK_SECRET: &str = "whsec_test_payments";

impl Saga {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut PaymentsConfig)) -> Self {
        let registry = TestRegistry::spawn().await;
        let mut bus = testing::bus_config();
        bus.registry.url = registry.url();
        let order_events = [
            OrderPlaced::TYPE,
            OrderStatusChanged::TYPE,
            OrderCancelled::TYPE,
            ShipmentRequested::TYPE,
            RefundRequested::TYPE,
        ];
        let orders = TopicWriter::new(&bus, "orders", &order_events).await;
        let payments = TestPayments::spawn_with(bus, &orders.topic, configure).await;
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

    fn shipped(&self, placed: &EventRecord) -> EventRecord {
        let asked = ShipmentRequested {
            order_id: Self::order_id(placed),
            requested_by: Some("admin".into()),
            at: Utc::now(),
        };
        EventRecord::following(&self.orders.topic, &asked, placed)
    }

    fn refund_asked(&self, placed: &EventRecord) -> EventRecord {
        let asked = RefundRequested {
            order_id: Self::order_id(placed),
            reason: Some("damaged".into()),
            requested_by: Some("admin".into()),
            at: Utc::now(),
        };
        EventRecord::following(&self.orders.topic, &asked, placed)
    }

    /// A paid order: placed, reserved, and its authorization read off the step's first outcome.
    async fn authorized(&self) -> (EventRecord, PaymentAuthorized) {
        let placed = self.placed("pm_card_visa");
        self.orders
            .publish(&[&placed, &self.reserved(&placed)])
            .await;
        let authorized = only(&self.outcomes(1).await[0]);
        (placed, authorized)
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

/// The payload of an outcome that must be an `E`.
fn only<E: Event>(record: &EventRecord) -> E {
    record
        .payload_as()
        .unwrap_or_else(|| panic!("{} where {} was expected", record.event_type, E::TYPE))
        .expect("payload")
}

#[tokio::test]
async fn a_shipment_captures_once_and_a_refund_gives_it_back_once() {
    let saga = Saga::new().await;
    let (placed, authorized) = saga.authorized().await;
    let shipped = saga.shipped(&placed);
    saga.orders.publish(&[&shipped]).await;
    let captured: PaymentCaptured = only(&saga.outcomes(2).await[1]);
    assert_eq!(captured.intent_id, authorized.intent_id);
    assert_eq!(
        (captured.amount_minor, captured.currency.as_str()),
        (2400, "USD")
    );
    let intent = saga
        .stripe
        .intent(&authorized.intent_id)
        .await
        .expect("intent");
    assert_eq!(intent.status, IntentStatus::Succeeded);
    saga.wait_for_state(&placed, "CAPTURED").await;

    // Asked again (an admin's second click, a redelivery): the first shipment stands. Then the
    // refund, asked twice, refunds once.
    let refund = saga.refund_asked(&placed);
    saga.orders
        .publish(&[
            &saga.shipped(&placed),
            &refund,
            &refund,
            &saga.refund_asked(&placed),
        ])
        .await;
    let outcomes = saga.outcomes(3).await;
    let refunded: PaymentRefunded = only(&outcomes[2]);
    assert_eq!(refunded.amount_minor, 2400);
    assert_eq!(outcomes[2].causation_id, Some(refund.event_id));
    saga.wait_for_state(&placed, "REFUNDED").await;
    let refunds = saga
        .stripe
        .refunds(&authorized.intent_id)
        .await
        .expect("refunds");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].id, refunded.refund_id);
}

/// A refund the provider made but whose commit was lost is found, not made again.
#[tokio::test]
async fn a_refund_made_but_never_committed_is_found_again_not_made_twice() {
    let saga = Saga::new().await;
    let (placed, authorized) = saga.authorized().await;
    saga.orders.publish(&[&saga.shipped(&placed)]).await;
    saga.wait_for_state(&placed, "CAPTURED").await;
    let order_id = Saga::order_id(&placed);
    let made = saga
        .stripe
        .refund(order_id, &authorized.intent_id)
        .await
        .expect("refund");

    saga.orders.publish(&[&saga.refund_asked(&placed)]).await;
    let refunded: PaymentRefunded = only(&saga.outcomes(3).await[2]);
    assert_eq!(refunded.refund_id, made.id);
    let refunds = saga
        .stripe
        .refunds(&authorized.intent_id)
        .await
        .expect("refunds");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
}

#[tokio::test]
async fn an_authorization_cancelled_at_the_provider_fails_the_capture_and_takes_nothing() {
    let saga = Saga::new().await;
    let (placed, authorized) = saga.authorized().await;
    // As when an authorization expires, or someone releases it on the provider's dashboard.
    saga.stripe
        .cancel(Uuid::new_v4(), &authorized.intent_id)
        .await
        .expect("cancelled at the provider");
    saga.orders.publish(&[&saga.shipped(&placed)]).await;
    let outcome = &saga.outcomes(2).await[1];
    let failed: PaymentCaptureFailed = only(outcome);
    assert_eq!(failed.intent_id, authorized.intent_id);
    assert!(
        failed.reason.contains("cancelled at the payment provider"),
        "{}",
        failed.reason
    );
    let placed_event: OrderPlaced = only(&placed);
    assert_eq!(failed.customer_id, placed_event.customer_id);
    assert_eq!(saga.payment(&placed).await.state, "AUTHORIZED");

    // The admin cancels it instead: nothing is held, so it is recorded as released.
    saga.orders.publish(&[&saga.cancelled(&placed)]).await;
    let voided: PaymentVoided = only(&saga.outcomes(3).await[2]);
    assert_eq!(voided.intent_id, authorized.intent_id);
}

/// An order shipped and cancelled at once: the capture went first, so the cancellation
/// gives the money back. Nothing is kept for a cancelled order.
#[tokio::test]
async fn an_order_cancelled_after_its_capture_is_refunded() {
    let saga = Saga::new().await;
    let (placed, authorized) = saga.authorized().await;
    saga.orders
        .publish(&[&saga.shipped(&placed), &saga.cancelled(&placed)])
        .await;
    let outcomes = saga.outcomes(3).await;
    let _: PaymentCaptured = only(&outcomes[1]);
    let refunded: PaymentRefunded = only(&outcomes[2]);
    assert_eq!(refunded.intent_id, authorized.intent_id);
    assert_eq!(refunded.amount_minor, 2400);
}

/// The 3-D Secure card: the step asks the customer (their client secret in the event), and
/// once they have answered the reconciler finds the answer, as no webhook announces it.
#[tokio::test]
async fn a_payment_that_waits_for_the_customer_moves_on_when_they_authenticate() {
    let saga = Saga::with(|config| {
        config.webhooks.reconcile_every = Duration::from_millis(200);
    })
    .await;
    let placed = saga.placed(&three_d_secure_method().await);
    saga.orders
        .publish(&[&placed, &saga.reserved(&placed)])
        .await;
    let action: PaymentActionRequired = only(&saga.outcomes(1).await[0]);
    assert!(
        action.client_secret.starts_with(&action.intent_id),
        "{action:?}"
    );
    saga.wait_for_state(&placed, "ACTION_REQUIRED").await;

    authenticate(&action.intent_id, &action.client_secret, true).await;
    let outcomes = saga.outcomes(2).await;
    let authorized: PaymentAuthorized = only(&outcomes[1]);
    assert_eq!(authorized.intent_id, action.intent_id);
    // In the order's saga, though no event of it caused this one.
    assert_eq!(outcomes[1].correlation_id, placed.correlation_id);
    saga.wait_for_state(&placed, "AUTHORIZED").await;
}

/// The provider's webhook moves the saga on at once; it is believed only when signed with the
/// endpoint's secret, and a replay of it changes nothing.
#[tokio::test]
async fn a_signed_webhook_moves_the_saga_on_once_and_a_bad_signature_changes_nothing() {
    let saga = Saga::with(|config| {
        config.webhooks.secret = Some(oms_saga::config::Secret::new(WEBHOOK_SECRET));
        // The webhook, not the reconciler, must be what moves it.
        config.webhooks.reconcile_every = Duration::from_secs(3600);
    })
    .await;
    let placed = saga.placed(&three_d_secure_method().await);
    saga.orders
        .publish(&[&placed, &saga.reserved(&placed)])
        .await;
    let action: PaymentActionRequired = only(&saga.outcomes(1).await[0]);
    saga.wait_for_state(&placed, "ACTION_REQUIRED").await;
    authenticate(&action.intent_id, &action.client_secret, false).await;

    let body = serde_json::to_vec(&serde_json::json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "type": "payment_intent.payment_failed",
        "data": {"object": {"id": action.intent_id, "object": "payment_intent"}},
    }))
    .expect("json");
    let url = saga.payments.service.url("/webhooks/stripe");
    let http = reqwest::Client::new();
    let post = |signature: Option<String>| {
        let mut request = http.post(&url).body(body.clone());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send()
    };
    let now = Utc::now().timestamp();
    for (signature, why) in [
        (None, "no signature"),
        (
            Some(webhook::sign("whsec_other", now, &body)),
            "another secret",
        ),
        (
            Some(webhook::sign(WEBHOOK_SECRET, now - 3600, &body)),
            "an hour old",
        ),
    ] {
        let answer = post(signature).await.expect("answer");
        assert_eq!(answer.status(), 400, "{why}");
        assert_eq!(
            saga.payment(&placed).await.state,
            "ACTION_REQUIRED",
            "{why}"
        );
    }

    let signed = webhook::sign(WEBHOOK_SECRET, now, &body);
    let answer: serde_json::Value = post(Some(signed.clone()))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(answer, serde_json::json!({"received": true}));
    let declined: PaymentDeclined = only(&saga.outcomes(2).await[1]);
    assert_eq!(declined.order_id, Saga::order_id(&placed));
    assert_eq!(saga.payment(&placed).await.state, "DECLINED");

    let replayed = post(Some(signed)).await.expect("answer");
    assert_eq!(replayed.status(), 200);
    let replayed: serde_json::Value = replayed.json().await.expect("json");
    assert_eq!(replayed["replayed"], true);
    saga.orders.publish(&[&saga.shipped(&placed)]).await;
    // The shipment of a declined payment fails; nothing came of the replay before it.
    let outcomes = saga.outcomes(3).await;
    let _: PaymentCaptureFailed = only(&outcomes[2]);
}
