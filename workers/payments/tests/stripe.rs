//! The Stripe client against a server that speaks Stripe's API and that no one here wrote:
//! localstripe, which scripts/test starts (`OMS_TEST_STRIPE_URL`, default 127.0.0.1:8420).

use oms_payments::{
    Stripe, StripeConfig, StripeError,
    stripe::{IntentStatus, PaymentIntent},
};
use oms_saga::config::Secret;
use uuid::Uuid;

fn config() -> StripeConfig {
    StripeConfig {
        base_url: oms_payments::testing::stripe_url(),
        ..StripeConfig::default()
    }
}

/// A client of the test server, which must be there: a test without it fails, loudly.
async fn stripe() -> Stripe {
    let config = config();
    let stripe = Stripe::new(&config).expect("client");
    match stripe.intent("pi_probe").await {
        Err(StripeError::Unavailable(e)) => panic!(
            "no Stripe API at {} ({e}); run scripts/test, which starts localstripe, or set \
             OMS_TEST_STRIPE_URL",
            config.base_url
        ),
        _ => stripe,
    }
}

/// A new order's intent for 24.00 USD, paid with `payment_method`.
async fn intent(stripe: &Stripe, payment_method: &str) -> (Uuid, PaymentIntent) {
    let order = Uuid::new_v4();
    let intent = stripe
        .create_intent(order, 2400, "USD", payment_method)
        .await
        .expect("an intent");
    (order, intent)
}

#[tokio::test]
async fn an_authorization_is_captured_and_then_refunded_in_full() {
    let stripe = stripe().await;
    let (order, created) = intent(&stripe, "pm_card_visa").await;
    assert_eq!(created.status, IntentStatus::RequiresConfirmation);
    assert_eq!((created.amount, created.currency.as_str()), (2400, "usd"));
    assert_eq!(created.metadata["order_id"], order.to_string());

    let authorized = stripe.confirm(order, &created.id).await.expect("confirm");
    assert_eq!(authorized.status, IntentStatus::RequiresCapture);
    let captured = stripe.capture(order, &created.id).await.expect("capture");
    assert_eq!(captured.status, IntentStatus::Succeeded);
    assert_eq!(
        stripe.intent(&created.id).await.expect("read").status,
        IntentStatus::Succeeded
    );
    assert!(
        stripe
            .refunds(&created.id)
            .await
            .expect("refunds")
            .is_empty()
    );
    let refund = stripe.refund(order, &created.id).await.expect("refund");
    assert_eq!(refund.amount, 2400);
    assert_eq!(refund.status, "succeeded");
    assert_eq!(refund.payment_intent.as_deref(), Some(created.id.as_str()));
    let refunds = stripe.refunds(&created.id).await.expect("refunds");
    assert_eq!(refunds, vec![refund]);
}

#[tokio::test]
async fn every_intent_is_listed_once_a_page_at_a_time() {
    let stripe = stripe().await;
    let (_, first) = intent(&stripe, "pm_card_visa").await;
    let (_, second) = intent(&stripe, "pm_card_visa").await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = stripe.intents(after.as_deref()).await.expect("a page");
        assert!(page.data.len() <= 100);
        seen.extend(page.data.iter().map(|i| i.id.clone()));
        after = page.data.last().map(|i| i.id.clone());
        if !page.has_more {
            break;
        }
    }
    for made in [&first.id, &second.id] {
        assert_eq!(seen.iter().filter(|id| *id == made).count(), 1, "{made}");
    }
}

#[tokio::test]
async fn a_declined_card_is_a_decline_and_its_intent_holds_no_money() {
    let stripe = stripe().await;
    let (order, created) = intent(&stripe, "pm_card_chargeCustomerFail").await;
    match stripe.confirm(order, &created.id).await {
        Err(StripeError::Declined { code, .. }) => assert_eq!(code, "card_declined"),
        other => panic!("not a decline: {other:?}"),
    }
    let left = stripe.intent(&created.id).await.expect("read");
    assert_eq!(left.status, IntentStatus::RequiresPaymentMethod);
    assert!(matches!(
        stripe.capture(order, &created.id).await,
        Err(StripeError::Refused { status: 400, .. })
    ));
}

#[tokio::test]
async fn a_3d_secure_card_waits_for_the_customer_and_can_be_let_go() {
    let stripe = stripe().await;
    let method = oms_payments::testing::three_d_secure_method().await;
    let (order, created) = intent(&stripe, &method).await;
    let waiting = stripe.confirm(order, &created.id).await.expect("confirm");
    assert_eq!(waiting.status, IntentStatus::RequiresAction);
    assert!(
        waiting
            .client_secret
            .is_some_and(|s| s.starts_with(&created.id))
    );
    let released = stripe.cancel(order, &created.id).await.expect("cancel");
    assert_eq!(released.status, IntentStatus::Canceled);
}

#[tokio::test]
async fn a_released_authorization_cannot_be_released_twice() {
    let stripe = stripe().await;
    let (order, created) = intent(&stripe, "pm_card_visa").await;
    stripe.confirm(order, &created.id).await.expect("confirm");
    let released = stripe.cancel(order, &created.id).await.expect("cancel");
    assert_eq!(released.status, IntentStatus::Canceled);
    assert!(matches!(
        stripe.cancel(order, &created.id).await,
        Err(StripeError::Refused { status: 400, .. })
    ));
}

#[tokio::test]
async fn a_bad_key_is_refused_and_an_unreachable_provider_is_unavailable() {
    stripe().await;
    let bad_key = Stripe::new(&StripeConfig {
        secret_key: Secret::new("nope"),
        ..config()
    })
    .expect("client");
    assert!(matches!(
        bad_key.intent("pi_any").await,
        Err(StripeError::Refused { status: 401, .. })
    ));
    // Nothing listens on port 9 here.
    let away = Stripe::new(&StripeConfig {
        base_url: "http://127.0.0.1:9".into(),
        ..config()
    })
    .expect("client");
    assert!(matches!(
        away.create_intent(Uuid::new_v4(), 100, "usd", "pm_card_visa")
            .await,
        Err(StripeError::Unavailable(_))
    ));
}

/// Behind the breaker, a provider that keeps failing is not asked again for a while: the
/// calls fail at once, saying so.
#[tokio::test]
async fn failures_in_a_row_open_the_circuit_and_calls_then_fail_without_being_sent() {
    let away = Stripe::new(&StripeConfig {
        base_url: "http://127.0.0.1:9".into(),
        breaker: oms_saga::retry::BreakerConfig {
            failures: 3,
            open_for: std::time::Duration::from_secs(600),
        },
        ..config()
    })
    .expect("client");
    for _ in 0..3 {
        match away.intent("pi_any").await {
            Err(StripeError::Unavailable(why)) => assert!(!why.contains("circuit"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    match away.intent("pi_any").await {
        Err(StripeError::Unavailable(why)) => assert!(why.contains("circuit is open"), "{why}"),
        other => panic!("{other:?}"),
    }
}
