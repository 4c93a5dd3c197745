//! The shared consume loop against real PostgreSQL and a real broker: deduplication, retries,
//! dead letters, the events they park, and their release.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use oms_saga::{
    bus::{self, EventBus, Headers, Message},
    config::BusKind,
    consumer::{self, Action, Consumer, ConsumerConfig, Handler, HandlerError, dlq_header},
    event::{Event, EventRecord, JsonCodec},
    schedule::Wake,
    testing::{self, TestDatabase},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orders");

/// What the test events ask of the handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    key: String,
    /// "ok", "reject" (until `accept_rejected` is set), "flaky" (fails transiently twice), or
    /// "slow" (takes 20 ms, as a call to a provider would).
    mode: String,
}

impl Event for Task {
    const TYPE: &'static str = "Task";
    /// The task's key up to a `/`: tasks `o/1` and `o/2` share the message key `o`, hence a
    /// partition and its order.
    fn key(&self) -> String {
        self.key.split('/').next().unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
struct Recorder {
    flaky_failures: AtomicUsize,
    accept_rejected: std::sync::atomic::AtomicBool,
    /// Slow tasks being handled now, and the most there ever were at once.
    slow_now: AtomicUsize,
    slow_at_once: AtomicUsize,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &EventRecord) -> Result<(), HandlerError> {
        let task: Task = event
            .payload_as()
            .ok_or_else(|| HandlerError::Poison(format!("unexpected {}", event.event_type)))?
            .map_err(|e| HandlerError::Poison(e.to_string()))?;
        match task.mode.as_str() {
            "reject" if !self.accept_rejected.load(Ordering::SeqCst) => {
                return Err(HandlerError::Poison(format!(
                    "{} is not acceptable",
                    task.key
                )));
            }
            "flaky" if self.flaky_failures.fetch_add(1, Ordering::SeqCst) < 2 => {
                return Err(HandlerError::Transient("the database blinked".into()));
            }
            "slow" => {
                let now = self.slow_now.fetch_add(1, Ordering::SeqCst) + 1;
                self.slow_at_once.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.slow_now.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
        sqlx::query("INSERT INTO effects (event_id, key) VALUES ($1, $2)")
            .bind(event.event_id)
            .bind(&task.key)
            .execute(tx)
            .await?;
        Ok(())
    }
}

struct Fixture {
    db: TestDatabase,
    bus: Arc<dyn EventBus>,
    topic: String,
    recorder: Arc<Recorder>,
    group: String,
    /// What the consumers wake when they commit.
    wake: Wake,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(testing::shared_bus().await.1).await
    }

    async fn on(bus: Arc<dyn EventBus>) -> Self {
        let db = testing::database(&MIGRATOR).await;
        sqlx::query(
            "CREATE TABLE effects (seq BIGSERIAL, event_id UUID NOT NULL, key TEXT NOT NULL, \
             tx BIGINT NOT NULL DEFAULT txid_current())",
        )
        .execute(&db.pool)
        .await
        .expect("effects table");
        let topic = testing::topic(bus.as_ref(), "tasks", 2).await;
        Self {
            db,
            bus,
            topic,
            recorder: Arc::default(),
            group: testing::unique("worker"),
            wake: Wake::default(),
        }
    }

    fn start(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<oms_saga::Result<()>>,
    ) {
        self.start_lanes(1)
    }

    fn start_lanes(
        &self,
        lanes: usize,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<oms_saga::Result<()>>,
    ) {
        let config = ConsumerConfig {
            group: self.group.clone(),
            topics: vec![self.topic.clone()],
            max_attempts: 3,
            max_deliveries: 3,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            batch_size: 100,
            lanes,
            ..ConsumerConfig::default()
        };
        let consumer = Consumer::new(
            self.db.pool.clone(),
            self.bus.clone(),
            Arc::new(JsonCodec),
            self.recorder.clone(),
            config,
        )
        .waking(self.wake.clone());
        let stop = CancellationToken::new();
        (
            stop.clone(),
            tokio::spawn(consumer.run(stop.cancelled_owned())),
        )
    }

    fn task(&self, key: &str, mode: &str) -> EventRecord {
        EventRecord::new(
            &self.topic,
            &Task {
                key: key.into(),
                mode: mode.into(),
            },
        )
    }

    async fn publish(&self, records: &[&EventRecord]) {
        let mut messages = Vec::with_capacity(records.len());
        for record in records {
            messages.push(record.to_message(&JsonCodec).await.expect("encode"));
        }
        self.bus.publish(messages).await.expect("publish");
    }

    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT key FROM effects ORDER BY key")
            .fetch_all(&self.db.pool)
            .await
            .expect("effects")
    }

    /// The effects in the order they were applied.
    async fn applied(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT key FROM effects ORDER BY seq")
            .fetch_all(&self.db.pool)
            .await
            .expect("effects")
    }

    /// The keys this group parked, and how many events wait behind them.
    async fn parked(&self) -> (Vec<String>, i64) {
        let keys =
            sqlx::query_scalar("SELECT key FROM parked_keys WHERE consumer = $1 ORDER BY key")
                .bind(&self.group)
                .fetch_all(&self.db.pool)
                .await
                .expect("parked keys");
        let events = sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE consumer = $1")
            .bind(&self.group)
            .fetch_one(&self.db.pool)
            .await
            .expect("parked events");
        (keys, events)
    }

    async fn wait_for_parked(&self, keys: &[&str], events: i64) {
        testing::eventually(
            Duration::from_secs(30),
            &format!("{events} events parked behind {keys:?}"),
            || async {
                let (parked, behind) = self.parked().await;
                (parked == keys && behind == events).then_some(())
            },
        )
        .await;
    }

    async fn letters(&self, count: usize) -> Vec<bus::Delivery> {
        testing::dead_letters_counting(self.bus.as_ref(), &self.topic, count).await
    }

    async fn wait_for_effects(&self, expected: &[&str]) {
        testing::eventually(
            Duration::from_secs(30),
            &format!("effects {expected:?}"),
            || async { (self.effects().await == expected).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_redelivered_or_duplicated_event_changes_nothing() {
    let fx = Fixture::new().await;
    let mut relay = fx.wake.listen();
    let a = fx.task("a", "ok");
    let b = fx.task("b", "ok");
    fx.publish(&[&a, &a, &b]).await;
    let (stop, task) = fx.start();
    fx.wait_for_effects(&["a", "b"]).await;
    assert!(
        relay.sleep(Duration::from_secs(10)).await,
        "what the handled events committed wakes the service's loops"
    );
    stop.cancel();
    task.await.expect("join").expect("consumer");

    // The same events again, to a new consumer in the same group: nothing changes.
    fx.publish(&[&b, &a]).await;
    let c = fx.task("c", "ok");
    fx.publish(&[&c]).await;
    let (stop, task) = fx.start();
    fx.wait_for_effects(&["a", "b", "c"]).await;
    stop.cancel();
    task.await.expect("join").expect("consumer");
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = $1")
        .bind(&fx.group)
        .fetch_one(&fx.db.pool)
        .await
        .expect("inbox");
    assert_eq!(inbox, 3);
}

/// Events that are waiting when the consumer starts arrive together. On Kafka they are applied
/// in few transactions; on NATS batches gather what each partition has in flight. A poison event
/// among them goes to the dead letters alone, and the events of its key behind it, repeats
/// included, are parked; discarded, it releases them. Each event is applied once, in order.
#[tokio::test]
async fn a_batch_with_a_poison_event_applies_the_others_once_and_in_order() {
    let fx = Fixture::new().await;
    // One key: `o/17` and everything after it wait behind the poison event.
    let keys: Vec<String> = (0..40).map(|i| format!("o/{i:02}")).collect();
    let tasks: Vec<EventRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| fx.task(key, if i == 17 { "reject" } else { "ok" }))
        .collect();
    // Repeats before the poison event and after it.
    let published: Vec<&EventRecord> = tasks[..5]
        .iter()
        .chain(&tasks)
        .chain(&tasks[30..])
        .collect();
    fx.publish(&published).await;
    let (stop, task) = fx.start();
    let before: Vec<&str> = keys[..17].iter().map(String::as_str).collect();
    fx.wait_for_parked(&["o"], 22 + 10).await;
    assert_eq!(
        fx.applied().await,
        before,
        "once each, in order, up to the poison"
    );
    let letters = fx.letters(1).await;
    assert_eq!(
        letters[0].message.headers.get_str("event-id"),
        Some(tasks[17].event_id.to_string().as_str()),
        "only the poison event is set aside"
    );
    if testing::bus_kind() == BusKind::Kafka {
        let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT tx) FROM effects")
            .fetch_one(&fx.db.pool)
            .await
            .expect("transactions");
        assert!(
            transactions < before.len() as i64 / 2,
            "{} events in {transactions} transactions: the waiting events were not batched",
            before.len()
        );
    }

    consumer::release(fx.bus.as_ref(), &letters, Action::Discard)
        .await
        .expect("discard");
    fx.wait_for_parked(&[], 0).await;
    let expected: Vec<&str> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 17)
        .map(|(_, key)| key.as_str())
        .collect();
    assert_eq!(
        fx.applied().await,
        expected,
        "once each, in the order published"
    );
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

/// A dead letter holds back the later events of its key, and only those. A redrive that fails
/// again parks the key anew; a discard or a successful redrive releases what waited, in order.
#[tokio::test]
async fn a_dead_letter_parks_the_later_events_of_its_key_until_it_is_redriven_or_discarded() {
    let fx = Fixture::new().await;
    let tasks = [
        fx.task("a/1", "reject"),
        fx.task("a/2", "ok"),
        fx.task("d/1", "reject"),
        fx.task("d/2", "ok"),
        fx.task("b/1", "ok"),
    ];
    fx.publish(&tasks.iter().collect::<Vec<_>>()).await;
    let (stop, task) = fx.start();
    fx.wait_for_parked(&["a", "d"], 2).await;
    fx.wait_for_effects(&["b/1"]).await;
    fx.publish(&[&fx.task("a/3", "ok")]).await;
    fx.wait_for_parked(&["a", "d"], 3).await;
    let letters = fx.letters(2).await;
    let letter_of = |letters: &[bus::Delivery], key: &str| {
        letters
            .iter()
            .rfind(|l| l.message.key == key)
            .cloned()
            .expect("a letter of the key")
    };

    // Redriven before its cause is repaired, a's letter fails again and parks a once more.
    let first_of_a = letter_of(&letters, "a");
    consumer::release(fx.bus.as_ref(), &[first_of_a], Action::Redrive)
        .await
        .expect("redrive");
    let letters = fx.letters(3).await;
    assert_eq!(letters[2].message.key, "a");
    fx.wait_for_parked(&["a", "d"], 3).await;

    consumer::release(
        fx.bus.as_ref(),
        &[letter_of(&letters, "d")],
        Action::Discard,
    )
    .await
    .expect("discard");
    fx.wait_for_parked(&["a"], 2).await;
    assert_eq!(
        fx.applied().await,
        ["b/1", "d/2"],
        "d/1 discarded, d/2 released"
    );

    fx.recorder.accept_rejected.store(true, Ordering::SeqCst);
    consumer::release(
        fx.bus.as_ref(),
        &[letter_of(&letters, "a")],
        Action::Redrive,
    )
    .await
    .expect("redrive");
    fx.wait_for_parked(&[], 0).await;
    assert_eq!(fx.applied().await, ["b/1", "d/2", "a/1", "a/2", "a/3"]);

    // Released, the key's events apply as they come.
    fx.publish(&[&fx.task("a/4", "ok")]).await;
    fx.wait_for_effects(&["a/1", "a/2", "a/3", "a/4", "b/1", "d/2"])
        .await;
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

/// What could not even be decoded, behind a parked key, is parked like any event: the key's
/// first dead letter stays the one that holds it. Released, it is dead-lettered in its turn.
#[tokio::test]
async fn garbage_behind_a_parked_key_is_parked_and_dead_lettered_only_once_released() {
    let fx = Fixture::new().await;
    fx.publish(&[&fx.task("x/1", "reject")]).await;
    let (stop, task) = fx.start();
    fx.wait_for_parked(&["x"], 0).await;
    let garbage = Message {
        topic: fx.topic.clone(),
        key: "x".into(),
        payload: b"not an event".to_vec(),
        headers: Headers::default(),
    };
    fx.bus
        .publish(vec![garbage.clone()])
        .await
        .expect("publish garbage");
    fx.publish(&[&fx.task("x/2", "ok"), &fx.task("y/1", "ok")])
        .await;
    fx.wait_for_effects(&["y/1"]).await;
    fx.wait_for_parked(&["x"], 2).await;
    let letters = fx.letters(1).await;

    // Discarding x/1 releases the garbage, which parks x anew, with x/2 behind it.
    consumer::release(fx.bus.as_ref(), &letters, Action::Discard)
        .await
        .expect("discard");
    fx.wait_for_parked(&["x"], 1).await;
    let letters = fx.letters(2).await;
    assert_eq!(letters[1].message.payload, garbage.payload);
    assert_eq!(fx.applied().await, ["y/1"]);

    consumer::release(fx.bus.as_ref(), &letters[1..], Action::Discard)
        .await
        .expect("discard");
    fx.wait_for_parked(&[], 0).await;
    assert_eq!(fx.applied().await, ["y/1", "x/2"]);
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

/// A consumer of two lanes is two members of its group: each takes a partition, and a slow event
/// in one does not wait for the other's. Each key's events are still applied once and in order.
/// One of no lanes refuses to start.
#[tokio::test]
async fn two_lanes_handle_two_partitions_at_once_and_each_key_in_order() {
    let fx = Fixture::new().await;
    let (_, none) = fx.start_lanes(0);
    let refused = none.await.expect("join").expect_err("no lanes, no start");
    assert!(refused.to_string().contains("lanes is 0"), "{refused}");
    let (stop, task) = fx.start_lanes(2);
    // Slow events on many keys, both partitions, a round at a time until both lanes were busy at
    // once: joining a group takes a broker some time.
    let mut published = Vec::new();
    for round in 0..100 {
        let keys: Vec<String> = (0..8).map(|k| format!("k{k}/{round:03}")).collect();
        let tasks: Vec<EventRecord> = keys.iter().map(|key| fx.task(key, "slow")).collect();
        fx.publish(&tasks.iter().collect::<Vec<_>>()).await;
        published.extend(keys);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if fx.recorder.slow_at_once.load(Ordering::SeqCst) >= 2 {
            break;
        }
    }
    assert_eq!(
        fx.recorder.slow_at_once.load(Ordering::SeqCst),
        2,
        "both lanes handled an event at once, and no more than two did"
    );
    published.sort();
    let expected: Vec<&str> = published.iter().map(String::as_str).collect();
    fx.wait_for_effects(&expected).await;
    stop.cancel();
    task.await.expect("join").expect("consumer");
    let applied = fx.applied().await;
    for k in 0..8 {
        let prefix = format!("k{k}/");
        let mine: Vec<&String> = applied.iter().filter(|a| a.starts_with(&prefix)).collect();
        assert!(mine.is_sorted(), "key k{k} applied in order: {mine:?}");
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_the_event_is_handled() {
    let fx = Fixture::new().await;
    let flaky = fx.task("flaky", "flaky");
    fx.publish(&[&fx.task("before", "ok"), &flaky, &fx.task("next", "ok")])
        .await;
    let (stop, task) = fx.start();
    fx.wait_for_effects(&["before", "flaky", "next"]).await;
    assert_eq!(
        fx.recorder.flaky_failures.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

#[tokio::test]
async fn poison_and_garbage_go_to_the_dead_letter_topic_and_the_partition_goes_on() {
    let fx = Fixture::new().await;
    let rejected = fx.task("rejected", "reject");
    fx.publish(&[&rejected]).await;
    let garbage = Message {
        topic: fx.topic.clone(),
        key: "garbage".into(),
        payload: b"\x00\x00\x00\x00\x01not json".to_vec(),
        headers: Headers::default(),
    };
    fx.bus
        .publish(vec![garbage])
        .await
        .expect("publish garbage");
    fx.publish(&[&fx.task("next", "ok")]).await;
    let (stop, task) = fx.start();
    fx.wait_for_effects(&["next"]).await;

    // The rejected event and the garbage, in whichever order their partitions gave them up.
    let mut letters = fx.letters(2).await;
    letters.sort_by(|a, b| b.message.key.cmp(&a.message.key));
    let headers =
        |i: usize, name: &str| letters[i].message.headers.get_str(name).map(str::to_owned);
    assert_eq!(headers(0, "event-id"), Some(rejected.event_id.to_string()));
    assert_eq!(
        headers(0, dlq_header::REASON).as_deref(),
        Some("rejected is not acceptable")
    );
    assert_eq!(headers(0, dlq_header::ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(headers(0, dlq_header::ORIGIN_TOPIC), Some(fx.topic.clone()));
    assert_eq!(headers(0, dlq_header::CONSUMER), Some(fx.group.clone()));
    assert!(headers(0, dlq_header::ORIGIN_OFFSET).is_some());
    assert!(
        headers(1, dlq_header::REASON).is_some_and(|r| r.contains("event-id")),
        "garbage says why"
    );
    assert_eq!(letters[1].message.payload, b"\x00\x00\x00\x00\x01not json");

    // Once the cause is repaired, a redrive of the rejected event succeeds; the garbage would
    // only come back, so it stays.
    fx.recorder.accept_rejected.store(true, Ordering::SeqCst);
    let redriven = consumer::release(fx.bus.as_ref(), &letters[..1], Action::Redrive)
        .await
        .expect("redrive");
    assert_eq!(redriven, 1);
    fx.wait_for_effects(&["next", "rejected"]).await;
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

/// Only JetStream counts deliveries, so this runs on a NATS server of its own whatever the
/// run's bus; on Kafka a message that crashes every consumer stops its partition until an
/// operator skips it (`oms rewind` moves groups; the dead-letter topic is for what a consumer
/// could decide on).
#[tokio::test]
async fn a_message_that_keeps_stopping_its_consumers_is_dead_lettered_and_the_others_go_on() {
    let (_nats, config) = testing::dedicated_broker_of(BusKind::Nats);
    let fx = Fixture::on(bus::connect(&config).expect("bus")).await;
    let crasher = fx.task("crasher/1", "ok");
    fx.publish(&[
        &crasher,
        &fx.task("crasher/2", "ok"),
        &fx.task("other", "ok"),
    ])
    .await;

    // Three members of the group take it in turn and stop before acknowledging it, as a
    // process that the message crashes does.
    for n in 1..=3 {
        let mut member = fx
            .bus
            .subscribe(&fx.group, std::slice::from_ref(&fx.topic))
            .await
            .expect("subscribe");
        let delivery = tokio::time::timeout(Duration::from_secs(30), member.next())
            .await
            .expect("a delivery")
            .expect("delivery");
        assert_eq!(
            delivery.message.headers.get_str("event-id"),
            Some(crasher.event_id.to_string().as_str())
        );
        assert_eq!(delivery.delivered, n, "the broker counts its deliveries");
    }

    // The fourth delivery is one too many: the consumer sets it aside, unhandled, parks the
    // event of its key behind it, and goes on with the others.
    let (stop, task) = fx.start();
    fx.wait_for_parked(&["crasher"], 1).await;
    fx.wait_for_effects(&["other"]).await;
    let letters = fx.letters(1).await;
    let header = |name: &str| letters[0].message.headers.get_str(name).map(str::to_owned);
    assert_eq!(header("event-id"), Some(crasher.event_id.to_string()));
    assert_eq!(
        header(dlq_header::REASON).as_deref(),
        Some("delivered 4 times without being acknowledged")
    );

    // Once what crashed its consumers is repaired, a redrive applies both, in order.
    consumer::release(fx.bus.as_ref(), &letters, Action::Redrive)
        .await
        .expect("redrive");
    fx.wait_for_parked(&[], 0).await;
    assert_eq!(fx.applied().await, ["other", "crasher/1", "crasher/2"]);
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

#[tokio::test]
async fn a_rewound_group_receives_everything_again_and_applies_nothing_twice() {
    let fx = Fixture::new().await;
    let tasks: Vec<EventRecord> = ["a", "b", "c", "d"]
        .iter()
        .map(|key| fx.task(key, "ok"))
        .collect();
    fx.publish(&tasks.iter().collect::<Vec<_>>()).await;
    let (stop, task) = fx.start();
    fx.wait_for_effects(&["a", "b", "c", "d"]).await;
    stop.cancel();
    task.await.expect("join").expect("consumer");

    // An inbox that remembers nothing published before a minute from now: a rewind over these
    // events could apply them twice, and is refused.
    let refused = fx
        .bus
        .rewind(
            &fx.group,
            &fx.topic,
            None,
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .await;
    assert!(
        matches!(refused, Err(oms_saga::Error::RewindTooFar { .. })),
        "{refused:?}"
    );

    // The group's position reaches the end once its last commit lands (and the refused rewind
    // moved nothing: a group moved back would have nothing left to go back over).
    let again = testing::eventually(
        Duration::from_secs(20),
        "the group to be rewound over all four",
        || async {
            let again = fx
                .bus
                .rewind(&fx.group, &fx.topic, None, std::time::UNIX_EPOCH)
                .await
                .expect("rewind");
            (again == 4).then_some(again)
        },
    )
    .await;
    assert_eq!(again, 4);
    // The group really is back at the start: a member of it receives the first events again.
    let mut subscription = fx
        .bus
        .subscribe(&fx.group, std::slice::from_ref(&fx.topic))
        .await
        .expect("subscribe");
    let first = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("a redelivery")
        .expect("delivery");
    let handled: Vec<String> = tasks.iter().map(|t| t.event_id.to_string()).collect();
    let first_id = first
        .message
        .headers
        .get_str("event-id")
        .unwrap_or_default();
    assert!(
        handled.iter().any(|id| id == first_id),
        "an event handled before came again"
    );
    drop(subscription);

    let (stop, task) = fx.start();
    fx.publish(&[&fx.task("e", "ok")]).await;
    fx.wait_for_effects(&["a", "b", "c", "d", "e"]).await;
    stop.cancel();
    task.await.expect("join").expect("consumer");
}

/// The inbox remembers a handled event's id as long as the broker may deliver its message again,
/// and no longer: pruning deletes this group's records past `inbox_keep` and nobody else's, and a
/// consumer whose inbox would forget sooner than the bus refuses to start.
#[tokio::test]
async fn the_inbox_forgets_only_what_the_broker_can_no_longer_deliver() {
    use oms_saga::schedule::Periodic;
    let fx = Fixture::new().await;
    let consumer = |inbox_keep| {
        Consumer::new(
            fx.db.pool.clone(),
            fx.bus.clone(),
            Arc::new(JsonCodec),
            fx.recorder.clone(),
            ConsumerConfig {
                group: fx.group.clone(),
                topics: vec![fx.topic.clone()],
                inbox_keep,
                ..ConsumerConfig::default()
            },
        )
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        consumer(Duration::from_secs(3600)).run(std::future::pending::<()>()),
    )
    .await
    .expect("refused at once")
    .expect_err("an inbox that forgets sooner than the bus");
    assert!(refused.to_string().contains("inbox_keep"), "{refused}");

    let keep = fx.bus.retention();
    let records = |group: String, count: i32, age: Duration| {
        let pool = fx.db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO inbox (consumer, event_id, processed_at) \
                 SELECT $1, gen_random_uuid(), now() - make_interval(secs => $3) \
                 FROM generate_series(1, $2)",
            )
            .bind(group)
            .bind(count)
            .bind(age.as_secs_f64())
            .execute(&pool)
            .await
            .expect("inbox records");
        }
    };
    let older = keep + Duration::from_secs(3600);
    records(fx.group.clone(), 3, older).await;
    records(fx.group.clone(), 2, keep - Duration::from_secs(3600)).await;
    records("another-group".into(), 2, older).await;

    let prune = consumer(keep).pruning();
    assert_eq!(prune.round().await.expect("prune"), 3);
    assert_eq!(prune.round().await.expect("prune again"), 0);
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer, count(*) FROM inbox GROUP BY consumer ORDER BY consumer = $1",
    )
    .bind(&fx.group)
    .fetch_all(&fx.db.pool)
    .await
    .expect("inbox");
    assert_eq!(
        left,
        [("another-group".to_owned(), 2), (fx.group.clone(), 2)]
    );
}
