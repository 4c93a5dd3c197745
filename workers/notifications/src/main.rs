#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    oms_saga::service::main::<oms_notifications::NotificationsConfig, _, _, _>(
        "oms-notifications",
        "The OMS notification service.",
        "notifications",
        &oms_notifications::MIGRATOR,
        oms_notifications::run,
    )
    .await
}
