//! The notification service on a real broker, registry and database. The test plays the order
//! service: it publishes order events as its relay would, duplicates included.

use std::time::Duration;

use chrono::Utc;
use oms_notifications::{
    config::SendingConfig,
    saga::Notifier,
    send::{Dispatch, LogSender},
    testing::{REFUSAL, TestNotifications},
};
use oms_registry::testing::TestRegistry;
use oms_saga::{
    consumer::{Handler, HandlerError, dlq_header},
    event::*,
    schedule::Periodic,
    testing::{self, TopicWriter},
};
use serde_json::Value;
use uuid::Uuid;

struct Fixture {
    _registry: TestRegistry,
    /// Plays the order service.
    orders: TopicWriter,
    notifications: TestNotifications,
}

impl Fixture {
    async fn new() -> Self {
        let registry = TestRegistry::spawn().await;
        let mut bus = testing::bus_config();
        bus.registry.url = registry.url();
        let types = [
            OrderPlaced::TYPE,
            OrderStatusChanged::TYPE,
            OrderCancelled::TYPE,
        ];
        let orders = TopicWriter::new(&bus, "orders", &types).await;
        let notifications = TestNotifications::spawn(bus, &orders.topic).await;
        Self {
            _registry: registry,
            orders,
            notifications,
        }
    }

    async fn publish(&self, records: &[&EventRecord]) {
        self.orders.publish(records).await;
    }

