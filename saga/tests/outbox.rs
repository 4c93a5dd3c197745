//! The outbox relay against real PostgreSQL and a real broker.

use std::{collections::HashMap, sync::Arc, time::Duration};

use oms_saga::{
    bus::{self, Delivery, EventBus, TopicSpec},
    event::{Event, EventRecord, JsonCodec},
    outbox::{self, Relay, RelayConfig},
    schedule::Wake,
    testing,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
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

async fn enqueue(pool: &PgPool, topic: &str, order: &str, n: usize) {
    let mut tx = pool.begin().await.expect("begin");
    let step = Step {
        order: order.into(),
        n,
    };
    outbox::enqueue(&mut tx, &EventRecord::new(topic, &step))
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn all_sent(pool: &PgPool, within: Duration) {
    testing::eventually(within, "every outbox row to be published", || async {
        (unpublished(pool).await == 0).then_some(())
    })
    .await;
}

async fn steps(delivered: &[Delivery]) -> Vec<(String, usize)> {
    let mut steps = Vec::new();
    for delivery in delivered {
        let record = EventRecord::from_delivery(delivery, &JsonCodec)
            .await
            .expect("decode");
        let step: Step = record.payload_as().expect("a Step").expect("payload");
        assert_eq!(delivery.message.key, step.order, "keyed by its order");
        steps.push((step.order, step.n));
    }
    steps
}

#[tokio::test]
async fn competing_relays_publish_every_event_once_in_per_key_order() {
    const KEYS: usize = 10;
    const STEPS: usize = 30;
    let db = testing::database(&MIGRATOR).await;
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::topic(bus.as_ref(), "outbox", 3).await;

    let stop = CancellationToken::new();
    let config = RelayConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(5),
        ..RelayConfig::default()
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
            enqueue(&db.pool, &topic, &format!("order-{k}"), n).await;
        }
    }

    let delivered =
        testing::consume(bus.as_ref(), &topic, KEYS * STEPS, Duration::from_secs(60)).await;
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (order, n) in steps(&delivered).await {
        per_key.entry(order).or_default().push(n);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, steps) in per_key {
        assert_eq!(steps, (0..STEPS).collect::<Vec<_>>(), "events of {key}");
    }
    // Events leave the queue after the acknowledgement, so the consumer may see the last batch
    // first.
    all_sent(&db.pool, Duration::from_secs(10)).await;

    stop.cancel();
    for relay in relays {
        relay.await.expect("relay stops on shutdown");
    }
}

#[tokio::test]
async fn the_relay_creates_its_topics_and_holds_events_while_the_broker_is_paused() {
    let db = testing::database(&MIGRATOR).await;
    let (broker, bus_config) = testing::dedicated_broker();
    let bus = bus::connect(&bus_config).expect("bus");
    let topic = testing::unique("outbox");
    let stop = CancellationToken::new();
    let relay = Relay::new(
        db.pool.clone(),
        bus.clone(),
        Arc::new(JsonCodec),
        RelayConfig::default(),
    )
    .ensuring(vec![TopicSpec::new(&topic, 2)]);
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));

    // The relay works: it created the topic and sent the first event.
    enqueue(&db.pool, &topic, "o", 1).await;
    all_sent(&db.pool, Duration::from_secs(30)).await;

    broker.pause();
    enqueue(&db.pool, &topic, "o", 2).await;
    // Long enough for the relay to have tried: it may not mark the row.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        unpublished(&db.pool).await,
        1,
        "nothing leaves the queue while the broker is paused"
    );

    broker.resume();
    all_sent(&db.pool, Duration::from_secs(30)).await;
    let delivered = testing::consume_events(bus.as_ref(), &topic, 2, Duration::from_secs(30)).await;
    assert_eq!(
        steps(&delivered).await,
        [("o".to_owned(), 1), ("o".to_owned(), 2)]
    );

    // Shutdown does not wait for a broker that does not answer.
    broker.pause();
    enqueue(&db.pool, &topic, "o", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the relay stops while a publish is pending")
        .expect("relay task");
    assert_eq!(
        unpublished(&db.pool).await,
        1,
        "the interrupted event waits for the next relay"
    );
}

