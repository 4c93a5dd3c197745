//! The Avro codec against a real registry and broker: schema evolution through the registry, and
//! bytes that are not our Avro dead-lettered by the shared consume loop.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use oms_registry::testing::TestRegistry;
use oms_saga::{
    avro::{AvroCodec, RegistryConfig},
    bus::{Message, TopicSpec},
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
        currency: "USD".into(),
        payment_method: None,
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

/// A registry with OrderPlaced registered for a fresh topic, and a worker database.
struct Fixture {
    registry: TestRegistry,
    config: RegistryConfig,
    db: testing::TestDatabase,
    bus: Arc<dyn oms_saga::bus::EventBus>,
    topic: String,
}

impl Fixture {
    async fn new() -> Self {
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
        let (_, bus) = testing::shared_bus().await;
        let topic = testing::unique("orders");
        bus.ensure_topics(&[TopicSpec::new(&topic, 1)])
            .await
            .expect("topic");
        oms_saga::avro::register(&config, &topic, &[OrderPlaced::TYPE])
            .await
            .expect("register");
        Self {
            registry,
            config,
            db,
            bus,
            topic,
        }
    }

    fn codec(&self) -> AvroCodec {
        AvroCodec::new(&self.config).expect("codec")
    }

    /// Starts a worker that decodes with `codec`.
    fn start(
        &self,
        codec: AvroCodec,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<oms_saga::Result<()>>,
    ) {
        let config = ConsumerConfig {
            group: testing::unique("worker"),
            topics: vec![self.topic.clone()],
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            ..ConsumerConfig::default()
        };
        let worker = Consumer::new(
            self.db.pool.clone(),
            self.bus.clone(),
            Arc::new(codec),
            Recorder,
            config,
        );
        let stop = CancellationToken::new();
        (
            stop.clone(),
            tokio::spawn(worker.run(stop.cancelled_owned())),
        )
    }

    async fn handled(&self) -> Vec<Uuid> {
        sqlx::query_scalar("SELECT event_id FROM handled")
            .fetch_all(&self.db.pool)
            .await
            .expect("handled")
    }

    async fn wait_until_handled(&self, what: &str, expected: &[Uuid]) {
        testing::eventually(Duration::from_secs(30), what, || async {
            (self.handled().await == expected).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn bytes_that_are_not_framed_avro_or_name_an_unknown_schema_are_dead_lettered_and_the_partition_goes_on()
 {
    let fx = Fixture::new().await;
    let codec = fx.codec();
    let good = EventRecord::new(&fx.topic, &order(None));
    let mut headers = good.to_message(&codec).await.expect("encode").headers;
    // Each of its own key: a dead letter holds back the later events of its key.
    let mut garbage = |key: &str, payload: Vec<u8>| {
        headers.insert(header::EVENT_ID, Uuid::new_v4().to_string());
        Message {
            topic: fx.topic.clone(),
            key: key.into(),
            payload,
            headers: headers.clone(),
        }
    };
    let not_framed = garbage("not-framed", b"{\"orderId\": 1}".to_vec());
    // Magic byte, then schema id 99999, which the registry never issued.
    let unknown_schema = garbage("unknown-schema", vec![0, 0x00, 0x01, 0x86, 0x9f, 2, 4, 6]);
    let messages = vec![
        not_framed,
        unknown_schema,
        good.to_message(&codec).await.expect("encode"),
    ];
    fx.bus.publish(messages).await.expect("publish");

    let (stop, task) = fx.start(codec);
    fx.wait_until_handled("the good event after the bad ones", &[good.event_id])
        .await;
    let letters = consumer::dead_letters(fx.bus.as_ref(), &fx.topic, Duration::from_secs(2))
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
    // The letter names where the bad message sits: the second of the topic's one partition.
    let published = testing::consume(fx.bus.as_ref(), &fx.topic, 2, Duration::from_secs(10)).await;
    assert_eq!(
        letters[1]
            .message
            .headers
            .get_str(dlq_header::ORIGIN_OFFSET),
        Some(published[1].offset.to_string().as_str())
    );
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

#[tokio::test]
async fn while_the_registry_is_unreachable_events_wait_instead_of_being_dead_lettered() {
    let fx = Fixture::new().await;
    let event = EventRecord::new(&fx.topic, &order(None));
    fx.bus
        .publish(vec![event.to_message(&fx.codec()).await.expect("encode")])
        .await
        .expect("publish");

    // The worker's registry address answers nothing yet.
    let port = testing::free_port();
    let unreachable = RegistryConfig {
        url: format!("http://127.0.0.1:{port}"),
        ..RegistryConfig::default()
    };
    let (stop, task) = fx.start(AvroCodec::new(&unreachable).expect("codec"));
    // Long enough to join the group and fail to decode many times over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        fx.handled().await.is_empty(),
        "nothing can be decoded while the registry is away"
    );

    fx.registry.serve_at(port).await;
    fx.wait_until_handled("the event once the registry answers", &[event.event_id])
        .await;
    let letters = consumer::dead_letters(fx.bus.as_ref(), &fx.topic, Duration::from_secs(2))
        .await
        .expect("dlq");
    assert!(letters.is_empty(), "an outage is not poison: {letters:?}");
    stop.cancel();
    task.await.expect("join").expect("consumer");
}
