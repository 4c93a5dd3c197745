//! What the gateway's tests share: a real API behind a gateway, an upstream that echoes, and
//! checks of problem+json answers.
#![allow(dead_code)]

use std::{collections::BTreeMap, time::Duration};

use axum::{Router, http::HeaderMap, routing::any};
use oms_api::testing::TestApi;
use oms_gateway::{
    config::{Route, RouteConfig},
    testing::TestGateway,
};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// An API behind a gateway; the API's catalog sells SKU-9 at 2.50 USD.
pub async fn stack() -> (TestApi, TestGateway) {
    let api = TestApi::spawn().await;
    api.price(&[("SKU-9", 250, "USD", true)]).await;
    let schemas = Route {
        strip_prefix: true,
        ..Route::new(api.registry.url())
    };
    let gateway = TestGateway::spawn(BTreeMap::from([
        (
            "/api/orders".into(),
            RouteConfig::Upstream(format!("http://{}", api.addr)),
        ),
        ("/api/schemas".into(), RouteConfig::Route(schemas)),
    ]))
    .await;
    (api, gateway)
}

pub fn http() -> reqwest::Client {
    // Bounds every call, so an upstream that hangs fails the test instead of stalling it.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn order_for(customer: Uuid) -> Value {
    json!({ "customerId": customer, "items": [{ "productId": "SKU-9", "quantity": 3 }], "paymentMethod": "pm_card_visa" })
}

pub async fn problem(request: RequestBuilder, status: StatusCode) -> Value {
    let response = request.send().await.expect("send");
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.expect("problem body")
}

/// Serves the router `make` builds, given the URL it will be served at, on a free port of its
/// own: an upstream for the gateway. Its URL.
pub async fn upstream(make: impl FnOnce(String) -> Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = make(url.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// An upstream that answers with the headers it received, and its own URL as `_upstream`.
pub async fn echo_upstream() -> String {
    upstream(|me| {
        Router::new().fallback(any(move |headers: HeaderMap| async move {
            let mut seen: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or_default())))
                .collect();
            seen.insert("_upstream".into(), me.into());
            axum::Json(seen)
        }))
    })
    .await
}
