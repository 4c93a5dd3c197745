//! The registry's REST API against real PostgreSQL: Confluent's endpoints, statuses and
//! `{"error_code", "message"}` bodies.

use oms_registry::testing::TestRegistry;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    registry: TestRegistry,
}

const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;
/// Adds a field without a default: new readers cannot read old data.
const BREAKING: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#;

impl Client {
    async fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
            registry: TestRegistry::spawn().await,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.registry.url()));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.schemaregistry.v1+json",
            "{path}"
        );
        (status, response.json().await.expect("json body"))
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }
}

fn error_code(body: &Value) -> i64 {
    assert!(
        body["message"].is_string(),
        "an error has a message: {body}"
    );
    body["error_code"].as_i64().expect("error_code")
}

#[tokio::test]
async fn the_same_schema_gets_the_same_id_whatever_its_whitespace_or_subject() {
    let c = Client::new().await;
    let (status, first) = c.register("orders-shop.Order", V1).await;
    assert_eq!(status, StatusCode::OK);
    let id = first["id"].as_i64().expect("id");
    let spaced = serde_json::to_string_pretty(&serde_json::from_str::<Value>(V1).expect("json"))
        .expect("pretty");
    assert_eq!(c.register("orders-shop.Order", &spaced).await.1["id"], id);
    assert_eq!(c.register("returns-shop.Order", V1).await.1["id"], id);
    let (_, v2) = c.register("orders-shop.Order", V2).await;
    assert_ne!(v2["id"], id);

    assert_eq!(
        c.call(Method::GET, "/subjects", None).await.1,
        json!(["orders-shop.Order", "returns-shop.Order"])
    );
    assert_eq!(
        c.call(Method::GET, "/subjects/orders-shop.Order/versions", None)
            .await
            .1,
        json!([1, 2])
    );
    let (_, latest) = c
        .call(
            Method::GET,
            "/subjects/orders-shop.Order/versions/latest",
            None,
        )
        .await;
    assert_eq!(
        (latest["subject"].as_str(), latest["version"].as_i64()),
        (Some("orders-shop.Order"), Some(2))
    );
    assert_eq!(latest["id"], v2["id"]);
    let (_, raw) = c
        .call(
            Method::GET,
            "/subjects/orders-shop.Order/versions/1/schema",
            None,
        )
        .await;
    assert_eq!(raw["name"], "Order");
    let (_, by_id) = c
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(by_id["schema"].as_str().expect("schema")).expect("json")["name"],
        "Order"
    );
    let (_, usages) = c
        .call(Method::GET, &format!("/schemas/ids/{id}/versions"), None)
        .await;
    assert_eq!(usages.as_array().map(Vec::len), Some(2));

    let (status, found) = c
        .call(
            Method::POST,
            "/subjects/orders-shop.Order",
            Some(json!({ "schema": spaced })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (found["version"].as_i64(), found["id"].as_i64()),
        (Some(1), Some(id))
    );
}

