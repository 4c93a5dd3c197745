//! The status worker beside a real order API: the inventory's answers move orders, through the
//! order service's state machine, outbox and cache.

use std::time::Duration;

use chrono::Utc;
use oms_api::testing::TestApi;
use oms_saga::{
    consumer::dlq_header,
    event::*,
    testing::{self, TopicWriter},
};
use oms_status::testing::TestStatus;
use serde_json::{Value, json};
use uuid::Uuid;

struct Fixture {
    api: TestApi,
    _status: TestStatus,
    /// Plays the inventory and the payment step.
    inventory: TopicWriter,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let api = TestApi::spawn().await;
        api.price(&[("A", 200, "USD", true)]).await;
        // The inventory's answers and the payment step's, on one topic the worker consumes.
        let answers = [
            StockReserved::TYPE,
            StockRejected::TYPE,
            ProductPriced::TYPE,
            PaymentAuthorized::TYPE,
            PaymentDeclined::TYPE,
        ];
        let inventory = TopicWriter::new(&api.config.bus, "inventory", &answers).await;
        let status = TestStatus::spawn(&api.config, &inventory.topic, |_| {}).await;
        Self {
            api,
            _status: status,
            inventory,
            http: reqwest::Client::new(),
        }
    }

    async fn place(&self) -> Uuid {
        let order: Value = self
            .http
            .post(self.api.url("/api/orders"))
            .json(&json!({ "customerId": Uuid::new_v4(), "items": [{ "productId": "A", "quantity": 1 }], "paymentMethod": "pm_card_visa" }))
            .send()
            .await
            .expect("place")
            .json()
            .await
            .expect("order");
        order["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("id")
    }

    async fn order(&self, id: Uuid) -> Value {
        self.http
            .get(self.api.url(&format!("/api/orders/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("order")
    }

    async fn answer<E: Event>(&self, answer: &E) -> EventRecord {
        let record = EventRecord::new(&self.inventory.topic, answer);
        self.inventory.publish(&[&record]).await;
        record
    }

    async fn wait_for_status(&self, id: Uuid, status: &str) -> Value {
        testing::eventually(
            Duration::from_secs(30),
            &format!("order {id} to be {status}"),
            || async {
                let order = self.order(id).await;
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    async fn outbox(&self, id: Uuid) -> Vec<(String, Option<Uuid>)> {
        sqlx::query_as(
            "SELECT event_type, causation_id FROM outbox WHERE message_key = $1 ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.api.db.pool)
        .await
        .expect("outbox")
    }
}

fn reserved(order_id: Uuid) -> StockReserved {
    StockReserved {
        order_id,
        items: vec![StockLine {
            product_id: "A".into(),
            quantity: 1,
        }],
        at: Utc::now(),
    }
}

#[tokio::test]
async fn a_reservation_makes_the_order_reserved_once_and_the_cached_read_shows_it() {
    let fx = Fixture::new().await;
    let id = fx.place().await;
    assert_eq!(
        fx.order(id).await["status"],
        "CREATED",
        "now cached as CREATED"
    );

    let answer = fx.answer(&reserved(id)).await;
    let order = fx.wait_for_status(id, "RESERVED").await;
    assert_eq!(order["version"], 2);
    // The same answer again changes nothing.
    fx.inventory.publish(&[&answer]).await;
    let marker = fx.place().await;
    fx.answer(&reserved(marker)).await;
    fx.wait_for_status(marker, "RESERVED").await;
    let events = fx.outbox(id).await;
    assert_eq!(
        events,
        [
            ("OrderPlaced".to_owned(), None),
            ("OrderStatusChanged".to_owned(), Some(answer.event_id))
        ],
        "one change, caused by the answer"
    );
}

#[tokio::test]
async fn the_catalogs_prices_reach_the_order_service_and_price_its_next_orders() {
    let fx = Fixture::new().await;
    let priced = |version: i64, price_minor: i64| ProductPriced {
        product_id: "A".into(),
        name: "A mug".into(),
        price_minor,
        currency: "USD".into(),
        active: true,
        version,
        at: Utc::now(),
    };
    let before: Value = fx.order(fx.place().await).await;
    assert_eq!(before["total"], "2.00");
    // A newer price, then a stale one arriving late: the newer stays.
    let newer = EventRecord::new(&fx.inventory.topic, &priced(i64::MAX - 1, 350));
    let stale = EventRecord::new(&fx.inventory.topic, &priced(1, 1));
    fx.inventory.publish(&[&newer, &stale]).await;
    testing::eventually(Duration::from_secs(30), "the new price", || async {
        let order = fx.order(fx.place().await).await;
        (order["total"] == "3.50").then_some(())
    })
    .await;
    let kept = oms_api::prices::lookup(&fx.api.db.pool, &["A"])
        .await
        .expect("prices");
    assert_eq!(kept["A"].price_minor, 350);
}

#[tokio::test]
async fn an_authorized_payment_makes_the_reserved_order_paid() {
    let fx = Fixture::new().await;
    let id = fx.place().await;
    fx.answer(&reserved(id)).await;
    fx.wait_for_status(id, "RESERVED").await;
    let authorized = fx
        .answer(&PaymentAuthorized {
            order_id: id,
            intent_id: "pi_test".into(),
            amount_minor: 200,
            currency: "USD".into(),
            at: Utc::now(),
        })
        .await;
    fx.wait_for_status(id, "PAID").await;
    let events = fx.outbox(id).await;
    assert_eq!(
        events.last(),
        Some(&("OrderStatusChanged".to_owned(), Some(authorized.event_id)))
    );
}

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_releases_its_stock() {
    let fx = Fixture::new().await;
    let id = fx.place().await;
    fx.answer(&reserved(id)).await;
    fx.wait_for_status(id, "RESERVED").await;
    let declined = fx
        .answer(&PaymentDeclined {
            order_id: id,
            code: "card_declined".into(),
            at: Utc::now(),
        })
        .await;
    let order = fx.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["statusReason"], "PAYMENT_DECLINED");
    let events = fx.outbox(id).await;
    assert_eq!(
        events[events.len() - 2..],
        [
            ("OrderStatusChanged".to_owned(), Some(declined.event_id)),
            ("OrderCancelled".to_owned(), Some(declined.event_id))
        ],
        "the cancellation that releases the stock"
    );
}

#[tokio::test]
async fn a_rejection_cancels_the_order_with_out_of_stock_and_triggers_compensation() {
    let fx = Fixture::new().await;
    let id = fx.place().await;
    let rejection = StockRejected {
        order_id: id,
        lines: vec![ShortLine {
            product_id: "A".into(),
            requested: 1,
            available: 0,
        }],
        at: Utc::now(),
    };
    let answer = fx.answer(&rejection).await;
    let order = fx.wait_for_status(id, "CANCELLED").await;
    assert_eq!(order["statusReason"], "OUT_OF_STOCK");
    let kinds: Vec<String> = fx
        .outbox(id)
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(
        kinds,
        ["OrderPlaced", "OrderStatusChanged", "OrderCancelled"]
    );
    assert!(
        fx.outbox(id).await[1..]
            .iter()
            .all(|(_, cause)| *cause == Some(answer.event_id))
    );
}

#[tokio::test]
async fn an_answer_for_an_order_that_moved_on_is_ignored_and_one_for_no_order_is_dead_lettered() {
    let fx = Fixture::new().await;
    let id = fx.place().await;
    let cancel = fx
        .http
        .post(fx.api.url(&format!("/api/orders/{id}/cancel")))
        .json(&json!({ "reason": "too slow" }));
    assert_eq!(cancel.send().await.expect("cancel").status(), 200);

    fx.answer(&reserved(id)).await;
    let nobody = fx.answer(&reserved(Uuid::new_v4())).await;
    let letters = testing::dead_letters(fx.inventory.bus.as_ref(), &fx.inventory.topic).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].message.headers.get_str(header::EVENT_ID),
        Some(nobody.event_id.to_string().as_str())
    );
    assert!(
        letters[0]
            .message
            .headers
            .get_str(dlq_header::REASON)
            .is_some_and(|r| r.contains("no order"))
    );
    let order = fx.order(id).await;
    assert_eq!(
        (order["status"].as_str(), order["statusReason"].as_str()),
        (Some("CANCELLED"), Some("too slow"))
    );
}

#[tokio::test]
async fn answers_arriving_together_move_each_order_start_each_clock_and_refresh_each_cached_copy() {
    let fx = Fixture::new().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = fx.place().await;
        assert_eq!(fx.order(id).await["status"], "CREATED", "now cached");
        ids.push(id);
    }
    let rejection = StockRejected {
        order_id: ids[1],
        lines: vec![ShortLine {
            product_id: "A".into(),
            requested: 1,
            available: 0,
        }],
        at: Utc::now(),
    };
    let answers = [
        EventRecord::new(&fx.inventory.topic, &reserved(ids[0])),
        EventRecord::new(&fx.inventory.topic, &rejection),
        EventRecord::new(&fx.inventory.topic, &reserved(ids[2])),
        EventRecord::new(&fx.inventory.topic, &reserved(ids[3])),
    ];
    fx.inventory
        .publish(&answers.iter().collect::<Vec<_>>())
        .await;

    for (id, status) in ids
        .iter()
        .zip(["RESERVED", "CANCELLED", "RESERVED", "RESERVED"])
    {
        let order = fx.wait_for_status(*id, status).await;
        assert_eq!(order["version"], 2, "{id}");
    }
    let mut clocks: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT order_id, cause FROM payment_deadlines")
            .fetch_all(&fx.api.db.pool)
            .await
            .expect("deadlines");
    clocks.sort();
    let mut expected: Vec<(Uuid, Uuid)> = [0, 2, 3]
        .into_iter()
        .map(|i| (ids[i], answers[i].event_id))
        .collect();
    expected.sort();
    assert_eq!(
        clocks, expected,
        "a clock for each reserved order, started by its answer"
    );
}
