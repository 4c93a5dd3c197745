//! The saga end to end, through the gateway, on real services.

use std::time::Duration;

use oms_saga_tests::Stack;
use reqwest::StatusCode;

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline_even_across_a_restart_and_its_stock_released()
{
    let mut stack = Stack::spawn_with(
        |_| {},
        |status| {
            status.payment.timeout = Duration::from_secs(3);
            status.payment.check_interval = Duration::from_millis(200);
        },
    )
    .await;
    stack.set_stock("SKU-LATE", 10).await;
    stack.set_stock("SKU-PAID", 10).await;
    let unpaid = stack.placed(&[("SKU-LATE", 4)]).await;
    let paid = stack.placed(&[("SKU-PAID", 2)]).await;
    stack.wait_for(unpaid, "RESERVED").await;
    stack.wait_for(paid, "RESERVED").await;
    stack.move_to(paid, "PAID").await;
    stack.wait_for_stock("SKU-LATE", (6, 4, 0)).await;

    // The worker that started the clocks goes away before they run out; the deadlines wait in
    // the database for the next one.
    stack.status.service.stop().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_deadlines")
        .fetch_one(&stack.api.db.pool)
        .await
        .expect("deadlines");
    assert_eq!(pending, 2, "both reservations started a clock");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        stack.order(unpaid).await["status"],
        "RESERVED",
        "nothing fires while the worker is down"
    );
    stack.status.service.restart().await;

    let cancelled = stack.wait_for(unpaid, "CANCELLED").await;
    assert_eq!(cancelled["statusReason"], "PAYMENT_TIMEOUT");
    stack.wait_for_stock("SKU-LATE", (10, 0, 0)).await;
    // The paid order's deadline ends without effect.
    testing_wait_no_deadlines(&stack).await;
    assert_eq!(stack.order(paid).await["status"], "PAID");
    assert_eq!(stack.stock("SKU-PAID").await, (8, 2, 0));
    let (status, _) = stack.place(&[("SKU-LATE", 10)]).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the released stock can be ordered again"
    );
}

async fn testing_wait_no_deadlines(stack: &Stack) {
    oms_saga::testing::eventually(
        Duration::from_secs(30),
        "every deadline to be settled",
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_deadlines")
                .fetch_one(&stack.api.db.pool)
                .await
                .expect("deadlines");
            (left == 0).then_some(())
        },
    )
    .await
}