    fn placed(&self, customer_id: Uuid) -> EventRecord {
        let placed = OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id,
            items: vec![OrderLine {
                product_id: "SKU-1".into(),
                quantity: 1,
                unit_price: "3.00".parse().expect("price"),
            }],
            total: "3.00".parse().expect("total"),
            placed_at: Utc::now(),
            placed_by: None,
            currency: "USD".into(),
            payment_method: None,
        };
        EventRecord::new(&self.orders.topic, &placed)
    }

    /// A change to the order `placed` placed, in its saga.
    fn changed(&self, placed: &EventRecord, from: OrderStatus, to: OrderStatus) -> EventRecord {
        let order: OrderPlaced = placed.payload_as().expect("placed").expect("payload");
        let changed = OrderStatusChanged {
            order_id: order.order_id,
            old_status: from,
            new_status: to,
            reason: None,
            at: Utc::now(),
        };
        EventRecord::new(&self.orders.topic, &changed).correlated(placed.correlation_id)
    }

    /// The first `count` NotificationSent events on the service's topic, with their records.
    async fn told(&self, count: usize) -> Vec<(EventRecord, NotificationSent)> {
        let records = self
            .orders
            .read(&self.notifications.config.topic, count)
            .await;
        records
            .into_iter()
            .map(|record| {
                let sent: NotificationSent = record.payload_as().expect("sent").expect("payload");
                (record, sent)
            })
            .collect()
    }

    async fn notices(&self, customer_id: Uuid, count: usize) -> Vec<Value> {
        let url = self
            .notifications
            .url(&format!("/api/notifications?customerId={customer_id}"));
        testing::eventually(
            Duration::from_secs(60),
            &format!("{count} sent notices"),
            || async {
                let page: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
                let items = page["items"].as_array()?.clone();
                (items.len() >= count && items.iter().all(|n| n["state"] == "SENT"))
                    .then_some(items)
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_redelivered_event_is_told_once_and_its_sending_is_recorded_as_an_event() {
    let fixture = Fixture::new().await;
    let customer = Uuid::new_v4();
    let placed = fixture.placed(customer);
    let reserved = fixture.changed(&placed, OrderStatus::Created, OrderStatus::Reserved);
    // The relay republishes after a crash; the broker redelivers after a rebalance.
    fixture
        .publish(&[&placed, &placed, &reserved, &placed, &reserved])
        .await;
    let completed = fixture.changed(&placed, OrderStatus::Reserved, OrderStatus::Completed);
    let paid = fixture.changed(&placed, OrderStatus::Reserved, OrderStatus::Paid);
    fixture.publish(&[&completed, &paid]).await;

    let notices = fixture.notices(customer, 3).await;
    let kinds: Vec<&str> = notices
        .iter()
        .rev()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["PLACED", "RESERVED", "PAID"],
        "COMPLETED is not news"
    );
    let sender = &fixture.notifications.sender;
    for event in [&placed, &reserved, &paid] {
        assert_eq!(sender.sent_for(event.event_id), 1);
    }
    assert_eq!(sender.counts().len(), 3);

    // Each sending is on the notifications topic, caused by the event it told.
    let mut causes = Vec::new();
    for (record, told) in fixture.told(3).await {
        assert_eq!(told.customer_id, customer);
        assert_eq!(record.correlation_id, placed.correlation_id);
        causes.push(told.causation_id);
    }
    causes.sort();
    let mut expected = vec![placed.event_id, reserved.event_id, paid.event_id];
    expected.sort();
    assert_eq!(causes, expected);
}

/// A round of sending records what became of each of its notifications: the refused one
/// FAILED with the sender's reason and no NotificationSent, the others SENT and told.
#[tokio::test]
async fn a_refused_notification_is_failed_with_its_reason_and_the_others_are_sent() {
    let fixture = Fixture::new().await;
    let (refused, served) = (Uuid::new_v4(), Uuid::new_v4());
    fixture.notifications.sender.refuse(refused);
    let (a, b) = (fixture.placed(refused), fixture.placed(served));
    let b_reserved = fixture.changed(&b, OrderStatus::Created, OrderStatus::Reserved);
    fixture.publish(&[&a, &b, &b_reserved]).await;

    let states = || async {
        sqlx::query_as::<_, (Uuid, String, Option<String>, bool)>(
            "SELECT customer_id, state, error, sent_at IS NOT NULL FROM notifications \
             ORDER BY customer_id = $1, created_at",
        )
        .bind(refused)
        .fetch_all(&fixture.notifications.db.pool)
        .await
        .expect("notifications")
    };
    let settled = testing::eventually(
        Duration::from_secs(60),
        "three settled notifications",
        || async {
            let rows = states().await;
            (rows.len() == 3
                && rows
                    .iter()
                    .all(|(_, state, ..)| state == "SENT" || state == "FAILED"))
            .then_some(rows)
        },
    )
    .await;
    assert_eq!(
        settled,
        [
            (served, "SENT".to_owned(), None, true),
            (served, "SENT".to_owned(), None, true),
            (
                refused,
                "FAILED".to_owned(),
                Some(REFUSAL.to_owned()),
                false
            ),
        ]
    );

    let mut causes = Vec::new();
    for (_, sent) in fixture.told(2).await {
        assert_eq!(sent.customer_id, served, "only what was sent is told");
        causes.push(sent.causation_id);
    }
    assert_eq!(causes, [b.event_id, b_reserved.event_id], "told in order");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&fixture.notifications.db.pool)
        .await
        .expect("outbox");
    assert_eq!(written, 2, "nothing is told of the refused one");
}

#[tokio::test]
async fn a_change_to_an_order_never_placed_is_dead_lettered_and_the_partition_goes_on() {
    let fixture = Fixture::new().await;
    let never_placed = fixture.placed(Uuid::new_v4());
    let stray = fixture.changed(&never_placed, OrderStatus::Created, OrderStatus::Reserved);
    fixture.publish(&[&stray]).await;
    let customer = Uuid::new_v4();
    let placed = fixture.placed(customer);
    fixture.publish(&[&placed]).await;
    fixture.notices(customer, 1).await;

    // The stray may be on another partition than the placed order.
    let letters = testing::dead_letters(fixture.orders.bus.as_ref(), &fixture.orders.topic).await;
    assert_eq!(letters.len(), 1);
    let reason = letters[0]
        .message
        .headers
        .get_str(dlq_header::REASON)
        .expect("reason");
    assert!(reason.contains("no OrderPlaced"), "{reason}");
    assert_eq!(fixture.notifications.sender.sent_for(stray.event_id), 0);
}

#[tokio::test]
async fn a_batch_finds_each_customer_where_one_by_one_would_and_stops_where_it_would() {
    let db = testing::database(&oms_notifications::MIGRATOR).await;
    let topic = "orders";
    let placed = |customer_id| {
        let placed = OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id,
            items: Vec::new(),
            total: "0.00".parse().expect("total"),
            placed_at: Utc::now(),
            placed_by: None,
            currency: "USD".into(),
            payment_method: None,
        };
        (placed.order_id, EventRecord::new(topic, &placed))
    };
    let reserved = |order_id| {
        let changed = OrderStatusChanged {
            order_id,
            old_status: OrderStatus::Created,
            new_status: OrderStatus::Reserved,
            reason: None,
            at: Utc::now(),
        };
        EventRecord::new(topic, &changed)
    };
    let (customer, other_customer) = (Uuid::new_v4(), Uuid::new_v4());
    let (order, placed_order) = placed(customer);
    let (other_order, placed_other) = placed(other_customer);
    let stray = reserved(Uuid::now_v7());
    let reserved_order = reserved(order);
    let reserved_other = reserved(other_order);

    // The customer of a change comes from the OrderPlaced before it in the batch; a change to an
    // order no event named stops the batch there, after two events that went fine.
    let mut tx = db.pool.begin().await.expect("begin");
    let stopped = Notifier
        .handle_all(
            &mut tx,
            &[&placed_order, &reserved_order, &stray, &placed_other],
        )
        .await;
    assert!(
        matches!(stopped, Err((2, HandlerError::Poison(_)))),
        "{stopped:?}"
    );
    tx.rollback().await.expect("rollback");

    let mut tx = db.pool.begin().await.expect("begin");
    Notifier
        .handle_all(&mut tx, &[&placed_order, &reserved_order, &placed_other])
        .await
        .expect("handled");
    tx.commit().await.expect("commit");
    // A later batch finds the customer remembered by an earlier one.
    let mut tx = db.pool.begin().await.expect("begin");
    Notifier
        .handle_all(&mut tx, &[&reserved_other])
        .await
        .expect("handled");
    tx.commit().await.expect("commit");

    let rows: Vec<(Uuid, Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT event_id, order_id, customer_id, kind FROM notifications ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("notifications");
    assert_eq!(
        rows,
        [
            (placed_order.event_id, order, customer, "PLACED".to_owned()),
            (
                reserved_order.event_id,
                order,
                customer,
                "RESERVED".to_owned()
            ),
            (
                placed_other.event_id,
                other_order,
                other_customer,
                "PLACED".to_owned()
            ),
            (
                reserved_other.event_id,
                other_order,
                other_customer,
                "RESERVED".to_owned()
            ),
        ]
    );
}

/// Notifications an earlier release left waiting (PENDING, before the queue of waiting ones
/// existed) are queued by the migration that brings the queue, and only those; a round then
/// sends them and leaves the others as they were.
#[tokio::test]
async fn the_migration_to_the_queue_queues_exactly_the_notifications_still_waiting() {
    let migrations = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/notifications"
    );
    let db = testing::database_before(std::path::Path::new(migrations), 3).await;
    let states = ["SENT", "PENDING", "SENDING", "PENDING"];
    let mut ids = Vec::new();
    for state in states {
        let (id, event_id) = (Uuid::now_v7(), Uuid::now_v7());
        sqlx::query(
            "INSERT INTO notifications (id, event_id, order_id, customer_id, kind, channel, \
             message, correlation_id, state) \
             VALUES ($1, $2, $3, $4, 'ORDER_PLACED', 'EMAIL', 'Thank you', $2, $5)",
        )
        .bind(id)
        .bind(event_id)
        .bind(Uuid::now_v7())
        .bind(Uuid::new_v4())
        .bind(state)
        .execute(&db.pool)
        .await
        .expect("a notification");
        ids.push(id);
    }
    oms_notifications::MIGRATOR
        .run(&db.pool)
        .await
        .expect("the migrations since");
    let queued: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM notifications_pending ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("the queue");
    assert_eq!(queued, [ids[1], ids[3]]);

    let dispatch = Dispatch {
        pool: db.pool.clone(),
        sender: std::sync::Arc::new(LogSender),
        topic: "notifications".into(),
        config: SendingConfig::default(),
    };
    assert_eq!(dispatch.round().await.expect("a round"), 2);
    let now: Vec<String> = sqlx::query_scalar("SELECT state FROM notifications ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("states");
    assert_eq!(now, ["SENT", "SENT", "SENDING", "SENT"]);
}
