//! `/health/ready` as a load balancer sees it: 200 while every dependency answers, and 503
//! problem+json naming the one that does not.

use oms_saga::{server::Readiness, testing};

#[tokio::test]
async fn readiness_names_each_dependency_and_the_one_that_is_down() {
    let pool = sqlx::PgPool::connect_lazy(&testing::postgres_admin_url()).expect("pool");
    let (_, bus) = testing::shared_bus().await;
    let registry = oms_saga::testing::free_port();
    // Something that answers /subjects the way a registry does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let live = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route("/subjects", axum::routing::get(|| async { "[]" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let ready = Readiness::database(pool.clone())
        .bus(bus.clone())
        .registry(live);
    let answer = ready.respond(Default::default()).await;
    assert_eq!(answer.status(), 200);
    let body = json_of(answer).await;
    assert_eq!(body["status"], "ready");
    for dependency in ["database", "broker", "registry"] {
        assert_eq!(body["checks"][dependency], "up", "{body}");
    }

    let down = Readiness::database(pool)
        .bus(bus)
        .registry(format!("http://127.0.0.1:{registry}"));
    let answer = down.respond(Default::default()).await;
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let body = json_of(answer).await;
    assert_eq!(body["detail"], "not ready: registry down", "{body}");
    assert_eq!(body["checks"]["database"], "up");
    assert!(
        body["checks"]["registry"]
            .as_str()
            .is_some_and(|s| s.starts_with("down: ")),
        "{body}"
    );
}

async fn json_of(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}