/// A relay on a one-partition topic of its own that looks for events when `wake` is woken, and
/// otherwise only every ten minutes.
struct WokenRelay {
    db: testing::TestDatabase,
    bus: Arc<dyn EventBus>,
    topic: String,
    wake: Wake,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WokenRelay {
    async fn start() -> Self {
        let db = testing::database(&MIGRATOR).await;
        let (_, bus) = testing::shared_bus().await;
        let topic = testing::topic(bus.as_ref(), "outbox", 1).await;
        let wake = Wake::default();
        let stop = CancellationToken::new();
        let config = RelayConfig {
            poll_interval: Duration::from_secs(600),
            ..RelayConfig::default()
        };
        let relay =
            Relay::new(db.pool.clone(), bus.clone(), Arc::new(JsonCodec), config).woken_by(&wake);
        let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
        Self {
            db,
            bus,
            topic,
            wake,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("relay stops on shutdown");
    }
}

#[tokio::test]
async fn a_woken_relay_publishes_at_once_and_an_unwoken_one_waits_for_its_poll() {
    let relay = WokenRelay::start().await;
    let (db, bus, topic, wake) = (&relay.db, &relay.bus, &relay.topic, &relay.wake);

    enqueue(&db.pool, topic, "o", 1).await;
    wake.wake();
    all_sent(&db.pool, Duration::from_secs(30)).await;
    // Whatever look that wake still causes is over; the relay now waits its ten minutes.
    tokio::time::sleep(Duration::from_millis(500)).await;

    enqueue(&db.pool, topic, "o", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        unpublished(&db.pool).await,
        1,
        "unwoken, the relay waits for its next poll"
    );
    wake.wake();
    all_sent(&db.pool, Duration::from_secs(10)).await;
    let delivered = testing::consume_events(bus.as_ref(), topic, 2, Duration::from_secs(30)).await;
    assert_eq!(
        steps(&delivered).await,
        [("o".to_owned(), 1), ("o".to_owned(), 2)]
    );

    relay.stop().await;
}

#[tokio::test]
async fn a_relay_that_finds_another_publishing_tries_again_before_its_poll() {
    let relay = WokenRelay::start().await;
    let (db, bus, topic, wake) = (&relay.db, &relay.bus, &relay.topic, &relay.wake);

    // Another relay (another instance's) is publishing: it holds the election's lock, and chose
    // its batch before this process's event committed.
    let mut other = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(outbox::RELAY_LOCK)
        .execute(&mut *other)
        .await
        .expect("the relay lock");
    enqueue(&db.pool, topic, "o", 1).await;
    wake.wake();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        unpublished(&db.pool).await,
        1,
        "nothing is sent while another relay publishes"
    );

    // The other finishes without having seen the event: this relay, woken once and with ten
    // minutes to its next poll, sends it.
    other.commit().await.expect("commit");
    all_sent(&db.pool, Duration::from_secs(10)).await;
    let delivered = testing::consume_events(bus.as_ref(), topic, 1, Duration::from_secs(30)).await;
    assert_eq!(steps(&delivered).await, [("o".to_owned(), 1)]);

    relay.stop().await;
}

/// An outbox that held published and waiting events before the queue of waiting ids existed:
/// the migration that brings the queue queues exactly the waiting ones, and a relay sends them,
/// in their order.
#[tokio::test]
async fn the_migration_to_the_queue_queues_exactly_the_events_still_waiting() {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/orders");
    let db = testing::database_before(std::path::Path::new(migrations), 6).await;
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::topic(bus.as_ref(), "outbox", 1).await;

    // As the relay left them then: the first sent and marked, the other two waiting.
    for (n, published) in [(1, true), (2, false), (3, false)] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, payload, occurred_at, \
             correlation_id, published_at) \
             VALUES ($1, $2, 'o', 'Step', $3, now(), $1, CASE WHEN $4 THEN now() END)",
        )
        .bind(id)
        .bind(&topic)
        .bind(serde_json::json!({ "order": "o", "n": n }))
        .bind(published)
        .execute(&db.pool)
        .await
        .expect("an outbox row");
    }
    MIGRATOR.run(&db.pool).await.expect("the migrations since");
    assert_eq!(unpublished(&db.pool).await, 2);

    let relay = Relay::new(
        db.pool.clone(),
        bus.clone(),
        Arc::new(JsonCodec),
        RelayConfig::default(),
    );
    assert_eq!(
        relay.relay_once().await.expect("relay"),
        outbox::Relayed::Published(2)
    );
    assert_eq!(unpublished(&db.pool).await, 0);
    let delivered = testing::consume_events(bus.as_ref(), &topic, 2, Duration::from_secs(30)).await;
    assert_eq!(
        steps(&delivered).await,
        [("o".to_owned(), 2), ("o".to_owned(), 3)]
    );
}

