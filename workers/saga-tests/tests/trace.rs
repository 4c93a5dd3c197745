//! One placed order, one trace: the gateway, the order API, its outbox relay, the inventory
//! (its availability check and its worker), the status worker and the notification service, each
//! exporting its own spans to Zipkin, all under the trace id the gateway started.
//!
//! A test binary of its own: where spans go is set once per process.

use std::collections::HashMap;

use oms_saga::testing;
use oms_saga_tests::{SETTLE, Stack, zipkin::ZipkinReceiver};
use serde_json::Value;

fn service(span: &Value) -> &str {
    span["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}

fn kind(span: &Value) -> &str {
    span["kind"].as_str().unwrap_or("INTERNAL")
}

/// The trace of the one `POST /api/orders` the order API served.
fn order_trace(spans: &[Value]) -> Option<Vec<Value>> {
    let placing = spans
        .iter()
        .find(|s| service(s) == "api" && s["name"].as_str() == Some("POST /api/orders"))?;
    let trace_id = placing["traceId"].as_str()?;
    Some(
        spans
            .iter()
            .filter(|s| s["traceId"].as_str() == Some(trace_id))
            .cloned()
            .collect(),
    )
}

/// The spans a placed order's trace must hold once it is notified as PAID: by whom (either
/// of them), what kind, and what name. The orders database has two relays, the API's and the
/// status worker's, and whichever holds the lock publishes.
const EXPECTED: [(&[&str], &str, &str); 12] = [
    (&["gateway"], "SERVER", "POST /api/{*rest}"),
    (&["api"], "SERVER", "POST /api/orders"),
    (&["inventory"], "SERVER", "POST /api/inventory/availability"),
    (&["api", "status"], "PRODUCER", "publish OrderPlaced"),
    (&["inventory"], "CONSUMER", "handle OrderPlaced"),
    (&["inventory"], "PRODUCER", "publish StockReserved"),
    (&["status"], "CONSUMER", "handle StockReserved"),
    (&["api", "status"], "PRODUCER", "publish OrderStatusChanged"),
    (&["notifications"], "CONSUMER", "handle OrderStatusChanged"),
    (&["payments"], "CONSUMER", "handle OrderStatusChanged"),
    (&["payments"], "PRODUCER", "publish PaymentAuthorized"),
    (&["status"], "CONSUMER", "handle PaymentAuthorized"),
];

fn holds(trace: &[Value], (services, kind_, name): &(&[&str], &str, &str)) -> bool {
    trace
        .iter()
        .any(|s| services.contains(&service(s)) && kind(s) == *kind_ && s["name"] == *name)
}

/// The spans of `trace` whose parent is not in it.
fn roots(trace: &[Value]) -> Vec<&Value> {
    let ids: std::collections::HashSet<&str> =
        trace.iter().filter_map(|s| s["id"].as_str()).collect();
    trace
        .iter()
        .filter(|s| !s["parentId"].as_str().is_some_and(|p| ids.contains(p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_is_one_trace_across_every_service() {
    let zipkin = ZipkinReceiver::start().await;
    testing::export_traces_to(zipkin.url());
    let stack = Stack::spawn().await;
    stack.set_stock("traced-widget", 3).await;
    let id = stack.placed(&[("traced-widget", 1)]).await;
    stack.wait_for(id, "PAID").await;
    stack
        .wait_for_notices(id, &["PLACED", "RESERVED", "PAID"])
        .await;

    // Each service exports its spans on its own schedule, so a child may arrive before its
    // parent: the trace is read once every span's parent but one, the root's, has arrived too.
    let trace = testing::eventually(
        SETTLE,
        "every service's spans of the order, in one tree",
        || async {
            let trace = order_trace(&zipkin.spans())?;
            (EXPECTED.iter().all(|expected| holds(&trace, expected)) && roots(&trace).len() == 1)
                .then_some(trace)
        },
    )
    .await;

    // Its root is the gateway's span.
    let by_id: HashMap<&str, &Value> = trace
        .iter()
        .map(|s| (s["id"].as_str().expect("span id"), s))
        .collect();
    let parent = |s: &Value| s["parentId"].as_str().and_then(|p| by_id.get(p).copied());
    let roots = roots(&trace);
    assert_eq!(
        (service(roots[0]), kind(roots[0])),
        ("gateway", "SERVER"),
        "{roots:#?}"
    );

    // Across the bus, each consumer's span is the child of the span that published the event.
    for consumer in trace.iter().filter(|s| kind(s) == "CONSUMER") {
        let producer = parent(consumer).expect("a consumer span has its parent in the trace");
        assert_eq!(kind(producer), "PRODUCER", "{consumer:#}\n{producer:#}");
        assert_eq!(
            consumer["tags"]["messaging.source"], producer["tags"]["messaging.destination"],
            "consumed from the topic it was published to"
        );
    }
    // Over HTTP, the API's span is the gateway's child, and the availability check the API's.
    let api = trace
        .iter()
        .find(|s| service(s) == "api" && kind(s) == "SERVER")
        .expect("api span");
    assert_eq!(parent(api).map(service), Some("gateway"));
    let check = trace
        .iter()
        .find(|s| service(s) == "inventory" && kind(s) == "SERVER")
        .expect("availability span");
    assert_eq!(parent(check).map(service), Some("api"));
}
