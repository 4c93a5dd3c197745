#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    // The worker keeps its state (payment deadlines) in the order service's database, whose
    // migrations are the order service's.
    oms_saga::service::main::<oms_status::StatusConfig, _, _, _>(
        "oms-status",
        "The OMS order status worker (the order service's side of the saga).",
        "status",
        &oms_api::MIGRATOR,
        oms_status::run,
    )
    .await
}
