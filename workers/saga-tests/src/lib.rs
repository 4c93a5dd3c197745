//! The whole saga in one test process: registry, order API, inventory, status worker, payment
//! step (on the Stripe API of localstripe), notification service and gateway, each a real
//! service on its own port, with its own database, on the shared broker.
//! Tests drive it as a client would, through the gateway, and stop and restart services to play
//! outages.

pub mod zipkin;

use std::{collections::BTreeMap, time::Duration};

use oms_api::{ApiConfig, testing::TestApi};
use oms_gateway::{
    config::{Route, RouteConfig},
    testing::TestGateway,
};
use oms_inventory::testing::TestInventory;
use oms_notifications::testing::TestNotifications;
use oms_payments::testing::TestPayments;
use oms_saga::testing;
use oms_status::{StatusConfig, testing::TestStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// The secret the stack's payment step checks its webhooks' signatures with.
pub const WEBHOOK_SECRET: &str = "whsec_saga_tests";

/// How long the saga may take to settle before a test gives up.
pub const SETTLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Stack {
    pub api: TestApi,
    pub inventory: TestInventory,
    pub status: TestStatus,
    pub payments: TestPayments,
    pub notifications: TestNotifications,
    pub gateway: TestGateway,
    pub admin: String,
    alice: String,
    http: reqwest::Client,
}

impl Stack {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}, |_| {}).await
    }

    /// A stack whose API and status worker configs the closures adjusted first.
    pub async fn spawn_with(
        api: impl FnOnce(&mut ApiConfig),
        status: impl FnOnce(&mut StatusConfig),
    ) -> Self {
        let (bus, _) = testing::shared_bus().await;
        // The API asks the inventory before accepting orders, so it must know where it will be.
        let inventory_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let inventory_url = format!("http://{}", inventory_listener.local_addr().expect("addr"));
        // The order service's timeline reads every service's topic, so it names them first.
        let inventory_topic = testing::unique("inventory");
        let payments_topic = testing::unique("payments");
        let notifications_topic = testing::unique("notifications");
        let api = TestApi::spawn_with(bus, |config| {
            config.availability.inventory_url = Some(inventory_url);
            config.timeline.consumer.topics.extend([
                inventory_topic.clone(),
                payments_topic.clone(),
                notifications_topic.clone(),
            ]);
            api(config);
        })
        .await;
        let inventory = TestInventory::spawn_on(
            inventory_listener,
            api.config.bus.clone(),
            &api.config.topics.orders,
            inventory_topic,
        )
        .await;
        let payments = TestPayments::spawn_with(
            api.config.bus.clone(),
            &api.config.topics.orders,
            |config| {
                config.topic = payments_topic.clone();
                config.webhooks.secret = Some(oms_saga::config::Secret::new(WEBHOOK_SECRET));
            },
        )
        .await;
        let status = TestStatus::spawn(&api.config, &inventory.config.topic, |config| {
            config.consumer.topics.push(payments_topic.clone());
            status(config);
        })
        .await;
        let notifications = TestNotifications::spawn_writing(
            api.config.bus.clone(),
            &[&api.config.topics.orders, &payments_topic],
            notifications_topic,
        )
        .await;
        let upstream = |url: String| RouteConfig::Upstream(url);
        let gateway = TestGateway::spawn(BTreeMap::from([
            ("/api/orders".into(), upstream(api.url(""))),
            ("/api/inventory".into(), upstream(inventory.url(""))),
            ("/api/products".into(), upstream(inventory.url(""))),
            ("/api/notifications".into(), upstream(notifications.url(""))),
            (
                "/webhooks/stripe".into(),
                upstream(payments.service.url("")),
            ),
            (
                "/api/schemas".into(),
                RouteConfig::Route(Route {
                    strip_prefix: true,
                    ..Route::new(api.registry.url())
                }),
            ),
        ]))
        .await;
        let admin = gateway.login("admin").await;
        let alice = gateway.login("alice").await;
        Self {
            api,
            inventory,
            status,
            payments,
            notifications,
            gateway,
            admin,
            alice,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
        }
    }

    /// A customer: her orders are hers alone.
    pub fn alice(&self) -> Uuid {
        self.gateway.alice
    }

    /// The admin's bearer token, for requests the helpers do not make.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// Alice's bearer token.
    pub fn alice_token(&self) -> &str {
        &self.alice
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.gateway.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("gateway call");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Calls the gateway as the admin.
    pub async fn as_admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(&self.admin, method, path, body).await
    }

    /// Calls the gateway as alice.
    pub async fn as_alice(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(&self.alice, method, path, body).await
    }

    /// Stocks `product` with `available` units. A product the order service has no price for is
    /// first priced at 1.00 USD in the catalog.
    pub async fn set_stock(&self, product: &str, available: u32) {
        if self.known_price(product).await.is_none() {
            self.set_price(product, "1.00").await;
        }
        let path = format!("/api/inventory/{product}");
        let (status, body) = self
            .as_admin(Method::PUT, &path, Some(json!({ "available": available })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Prices `product` in USD through the catalog, as an admin does, and waits until the order
    /// service has the new price from the catalog's event.
    pub async fn set_price(&self, product: &str, price: &str) {
        let (status, body) = self
            .as_admin(
                Method::PUT,
                &format!("/api/products/{product}"),
                Some(json!({ "name": product, "price": price, "currency": "USD" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let version = body["version"].as_i64().expect("version");
        testing::eventually(
            SETTLE,
            &format!("the order service to price {product}"),
            || async {
                self.known_price(product)
                    .await
                    .filter(|known| *known >= version)
            },
        )
        .await;
    }

    /// The catalog version of `product` the order service prices orders at, if it has one.
    async fn known_price(&self, product: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT version FROM product_prices WHERE product_id = $1")
            .bind(product)
            .fetch_optional(&self.api.db.pool)
            .await
            .expect("read the order service's prices")
    }

    /// A product's stock: available, reserved, sold.
    pub async fn stock(&self, product: &str) -> (i64, i64, i64) {
        let (status, body) = self
            .as_admin(Method::GET, &format!("/api/inventory/{product}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let count = |field: &str| body[field].as_i64().expect(field);
        (count("available"), count("reserved"), count("sold"))
    }

    /// Alice places an order for `lines`, paying by card; returns the answer's status and body.
    pub async fn place(&self, lines: &[(&str, u32)]) -> (StatusCode, Value) {
        self.place_paying(lines, "pm_card_visa").await
    }

    /// Places an order paid with `payment_method`.
    pub async fn place_paying(
        &self,
        lines: &[(&str, u32)],
        payment_method: &str,
    ) -> (StatusCode, Value) {
        let items: Vec<Value> = lines
            .iter()
            .map(|(product, quantity)| json!({ "productId": product, "quantity": quantity }))
            .collect();
        let body = json!({ "items": items, "paymentMethod": payment_method });
        self.as_alice(Method::POST, "/api/orders", Some(body)).await
    }

    /// Places an order that must be accepted; returns its id.
    pub async fn placed(&self, lines: &[(&str, u32)]) -> Uuid {
        let (status, body) = self.place(lines).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("order id")
    }

    pub async fn order(&self, id: Uuid) -> Value {
        let (status, body) = self
            .as_admin(Method::GET, &format!("/api/orders/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the order reaches `status`; returns it then.
    pub async fn wait_for(&self, id: Uuid, status: &str) -> Value {
        testing::eventually(SETTLE, &format!("order {id} to be {status}"), || async {
            let order = self.order(id).await;
            (order["status"] == status).then_some(order)
        })
        .await
    }

    /// The admin moves an order on, and waits until it is there: shipping and refunding take
    /// the payment step first (202).
    pub async fn move_to(&self, id: Uuid, status: &str) -> Value {
        let (code, body) = self
            .as_admin(
                Method::PUT,
                &format!("/api/orders/{id}/status"),
                Some(json!({ "status": status })),
            )
            .await;
        match (code, status) {
            (StatusCode::OK, _) => assert_eq!(body["status"], status, "{body}"),
            (StatusCode::ACCEPTED, "SHIPPED" | "REFUNDED") => {}
            _ => panic!("moving {id} to {status}: {code} {body}"),
        }
        self.wait_for(id, status).await
    }

    /// Waits until alice has been told `kinds` about order `id`, in that order; returns the
    /// notifications as she lists them (newest first).
    pub async fn wait_for_notices(&self, id: Uuid, kinds: &[&str]) -> Vec<Value> {
        self.wait_until_told(id, kinds, true).await
    }

    /// Waits until alice has been told `kinds` about order `id`, in any order (notices caused
    /// by events of different topics); `kinds` sorted.
    pub async fn wait_for_notices_among(&self, id: Uuid, kinds: &[&str]) -> Vec<Value> {
        self.wait_until_told(id, kinds, false).await
    }

    async fn wait_until_told(&self, id: Uuid, kinds: &[&str], in_order: bool) -> Vec<Value> {
        let path = format!("/api/notifications?orderId={id}");
        testing::eventually(SETTLE, &format!("{kinds:?} notices for {id}"), || async {
            let (status, body) = self.as_alice(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let mut told: Vec<&str> = items
                .iter()
                .rev()
                .filter_map(|n| n["kind"].as_str())
                .collect();
            if !in_order {
                told.sort_unstable();
            }
            let sent = items.iter().all(|n| n["state"] == "SENT");
            (told == kinds && sent).then_some(items)
        })
        .await
    }

    /// How many of alice's orders are in `status`, up to 500.
    pub async fn count(&self, status: &str) -> usize {
        let path = format!("/api/orders?status={status}&limit=200");
        let mut count = 0;
        let mut after: Option<String> = None;
        for _ in 0..3 {
            let page = match &after {
                Some(after) => format!("{path}&after={after}"),
                None => path.clone(),
            };
            let (code, body) = self.as_alice(Method::GET, &page, None).await;
            assert_eq!(code, StatusCode::OK, "{body}");
            count += body["items"].as_array().map_or(0, Vec::len);
            match body["nextAfter"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        count
    }

    /// Waits until every invariant of the saga holds across the services' databases (what
    /// `oms check` checks), and fails the test with the report if they do not within [`SETTLE`].
    pub async fn assert_settled(&self) {
        let started = std::time::Instant::now();
        loop {
            let snapshot = oms_cli::check::snapshot(
                &self.api.db.pool,
                &self.inventory.db.pool,
                &self.notifications.db.pool,
                Some(&self.payments.db.pool),
            )
            .await
            .expect("snapshot");
            let verdicts = oms_cli::check::evaluate(&snapshot, chrono::Utc::now(), 0);
            if verdicts.iter().all(|v| v.holds) {
                return;
            }
            if started.elapsed() > SETTLE {
                let mut report = Vec::new();
                oms_cli::check::report(&verdicts, &mut report).expect("report");
                panic!(
                    "the saga did not settle:\n{}",
                    String::from_utf8_lossy(&report)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until a product's stock is `(available, reserved, sold)`.
    pub async fn wait_for_stock(&self, product: &str, expected: (i64, i64, i64)) {
        testing::eventually(SETTLE, &format!("{product} to be {expected:?}"), || async {
            (self.stock(product).await == expected).then_some(())
        })
        .await
    }

    /// Waits until the payment step has the order's payment in `state`; returns it then.
    pub async fn wait_for_payment(&self, id: Uuid, state: &str) -> oms_payments::ledger::Payment {
        testing::eventually(
            SETTLE,
            &format!("order {id}'s payment to be {state}"),
            || async {
                oms_payments::ledger::get(&self.payments.db.pool, id)
                    .await
                    .expect("read the payments")
                    .filter(|payment| payment.state == state)
            },
        )
        .await
    }
}