#[tokio::test]
async fn an_incompatible_schema_gets_409_naming_the_field_and_a_malformed_one_42201() {
    let c = Client::new().await;
    c.register("s", V1).await;
    let (status, body) = c.register("s", BREAKING).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), 409);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("quantity"),
        "{body}"
    );

    let (status, body) = c
        .register(
            "s",
            r#"{"type":"record","name":"X","fields":[{"name":"a","type":"nope"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), 42201);
    let (status, body) = c
        .call(
            Method::POST,
            "/subjects/s/versions",
            Some(json!({ "schema": V1, "schemaType": "PROTOBUF" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    let (status, body) = c
        .call(
            Method::POST,
            "/subjects/s/versions",
            Some(json!({ "nothing": 1 })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, 400));

    let (_, verdict) = c
        .call(
            Method::POST,
            "/compatibility/subjects/s/versions/latest?verbose=true",
            Some(json!({ "schema": BREAKING })),
        )
        .await;
    assert_eq!(verdict["is_compatible"], false);
    assert!(
        verdict["messages"][0]
            .as_str()
            .expect("message")
            .contains("quantity")
    );
    let (_, verdict) = c
        .call(
            Method::POST,
            "/compatibility/subjects/s/versions/1",
            Some(json!({ "schema": V2 })),
        )
        .await;
    assert_eq!(verdict, json!({ "is_compatible": true }));
}

#[tokio::test]
async fn unknown_things_get_confluents_404_codes_and_bad_versions_42202() {
    let c = Client::new().await;
    c.register("s", V1).await;
    for (path, code) in [
        ("/subjects/missing/versions", 40401),
        ("/subjects/missing/versions/1", 40401),
        ("/subjects/s/versions/7", 40402),
        ("/schemas/ids/999", 40403),
        ("/config/s", 40408),
    ] {
        let (status, body) = c.call(Method::GET, path, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, code),
            "{path}"
        );
    }
    for version in ["0", "one", "-2"] {
        let (status, body) = c
            .call(
                Method::GET,
                &format!("/subjects/s/versions/{version}"),
                None,
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            "{version}"
        );
    }
    let (status, body) = c
        .call(Method::POST, "/subjects/s", Some(json!({ "schema": V2 })))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
}

#[tokio::test]
async fn compatibility_is_backward_by_default_and_configurable_globally_and_per_subject() {
    let c = Client::new().await;
    assert_eq!(
        c.call(Method::GET, "/config", None).await.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    c.register("s", V1).await;
    assert_eq!(c.register("s", BREAKING).await.0, StatusCode::CONFLICT);

    let (status, set) = c
        .call(
            Method::PUT,
            "/config/s",
            Some(json!({ "compatibility": "none" })),
        )
        .await;
    assert_eq!(
        (status, set),
        (StatusCode::OK, json!({ "compatibility": "NONE" }))
    );
    assert_eq!(
        c.call(Method::GET, "/config/s", None).await.1,
        json!({ "compatibilityLevel": "NONE" })
    );
    assert_eq!(c.register("s", BREAKING).await.0, StatusCode::OK);

    let (_, removed) = c.call(Method::DELETE, "/config/s", None).await;
    assert_eq!(removed, json!({ "compatibilityLevel": "NONE" }));
    c.call(
        Method::PUT,
        "/config",
        Some(json!({ "compatibility": "FORWARD_TRANSITIVE" })),
    )
    .await;
    assert_eq!(
        c.call(Method::GET, "/config", None).await.1,
        json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" })
    );
    let (_, fallback) = c
        .call(Method::GET, "/config/s?defaultToGlobal=true", None)
        .await;
    assert_eq!(
        fallback,
        json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" })
    );
    let (status, body) = c
        .call(
            Method::PUT,
            "/config",
            Some(json!({ "compatibility": "SIDEWAYS" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
}

#[tokio::test]
async fn deletes_are_soft_first_and_permanent_only_after() {
    let c = Client::new().await;
    c.register("s", V1).await;
    c.register("s", V2).await;

    let (status, body) = c
        .call(
            Method::DELETE,
            "/subjects/s/versions/1?permanent=true",
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40407));
    assert_eq!(
        c.call(Method::DELETE, "/subjects/s/versions/1", None)
            .await
            .1,
        json!(1)
    );
    assert_eq!(
        c.call(Method::GET, "/subjects/s/versions", None).await.1,
        json!([2])
    );
    assert_eq!(
        c.call(Method::GET, "/subjects/s/versions?deleted=true", None)
            .await
            .1,
        json!([1, 2])
    );
    assert_eq!(
        c.call(
            Method::DELETE,
            "/subjects/s/versions/1?permanent=true",
            None
        )
        .await
        .1,
        json!(1)
    );

    let (status, body) = c
        .call(Method::DELETE, "/subjects/s?permanent=true", None)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, 40405));
    assert_eq!(
        c.call(Method::DELETE, "/subjects/s", None).await.1,
        json!([2])
    );
    assert_eq!(c.call(Method::GET, "/subjects", None).await.1, json!([]));
    assert_eq!(
        c.call(Method::GET, "/subjects?deleted=true", None).await.1,
        json!(["s"])
    );
    assert_eq!(
        c.call(Method::DELETE, "/subjects/s?permanent=true", None)
            .await
            .1,
        json!([2])
    );
    assert_eq!(
        c.call(Method::GET, "/subjects?deleted=true", None).await.1,
        json!([])
    );
    // Version numbers are not reused after a soft delete, and start again after a hard one.
    assert_eq!(c.register("s", V1).await.0, StatusCode::OK);
    assert_eq!(
        c.call(Method::GET, "/subjects/s/versions", None).await.1,
        json!([1])
    );
}
