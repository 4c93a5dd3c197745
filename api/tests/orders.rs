//! The order API against real PostgreSQL, Redis and a Kafka-compatible broker. Each test has its
//! own database and topic, so they run in parallel.

use std::{collections::HashMap, time::Duration};

use oms_api::testing::TestApi;
use oms_saga::{
    bus,
    event::{EventRecord, OrderCancelled, OrderPlaced, OrderStatus, OrderStatusChanged},
    testing,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

struct Client {
    http: reqwest::Client,
    api: TestApi,
}

impl Client {
    async fn new() -> Self {
        Self::with(TestApi::spawn().await).await
    }

    /// A client of `api`, whose catalog sells SKU-1 at 19.99 and SKU-2 at 0.10, in USD.
    async fn with(api: TestApi) -> Self {
        api.price(&[("SKU-1", 1999, "USD", true), ("SKU-2", 10, "USD", true)])
            .await;
        Self {
            http: reqwest::Client::new(),
            api,
        }
    }

    async fn place(&self, body: &Value) -> Response {
        self.http
            .post(self.api.url("/api/orders"))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs the order with an `Idempotency-Key`; the send's error is the caller's to expect.
    async fn place_with_key(&self, key: &str, body: &Value) -> reqwest::Result<Response> {
        self.http
            .post(self.api.url("/api/orders"))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(self.api.url(path)).send().await.expect("GET")
    }

    async fn set_status(&self, id: &str, status: &str) -> Response {
        self.http
            .put(self.api.url(&format!("/api/orders/{id}/status")))
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("PUT")
    }

    async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.api.db.pool)
            .await
            .expect("count")
    }
}

fn order_for(customer: Uuid) -> Value {
    json!({
        "customerId": customer,
        "items": [
            { "productId": "SKU-1", "quantity": 2 },
            { "productId": "SKU-2", "quantity": 1 }
        ],
        "paymentMethod": "pm_card_visa"
    })
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("json body")
}

/// A place answer split into the order and the note on its availability check.
fn placed(mut answer: Value) -> (Value, Value) {
    let note = answer
        .as_object_mut()
        .and_then(|fields| fields.remove("availability"))
        .unwrap_or(Value::Null);
    (answer, note)
}

async fn expect_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body = json_of(response).await;
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string(), "problem without a title: {body}");
    body
}

#[tokio::test]
async fn a_placed_order_is_created_and_its_event_reaches_the_orders_topic() {
    let client = Client::new().await;
    let customer = Uuid::new_v4();
    let response = client.place(&order_for(customer)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (order, availability) = placed(json_of(response).await);
    assert_eq!(
        availability,
        json!({ "checked": false, "skippedBecause": "the availability check is off" })
    );
    assert_eq!(order["status"], "CREATED");
    assert_eq!(order["customerId"], customer.to_string());
    assert_eq!(order["total"], "40.08");
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["items"][0]["unitPrice"], "19.99");
    assert_eq!(order["items"][1]["unitPrice"], "0.10");
    assert_eq!(order["paymentMethod"], "pm_card_visa");
    let id = order["id"].as_str().expect("id").to_owned();

    let read = json_of(client.get(&format!("/api/orders/{id}")).await).await;
    assert_eq!(read, order);

    let bus = bus::connect(&client.api.config.bus).expect("bus");
    let delivered = testing::consume(
        bus.as_ref(),
        &client.api.config.topics.orders,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(delivered[0].message.key, id);
    let codec = client.api.codec();
    let record = EventRecord::from_delivery(&delivered[0], &codec)
        .await
        .expect("decodable event");
    assert_eq!(record.event_type, "OrderPlaced");
    assert_eq!(record.correlation_id, record.event_id);
    let placed: OrderPlaced = record
        .payload_as()
        .expect("an OrderPlaced")
        .expect("valid payload");
    assert_eq!(placed.order_id.to_string(), id);
    assert_eq!(placed.customer_id, customer);
    // Avro decimals have the schema's fixed scale; the value is exact.
    assert_eq!(placed.total, "40.08".parse().expect("decimal"));
    assert_eq!(
        placed.placed_by, None,
        "placed directly, not through the gateway"
    );
    assert_eq!(placed.items.len(), 2);
    assert_eq!(placed.currency, "USD");
    assert_eq!(placed.payment_method.as_deref(), Some("pm_card_visa"));
    assert_eq!(
        serde_json::to_value(placed.placed_at).expect("time"),
        order["createdAt"]
    );
}

#[tokio::test]
async fn an_invalid_order_gets_422_naming_every_bad_field_and_is_not_stored() {
    let client = Client::new().await;
    let body = json!({
        "customerId": "nobody",
        "items": [
            { "productId": "", "quantity": 0, "unitPrice": "-1" },
            { "productId": "SKU-2", "quantity": 3, "unitPrice": "0.01" }
        ],
        "total": "0.03"
    });
    let problem = expect_problem(client.place(&body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "customerId",
            "total",
            "items[0].productId",
            "items[0].quantity",
            "items[0].unitPrice",
            "items[1].unitPrice",
            "paymentMethod"
        ]
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("items[1].unitPrice: prices are set by the server")),
        "{problem}"
    );
    let no_lines =
        json!({ "customerId": Uuid::new_v4(), "items": [], "paymentMethod": "pm_card_visa" });
    expect_problem(
        client.place(&no_lines).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(client.order_count().await, 0);
}

#[tokio::test]
async fn an_order_the_catalog_cannot_price_gets_422_naming_the_line_and_is_not_stored() {
    let client = Client::new().await;
    client
        .api
        .price(&[
            ("SKU-EUR", 500, "EUR", true),
            ("SKU-OLD", 100, "USD", false),
        ])
        .await;
    let customer = Uuid::new_v4();
    let with = |lines: Value| json!({ "customerId": customer, "items": lines, "paymentMethod": "pm_card_visa" });
    let cases = [
        (
            json!([{ "productId": "SKU-NONE", "quantity": 1 }]),
            "items[0].productId",
            "no product SKU-NONE in the catalog",
        ),
        (
            json!([{ "productId": "SKU-1", "quantity": 1 }, { "productId": "SKU-OLD", "quantity": 1 }]),
            "items[1].productId",
            "SKU-OLD is not for sale",
        ),
        (
            json!([{ "productId": "SKU-1", "quantity": 1 }, { "productId": "SKU-EUR", "quantity": 1 }]),
            "items",
            "more than one currency",
        ),
    ];
    for (lines, field, message) in cases {
        let problem = expect_problem(
            client.place(&with(lines)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{problem}"
        );
    }
    assert_eq!(client.order_count().await, 0);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&client.api.db.pool)
        .await
        .expect("count");
    assert_eq!(outbox, 0, "no event for an order never placed");

    // An order in one foreign currency is fine, and priced in it.
    let euros = json_of(
        client
            .place(&with(json!([{ "productId": "SKU-EUR", "quantity": 3 }])))
            .await,
    )
    .await;
    assert_eq!(
        (&euros["total"], &euros["currency"]),
        (&json!("15.00"), &json!("EUR"))
    );
}

#[tokio::test]
async fn a_later_price_change_never_touches_a_placed_order() {
    let client = Client::new().await;
    let (before, _) = placed(json_of(client.place(&order_for(Uuid::new_v4())).await).await);
    client
        .api
        .price(&[("SKU-1", 2500, "USD", true), ("SKU-2", 10, "USD", true)])
        .await;
    let (after, _) = placed(json_of(client.place(&order_for(Uuid::new_v4())).await).await);
    assert_eq!(after["total"], "50.10", "a new order takes the new price");
    let id = before["id"].as_str().expect("id");
    let read = json_of(client.get(&format!("/api/orders/{id}")).await).await;
    assert_eq!(read["total"], "40.08");
    assert_eq!(read["items"][0]["unitPrice"], "19.99");
    let stored: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT total FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&client.api.db.pool)
            .await
            .expect("read");
    assert_eq!(stored.to_string(), "40.08");
}

