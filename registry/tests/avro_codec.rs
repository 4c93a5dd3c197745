//! The Avro codec against a real registry and broker: schema evolution through the registry, and
//! bytes that are not our Avro dead-lettered by the shared consume loop.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oms_registry::testing::TestRegistry;
use oms_saga::{
    avro::{AvroCodec, RegistryConfig},
    bus::{Headers, Message, TopicSpec},
    consumer::{self, Consumer, ConsumerConfig, Handler, HandlerError, dlq_header},
    event::{Codec, Event, EventRecord, OrderLine, OrderPlaced, header},
    schemas, testing,
};
use serde_json::json;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

static ORDERS_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

fn order(placed_by: Option<&str>) -> OrderPlaced {
    OrderPlaced {
        order_id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        items: vec![OrderLine {
            product_id: "SKU-1".into(),
            quantity: 2,
            unit_price: "4.50".parse().expect("dec"),
        }],
        total: "9.00".parse().expect("dec"),
        placed_at: chrono::Utc::now(),
        placed_by: placed_by.map(str::to_owned),
    }
}

async fn register(registry: &TestRegistry, subject: &str, schema: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry.url()))
        .json(&json!({ "schema": schema }))
        .send()
        .await
        .expect("register")
        .status()
}

#[tokio::test]
async fn an_old_producers_v1_events_and_a_new_producers_v2_events_both_decode() {
    let registry = TestRegistry::spawn().await;
    let config = RegistryConfig {
        url: registry.url(),
        ..RegistryConfig::default()
    };
    let topic = testing::unique("orders");
    let v1 = schemas::ALL
        .iter()
        .find(|s| s.event_type == "OrderPlaced" && s.version == 1)
        .expect("v1");
    let subject = v1.subject(&topic);

    // An old producer: only v1 is registered, so it writes v1, without placedBy.
    assert_eq!(register(&registry, &subject, v1.source).await, 200);
    let old_event = EventRecord::new(&topic, &order(Some("ignored by v1")));
    let old_bytes = AvroCodec::new(&config)
        .expect("codec")
        .encode(&old_event)
        .await
        .expect("encode v1");

    // The new schema is accepted by the registry's default BACKWARD check.
    let v2 = schemas::latest("OrderPlaced").expect("v2");
    assert_eq!(register(&registry, &subject, v2.source).await, 200);
    let new_event = EventRecord::new(&topic, &order(Some("alice")));
    let new_bytes = AvroCodec::new(&config)
        .expect("codec")
        .encode(&new_event)
        .await
        .expect("encode v2");
    assert_ne!(
        old_bytes[1..5],
        new_bytes[1..5],
        "each names its own schema id"
    );

    let reader = AvroCodec::new(&config).expect("codec");
    let old: OrderPlaced = serde_json::from_value(
        reader
            .decode("OrderPlaced", &old_bytes)
            .await
            .expect("decode v1"),
    )
    .expect("typed");
    assert_eq!(
        old.placed_by, None,
        "a v1 event has no placedBy; the new type defaults it"
    );
    assert_eq!(old.total, "9.00".parse().expect("dec"));
    let new: OrderPlaced = serde_json::from_value(
        reader
            .decode("OrderPlaced", &new_bytes)
            .await
            .expect("decode v2"),
    )
    .expect("typed");
    assert_eq!(new.placed_by.as_deref(), Some("alice"));

    let mismatch = reader
        .decode("StockReserved", &new_bytes)
        .await
        .expect_err("wrong type");
    assert!(
        !mismatch.transient && mismatch.reason.contains("OrderPlaced"),
        "{mismatch:?}"
    );
}

