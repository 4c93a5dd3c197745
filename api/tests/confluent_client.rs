//! Proof against a client that no one here wrote: Confluent's Python client, installed from PyPI
//! into a throwaway virtualenv, drives our registry and decodes our `orders` topic. Without pip
//! or PyPI the test fails, saying so: it never passes without having run.

use std::{path::Path, process::Command};

use oms_api::testing::TestApi;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

/// A fresh virtualenv with confluent-kafka[avro], or a panic that says what is missing.
fn confluent_venv(dir: &Path) -> std::path::PathBuf {
    let run = |what: &str, command: &mut Command| {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            output.status.success(),
            "\n*** {what} failed: this test needs python3 with venv and pip, and PyPI ***\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(dir),
    );
    let python = dir.join("bin/python");
    run(
        "pip install confluent-kafka[avro]",
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "confluent-kafka[avro]",
        ]),
    );
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn confluents_python_client_drives_our_registry_and_decodes_our_events() {
    let api = TestApi::spawn().await;
    api.price(&[("SKU-1", 1999, "USD", true), ("SKU-2", 10, "USD", true)])
        .await;
    let http = reqwest::Client::new();
    let customer = Uuid::new_v4();
    let order: Value = http
        .post(api.url("/api/orders"))
        .json(
            &json!({ "customerId": customer, "paymentMethod": "pm_card_visa", "items": [
                { "productId": "SKU-1", "quantity": 2 },
                { "productId": "SKU-2", "quantity": 1 }
            ]}),
        )
        .send()
        .await
        .expect("place")
        .json()
        .await
        .expect("order");
    let id = order["id"].as_str().expect("id").to_owned();
    let reserved = http
        .put(api.url(&format!("/api/orders/{id}/status")))
        .json(&json!({ "status": "RESERVED" }))
        .send()
        .await
        .expect("reserve");
    assert_eq!(reserved.status(), 200);

    let venv = std::env::temp_dir().join(format!("oms-confluent-{}", Uuid::new_v4().simple()));
    let python = confluent_venv(&venv);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_client.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .env("OMS_REGISTRY_URL", api.registry.url())
        .env("OMS_BROKERS", &api.config.bus.kafka.brokers)
        .env("OMS_TOPIC", &api.config.topics.orders)
        .env("OMS_EVENTS", "2")
        .output()
        .await
        .expect("run the Python client");
    let _ = std::fs::remove_dir_all(&venv);
    assert!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("its JSON report");

    let registry = &seen["registry"];
    assert_eq!(registry["same_id_again"], true, "{registry}");
    assert_eq!(registry["fetched_name"], "Probe");
    assert_eq!(
        (registry["latest_version"].as_i64(), &registry["latest_id"]),
        (Some(1), &registry["id"])
    );
    assert_eq!(registry["v2_compatible"], true);
    assert_eq!(registry["breaking_compatible"], false);
    assert_eq!(registry["level"], "FULL");

    let events = seen["events"].as_array().expect("events");
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderStatusChanged"]);
    assert!(events.iter().all(|e| e["key"] == id.as_str()));
    let placed = &events[0]["value"];
    assert_eq!(placed["orderId"], id.as_str());
    assert_eq!(placed["customerId"], customer.to_string());
    let decimal = |v: &Value| {
        v.as_str()
            .expect("decimal text")
            .parse::<Decimal>()
            .expect("decimal")
    };
    assert_eq!(decimal(&placed["total"]), decimal(&order["total"]));
    for (theirs, ours) in placed["items"]
        .as_array()
        .expect("items")
        .iter()
        .zip(order["items"].as_array().expect("items"))
    {
        assert_eq!(theirs["productId"], ours["productId"]);
        assert_eq!(theirs["quantity"], ours["quantity"]);
        assert_eq!(decimal(&theirs["unitPrice"]), decimal(&ours["unitPrice"]));
    }
    let created = chrono::DateTime::parse_from_rfc3339(order["createdAt"].as_str().expect("time"))
        .expect("time");
    assert_eq!(
        placed["placedAt"].as_i64(),
        Some(created.timestamp_millis())
    );
    let changed = &events[1]["value"];
    assert_eq!(
        (changed["oldStatus"].as_str(), changed["newStatus"].as_str()),
        (Some("CREATED"), Some("RESERVED"))
    );
}
