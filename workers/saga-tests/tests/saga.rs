//! The saga end to end, through the gateway, on real services.

use std::time::Duration;

use oms_payments::testing::{authenticate, three_d_secure_method};
use oms_saga_tests::Stack;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline_even_across_a_restart_and_its_stock_released()
{
    let mut stack = Stack::spawn_with(
        |_| {},
        // Long enough for the payment step to authorize the paid order first, whatever its
        // consumer's first join to its group takes on the bus.
        |status| {
            status.payment.timeout = Duration::from_secs(10);
            status.payment.check_interval = Duration::from_millis(200);
        },
    )
    .await;
    stack.set_stock("SKU-LATE", 10).await;
    stack.set_stock("SKU-PAID", 10).await;
    // A card whose bank asks the customer to authenticate, which they never do.
    let (status, body) = stack
        .place_paying(&[("SKU-LATE", 4)], &three_d_secure_method().await)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let unpaid = body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("id");
    let paid = stack.placed(&[("SKU-PAID", 2)]).await;
    stack.wait_for(unpaid, "RESERVED").await;
    stack.wait_for(paid, "PAID").await;
    stack.wait_for_stock("SKU-LATE", (6, 4, 0)).await;

    // The worker that started the clocks goes away before they run out; the deadlines wait in
    // the database for the next one.
    stack.status.service.stop().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_deadlines")
        .fetch_one(&stack.api.db.pool)
        .await
        .expect("deadlines");
    assert_eq!(pending, 2, "both reservations started a clock");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        stack.order(unpaid).await["status"],
        "RESERVED",
        "nothing fires while the worker is down"
    );
    stack.status.service.restart().await;

    let cancelled = stack.wait_for(unpaid, "CANCELLED").await;
    assert_eq!(cancelled["statusReason"], "PAYMENT_TIMEOUT");
    stack.wait_for_stock("SKU-LATE", (10, 0, 0)).await;
    // Its authorization, which never completed, is released at the provider.
    stack.wait_for_payment(unpaid, "VOIDED").await;
    // The paid order's deadline ends without effect.
    testing_wait_no_deadlines(&stack).await;
    assert_eq!(stack.order(paid).await["status"], "PAID");
    assert_eq!(stack.stock("SKU-PAID").await, (8, 2, 0));
    let (status, _) = stack.place(&[("SKU-LATE", 10)]).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the released stock can be ordered again"
    );
    stack.assert_settled().await;
}

