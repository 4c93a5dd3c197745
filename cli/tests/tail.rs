//! `oms tail` against a real broker, run as the binary a user runs.

mod common;

use oms_registry::testing::TestRegistry;
use oms_saga::{
    avro::{self, AvroCodec, RegistryConfig},
    bus::{Headers, Message, TopicSpec},
    event::{Event, EventRecord, OrderStatus, OrderStatusChanged},
    testing,
};
use serde_json::Value;
use uuid::Uuid;

#[tokio::test]
async fn tail_prints_each_event_with_its_key_headers_and_decoded_body() {
    let (_, bus) = testing::shared_bus().await;
    let registry = TestRegistry::spawn().await;
    let registry_config = RegistryConfig {
        url: registry.url(),
        ..RegistryConfig::default()
    };
    let topic = testing::unique("tail");
    avro::register(&registry_config, &topic, &[OrderStatusChanged::TYPE])
        .await
        .expect("register");
    bus.ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .expect("topic");
    let order_id = Uuid::new_v4();
    let event = OrderStatusChanged {
        order_id,
        old_status: OrderStatus::Created,
        new_status: OrderStatus::Reserved,
        reason: None,
        at: chrono::Utc::now(),
    };
    let record = EventRecord::new(&topic, &event);
    let garbage = Message {
        topic: topic.clone(),
        key: "junk".into(),
        payload: vec![0, 0, 0, 0, 7, 0xff],
        headers: Headers::default(),
    };
    bus.publish(vec![
        record
            .to_message(&AvroCodec::new(&registry_config).expect("codec"))
            .await
            .expect("encode"),
        garbage,
    ])
    .await
    .expect("publish");

    let mut settings = testing::bus_settings(&testing::bus_config());
    settings.push(format!("bus.registry.url={}", registry.url()));
    let run = common::oms(
        &settings,
        &["tail", &topic, "--count", "2", "--idle", "30s"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["key"], order_id.to_string());
    assert_eq!(lines[0]["headers"]["event-type"], "OrderStatusChanged");
    assert_eq!(lines[0]["headers"]["event-id"], record.event_id.to_string());
    assert_eq!(
        lines[0]["headers"]["content-type"],
        "application/vnd.confluent.avro"
    );
    assert_eq!(lines[0]["event"]["newStatus"], "RESERVED");
    assert_eq!(lines[0]["event"]["orderId"], order_id.to_string());
    assert_eq!(lines[1]["key"], "junk");
    assert!(
        lines[1]["undecodable"]["reason"].is_string(),
        "{}",
        lines[1]
    );
}
