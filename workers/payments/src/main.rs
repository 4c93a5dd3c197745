#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    oms_saga::service::main::<oms_payments::PaymentsConfig, _, _, _>(
        "oms-payments",
        "The OMS payment step.",
        "payments",
        &oms_payments::MIGRATOR,
        oms_payments::run,
    )
    .await
}