#[tokio::test]
async fn an_older_price_event_never_replaces_a_newer_one() {
    use oms_saga::event::ProductPriced;
    let client = Client::new().await;
    let priced = |version: i64, price_minor: i64| ProductPriced {
        product_id: "SKU-V".into(),
        name: "versioned".into(),
        price_minor,
        currency: "USD".into(),
        active: true,
        version,
        at: chrono::Utc::now(),
    };
    let mut conn = client.api.db.pool.acquire().await.expect("conn");
    // A batch holding two versions keeps the newer; a later, older one changes nothing.
    oms_api::prices::apply_all(&mut conn, &[priced(2, 200), priced(1, 100)])
        .await
        .expect("apply");
    oms_api::prices::apply_all(&mut conn, &[priced(1, 100)])
        .await
        .expect("apply again");
    let kept = oms_api::prices::lookup(&client.api.db.pool, &["SKU-V"])
        .await
        .expect("lookup");
    assert_eq!(kept["SKU-V"].price_minor, 200);
}

#[tokio::test]
async fn malformed_oversized_or_mistyped_requests_get_a_clear_4xx_and_never_reach_the_database() {
    let client = Client::new().await;
    let url = client.api.url("/api/orders");
    let http = &client.http;
    let raw = |body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .body(body)
    };

    let truncated = raw("{\"customerId\":".into()).send().await.expect("send");
    expect_problem(truncated, StatusCode::BAD_REQUEST).await;

    let no_type = http
        .post(&url)
        .body(order_for(Uuid::new_v4()).to_string())
        .send()
        .await
        .expect("send");
    expect_problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let huge = format!(
        "{{\"customerId\":\"{}\",\"items\":[], \"pad\":\"{}\"}}",
        Uuid::new_v4(),
        "x".repeat(1 << 20)
    );
    expect_problem(
        raw(huge).send().await.expect("send"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let float_quantity = json!({ "customerId": Uuid::new_v4(), "items": [{ "productId": "A", "quantity": 1.5 }], "paymentMethod": "pm_card_visa" });
    expect_problem(
        client.place(&float_quantity).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let unknown_field = json!({ "customerId": Uuid::new_v4(), "items": [], "discount": "100%" });
    expect_problem(
        client.place(&unknown_field).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    expect_problem(
        client.get("/api/orders/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        client.get(&format!("/api/orders/{}", Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(client.get("/api/nothing-here").await, StatusCode::NOT_FOUND).await;
    expect_problem(
        client.get("/api/orders?limit=100000").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        client.get("/api/orders?status=LOST").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let delete = http.delete(&url).send().await.expect("send");
    expect_problem(delete, StatusCode::METHOD_NOT_ALLOWED).await;

    assert_eq!(client.order_count().await, 0);
}

/// The timeline keeps no inbox rows: its rows are keyed by the event id. An event published
/// again, as it is when a relay stops between the broker's acknowledgement and its delete, is
/// recorded once, and the events behind it on its partition are recorded too.
#[tokio::test]
async fn a_republished_event_is_recorded_once_in_the_timeline_and_its_partition_goes_on() {
    let client = Client::new().await;
    let (order, _) = placed(json_of(client.place(&order_for(Uuid::new_v4())).await).await);
    let id = order["id"].as_str().expect("id").to_owned();
    let pool = &client.api.db.pool;
    let recorded = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT event_type FROM saga_events WHERE order_key = $1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(pool)
        .await
        .expect("saga_events")
    };
    testing::eventually(Duration::from_secs(30), "OrderPlaced recorded", || async {
        (recorded().await == ["OrderPlaced"]).then_some(())
    })
    .await;

    let republished = sqlx::query(
        "INSERT INTO outbox_pending (id) SELECT id FROM outbox \
         WHERE message_key = $1 AND event_type = 'OrderPlaced'",
    )
    .bind(&id)
    .execute(pool)
    .await
    .expect("unmark");
    assert_eq!(republished.rows_affected(), 1);
    assert_eq!(
        client.set_status(&id, "CANCELLED").await.status(),
        StatusCode::OK
    );
    let events = testing::eventually(
        Duration::from_secs(30),
        "the cancellation recorded behind the republished OrderPlaced",
        || async {
            let events = recorded().await;
            (events.len() > 1).then_some(events)
        },
    )
    .await;
    assert_eq!(events[0], "OrderPlaced", "{events:?}");
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(pool)
        .await
        .expect("outbox");
    assert_eq!(unpublished, 0, "the OrderPlaced went out a second time");
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = $1")
        .bind(&client.api.config.timeline.consumer.group)
        .fetch_one(pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 0);
}

/// A key answers for its first request for 24 hours (Stripe's rule), then is forgotten: used
/// again, it places a new order, and the job that keeps the table bounded deletes keys past their
/// time, and no other.
#[tokio::test]
async fn an_idempotency_key_past_its_time_is_a_new_request_and_is_then_deleted() {
    use oms_saga::schedule::Periodic;
    let client = Client::new().await;
    let pool = &client.api.db.pool;
    let body = order_for(Uuid::new_v4());
    let post = |key: &'static str| client.place_with_key(key, &body);
    let age = |key: &'static str, hours: i32| async move {
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2) \
             WHERE scope LIKE '%:' || $1",
        )
        .bind(key)
        .bind(hours)
        .execute(pool)
        .await
        .expect("age the key");
    };
    let first = post("expiring").await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let (first, _) = placed(json_of(first).await);

    age("expiring", 23).await;
    let within = post("expiring").await.expect("send");
    assert_eq!(within.headers()["idempotent-replayed"], "true");
    assert_eq!(placed(json_of(within).await).0["id"], first["id"]);

    age("expiring", 25).await;
    let after = post("expiring").await.expect("send");
    assert_eq!(after.status(), StatusCode::CREATED);
    assert!(after.headers().get("idempotent-replayed").is_none());
    let (after, _) = placed(json_of(after).await);
    assert_ne!(
        after["id"], first["id"],
        "a key past its time places a new order"
    );
    assert_eq!(client.order_count().await, 2);

    // Two more keys, one past its time: the job deletes that one only.
    for key in ["kept", "stale"] {
        assert_eq!(post(key).await.expect("send").status(), StatusCode::CREATED);
    }
    age("stale", 30).await;
    let prune = oms_api::store::expired_idempotency_keys(pool.clone(), Duration::from_secs(86_400));
    assert_eq!(prune.round().await.expect("prune"), 1);
    assert_eq!(prune.round().await.expect("prune again"), 0);
    let mut left: Vec<String> =
        sqlx::query_scalar("SELECT split_part(scope, ':', 2) FROM idempotency_keys")
            .fetch_all(pool)
            .await
            .expect("keys");
    left.sort();
    assert_eq!(left, ["expiring", "kept"]);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_order() {
    let client = Client::new().await;
    let body = order_for(Uuid::new_v4());
    let client = &client;
    let post =
        |key: &'static str, body: Value| async move { client.place_with_key(key, &body).await };

    let first = post("key-1", body.clone()).await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let (first, _) = placed(json_of(first).await);

    // Concurrent retries of the same request all get the first order.
    let retries = futures::future::join_all((0..8).map(|_| post("key-1", body.clone()))).await;
    for retry in retries {
        let retry = retry.expect("send");
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let (order, availability) = placed(json_of(retry).await);
        assert_eq!(order, first);
        assert_eq!(
            availability["checked"], false,
            "a replay is not checked again"
        );
    }

    let mut changed = body.clone();
    changed["items"][0]["quantity"] = json!(5);
    let reused = post("key-1", changed).await.expect("send");
    let problem = expect_problem(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        problem["type"],
        "https://oms.dev/problems/idempotency-key-reused"
    );

    // The same key from racing first attempts still makes one order.
    let racing = futures::future::join_all((0..8).map(|_| post("key-2", body.clone()))).await;
    let ids: std::collections::HashSet<String> =
        futures::future::join_all(racing.into_iter().map(|r| async {
            json_of(r.expect("send")).await["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }))
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(client.order_count().await, 2);
}

/// Shipping a paid order and refunding a shipped one take the payment step first: the API asks
/// (202, the order unmoved, the request in the outbox in the order's saga), and the order moves
/// when the step answers. Moves the state machine forbids are refused as any other.
#[tokio::test]
async fn shipping_and_refunding_ask_the_payment_step_and_leave_the_order_until_it_answers() {
    let client = Client::new().await;
    let order = json_of(client.place(&order_for(Uuid::new_v4())).await).await;
    let id = order["id"].as_str().expect("id");
    let uuid: Uuid = id.parse().expect("uuid");
    expect_problem(client.set_status(id, "SHIPPED").await, StatusCode::CONFLICT).await;
    expect_problem(
        client.set_status(id, "REFUNDED").await,
        StatusCode::CONFLICT,
    )
    .await;
    for status in ["RESERVED", "PAID"] {
        assert_eq!(client.set_status(id, status).await.status(), StatusCode::OK);
    }
    let refund = expect_problem(
        client.set_status(id, "REFUNDED").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(refund["currentStatus"], "PAID");

    let asked = client.set_status(id, "SHIPPED").await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let asked = json_of(asked).await;
    assert_eq!(
        asked["status"], "PAID",
        "not shipped before the capture: {asked}"
    );
    let last = |kind: &'static str| {
        let pool = client.api.db.pool.clone();
        async move {
            sqlx::query_as::<_, (Value, Uuid)>(
                "SELECT payload, correlation_id FROM outbox WHERE message_key = $1 AND event_type = $2 \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(uuid.to_string())
            .bind(kind)
            .fetch_optional(&pool)
            .await
            .expect("outbox")
        }
    };
    let (shipment, correlation) = last("ShipmentRequested")
        .await
        .expect("a ShipmentRequested");
    assert_eq!(shipment["orderId"], id);
    let (_, placed_correlation) = last("OrderPlaced").await.expect("OrderPlaced");
    assert_eq!(correlation, placed_correlation, "in the order's saga");
    assert_eq!(
        json_of(client.get(&format!("/api/orders/{id}")).await).await["status"],
        "PAID"
    );

    // The payment step answered (the status worker moves it, as here): now it may be refunded.
    oms_api::store::Store::new(
        client.api.db.pool.clone(),
        client.api.config.topics.orders.clone(),
    )
    .change_status(uuid, OrderStatus::Shipped, None, &Default::default())
    .await
    .expect("shipped");
    let refund = client
        .http
        .put(client.api.url(&format!("/api/orders/{id}/status")))
        .json(&json!({ "status": "REFUNDED", "reason": "damaged in transit" }))
        .send()
        .await
        .expect("send");
    assert_eq!(refund.status(), StatusCode::ACCEPTED);
    let (asked, _) = last("RefundRequested").await.expect("a RefundRequested");
    assert_eq!(asked["reason"], "damaged in transit");
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(uuid)
        .fetch_one(&client.api.db.pool)
        .await
        .expect("status");
    assert_eq!(status, "SHIPPED");
}

#[tokio::test]
async fn status_changes_follow_the_state_machine_and_each_writes_its_event() {
    let client = Client::new().await;
    let order = json_of(client.place(&order_for(Uuid::new_v4())).await).await;
    let id = order["id"].as_str().expect("id");

    let skip = expect_problem(client.set_status(id, "PAID").await, StatusCode::CONFLICT).await;
    assert_eq!(skip["currentStatus"], "CREATED");
    assert_eq!(skip["requestedStatus"], "PAID");
    expect_problem(
        client.set_status(id, "LOST").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect_problem(
        client.set_status(&Uuid::new_v4().to_string(), "PAID").await,
        StatusCode::NOT_FOUND,
    )
    .await;

    for status in ["RESERVED", "PAID"] {
        let moved = client.set_status(id, status).await;
        assert_eq!(moved.status(), StatusCode::OK);
        assert_eq!(json_of(moved).await["status"], status);
    }
    expect_problem(client.set_status(id, "CREATED").await, StatusCode::CONFLICT).await;
    // The read after a change sees it, not a cached copy.
    assert_eq!(
        json_of(client.get(&format!("/api/orders/{id}")).await).await["status"],
        "PAID"
    );

    let cancel_url = client.api.url(&format!("/api/orders/{id}/cancel"));
    let no_reason = client
        .http
        .post(&cancel_url)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    expect_problem(no_reason, StatusCode::UNPROCESSABLE_ENTITY).await;
    let cancelled = client
        .http
        .post(&cancel_url)
        .json(&json!({ "reason": "customer asked" }))
        .send()
        .await
        .expect("send");
    let cancelled = json_of(cancelled).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["statusReason"], "customer asked");
    assert_eq!(cancelled["version"], 4);
    let updated_at = cancelled["updatedAt"].as_str().expect("updatedAt");
    assert!(
        updated_at.len() == "2026-01-01T00:00:00.000Z".len() && updated_at.ends_with('Z'),
        "times are kept to the millisecond, like the events: {updated_at}"
    );
    let again = client
        .http
        .post(&cancel_url)
        .json(&json!({ "reason": "twice" }))
        .send()
        .await
        .expect("send");
    expect_problem(again, StatusCode::CONFLICT).await;

    let events: Vec<(String, Value, Uuid)> = sqlx::query_as(
        "SELECT event_type, payload, correlation_id FROM outbox WHERE message_key = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&client.api.db.pool)
    .await
    .expect("outbox");
    let kinds: Vec<&str> = events.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "OrderPlaced",
            "OrderStatusChanged",
            "OrderStatusChanged",
            "OrderStatusChanged",
            "OrderCancelled"
        ]
    );
    let changes: Vec<(String, String)> = events[1..4]
        .iter()
        .map(|(_, payload, _)| {
            let change: OrderStatusChanged =
                serde_json::from_value(payload.clone()).expect("payload");
            (change.old_status.to_string(), change.new_status.to_string())
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("CREATED", "RESERVED"),
            ("RESERVED", "PAID"),
            ("PAID", "CANCELLED")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Cancelling a paid order triggers compensation, with a full (simulated) refund.
    let cancelled: OrderCancelled = serde_json::from_value(events[4].1.clone()).expect("payload");
    assert_eq!(cancelled.previous_status, OrderStatus::Paid);
    assert_eq!(cancelled.reason, "customer asked");
    assert_eq!(
        cancelled.refund.map(|r| r.to_string()),
        order["total"].as_str().map(str::to_owned)
    );
    assert!(
        events
            .iter()
            .all(|(_, _, correlation)| *correlation == events[0].2),
        "one saga, one correlation id"
    );
}

#[tokio::test]
async fn a_customer_sees_and_acts_on_only_their_own_orders() {
    let client = Client::new().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let as_user = |request: reqwest::RequestBuilder, customer: Uuid| {
        request
            .header("x-oms-role", "user")
            .header("x-oms-customer-id", customer.to_string())
    };
    let placed = as_user(client.http.post(client.api.url("/api/orders")), alice)
        .json(&order_for(alice))
        .send()
        .await
        .expect("send");
    assert_eq!(placed.status(), StatusCode::CREATED);
    let id = json_of(placed).await["id"].as_str().expect("id").to_owned();
    json_of(client.place(&order_for(bob)).await).await;

    let bobs_read = as_user(
        client
            .http
            .get(client.api.url(&format!("/api/orders/{id}"))),
        bob,
    )
    .send()
    .await
    .expect("send");
    expect_problem(bobs_read, StatusCode::NOT_FOUND).await;
    let bobs_list_of_alice = as_user(
        client
            .http
            .get(client.api.url(&format!("/api/orders?customerId={alice}"))),
        bob,
    )
    .send()
    .await
    .expect("send");
    expect_problem(bobs_list_of_alice, StatusCode::FORBIDDEN).await;
    let bobs_list = json_of(
        as_user(client.http.get(client.api.url("/api/orders")), bob)
            .send()
            .await
            .expect("send"),
    )
    .await;
    let owners: Vec<&str> = bobs_list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["customerId"].as_str().expect("c"))
        .collect();
    assert_eq!(owners, [bob.to_string()]);
    let for_alice = as_user(client.http.post(client.api.url("/api/orders")), bob)
        .json(&order_for(alice))
        .send()
        .await
        .expect("send");
    expect_problem(for_alice, StatusCode::FORBIDDEN).await;
    // Naming no customer, a user places for themself; an admin must say for whom.
    let mut unnamed = order_for(alice);
    unnamed
        .as_object_mut()
        .expect("object")
        .remove("customerId");
    let bobs_own = as_user(client.http.post(client.api.url("/api/orders")), bob)
        .json(&unnamed)
        .send()
        .await
        .expect("send");
    assert_eq!(bobs_own.status(), StatusCode::CREATED);
    assert_eq!(json_of(bobs_own).await["customerId"], bob.to_string());
    let as_admin = |request: reqwest::RequestBuilder| request.header("x-oms-role", "admin");
    let admin_unnamed = as_admin(client.http.post(client.api.url("/api/orders")))
        .json(&unnamed)
        .send()
        .await
        .expect("send");
    let problem = expect_problem(admin_unnamed, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "customerId");
    let admin_for_alice = as_admin(client.http.post(client.api.url("/api/orders")))
        .json(&order_for(alice))
        .send()
        .await
        .expect("send");
    assert_eq!(admin_for_alice.status(), StatusCode::CREATED);
    let bob_admins = as_user(
        client
            .http
            .put(client.api.url(&format!("/api/orders/{id}/status"))),
        bob,
    )
    .json(&json!({ "status": "RESERVED" }))
    .send()
    .await
    .expect("send");
    expect_problem(bob_admins, StatusCode::FORBIDDEN).await;
    let alices_read = as_user(
        client
            .http
            .get(client.api.url(&format!("/api/orders/{id}"))),
        alice,
    )
    .send()
    .await
    .expect("send");
    assert_eq!(alices_read.status(), StatusCode::OK);
}

#[tokio::test]
async fn orders_list_newest_first_in_keyset_pages_with_filters() {
    let client = Client::new().await;
    let customer = Uuid::new_v4();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            json_of(client.place(&order_for(customer)).await).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    json_of(client.place(&order_for(Uuid::new_v4())).await).await;
    client.set_status(&ids[1], "RESERVED").await;

    let mut seen = Vec::new();
    let mut after = String::new();
    for page in 0..3 {
        let body = json_of(
            client
                .get(&format!("/api/orders?customerId={customer}&limit=2{after}"))
                .await,
        )
        .await;
        seen.extend(
            body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|o| o["id"].as_str().expect("id").to_owned()),
        );
        match body["nextAfter"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => {
                assert_eq!(page, 2, "the last page has no nextAfter");
                break;
            }
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);

    let reserved = json_of(
        client
            .get(&format!(
                "/api/orders?customerId={customer}&status=RESERVED"
            ))
            .await,
    )
    .await;
    let reserved: Vec<&str> = reserved["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["id"].as_str().expect("id"))
        .collect();
    assert_eq!(reserved, [ids[3].as_str()]);
}

async fn metric(client: &Client, name: &str) -> f64 {
    let text = client.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const CACHE_HITS: &str = "oms_cache_requests_total{result=\"hit\"}";
const CACHE_ERRORS: &str = "oms_cache_requests_total{result=\"error\"}";

#[tokio::test]
async fn a_cached_order_is_replaced_on_every_change_and_never_by_an_older_copy() {
    let client = Client::new().await;
    let id = json_of(client.place(&order_for(Uuid::new_v4())).await).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/orders/{id}");
    let created = json_of(client.get(&path).await).await;
    let hits = metric(&client, CACHE_HITS).await;
    assert_eq!(json_of(client.get(&path).await).await, created);
    assert!(
        metric(&client, CACHE_HITS).await > hits,
        "the second read came from the cache"
    );

    assert_eq!(
        client.set_status(&id, "RESERVED").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        json_of(client.get(&path).await).await["status"],
        "RESERVED",
        "the change replaced the entry"
    );

    // A reader that took its copy before the change and stores it after cannot win.
    let cache = oms_api::cache::OrderCache::new(&client.api.config.cache).expect("cache");
    let stale: oms_api::store::Order = serde_json::from_value(created).expect("order");
    cache.put(&stale).await;
    let read = json_of(client.get(&path).await).await;
    assert_eq!(
        (read["status"].as_str(), read["version"].as_i64()),
        (Some("RESERVED"), Some(2))
    );
}

#[tokio::test]
async fn reads_fall_back_to_postgres_while_redis_is_down_and_count_it() {
    let mut redis = testing::dedicated_redis();
    let redis_url = format!("redis://{}", redis.addr);
    let (bus, _) = testing::shared_bus().await;
    let api = TestApi::spawn_with(bus, |c| {
        c.cache.url = Some(oms_saga::config::Secret::new(redis_url.clone()))
    })
    .await;
    let client = Client::with(api).await;
    let id = json_of(client.place(&order_for(Uuid::new_v4())).await).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/orders/{id}");
    assert_eq!(client.get(&path).await.status(), StatusCode::OK);

    redis.kill();
    let errors = metric(&client, CACHE_ERRORS).await;
    assert_eq!(
        client.set_status(&id, "RESERVED").await.status(),
        StatusCode::OK
    );
    let read = client.get(&path).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        json_of(read).await["status"],
        "RESERVED",
        "read from PostgreSQL"
    );
    assert!(
        metric(&client, CACHE_ERRORS).await > errors,
        "the fallback was counted"
    );
}

#[tokio::test]
async fn orders_placed_while_the_broker_is_paused_are_delivered_in_order_once_it_resumes() {
    use futures::StreamExt;
    const ORDERS: usize = 200;
    let (broker, bus_config) = testing::dedicated_broker();
    let client = Client::with(TestApi::spawn_with(bus_config.clone(), |_| {}).await).await;
    let topic = client.api.config.topics.orders.clone();
    let bus = bus::connect(&bus_config).expect("bus");
    // Before the outage the relay works: a first order's event went out.
    let first = json_of(client.place(&order_for(Uuid::new_v4())).await).await;
    testing::eventually(
        Duration::from_secs(30),
        "the first event to be published",
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
                .fetch_one(&client.api.db.pool)
                .await
                .ok()?;
            (left == 0).then_some(())
        },
    )
    .await;

    broker.pause();
    // Sixteen clients at a time, like a busy shop front, each placing and then reserving.
    let placed: Vec<String> = futures::stream::iter(0..ORDERS)
        .map(|_| async {
            let order = client.place(&order_for(Uuid::new_v4())).await;
            assert_eq!(
                order.status(),
                StatusCode::CREATED,
                "orders are accepted while the broker is paused"
            );
            let id = json_of(order).await["id"].as_str().expect("id").to_owned();
            assert_eq!(
                client.set_status(&id, "RESERVED").await.status(),
                StatusCode::OK
            );
            id
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(&client.api.db.pool)
        .await
        .expect("count");
    assert_eq!(
        waiting,
        2 * ORDERS as i64,
        "every event waits in the outbox during the outage"
    );
    broker.resume();

    let delivered = testing::consume_events(
        bus.as_ref(),
        &topic,
        1 + ORDERS * 2,
        Duration::from_secs(60),
    )
    .await;
    let codec = client.api.codec();
    let mut per_order: HashMap<String, Vec<String>> = HashMap::new();
    for delivery in &delivered {
        let record = EventRecord::from_delivery(delivery, &codec)
            .await
            .expect("event");
        per_order
            .entry(record.key)
            .or_default()
            .push(record.event_type);
    }
    assert_eq!(per_order.len(), ORDERS + 1);
    assert_eq!(
        per_order[first["id"].as_str().expect("id")],
        ["OrderPlaced"]
    );
    for id in placed {
        assert_eq!(
            per_order[&id],
            ["OrderPlaced", "OrderStatusChanged"],
            "events of order {id}"
        );
    }
}

#[tokio::test]
async fn changes_made_together_come_out_as_if_made_one_by_one() {
    use oms_api::{
        Error,
        store::{self, Change, Origin},
    };
    let client = Client::new().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let order = json_of(client.place(&order_for(Uuid::new_v4())).await).await;
        ids.push(
            order["id"]
                .as_str()
                .expect("id")
                .parse::<Uuid>()
                .expect("uuid"),
        );
    }
    let [a, b, c, gone] = ids[..] else {
        unreachable!()
    };
    let cancel = client.set_status(&gone.to_string(), "CANCELLED").await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let pool = &client.api.db.pool;
    let before: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox")
        .fetch_one(pool)
        .await
        .expect("outbox");

    let nobody = Uuid::new_v4();
    let change = |id, to, reason: Option<&str>| Change {
        id,
        to,
        reason: reason.map(str::to_owned),
        origin: Origin {
            cause: Some(Uuid::new_v4()),
            ..Origin::default()
        },
    };
    let changes = [
        change(a, OrderStatus::Reserved, None),
        change(b, OrderStatus::Cancelled, Some("OUT_OF_STOCK")),
        change(nobody, OrderStatus::Reserved, None),
        change(gone, OrderStatus::Reserved, None),
        // A second change to `a`: made after the first, from RESERVED.
        change(a, OrderStatus::Paid, None),
        change(c, OrderStatus::Reserved, None),
    ];
    let mut tx = pool.begin().await.expect("begin");
    let outcomes = store::change_status_all(&mut tx, &client.api.config.topics.orders, &changes)
        .await
        .expect("changes");
    tx.commit().await.expect("commit");

    let described: Vec<String> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(order) => format!("{} {} v{}", order.id, order.status, order.version),
            Err(Error::NotFound(id)) => format!("{id} not found"),
            Err(Error::IllegalTransition {
                order_id,
                transition,
            }) => {
                format!(
                    "{order_id} {} -> {} refused",
                    transition.from, transition.to
                )
            }
            Err(e) => format!("{e}"),
        })
        .collect();
    assert_eq!(
        described,
        [
            format!("{a} RESERVED v2"),
            format!("{b} CANCELLED v2"),
            format!("{nobody} not found"),
            format!("{gone} CANCELLED -> RESERVED refused"),
            format!("{a} PAID v3"),
            format!("{c} RESERVED v2"),
        ]
    );
    // The orders as the API shows them, and the events, in the order one by one writes them.
    let client = &client;
    let shown = |id: Uuid| async move {
        let order = json_of(client.get(&format!("/api/orders/{id}")).await).await;
        (
            order["status"].clone(),
            order["statusReason"].clone(),
            order["version"].clone(),
        )
    };
    assert_eq!(shown(a).await, (json!("PAID"), Value::Null, json!(3)));
    assert_eq!(
        shown(b).await,
        (json!("CANCELLED"), json!("OUT_OF_STOCK"), json!(2))
    );
    assert_eq!(
        shown(gone).await,
        (json!("CANCELLED"), Value::Null, json!(2))
    );
    let events: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT event_type, message_key, causation_id FROM outbox WHERE id > $1 ORDER BY id",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .expect("outbox");
    let event =
        |kind: &str, change: &Change| (kind.to_owned(), change.id.to_string(), change.origin.cause);
    assert_eq!(
        events,
        [
            event("OrderStatusChanged", &changes[0]),
            event("OrderStatusChanged", &changes[1]),
            event("OrderCancelled", &changes[1]),
            event("OrderStatusChanged", &changes[4]),
            event("OrderStatusChanged", &changes[5]),
        ]
    );
}

/// PostgreSQL settles on a generic plan for a prepared statement after its fifth run. Settled
/// while the orders table was small, the batch's lookup and update would scan the whole table
/// for ever after on this connection, autovacuum being off here: they are planned at each call.
#[tokio::test]
async fn batch_changes_read_their_orders_by_index_however_small_the_table_was_at_first() {
    use oms_api::store::{self, Change};
    let client = Client::new().await;
    let pool = &client.api.db.pool;
    let topic = &client.api.config.topics.orders;
    let insert = |count: i32| {
        sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO orders (id, customer_id, status, items, total, correlation_id) \
             SELECT gen_random_uuid(), gen_random_uuid(), 'CREATED', '[]', 1, gen_random_uuid() \
             FROM generate_series(1, $1) RETURNING id",
        )
        .bind(count)
        .fetch_all(pool)
    };
    let reserve = |ids: &[Uuid]| -> Vec<Change> {
        ids.iter()
            .map(|&id| Change {
                id,
                to: OrderStatus::Reserved,
                reason: None,
                origin: Default::default(),
            })
            .collect()
    };
    // One connection: prepared statements and their plans belong to it.
    let mut conn = pool.acquire().await.expect("connection");
    // Batches of ten over sixty orders: a sequential scan is the cheaper plan for now.
    let small = insert(60).await.expect("small table");
    for batch in small.chunks(10) {
        let moved = store::change_status_all(&mut conn, topic, &reserve(batch))
            .await
            .expect("batch");
        assert!(moved.iter().all(Result::is_ok), "{moved:?}");
    }
    let big = insert(20_000).await.expect("big table");
    let before = sequential_scans(&mut conn, "orders").await;
    let moved = store::change_status_all(&mut conn, topic, &reserve(&big[..2]))
        .await
        .expect("batch");
    let after = sequential_scans(&mut conn, "orders").await;

    let statuses: Vec<OrderStatus> = moved
        .into_iter()
        .map(|m| m.expect("moved").status)
        .collect();
    assert_eq!(statuses, [OrderStatus::Reserved, OrderStatus::Reserved]);
    assert_eq!(
        after - before,
        0,
        "a batch of two among 20,060 orders scanned the table"
    );
}

/// How many sequential scans of `table` PostgreSQL has counted, this connection's included.
async fn sequential_scans(conn: &mut sqlx::PgConnection, table: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush");
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1")
        .bind(table)
        .fetch_one(conn)
        .await
        .expect("scans")
}

/// Holds back every insert into `orders` until the returned transaction ends.
async fn hold_order_writes(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE orders IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock the orders");
    blocker
}

/// Waits (bounded) until some placement's write is held back by [`hold_order_writes`].
async fn a_write_is_held(pool: &sqlx::PgPool) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE relation = 'orders'::regclass AND NOT granted",
        )
        .fetch_one(pool)
        .await
        .expect("read the locks");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no placement's write waited on the orders table within 10 s");
}

/// A new order of one mug, for a fresh customer, at `unit_price`.
fn one_mug(unit_price: &str) -> oms_api::domain::NewOrder {
    oms_api::domain::NewOrder {
        customer_id: Uuid::new_v4(),
        items: vec![oms_api::domain::OrderLine {
            product_id: "SKU-MUG".into(),
            quantity: 1,
            unit_price: unit_price.parse().expect("a price"),
        }],
        currency: "USD".into(),
        payment_method: "pm_card_visa".into(),
    }
}

#[tokio::test]
async fn orders_placed_together_commit_together_each_with_its_event_and_a_bad_one_fails_alone() {
    use oms_api::store::{Origin, Store};
    let client = Client::new().await;
    let pool = &client.api.db.pool;
    let store = Store::new(pool.clone(), client.api.config.topics.orders.clone());
    // Orders placed at once, of which the ones at `bad` break the table's rule on totals.
    let place_at_once = |count: usize, bad: Option<usize>| {
        let store = store.clone();
        async move {
            // Held first, so that no placement can be written before the rest are queued.
            let held = hold_order_writes(pool).await;
            let placing: Vec<_> = (0..count)
                .map(|i| {
                    let store = store.clone();
                    let new = one_mug(if Some(i) == bad { "-1.00" } else { "9.50" });
                    tokio::spawn(async move { store.place(&new, None, &Origin::default()).await })
                })
                .collect();
            a_write_is_held(pool).await;
            // Every placement is queued by now: the test's runtime has one thread, and ran them
            // while it waited.
            tokio::time::sleep(Duration::from_millis(200)).await;
            held.rollback().await.expect("let the writes go");
            let mut outcomes = Vec::new();
            for placing in placing {
                outcomes.push(placing.await.expect("the placement ran"));
            }
            outcomes
        }
    };

    let outcomes = place_at_once(20, None).await;
    let placed: Vec<Uuid> = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("placed").0.id)
        .collect();
    let (orders, transactions, with_their_event): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT o.xmin::text), \
         count(*) FILTER (WHERE e.xmin::text = o.xmin::text) \
         FROM orders o LEFT JOIN outbox e ON e.message_key = o.id::text \
         AND e.event_type = 'OrderPlaced' WHERE o.id = ANY($1)",
    )
    .bind(&placed)
    .fetch_one(pool)
    .await
    .expect("read the orders");
    assert_eq!(orders, 20);
    assert_eq!(with_their_event, 20, "each order commits with its event");
    // The two writers held at the lock, then one batch of everything queued behind them.
    assert!(
        transactions <= 3,
        "{transactions} transactions for 20 orders"
    );

    let before = client.order_count().await;
    let outcomes = place_at_once(6, Some(3)).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (3, Err(oms_api::Error::Database(_))) | (0..3 | 4.., Ok(_)) => {}
            (i, outcome) => panic!("placement {i}: {outcome:?}"),
        }
    }
    assert_eq!(client.order_count().await, before + 5);
    // Counted in orders a transaction, not in seconds.
    let batches = "oms_orders_placed_per_transaction";
    assert!(metric(&client, &format!("{batches}_sum")).await >= 26.0);
    assert!(metric(&client, &format!("{batches}_bucket{{le=\"256\"}}")).await >= 1.0);
}

#[tokio::test]
async fn orders_placed_together_while_the_database_is_out_of_reach_are_each_told_so() {
    use oms_api::store::{Origin, Store};
    // Nothing listens on port 9 here: every connection is refused.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://oms@127.0.0.1:9/oms")
        .expect("a lazy pool");
    let store = Store::new(pool, "orders".into());
    let placing: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let new = one_mug("9.50");
            tokio::spawn(async move { store.place(&new, None, &Origin::default()).await })
        })
        .collect();
    for placing in placing {
        match placing.await.expect("the placement ran") {
            Err(oms_api::Error::Database(e)) if oms_saga::database_unavailable(&e) => {}
            outcome => panic!("not told the database is out of reach: {outcome:?}"),
        }
    }
}
