//! `oms schemas`, run as the binary, against a real registry.

mod common;

use oms_registry::testing::TestRegistry;
use oms_saga::{
    avro::{self, RegistryConfig},
    event::{Event, OrderPlaced},
    testing,
};
use serde_json::Value;

async fn oms(registry: &TestRegistry, args: &[&str]) -> (bool, String, String) {
    let run = common::oms(&[format!("bus.registry.url={}", registry.url())], args).await;
    (run.ok, run.stdout, run.stderr)
}

#[tokio::test]
async fn subjects_are_listed_and_a_schema_is_shown_readably() {
    let registry = TestRegistry::spawn().await;
    let topic = testing::unique("orders");
    let config = RegistryConfig {
        url: registry.url(),
        ..RegistryConfig::default()
    };
    avro::register(&config, &topic, &[OrderPlaced::TYPE])
        .await
        .expect("register");
    let subject = format!("{topic}-dev.oms.orders.OrderPlaced");

    let (ok, listed, err) = oms(&registry, &["schemas", "subjects"]).await;
    assert!(ok, "{err}");
    assert_eq!(listed.lines().collect::<Vec<_>>(), [subject.as_str()]);

    let (ok, shown, err) = oms(&registry, &["schemas", "show", &subject]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["schema"]["name"], "OrderPlaced");
    assert!(
        shown["schema"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["name"] == "placedBy")
    );

    let (ok, _, err) = oms(&registry, &["schemas", "show", "no-such-subject"]).await;
    assert!(
        !ok && err.contains("Subject 'no-such-subject' not found"),
        "{err}"
    );
}
