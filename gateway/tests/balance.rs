//! The gateway across several instances of an upstream: spreading requests, skipping the dead,
//! retrying only what cannot be applied twice, and losing no request when an instance, or the
//! gateway itself, shuts down under load.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{echo_upstream, http, order_for, upstream};
use oms_api::testing::TestApi;
use oms_gateway::{
    config::{Route, RouteConfig, Upstream},
    testing::TestGateway,
};
use oms_saga::{config::Secret, testing};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn instances(urls: Vec<String>) -> BTreeMap<String, RouteConfig> {
    BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Route(Route {
            upstream: Upstream::Many(urls),
            ..Route::new("")
        }),
    )])
}

/// An instance that passes its health checks but drops every other request unanswered, as a
/// process crashing mid-request does. Counts the requests it dropped.
async fn crashing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /health/") {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = socket.write_all(ok).await;
                } else {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (url, dropped)
}

#[tokio::test]
async fn requests_take_turns_over_the_live_instances_and_skip_a_dead_one() {
    let (a, b) = (echo_upstream().await, echo_upstream().await);
    let dead = format!("http://127.0.0.1:{}", testing::free_port());
    let gateway = TestGateway::spawn(instances(vec![a.clone(), dead.clone(), b.clone()])).await;
    let token = gateway.login("alice").await;
    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..12 {
        let seen: Value = http()
            .get(gateway.url("/api/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("echo");
        *served
            .entry(seen["_upstream"].as_str().expect("upstream").to_owned())
            .or_default() += 1;
    }
    let mut live = vec![a, b];
    live.sort();
    assert_eq!(
        served.keys().cloned().collect::<Vec<_>>(),
        live,
        "{served:?}"
    );
    assert!(served.values().all(|n| *n >= 3), "spread: {served:?}");
    let ready: Value = http()
        .get(gateway.url("/health/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(
        ready["checks"]["upstreams"]["/api/orders"][&dead], "down",
        "{ready}"
    );
}

#[tokio::test]
async fn only_requests_that_cannot_be_applied_twice_are_retried_and_a_failing_instance_is_ejected()
{
    let echo = echo_upstream().await;
    let (crashing, dropped) = crashing_upstream().await;
    let gateway = TestGateway::spawn_with(instances(vec![echo, crashing]), |c| {
        c.health.eject_after = 3;
        c.health.eject_for = Duration::from_secs(600);
    })
    .await;
    let token = gateway.login("alice").await;
    let post = |key: Option<&str>| {
        let request = http()
            .post(gateway.url("/api/orders"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}));
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
    };
    // Turns alternate: every second plain POST reaches the crashing instance, may have been
    // applied there, and so is answered 502, not sent again.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(None).send().await.expect("send").status());
    }
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(failed, 2, "{statuses:?}");
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    assert_eq!(
        post(None).send().await.expect("send").status(),
        StatusCode::OK
    );
    // A GET, or a POST with an Idempotency-Key, that meets the crash is sent to the other
    // instance; the third failure in a row ejects the crashing one.
    let ok = http()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
    for i in 0..6 {
        let response = post(Some(&format!("key-{i}"))).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK, "keyed POST {i}");
        let response = post(None).send().await.expect("send");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "plain POST {i} after ejection"
        );
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "the ejected instance gets nothing"
    );
}

#[tokio::test]
async fn killing_one_of_two_api_instances_under_load_fails_no_idempotent_request() {
    let first = TestApi::spawn().await;
    first.price(&[("SKU-9", 250, "USD", true)]).await;
    // A second instance of the same service: the same database and topic.
    let (bus, _) = testing::shared_bus().await;
    let second = TestApi::spawn_with(bus, |c| {
        c.database.url = Secret::new(first.db.url.clone());
        c.topics.orders = first.config.topics.orders.clone();
    })
    .await;
    let gateway = TestGateway::spawn(instances(vec![first.url(""), second.url("")])).await;
    let token = gateway.login("alice").await;

    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (orders, token, body) = (
                gateway.url("/api/orders"),
                token.clone(),
                order_for(gateway.alice),
            );
            tokio::spawn(async move {
                let client = http();
                let mut outcomes = Vec::new();
                let mut i = 0;
                // Bounded in time and count.
                while started.elapsed() < Duration::from_secs(4) && i < 2_000 {
                    i += 1;
                    let key = format!("w{worker}-{i}");
                    let placed = client
                        .post(&orders)
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(placed) = placed else {
                        outcomes.push((key, "POST: no answer".to_owned()));
                        continue;
                    };
                    let status = placed.status();
                    let order: Value = placed.json().await.unwrap_or_default();
                    let Some(id) = order["id"].as_str() else {
                        outcomes.push((key, format!("POST: {status} {order}")));
                        continue;
                    };
                    let read = client
                        .get(format!("{orders}/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    outcomes.push((key, format!("POST {status}, GET {read:?} {id}")));
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    second.shutdown().await;

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.expect("worker"));
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| !(o.starts_with("POST 20") && o.contains("GET Ok(200)")))
        .collect();
    assert!(outcomes.len() > 20, "the load ran: {}", outcomes.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    // Each key placed exactly one order: nothing was applied twice.
    let ids: HashSet<&str> = outcomes
        .iter()
        .filter_map(|(_, o)| o.rsplit(' ').next())
        .collect();
    assert_eq!(ids.len(), outcomes.len());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&first.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, outcomes.len() as i64);
}

#[tokio::test]
async fn a_gateway_shutting_down_finishes_the_requests_in_flight() {
    // An upstream that takes a second to answer.
    let slow = upstream(|_| {
        axum::Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        })
    })
    .await;
    let gateway = TestGateway::spawn(instances(vec![slow])).await;
    let token = gateway.login("alice").await;
    let url = gateway.url("/api/orders");
    let in_flight = tokio::spawn(async move { http().get(url).bearer_auth(token).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = gateway.addr;
    gateway.shutdown().await;
    let answer = in_flight.await.expect("task").expect("answered, not cut");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.expect("body"), "done");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "it no longer accepts"
    );
}
