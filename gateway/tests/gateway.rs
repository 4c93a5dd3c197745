//! The gateway in front of a real order API (real PostgreSQL, Redis and broker), and in front of
//! an upstream that echoes what it received.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{echo_upstream, http, order_for, problem, stack, upstream};
use oms_gateway::{config::RouteConfig, testing::TestGateway};
use oms_saga::{
    bus,
    event::{EventRecord, OrderPlaced},
    testing,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn a_user_logs_in_places_an_order_reads_it_back_and_its_event_is_published() {
    let (api, gateway) = stack().await;
    let token = gateway.login("alice").await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let placed = http()
        .post(gateway.url("/api/orders"))
        .bearer_auth(&token)
        .header("traceparent", traceparent)
        .json(&order_for(gateway.alice))
        .send()
        .await
        .expect("place");
    assert_eq!(placed.status(), StatusCode::CREATED);
    let mut order: Value = placed.json().await.expect("order");
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(order["total"], "7.50");
    // The answer to a POST also says whether the stock was checked; the order is the rest.
    let availability = order.as_object_mut().and_then(|o| o.remove("availability"));
    assert_eq!(availability.expect("availability")["checked"], false);

    let read = http()
        .get(gateway.url(&format!("/api/orders/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.json::<Value>().await.expect("order"), order);

    let bus = bus::connect(&api.config.bus).expect("bus");
    let delivered = testing::consume(
        bus.as_ref(),
        &api.config.topics.orders,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(delivered[0].message.key, id);
    let codec = api.codec();
    let record = EventRecord::from_delivery(&delivered[0], &codec)
        .await
        .expect("event");
    let placed: OrderPlaced = record.payload_as().expect("OrderPlaced").expect("payload");
    assert_eq!(placed.customer_id, gateway.alice);
    assert_eq!(
        placed.placed_by.as_deref(),
        Some("alice"),
        "schema v2 carries who placed it"
    );
}

#[tokio::test]
async fn auth_me_tells_the_caller_who_their_token_says_they_are() {
    let (_api, gateway) = stack().await;
    let me = |token: Option<String>| {
        let request = http().get(gateway.url("/auth/me"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let alice: Value = me(Some(gateway.login("alice").await))
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(
        alice,
        json!({ "username": "alice", "customerId": gateway.alice, "roles": ["user"] })
    );
    let admin: Value = me(Some(gateway.login("admin").await))
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(admin["roles"], json!(["admin"]));
    assert_eq!(admin["username"], "admin");
    problem(
        http().get(gateway.url("/auth/me")),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        http()
            .get(gateway.url("/auth/me"))
            .bearer_auth("not-a-token"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn a_bad_login_gets_401_and_a_malformed_one_a_4xx() {
    let (_api, gateway) = stack().await;
    let login = |body: Value| http().post(gateway.url("/auth/login")).json(&body);
    problem(
        login(json!({ "username": "alice", "password": "wrong" })),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        login(json!({ "username": "mallory", "password": "test-password" })),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        login(json!({ "username": "alice" })),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let garbage = http()
        .post(gateway.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{");
    problem(garbage, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_user_cannot_act_as_admin_nor_read_another_customers_orders() {
    let (_api, gateway) = stack().await;
    let (alice, bob, admin) = (
        gateway.login("alice").await,
        gateway.login("bob").await,
        gateway.login("admin").await,
    );
    let order: Value = http()
        .post(gateway.url("/api/orders"))
        .bearer_auth(&alice)
        .json(&order_for(gateway.alice))
        .send()
        .await
        .expect("place")
        .json()
        .await
        .expect("order");
    let id = order["id"].as_str().expect("id");
    let status_url = gateway.url(&format!("/api/orders/{id}/status"));

    problem(
        http()
            .put(&status_url)
            .bearer_auth(&alice)
            .json(&json!({ "status": "RESERVED" })),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        http()
            .post(gateway.url(&format!("/api/orders/{id}/cancel")))
            .bearer_auth(&alice)
            .json(&json!({ "reason": "x" })),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        http()
            .get(gateway.url(&format!("/api/orders/{id}")))
            .bearer_auth(&bob),
        StatusCode::NOT_FOUND,
    )
    .await;
    // Headers a client sends to claim another identity are dropped, not trusted.
    let spoofed = http()
        .get(gateway.url(&format!("/api/orders/{id}")))
        .bearer_auth(&bob)
        .header("x-oms-role", "admin")
        .header("x-oms-customer-id", gateway.alice.to_string());
    problem(spoofed, StatusCode::NOT_FOUND).await;
    problem(
        http()
            .get(gateway.url(&format!("/api/orders?customerId={}", gateway.alice)))
            .bearer_auth(&bob),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        http()
            .post(gateway.url("/api/orders"))
            .bearer_auth(&bob)
            .json(&order_for(gateway.alice)),
        StatusCode::FORBIDDEN,
    )
    .await;
    let bobs: Value = http()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("page");
    assert_eq!(bobs["items"], json!([]));

    let moved = http()
        .put(&status_url)
        .bearer_auth(&admin)
        .json(&json!({ "status": "RESERVED" }))
        .send()
        .await
        .expect("put");
    assert_eq!(moved.status(), StatusCode::OK);
    let all: Value = http()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("page");
    assert_eq!(all["items"][0]["status"], "RESERVED");
}

#[tokio::test]
async fn the_gateway_forwards_request_id_trace_context_and_the_checked_caller_only() {
    let gateway = TestGateway::spawn(BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(echo_upstream().await),
    )]))
    .await;
    let token = gateway.login("bob").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = http()
        .get(gateway.url("/api/orders?limit=1"))
        .bearer_auth(&token)
        .header("x-request-id", "req-42")
        .header("traceparent", traceparent)
        .header("x-oms-role", "admin")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let seen: Value = response.json().await.expect("echo");
    assert_eq!(seen["x-request-id"], "req-42");
    // The same trace, continued from the gateway's own span.
    let forwarded = seen["traceparent"].as_str().expect("traceparent");
    assert!(
        forwarded.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{forwarded}"
    );
    assert_ne!(forwarded, traceparent, "the gateway's span is the parent");
    assert_eq!(seen["x-oms-role"], "user");
    assert_eq!(seen["x-oms-customer-id"], gateway.bob.to_string());
    assert_eq!(seen["x-oms-subject"], "bob");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], gateway.addr.to_string());
    assert!(
        seen.get("authorization").is_none(),
        "the token stays at the edge"
    );

    let generated = http()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert!(
        Uuid::parse_str(&id).is_ok(),
        "a request without an id gets one: {id}"
    );
}

/// A redirect is the upstream's answer to the client, as any other: the gateway passes it on and
/// does not follow it itself, which would send the caller's identity headers to wherever it points.
#[tokio::test]
async fn an_upstreams_redirect_reaches_the_client_unfollowed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let counter = followed.clone();
    let upstream = upstream(|_| {
        axum::Router::new()
            .route(
                "/api/orders/old",
                axum::routing::get(|| async {
                    axum::response::Redirect::temporary("/api/orders/new")
                }),
            )
            .route(
                "/api/orders/new",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "moved here"
                }),
            )
    })
    .await;
    let gateway = TestGateway::spawn(BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(upstream),
    )]))
    .await;
    let token = gateway.login("alice").await;
    let unfollowing = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = unfollowing
        .get(gateway.url("/api/orders/old"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(response.headers()["location"], "/api/orders/new");
    assert_eq!(followed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502_problem_json_without_hanging() {
    let closed = format!("http://127.0.0.1:{}", testing::free_port());
    let gateway = TestGateway::spawn(BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(closed),
    )]))
    .await;
    let token = gateway.login("alice").await;
    // Refused connections are answered at once; the client's 10 s bound only catches a hang.
    let body = problem(
        http().get(gateway.url("/api/orders")).bearer_auth(&token),
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert_eq!(
        body["type"],
        "https://oms.dev/problems/upstream-unavailable"
    );
    problem(
        http().get(gateway.url("/health/ready")),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
}

#[tokio::test]
async fn an_upstream_that_accepts_but_never_answers_gets_504_within_the_route_timeout() {
    // A listener that accepts connections and never reads or writes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", silent.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let gateway = TestGateway::spawn_with(
        BTreeMap::from([("/api/orders".into(), RouteConfig::Upstream(upstream))]),
        |c| {
            c.upstream_timeout = Duration::from_millis(500);
        },
    )
    .await;
    let token = gateway.login("alice").await;
    let body = problem(
        http().get(gateway.url("/api/orders")).bearer_auth(&token),
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;
    assert_eq!(body["type"], "https://oms.dev/problems/upstream-timeout");
}

#[tokio::test]
async fn unknown_paths_answer_problem_json_and_anonymous_callers_learn_no_routes() {
    let (_api, gateway) = stack().await;
    problem(http().get(gateway.url("/nothing")), StatusCode::NOT_FOUND).await;
    problem(
        http().get(gateway.url("/auth/login")),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(
        http().get(gateway.url("/api/secret-admin")),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let token = gateway.login("alice").await;
    problem(
        http()
            .get(gateway.url("/api/secret-admin"))
            .bearer_auth(&token),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn any_user_browses_the_schema_registry_and_only_admins_change_it() {
    let (api, gateway) = stack().await;
    let (alice, admin) = (gateway.login("alice").await, gateway.login("admin").await);
    let subjects: Vec<String> = http()
        .get(gateway.url("/api/schemas/subjects"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("subjects");
    let placed = format!("{}-dev.oms.orders.OrderPlaced", api.config.topics.orders);
    assert!(
        subjects.contains(&placed),
        "the API registered its schemas: {subjects:?}"
    );
    let latest: Value = http()
        .get(gateway.url(&format!("/api/schemas/subjects/{placed}/versions/latest")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("version");
    assert!(
        latest["schema"]
            .as_str()
            .expect("schema")
            .contains("placedBy"),
        "the newest version: {latest}"
    );
    problem(
        http().get(gateway.url("/api/schemas/subjects")),
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let config = json!({ "compatibility": "FULL" });
    problem(
        http()
            .put(gateway.url("/api/schemas/config"))
            .bearer_auth(&alice)
            .json(&config),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        http()
            .delete(gateway.url(&format!("/api/schemas/subjects/{placed}")))
            .bearer_auth(&alice),
        StatusCode::FORBIDDEN,
    )
    .await;
    let set = http()
        .put(gateway.url("/api/schemas/config"))
        .bearer_auth(&admin)
        .json(&config)
        .send()
        .await
        .expect("put");
    assert_eq!(set.status(), StatusCode::OK);
    let level: Value = http()
        .get(gateway.url("/api/schemas/config"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("config");
    assert_eq!(level, json!({ "compatibilityLevel": "FULL" }));
}
