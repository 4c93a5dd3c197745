//! The inventory beside the real order service: orders placed and cancelled through its API move
//! stock, over the real broker and registry.

use std::time::Duration;

use oms_api::testing::TestApi;
use oms_inventory::{stock::Stock, testing::TestInventory};
use oms_saga::testing;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn an_order_placed_through_the_api_is_reserved_and_its_cancellation_releases_the_stock() {
    let api = TestApi::spawn().await;
    api.price(&[("A", 300, "USD", true)]).await;
    let inventory = TestInventory::spawn(api.config.bus.clone(), &api.config.topics.orders).await;
    let http = reqwest::Client::new();
    let set = http
        .put(inventory.url("/api/inventory/A"))
        .header("x-oms-role", "admin")
        .json(&json!({ "available": 5 }))
        .send()
        .await
        .expect("stock");
    assert_eq!(set.status(), 200);
    let stock_of_a = || async {
        let response = http
            .get(inventory.url("/api/inventory/A"))
            .send()
            .await
            .expect("get");
        response.json::<Stock>().await.expect("stock")
    };

    let order: Value = http
        .post(api.url("/api/orders"))
        .json(&json!({ "customerId": Uuid::new_v4(), "items": [{ "productId": "A", "quantity": 2 }], "paymentMethod": "pm_card_visa" }))
        .send()
        .await
        .expect("place")
        .json()
        .await
        .expect("order");
    let id = order["id"].as_str().expect("id");
    testing::eventually(Duration::from_secs(30), "the reservation", || async {
        let a = stock_of_a().await;
        (a.available == 3 && a.reserved == 2).then_some(())
    })
    .await;

    let reserve = http
        .put(api.url(&format!("/api/orders/{id}/status")))
        .json(&json!({ "status": "RESERVED" }));
    assert_eq!(reserve.send().await.expect("reserve").status(), 200);
    let cancel = http
        .post(api.url(&format!("/api/orders/{id}/cancel")))
        .json(&json!({ "reason": "changed my mind" }));
    assert_eq!(cancel.send().await.expect("cancel").status(), 200);
    testing::eventually(Duration::from_secs(30), "the release", || async {
        let a = stock_of_a().await;
        (a.available == 5 && a.reserved == 0 && a.sold == 0).then_some(())
    })
    .await;
}