/// Records what it handled.
struct Recorder;

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO handled (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn bytes_that_are_not_framed_avro_or_name_an_unknown_schema_are_dead_lettered_and_the_partition_goes_on()
 {
    let registry = TestRegistry::spawn().await;
    let config = RegistryConfig {
        url: registry.url(),
        ..RegistryConfig::default()
    };
    let db = testing::database(&ORDERS_MIGRATOR).await;
    sqlx::query("CREATE TABLE handled (event_id UUID PRIMARY KEY)")
        .execute(&db.pool)
        .await
        .expect("table");
    let (_, bus) = testing::kafka_bus().await;
    let topic = testing::unique("orders");
    bus.ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .expect("topic");
    oms_saga::avro::register(&config, &topic, &[OrderPlaced::TYPE])
        .await
        .expect("register");
    let codec = AvroCodec::new(&config).expect("codec");

    let good = EventRecord::new(&topic, &order(None));
    let mut headers = good.to_message(&codec).await.expect("encode").headers;
    headers.insert(header::EVENT_ID, Uuid::new_v4().to_string());
    let garbage = |payload: Vec<u8>, headers: &Headers| Message {
        topic: topic.clone(),
        key: "k".into(),
        payload,
        headers: headers.clone(),
    };
    let not_framed = garbage(b"{\"orderId\": 1}".to_vec(), &headers);
    // Magic byte, then schema id 99999, which the registry never issued.
    let mut unknown_id = vec![0, 0x00, 0x01, 0x86, 0x9f];
    unknown_id.extend_from_slice(&[2, 4, 6]);
    headers.insert(header::EVENT_ID, Uuid::new_v4().to_string());
    let unknown_schema = garbage(unknown_id, &headers);
    bus.publish(vec![
        not_framed,
        unknown_schema,
        good.to_message(&codec).await.expect("encode"),
    ])
    .await
    .expect("publish");

    let consumer_config = ConsumerConfig {
        group: testing::unique("worker"),
        topics: vec![topic.clone()],
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = Consumer::new(
        db.pool.clone(),
        bus.clone(),
        Arc::new(codec),
        Recorder,
        consumer_config,
    );
    let task = tokio::spawn(worker.run(stop.clone().cancelled_owned()));

    testing::eventually(
        Duration::from_secs(30),
        "the good event after the bad ones",
        || async {
            let handled: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM handled")
                .fetch_all(&db.pool)
                .await
                .ok()?;
            (handled == [good.event_id]).then_some(())
        },
    )
    .await;
    let letters = consumer::dead_letters(bus.as_ref(), &topic, Duration::from_secs(2))
        .await
        .expect("dlq");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| {
            l.message
                .headers
                .get_str(dlq_header::REASON)
                .expect("reason")
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("not Confluent-framed Avro"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("Schema 99999 not found"),
        "the unknown schema id is named: {reasons:?}"
    );
    assert_eq!(
        letters[1]
            .message
            .headers
            .get_str(dlq_header::ORIGIN_OFFSET),
        Some("1")
    );
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

#[tokio::test]
async fn while_the_registry_is_unreachable_events_wait_instead_of_being_dead_lettered() {
    let registry = TestRegistry::spawn().await;
    let config = RegistryConfig {
        url: registry.url(),
        ..RegistryConfig::default()
    };
    let db = testing::database(&ORDERS_MIGRATOR).await;
    sqlx::query("CREATE TABLE handled (event_id UUID PRIMARY KEY)")
        .execute(&db.pool)
        .await
        .expect("table");
    let (_, bus) = testing::kafka_bus().await;
    let topic = testing::unique("orders");
    bus.ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .expect("topic");
    oms_saga::avro::register(&config, &topic, &[OrderPlaced::TYPE])
        .await
        .expect("register");
    let event = EventRecord::new(&topic, &order(None));
    let message = event
        .to_message(&AvroCodec::new(&config).expect("codec"))
        .await
        .expect("encode");
    bus.publish(vec![message]).await.expect("publish");

    // The worker's registry address answers nothing yet.
    let port = testing::free_port();
    let unreachable = RegistryConfig {
        url: format!("http://127.0.0.1:{port}"),
        ..RegistryConfig::default()
    };
    let consumer_config = ConsumerConfig {
        group: testing::unique("worker"),
        topics: vec![topic.clone()],
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        ..ConsumerConfig::default()
    };
    let codec = AvroCodec::new(&unreachable).expect("codec");
    let worker = Consumer::new(
        db.pool.clone(),
        bus.clone(),
        Arc::new(codec),
        Recorder,
        consumer_config,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let handled = || async {
        sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM handled")
            .fetch_all(&db.pool)
            .await
            .expect("handled")
    };
    // Long enough to join the group and fail to decode many times over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        handled().await.is_empty(),
        "nothing can be decoded while the registry is away"
    );

    registry.serve_at(port).await;
    testing::eventually(
        Duration::from_secs(30),
        "the event once the registry answers",
        || async { (handled().await == [event.event_id]).then_some(()) },
    )
    .await;
    let letters = consumer::dead_letters(bus.as_ref(), &topic, Duration::from_secs(2))
        .await
        .expect("dlq");
    assert!(letters.is_empty(), "an outage is not poison: {letters:?}");
    stop.cancel();
    task.await.expect("join").expect("consumer");
}
