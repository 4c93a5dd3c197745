//! `oms dlq list`, `oms dlq redrive` and `oms dlq discard`, run as the binary, against a real
//! broker.

mod common;

use std::time::Duration;

use oms_saga::{
    bus::{Headers, Message, TopicSpec},
    consumer::{dlq_header, dlq_topic, release_header},
    testing,
};
use serde_json::Value;

async fn oms(args: &[&str]) -> (bool, String, String) {
    let run = common::oms(&testing::bus_settings(&testing::bus_config()), args).await;
    (run.ok, run.stdout, run.stderr)
}

fn letter(topic: &str, key: &str, offset: i64) -> Message {
    let mut headers = Headers::default();
    headers.insert("event-id", format!("event-{key}"));
    headers.insert(dlq_header::REASON, "rejected");
    headers.insert(dlq_header::ORIGIN_TOPIC, topic);
    headers.insert(dlq_header::ORIGIN_PARTITION, "0");
    headers.insert(dlq_header::ORIGIN_OFFSET, offset.to_string());
    headers.insert(dlq_header::CONSUMER, "workers");
    Message {
        topic: dlq_topic(topic),
        key: key.into(),
        payload: br#"{"n":1}"#.to_vec(),
        headers,
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_the_chosen_ones_sent_back_to_release_their_consumers() {
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::unique("dlq-cli");
    bus.ensure_topics(&[
        TopicSpec::new(&topic, 1),
        TopicSpec::new(dlq_topic(&topic), 1),
    ])
    .await
    .expect("topics");
    bus.publish(vec![letter(&topic, "a", 7), letter(&topic, "b", 9)])
        .await
        .expect("publish");

    let (ok, listed, err) = oms(&["dlq", "list", &topic]).await;
    assert!(ok, "{err}");
    let listed: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["key"], "b");
    assert_eq!(listed[1]["headers"]["dlq-reason"], "rejected");
    let offset_of_b = listed[1]["offset"].as_i64().expect("offset").to_string();

    let (ok, _, err) = oms(&["dlq", "redrive", &topic, "--offset", &offset_of_b]).await;
    assert!(ok, "{err}");
    let back = testing::consume(bus.as_ref(), &topic, 1, Duration::from_secs(30)).await;
    assert_eq!(back[0].message.key, "b");
    assert_eq!(back[0].message.headers.get_str("event-id"), Some("event-b"));
    let headers = &back[0].message.headers;
    assert!(headers.0.iter().all(|(name, _)| !name.starts_with("dlq-")));
    // What the consumer that dead-lettered it needs to release what it parked behind it.
    assert_eq!(headers.get_str(release_header::ACTION), Some("redrive"));
    assert_eq!(headers.get_str(release_header::GROUP), Some("workers"));
    assert_eq!(headers.get_str(release_header::OF), Some("0/9"));

    let offset_of_a = listed[0]["offset"].as_i64().expect("offset").to_string();
    let (ok, _, err) = oms(&["dlq", "discard", &topic, "--offset", &offset_of_a]).await;
    assert!(ok, "{err}");
    assert!(err.contains("discarded 1"), "{err}");
    let back = testing::consume(bus.as_ref(), &topic, 2, Duration::from_secs(30)).await;
    assert_eq!(back[1].message.key, "a");
    let headers = &back[1].message.headers;
    assert_eq!(headers.get_str(release_header::ACTION), Some("discard"));
    assert_eq!(headers.get_str(release_header::OF), Some("0/7"));

    let (ok, _, err) = oms(&["dlq", "redrive", &topic, "--offset", "999"]).await;
    assert!(
        !ok && err.contains("999"),
        "an unknown offset is refused: {err}"
    );
}