/// PostgreSQL settles on a generic plan for a prepared statement after its fifth run. Settled
/// while the outbox was small, the relay's read of the waiting events would scan the whole
/// outbox, which only grows, for ever after on its connection, autovacuum being off here: it is
/// planned at each call.
#[tokio::test]
async fn the_relay_reads_waiting_events_by_index_however_small_the_outbox_was_at_first() {
    let db = testing::database(&MIGRATOR).await;
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::topic(bus.as_ref(), "outbox", 1).await;
    // One connection: prepared statements and their plans belong to it.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("a pool of one");
    let relay = Relay::new(
        pool.clone(),
        bus.clone(),
        Arc::new(JsonCodec),
        RelayConfig::default(),
    );
    for n in 0..10 {
        enqueue(&pool, &topic, "o", n).await;
        assert_eq!(
            relay.relay_once().await.expect("relay"),
            outbox::Relayed::Published(1)
        );
    }
    // Twenty thousand events sent long ago.
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, message_key, event_type, payload, occurred_at, \
         correlation_id) \
         SELECT id, $1, 'old', 'Step', '{}', now(), id \
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 20000)) AS e",
    )
    .bind(&topic)
    .execute(&pool)
    .await
    .expect("a big outbox");
    enqueue(&pool, &topic, "o", 10).await;

    let scans = || async {
        let mut conn = pool.acquire().await.expect("the relay's connection");
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .expect("flush");
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'outbox'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("scans")
    };
    let before = scans().await;
    assert_eq!(
        relay.relay_once().await.expect("relay"),
        outbox::Relayed::Published(1)
    );
    assert_eq!(
        scans().await - before,
        0,
        "one waiting event among 20,011 scanned the outbox"
    );
}

/// A published event's row is deleted once it is older than `keep_published`, oldest first, a
/// batch at a time; a row still queued is never deleted, however old, and a young one is kept.
#[tokio::test]
async fn the_relay_prunes_published_rows_past_their_time_and_never_a_queued_one() {
    use oms_saga::schedule::Periodic;
    let db = testing::database(&MIGRATOR).await;
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::topic(bus.as_ref(), "outbox", 1).await;
    let config = RelayConfig {
        keep_published: Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let relay = Relay::new(db.pool.clone(), bus.clone(), Arc::new(JsonCodec), config);
    for n in 0..5 {
        enqueue(&db.pool, &topic, "published", n).await;
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.clone().run(stop.clone().cancelled_owned()));
    all_sent(&db.pool, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.expect("relay");
    enqueue(&db.pool, &topic, "queued", 0).await;
    enqueue(&db.pool, &topic, "young", 0).await;
    sqlx::query("DELETE FROM outbox_pending WHERE id = (SELECT max(id) FROM outbox)")
        .execute(&db.pool)
        .await
        .expect("publish the young one");
    sqlx::query(
        "UPDATE outbox SET occurred_at = now() - interval '2 hours' \
         WHERE message_key IN ('published', 'queued')",
    )
    .execute(&db.pool)
    .await
    .expect("age them");

    let prune = relay.pruning().batches_of(2);
    let mut rounds = Vec::new();
    for _ in 0..4 {
        rounds.push(prune.round().await.expect("prune"));
    }
    assert_eq!(
        rounds,
        [2, 2, 1, 0],
        "five old published rows, two at a time"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT message_key FROM outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("outbox");
    assert_eq!(left, ["queued", "young"]);
    assert_eq!(
        unpublished(&db.pool).await,
        1,
        "the queued one still goes out"
    );
}
