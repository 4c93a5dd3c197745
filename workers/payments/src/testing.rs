//! Starts a real payment step for a test: its own database and topic, consuming the given orders
//! topic, on a port of its own, with the Stripe API of `OMS_TEST_STRIPE_URL` (localstripe); and
//! plays the customer at that API (a card that asks for 3-D Secure, the customer's answer).

use oms_saga::{
    config::BusConfig,
    testing::{self, TestService},
};

use crate::PaymentsConfig;

#[derive(Debug)]
pub struct TestPayments {
    pub service: TestService,
    pub config: PaymentsConfig,
    pub db: testing::TestDatabase,
}

/// The Stripe API tests use: localstripe, which scripts/test starts.
pub fn stripe_url() -> String {
    std::env::var("OMS_TEST_STRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

/// The secret key tests use.
fn secret_key() -> String {
    PaymentsConfig::default()
        .stripe
        .secret_key
        .expose()
        .to_owned()
}

/// A new PaymentMethod of Stripe's test card whose issuer always asks for 3-D Secure.
pub async fn three_d_secure_method() -> String {
    let method: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/payment_methods", stripe_url()))
        .bearer_auth(secret_key())
        .form(&[
            ("type", "card"),
            ("card[number]", "4000002500003155"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2040"),
            ("card[cvc]", "123"),
        ])
        .send()
        .await
        .expect("a payment method")
        .json()
        .await
        .expect("json");
    method["id"].as_str().expect("its id").to_owned()
}

/// The customer's answer to their bank's 3-D Secure question, as localstripe takes it from the
/// customer's browser: with the intent's client secret and a publishable key, not the secret one.
pub async fn authenticate(intent_id: &str, client_secret: &str, success: bool) {
    let answered = reqwest::Client::new()
        .post(format!(
            "{}/v1/payment_intents/{intent_id}/_authenticate",
            stripe_url()
        ))
        .form(&[
            ("key", "pk_test_oms"),
            ("client_secret", client_secret),
            ("success", if success { "true" } else { "false" }),
        ])
        .send()
        .await
        .expect("localstripe");
    assert!(answered.status().is_success(), "{answered:?}");
}

impl TestPayments {
    /// A payment step on `bus` (whose registry must be up) reacting to `orders_topic`.
    pub async fn spawn(bus: BusConfig, orders_topic: &str) -> Self {
        Self::spawn_with(bus, orders_topic, |_| {}).await
    }

    /// [`TestPayments::spawn`], with settings of the test's own.
    pub async fn spawn_with(
        bus: BusConfig,
        orders_topic: &str,
        configure: impl FnOnce(&mut PaymentsConfig),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = PaymentsConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        config.bus = bus;
        config.topic = testing::unique("payments");
        config.partitions = 3;
        config.consumer.group = testing::unique("payments");
        config.consumer.topics = vec![orders_topic.to_owned()];
        config.stripe.base_url = stripe_url();
        config.trace = oms_saga::testing::trace_config();
        configure(&mut config);
        let run = config.clone();
        let service = TestService::start_on(listener, move |listener, shutdown| {
            crate::run(run.clone(), listener, shutdown)
        });
        Self {
            service,
            config,
            db,
        }
    }
}
