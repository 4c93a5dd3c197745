//! Start-up against a registry that refuses the service's schemas.

use oms_api::ApiConfig;
use oms_registry::testing::TestRegistry;
use oms_saga::{config::Secret, testing};
use serde_json::json;

#[tokio::test]
async fn the_service_refuses_to_start_when_the_registry_rejects_its_schema_and_says_which_and_why()
{
    let registry = TestRegistry::spawn().await;
    let db = testing::database(&oms_api::MIGRATOR).await;
    let topic = testing::unique("orders");
    // Someone registered an OrderPlaced that requires a field ours does not have.
    let subject = format!("{topic}-dev.oms.orders.OrderPlaced");
    let theirs = json!({
        "type": "record", "name": "OrderPlaced", "namespace": "dev.oms.orders",
        "fields": [{ "name": "orderId", "type": "string" }, { "name": "warehouse", "type": "string" }]
    });
    let registered = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry.url()))
        .json(&json!({ "schema": theirs.to_string() }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 200);

    let mut config = ApiConfig::default();
    config.database.url = Secret::new(db.url.clone());
    config.bus = testing::bus_config();
    config.bus.registry.url = registry.url();
    config.topics.orders = topic;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = oms_api::run(config, listener, std::future::pending())
        .await
        .expect_err("refused");
    let message = refused.to_string();
    assert!(message.contains(&subject), "names the subject: {message}");
    assert!(message.contains("incompatible"), "says why: {message}");
}
