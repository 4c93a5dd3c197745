//! The outbox relay against real PostgreSQL and a real broker.

use std::{collections::HashMap, sync::Arc, time::Duration};

use oms_saga::{
    bus::{self, TopicSpec},
    event::{Event, EventRecord, JsonCodec},
    outbox::{self, Relay, RelayConfig},
    testing,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The outbox table is part of each service's schema; the order service's will do.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    order: String,
    n: usize,
}

impl Event for Step {
    const TYPE: &'static str = "Step";
    fn key(&self) -> String {
        self.order.clone()
    }
}

#[tokio::test]
async fn competing_relays_publish_every_event_once_in_per_key_order() {
    const KEYS: usize = 10;
    const STEPS: usize = 30;
    let db = testing::database(&MIGRATOR).await;
    let (_, bus) = testing::kafka_bus().await;
    let topic = testing::unique("outbox");
    bus.ensure_topics(&[TopicSpec::new(&topic, 3)])
        .await
        .expect("topic");

    let stop = CancellationToken::new();
    let config = RelayConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(5),
    };
    let relays: Vec<_> = (0..3)
        .map(|_| {
            let relay = Relay::new(
                db.pool.clone(),
                bus.clone(),
                Arc::new(JsonCodec),
                config.clone(),
            );
            tokio::spawn(relay.run(stop.clone().cancelled_owned()))
        })
        .collect();

    // Writers append while the relays drain, one transaction per event, interleaving keys.
    for n in 0..STEPS {
        for k in 0..KEYS {
            let mut tx = db.pool.begin().await.expect("begin");
            let step = Step {
                order: format!("order-{k}"),
                n,
            };
            outbox::enqueue(&mut tx, &EventRecord::new(&topic, &step))
                .await
                .expect("enqueue");
            tx.commit().await.expect("commit");
        }
    }

    let delivered =
        testing::consume(bus.as_ref(), &topic, KEYS * STEPS, Duration::from_secs(60)).await;
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for delivery in &delivered {
        let record = EventRecord::from_delivery(delivery, &JsonCodec)
            .await
            .expect("decode");
        let step: Step = record.payload_as().expect("a Step").expect("payload");
        assert_eq!(delivery.message.key, step.order);
        per_key.entry(step.order).or_default().push(step.n);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, steps) in per_key {
        assert_eq!(steps, (0..STEPS).collect::<Vec<_>>(), "events of {key}");
    }
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(unpublished, 0);

    stop.cancel();
    for relay in relays {
        relay.await.expect("relay stops on shutdown");
    }
}

#[tokio::test]
async fn the_relay_creates_its_topics_and_keeps_events_until_the_broker_takes_them() {
    let db = testing::database(&MIGRATOR).await;
    let broker = testing::dedicated_broker();
    let bus_config = testing::kafka_config(&broker.addr.to_string());
    let bus = bus::connect(&bus_config).expect("bus");
    let topic = testing::unique("outbox");
    broker.pause();

    let stop = CancellationToken::new();
    let relay = Relay::new(
        db.pool.clone(),
        bus.clone(),
        Arc::new(JsonCodec),
        RelayConfig::default(),
    )
    .ensuring(vec![TopicSpec::new(&topic, 2)]);
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    let mut tx = db.pool.begin().await.expect("begin");
    outbox::enqueue(
        &mut tx,
        &EventRecord::new(
            &topic,
            &Step {
                order: "o".into(),
                n: 1,
            },
        ),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        waiting, 1,
        "nothing is marked sent while the broker is paused"
    );

    broker.resume();
    testing::eventually(
        Duration::from_secs(30),
        "the row to be marked sent",
        || async {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&db.pool)
                    .await
                    .ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    let delivered = testing::consume(bus.as_ref(), &topic, 1, Duration::from_secs(30)).await;
    assert_eq!(delivered[0].message.key, "o");
    stop.cancel();
    task.await.expect("relay");
}
