//! The stack as an operator watches it: the real Prometheus scrapes every service's `/metrics`
//! and its query API answers for the sagas the test ran; every service says it is ready, and on
//! what that depends.

use std::time::Duration;

use oms_saga::testing;
use oms_saga_tests::{SETTLE, Stack};
use serde_json::Value;

/// The value of a Prometheus instant query that must return one series; `None` while it
/// returns none.
async fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", promql)])
            .expect("query url");
    let answer: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    let series = answer["data"]["result"].as_array()?;
    assert!(
        series.len() <= 1,
        "{promql}: more than one series: {answer}"
    );
    series.first()?["value"][1].as_str()?.parse().ok()
}

async fn wait_for_value(prometheus: &str, promql: &str, expected: f64) {
    testing::eventually(SETTLE, &format!("{promql} == {expected}"), || async {
        (query(prometheus, promql).await == Some(expected)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_and_sees_the_sagas_end() {
    // Without the availability check, the order beyond the stock is accepted and the saga
    // cancels it.
    let stack = Stack::spawn_with(
        |api| {
            api.stats_interval = Duration::from_millis(200);
            api.availability.inventory_url = None;
        },
        |_| {},
    )
    .await;
    let prometheus = testing::prometheus(&[
        stack.gateway.addr,
        stack.api.addr,
        stack.inventory.service.addr,
        stack.status.service.addr,
        stack.notifications.service.addr,
        stack.payments.service.addr,
    ]);
    let prometheus = format!("http://{}", prometheus.addr);

    stack.set_stock("metered-widget", 1).await;
    let completed = stack.placed(&[("metered-widget", 1)]).await;
    stack.wait_for(completed, "PAID").await;
    let rejected = stack.placed(&[("metered-widget", 1)]).await;
    stack.wait_for(rejected, "CANCELLED").await;
    for status in ["SHIPPED", "COMPLETED"] {
        stack.move_to(completed, status).await;
    }

    // Every service is a target that answers.
    wait_for_value(&prometheus, "count(up == 1)", 6.0).await;
    // The sagas' ends, by outcome and reason, and the orders per status.
    wait_for_value(
        &prometheus,
        r#"max(oms_sagas_total{outcome="completed"})"#,
        1.0,
    )
    .await;
    wait_for_value(
        &prometheus,
        r#"max(oms_sagas_total{outcome="cancelled",reason="OUT_OF_STOCK"})"#,
        1.0,
    )
    .await;
    wait_for_value(&prometheus, r#"max(oms_orders{status="COMPLETED"})"#, 1.0).await;
    wait_for_value(
        &prometheus,
        r#"sum(max by (outcome) (oms_saga_duration_seconds_count))"#,
        2.0,
    )
    .await;
    // Requests per route, as the API served them.
    wait_for_value(
        &prometheus,
        r#"max(oms_http_requests_total{service="api",method="POST",route="/api/orders",status="201"})"#,
        2.0,
    )
    .await;
    // The consumers handled the events and report how far behind they are.
    wait_for_value(
        &prometheus,
        r#"max(sum by (instance) (oms_events_total{consumer=~"order-status.*",type="StockRejected",outcome="handled"}))"#,
        1.0,
    )
    .await;
    let lag = testing::eventually(SETTLE, "a consumer lag series", || async {
        query(&prometheus, "max(oms_consumer_lag)").await
    })
    .await;
    assert!(lag >= 0.0, "{lag}");
    // How old each event was when its consumer took it: the inventory took both orders.
    let taken = testing::eventually(SETTLE, "the inventory's event ages", || async {
        query(
            &prometheus,
            r#"sum(oms_event_age_seconds_count{consumer=~"inventory.*"})"#,
        )
        .await
        .filter(|taken| *taken >= 2.0)
    })
    .await;
    let age = query(
        &prometheus,
        r#"sum(oms_event_age_seconds_sum{consumer=~"inventory.*"})"#,
    )
    .await
    .expect("an age sum");
    assert!(
        (0.0..SETTLE.as_secs_f64() * taken).contains(&age),
        "{age} s over {taken} events"
    );
    wait_for_value(&prometheus, "max(oms_outbox_backlog)", 0.0).await;
}

#[tokio::test]
async fn every_service_is_ready_and_names_what_it_depends_on() {
    let stack = Stack::spawn().await;
    let http = reqwest::Client::new();
    let services = [
        ("api", stack.api.url("/health/ready")),
        ("inventory", stack.inventory.url("/health/ready")),
        ("status", stack.status.service.url("/health/ready")),
        (
            "notifications",
            stack.notifications.service.url("/health/ready"),
        ),
    ];
    for (service, url) in services {
        let answer = http.get(&url).send().await.expect("ready");
        assert_eq!(answer.status(), 200, "{service}");
        let body: Value = answer.json().await.expect("json");
        for dependency in ["database", "broker", "registry"] {
            assert_eq!(body["checks"][dependency], "up", "{service}: {body}");
        }
    }
}
