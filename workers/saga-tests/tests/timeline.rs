//! The saga timeline, through the gateway: an order's events from every topic, in order, with
//! their producers, causes and trace, the compensations marked; and the live stream of every
//! saga's events, which a client that reconnects resumes without a gap.

use std::time::Duration;

use futures::StreamExt as _;
use oms_saga::testing;
use oms_saga_tests::{SETTLE, Stack};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn types(timeline: &[Value]) -> Vec<&str> {
    timeline
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test]
async fn an_orders_timeline_is_its_whole_saga_in_order_with_the_compensations_marked() {
    let stack = Stack::spawn().await;
    stack.set_stock("SKU-TIMELINE", 5).await;
    let id = stack.placed(&[("SKU-TIMELINE", 2)]).await;
    stack.wait_for(id, "PAID").await;
    let (code, body) = stack
        .as_admin(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            Some(json!({ "reason": "changed my mind" })),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let path = format!("/api/orders/{id}/timeline");
    let timeline = testing::eventually(SETTLE, "the saga's events", || async {
        let (code, body) = stack.as_alice(Method::GET, &path, None).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let timeline = body.as_array().cloned().unwrap_or_default();
        let seen = types(&timeline);
        let complete = seen.contains(&"StockReleased")
            && seen.contains(&"PaymentVoided")
            && seen.iter().filter(|t| **t == "NotificationSent").count() >= 4;
        complete.then_some(timeline)
    })
    .await;

    let seen = types(&timeline);
    let position = |t: &str| seen.iter().position(|s| *s == t).expect(t);
    assert_eq!(position("OrderPlaced"), 0, "{seen:?}");
    assert!(
        position("StockReserved") < position("OrderCancelled"),
        "{seen:?}"
    );
    assert!(
        position("OrderCancelled") < position("StockReleased"),
        "{seen:?}"
    );
    // The payment's steps: authorized once reserved, released once cancelled.
    assert!(
        position("StockReserved") < position("PaymentAuthorized"),
        "{seen:?}"
    );
    assert!(
        position("OrderCancelled") < position("PaymentVoided"),
        "{seen:?}"
    );

    let placed = &timeline[0];
    for entry in &timeline {
        assert_eq!(entry["orderId"], id.to_string());
        assert_eq!(
            entry["correlationId"], placed["eventId"],
            "one saga: {entry}"
        );
        assert_eq!(entry["traceId"].as_str().map(str::len), Some(32), "{entry}");
        let producer = match entry["eventType"].as_str() {
            Some("StockReserved" | "StockReleased") => "inventory",
            Some("NotificationSent") => "notifications",
            Some("PaymentAuthorized" | "PaymentVoided") => "payments",
            _ => "orders",
        };
        assert_eq!(entry["producer"], producer, "{entry}");
        let compensation = matches!(
            entry["eventType"].as_str(),
            Some("OrderCancelled" | "StockReleased" | "PaymentVoided")
        );
        assert_eq!(entry["compensation"], compensation, "{entry}");
        // What caused an event came before it.
        if let Some(cause) = entry["causationId"].as_str() {
            let cause_at = timeline.iter().position(|e| e["eventId"] == cause);
            let at = timeline
                .iter()
                .position(|e| e["eventId"] == entry["eventId"]);
            if let Some(cause_at) = cause_at {
                assert!(cause_at < at.expect("itself"), "{entry} before its cause");
            }
        }
    }
    let reserved = &timeline[position("StockReserved")];
    assert_eq!(reserved["causationId"], placed["eventId"]);
    assert_eq!(reserved["traceId"], placed["traceId"], "one trace");

    // Another customer's order's timeline is as missing as the order.
    let (code, _) = stack
        .as_admin(
            Method::GET,
            &format!("/api/orders/{}/timeline", Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

/// Reads server-sent events from `response` until `done` says it has what it waits for.
async fn read_events(
    response: reqwest::Response,
    done: impl Fn(&[(i64, Value)]) -> bool,
) -> Vec<(i64, Value)> {
    let mut events = Vec::new();
    let mut text = String::new();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !done(&events) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events within the time limit")
            .expect("the stream stays open")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
            };
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                assert_eq!(field("event:").as_deref(), Some("saga"), "{frame}");
                events.push((
                    id.parse().expect("seq"),
                    serde_json::from_str(&data).expect("json"),
                ));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_live_stream_shows_new_events_and_resumes_after_the_last_one_seen() {
    let stack = Stack::spawn().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let stream = |last: Option<i64>| {
        let mut request = http
            .get(stack.gateway.url("/api/orders/events"))
            .bearer_auth(stack.admin_token());
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        request.send()
    };
    // Alice may not watch everybody's orders.
    let denied = http
        .get(stack.gateway.url("/api/orders/events"))
        .bearer_auth(stack.alice_token())
        .send()
        .await
        .expect("send");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    let live = stream(None).await.expect("stream");
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    stack.set_stock("SKU-LIVE", 5).await;
    let id = stack.placed(&[("SKU-LIVE", 1)]).await.to_string();
    let about = |events: &[(i64, Value)], kind: &str| {
        events
            .iter()
            .find(|(_, e)| e["orderId"] == id.as_str() && e["eventType"] == kind)
            .map(|(seq, _)| *seq)
    };
    let seen = read_events(live, |events| about(events, "OrderPlaced").is_some()).await;
    let placed = about(&seen, "OrderPlaced").expect("placed");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in order: {seen:?}"
    );

    // Reconnecting after OrderPlaced: what followed it, and nothing before it again.
    let resumed = stream(Some(placed)).await.expect("stream");
    let after = read_events(resumed, |events| about(events, "StockReserved").is_some()).await;
    assert!(after.iter().all(|(seq, _)| *seq > placed), "{after:?}");
    assert!(about(&after, "OrderPlaced").is_none());
}