async fn testing_wait_no_deadlines(stack: &Stack) {
    oms_saga::testing::eventually(
        Duration::from_secs(30),
        "every deadline to be settled",
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_deadlines")
                .fetch_one(&stack.api.db.pool)
                .await
                .expect("deadlines");
            (left == 0).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn an_order_is_reserved_paid_and_shipped_with_its_customer_told_of_each_step_once() {
    let stack = Stack::spawn().await;
    stack.set_stock("SKU-HAPPY", 5).await;
    let id = stack.placed(&[("SKU-HAPPY", 2)]).await;
    stack.wait_for(id, "PAID").await;
    stack.wait_for_stock("SKU-HAPPY", (3, 2, 0)).await;
    stack.wait_for_payment(id, "AUTHORIZED").await;
    stack.move_to(id, "SHIPPED").await;
    stack.wait_for_payment(id, "CAPTURED").await;
    stack.wait_for_stock("SKU-HAPPY", (3, 0, 2)).await;
    stack.move_to(id, "REFUNDED").await;
    stack.wait_for_payment(id, "REFUNDED").await;

    let notices = stack
        .wait_for_notices(id, &["PLACED", "RESERVED", "PAID", "SHIPPED", "REFUNDED"])
        .await;
    let channels: Vec<&str> = notices
        .iter()
        .rev()
        .filter_map(|n| n["channel"].as_str())
        .collect();
    assert_eq!(channels, ["EMAIL", "EMAIL", "EMAIL", "SMS", "EMAIL"]);
    for notice in &notices {
        let event_id = notice["eventId"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .expect("event id");
        assert_eq!(stack.notifications.sender.sent_for(event_id), 1, "{notice}");
    }

    // Bob sees none of it, and may not ask for alice's.
    let bob = stack.gateway.login("bob").await;
    let http = reqwest::Client::new();
    let listed = |path: String| {
        let request = http.get(stack.gateway.url(&path)).bearer_auth(&bob);
        async move {
            let response = request.send().await.expect("list");
            let status = response.status();
            (
                status,
                response.json::<serde_json::Value>().await.expect("json"),
            )
        }
    };
    let (status, own) = listed("/api/notifications".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["items"], serde_json::json!([]));
    let (status, problem) =
        listed(format!("/api/notifications?customerId={}", stack.alice())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    stack.assert_settled().await;
}

#[tokio::test]
async fn orders_progress_while_notifications_are_down_and_are_told_exactly_once_after() {
    // Without the availability check, an order beyond the stock is accepted and the saga
    // cancels it: one more kind of news.
    let mut stack = Stack::spawn_with(|api| api.availability.inventory_url = None, |_| {}).await;
    stack.set_stock("SKU-QUIET", 10).await;
    // One order told in full first, so the service has joined its group before it goes away.
    let before = stack.placed(&[("SKU-QUIET", 1)]).await;
    stack
        .wait_for_notices(before, &["PLACED", "RESERVED", "PAID"])
        .await;
    stack.notifications.service.stop().await;

    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(stack.placed(&[("SKU-QUIET", 1)]).await);
    }
    let rejected = stack.placed(&[("SKU-QUIET", 50)]).await;
    for id in &orders {
        stack.wait_for(*id, "PAID").await;
    }
    let cancelled = stack.wait_for(rejected, "CANCELLED").await;
    assert_eq!(cancelled["statusReason"], "OUT_OF_STOCK");
    let told: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&stack.notifications.db.pool)
        .await
        .expect("count");
    assert_eq!(told, 3, "nothing is told while the service is down");

    stack.notifications.service.restart().await;
    for id in &orders {
        stack
            .wait_for_notices(*id, &["PLACED", "RESERVED", "PAID"])
            .await;
    }
    let notices = stack
        .wait_for_notices(rejected, &["PLACED", "CANCELLED"])
        .await;
    assert!(
        notices[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("out of stock")),
        "{}",
        notices[0]
    );
    let counts = stack.notifications.sender.counts();
    assert_eq!(counts.len(), 3 + 3 * 3 + 2, "one message per telling event");
    assert!(counts.iter().all(|&c| c == 1), "each sent once: {counts:?}");
    stack.assert_settled().await;
}

#[tokio::test]
async fn with_the_inventory_down_the_breaker_opens_orders_are_accepted_unchecked_and_the_saga_completes_once_it_is_back()
 {
    let mut stack = Stack::spawn_with(
        |api| {
            api.availability.failure_threshold = 2;
            api.availability.open_for = Duration::from_secs(120);
        },
        |_| {},
    )
    .await;
    stack.set_stock("SKU-DOWN", 10).await;
    // While the inventory answers, a definitely short order is refused at once, and nothing
    // reaches the saga.
    let (status, problem) = stack.place(&[("SKU-DOWN", 11)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["short"][0]["productId"], "SKU-DOWN");
    assert_eq!(problem["short"][0]["available"], 10);
    let (status, checked) = stack.place(&[("SKU-DOWN", 1)]).await;
    assert_eq!(status, StatusCode::CREATED, "{checked}");
    assert_eq!(checked["availability"]["checked"], true);
    let first = checked["id"].as_str().expect("id").parse().expect("uuid");
    stack.wait_for(first, "PAID").await;
    let mut orders = vec![first];

    stack.inventory.service.stop().await;
    let mut skipped = Vec::new();
    for _ in 0..4 {
        let (status, order) = stack.place(&[("SKU-DOWN", 1)]).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "accepted while the inventory is down: {order}"
        );
        assert_eq!(order["availability"]["checked"], false);
        skipped.push(
            order["availability"]["skippedBecause"]
                .as_str()
                .expect("why")
                .to_owned(),
        );
        orders.push(order["id"].as_str().expect("id").parse().expect("uuid"));
    }
    assert!(skipped[0].contains("did not answer"), "{skipped:?}");
    assert!(skipped[1].contains("did not answer"), "{skipped:?}");
    assert!(skipped[2].contains("circuit open"), "{skipped:?}");
    assert!(skipped[3].contains("circuit open"), "{skipped:?}");

    let http = reqwest::Client::new();
    let ready: serde_json::Value = http
        .get(stack.api.url("/health/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(
        ready["status"], "ready",
        "the API is ready without the inventory"
    );
    assert_eq!(ready["checks"]["inventoryBreaker"], "open");
    let metrics = http
        .get(stack.api.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"oms_circuit_breaker_state{breaker="inventory"} 2"#),
        "{metrics}"
    );
    for id in &orders[1..] {
        assert_eq!(stack.order(*id).await["status"], "CREATED");
    }

    stack.inventory.service.restart().await;
    for id in &orders {
        stack.wait_for(*id, "PAID").await;
    }
    stack.wait_for_stock("SKU-DOWN", (5, 5, 0)).await;
    stack.assert_settled().await;
}

#[tokio::test]
async fn with_two_instances_of_every_worker_each_order_is_handled_once_and_in_order() {
    let mut stack = Stack::spawn().await;
    stack.inventory.service.another_instance().await;
    stack.status.service.another_instance().await;
    stack.notifications.service.another_instance().await;
    stack.payments.service.another_instance().await;
    stack.set_stock("SKU-PAIR", 100).await;
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(stack.placed(&[("SKU-PAIR", 1)]).await);
    }
    for id in &orders {
        stack.wait_for(*id, "PAID").await;
    }
    for id in &orders {
        // Told in the order things happened to it, whichever instance handled what.
        stack
            .wait_for_notices(*id, &["PLACED", "RESERVED", "PAID"])
            .await;
    }
    assert_eq!(stack.stock("SKU-PAIR").await, (88, 12, 0));
    let counts = stack.notifications.sender.counts();
    assert_eq!(counts.len(), 12 * 3);
    assert!(counts.iter().all(|&c| c == 1), "each sent once: {counts:?}");
    stack.assert_settled().await;
}

#[tokio::test]
async fn two_hundred_concurrent_orders_for_fifty_units_end_fifty_paid_and_the_rest_out_of_stock() {
    // Without the availability check every order reaches the saga, which alone must not oversell.
    let stack = Stack::spawn_with(|api| api.availability.inventory_url = None, |_| {}).await;
    stack.set_stock("SKU-RUSH", 50).await;
    let placed = futures::future::join_all((0..200).map(|_| stack.place(&[("SKU-RUSH", 1)]))).await;
    assert!(
        placed
            .iter()
            .all(|(status, _)| *status == StatusCode::CREATED),
        "every order is accepted"
    );
    oms_saga::testing::eventually(
        oms_saga_tests::SETTLE,
        "all 200 orders to settle",
        || async {
            (stack.count("CREATED").await == 0 && stack.count("RESERVED").await == 0).then_some(())
        },
    )
    .await;
    assert_eq!(stack.count("PAID").await, 50);
    assert_eq!(stack.count("CANCELLED").await, 150);
    let (available, reserved, sold) = stack.stock("SKU-RUSH").await;
    assert_eq!((available, reserved, sold), (0, 50, 0));
    assert_eq!(available + reserved + sold, 50, "no unit made or lost");
    let (_, cancelled) = stack
        .as_alice(
            reqwest::Method::GET,
            "/api/orders?status=CANCELLED&limit=200",
            None,
        )
        .await;
    let reasons: Vec<&str> = cancelled["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|o| o["statusReason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 150);
    assert!(reasons.iter().all(|r| *r == "OUT_OF_STOCK"), "{reasons:?}");
    stack.assert_settled().await;
}

/// The shop's prices, end to end: an admin prices a product in the catalog, the event reaches
/// the order service, and an order is charged that price whatever the client says; a later price
/// change prices new orders only.
#[tokio::test]
async fn orders_are_bought_at_the_catalogs_price_and_keep_it() {
    let stack = Stack::spawn().await;
    stack.set_price("SKU-MUG", "12.00").await;
    stack.set_stock("SKU-MUG", 10).await;

    let (status, product) = stack
        .as_alice(Method::GET, "/api/products/SKU-MUG", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{product}");
    assert_eq!(
        (
            &product["priceMinor"],
            &product["price"],
            &product["currency"]
        ),
        (&json!(1200), &json!("12.00"), &json!("USD"))
    );
    let (status, _) = stack
        .as_alice(
            Method::PUT,
            "/api/products/SKU-MUG",
            Some(json!({ "name": "Mug", "price": "0.01", "currency": "USD" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins set prices");

    // A client naming its own price is refused, and nothing is placed.
    let cheap = json!({
        "items": [{ "productId": "SKU-MUG", "quantity": 1, "unitPrice": "0.01" }],
        "paymentMethod": "pm_card_visa"
    });
    let (status, problem) = stack
        .as_alice(Method::POST, "/api/orders", Some(cheap))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "items[0].unitPrice");
    let (_, listed) = stack.as_alice(Method::GET, "/api/orders", None).await;
    assert_eq!(listed["items"], json!([]));

    let bought = stack.placed(&[("SKU-MUG", 2)]).await;
    assert_eq!(stack.order(bought).await["total"], "24.00");
    stack.set_price("SKU-MUG", "15.00").await;
    let later = stack.placed(&[("SKU-MUG", 1)]).await;
    assert_eq!(stack.order(later).await["total"], "15.00");
    let first = stack.wait_for(bought, "PAID").await;
    assert_eq!(
        (&first["total"], &first["items"][0]["unitPrice"]),
        (&json!("24.00"), &json!("12.00")),
        "a placed order keeps the price it was bought at"
    );
}

/// A capture the provider refuses leaves the order PAID, says why on the order and its
/// timeline, and tells the admins; the admin can then cancel it, and nothing stays held.
#[tokio::test]
async fn a_failed_capture_leaves_the_order_paid_with_the_failure_shown_and_the_admins_told() {
    let stack = Stack::spawn().await;
    stack.set_stock("SKU-EXPIRED", 5).await;
    let id = stack.placed(&[("SKU-EXPIRED", 1)]).await;
    stack.wait_for(id, "PAID").await;
    let payment = stack.wait_for_payment(id, "AUTHORIZED").await;
    // The authorization expires at the provider (Stripe releases it after seven days).
    let stripe = oms_payments::Stripe::new(&stack.payments.config.stripe).expect("client");
    stripe
        .cancel(id, payment.intent_id.as_deref().expect("intent"))
        .await
        .expect("released at the provider");

    let (code, body) = stack
        .as_admin(
            Method::PUT,
            &format!("/api/orders/{id}/status"),
            Some(json!({"status": "SHIPPED"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["status"], "PAID",
        "not shipped before the capture: {body}"
    );
    let order = oms_saga::testing::eventually(
        oms_saga_tests::SETTLE,
        "the failure on the order",
        || async {
            let order = stack.order(id).await;
            order["paymentIssue"].is_string().then_some(order)
        },
    )
    .await;
    assert_eq!(order["status"], "PAID");
    assert!(
        order["paymentIssue"]
            .as_str()
            .is_some_and(|i| i.contains("capture failed")),
        "{order}"
    );
    // The timeline is a projection of its own consumer's, which may record the event later.
    oms_saga::testing::eventually(
        oms_saga_tests::SETTLE,
        "PaymentCaptureFailed on the timeline",
        || async {
            let (_, timeline) = stack
                .as_admin(Method::GET, &format!("/api/orders/{id}/timeline"), None)
                .await;
            timeline
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e["eventType"] == "PaymentCaptureFailed"))
                .then_some(())
        },
    )
    .await;
    // The admins are told; alice is not.
    let told =
        oms_saga::testing::eventually(oms_saga_tests::SETTLE, "the admins to be told", || async {
            let (_, page) = stack
                .as_admin(
                    Method::GET,
                    &format!("/api/notifications?orderId={id}"),
                    None,
                )
                .await;
            page["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|n| n["kind"] == "CAPTURE_FAILED")
                    .cloned()
            })
        })
        .await;
    assert_eq!(told["audience"], "ADMINS", "{told}");
    let (_, own) = stack
        .as_alice(
            Method::GET,
            &format!("/api/notifications?orderId={id}"),
            None,
        )
        .await;
    assert!(
        own["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|n| n["kind"] != "CAPTURE_FAILED")),
        "{own}"
    );
    assert_eq!(
        stack.stock("SKU-EXPIRED").await,
        (4, 1, 0),
        "nothing shipped"
    );

    let (code, body) = stack
        .as_admin(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            Some(json!({"reason": "authorization expired"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    stack.wait_for_payment(id, "VOIDED").await;
    stack.wait_for_stock("SKU-EXPIRED", (5, 0, 0)).await;
    stack.assert_settled().await;
}

/// A card that asks for 3-D Secure: the order waits, RESERVED, with the client secret its owner
/// (only) can read; once the customer has answered, the saga goes on to PAID.
#[tokio::test]
async fn an_order_waiting_for_3d_secure_shows_its_owner_the_client_secret_and_is_paid_once_answered()
 {
    let stack = Stack::spawn().await;
    stack.set_stock("SKU-3DS", 5).await;
    let (status, body) = stack
        .place_paying(&[("SKU-3DS", 1)], &three_d_secure_method().await)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: uuid::Uuid = body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("id");
    let path = format!("/api/orders/{id}");
    let secret =
        oms_saga::testing::eventually(oms_saga_tests::SETTLE, "the client secret", || async {
            let (_, order) = stack.as_alice(Method::GET, &path, None).await;
            order["paymentClientSecret"].as_str().map(str::to_owned)
        })
        .await;
    assert_eq!(stack.order(id).await["status"], "RESERVED");
    // Not the admin's, nor anyone else's, and not in the timeline.
    assert!(stack.order(id).await.get("paymentClientSecret").is_none());
    let (_, listed) = stack
        .as_admin(Method::GET, "/api/orders?limit=50", None)
        .await;
    assert!(!listed.to_string().contains(&secret));
    let (_, timeline) = stack
        .as_alice(Method::GET, &format!("/api/orders/{id}/timeline"), None)
        .await;
    assert!(!timeline.to_string().contains(&secret), "{timeline}");

    let payment = stack.wait_for_payment(id, "ACTION_REQUIRED").await;
    authenticate(payment.intent_id.as_deref().expect("intent"), &secret, true).await;
    let paid = stack.wait_for(id, "PAID").await;
    assert!(paid.get("paymentClientSecret").is_none(), "{paid}");
    // The payment step's request comes from a topic of its own: its place among the order's
    // own notices depends on which topic the notification service read first.
    stack
        .wait_for_notices_among(id, &["PAID", "PAYMENT_ACTION", "PLACED", "RESERVED"])
        .await;
    stack.assert_settled().await;
}

/// The provider's webhooks reach the payment step through the gateway without a token; the
/// step, not the gateway, checks who sent them.
#[tokio::test]
async fn webhooks_pass_the_gateway_without_a_token_and_only_signed_ones_are_taken() {
    let stack = Stack::spawn().await;
    let http = reqwest::Client::new();
    let body = r#"{"id":"evt_gateway","type":"charge.succeeded","data":{"object":{}}}"#;
    let post = |signature: Option<String>| {
        let mut request = http.post(stack.gateway.url("/webhooks/stripe")).body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send()
    };
    let unsigned = post(None).await.expect("answer");
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    let now = chrono::Utc::now().timestamp();
    let signed = oms_payments::webhook::sign(oms_saga_tests::WEBHOOK_SECRET, now, body.as_bytes());
    let taken = post(Some(signed.clone())).await.expect("answer");
    assert_eq!(taken.status(), StatusCode::OK);
    let again: serde_json::Value = post(Some(signed))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(again["replayed"], true, "{again}");
    // Only the public prefix is public.
    let other = http
        .post(stack.gateway.url("/webhooks/other"))
        .send()
        .await
        .expect("answer");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
