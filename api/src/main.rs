#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    oms_saga::service::main::<oms_api::ApiConfig, _, _, _>(
        "oms-api",
        "The OMS order service.",
        "api",
        &oms_api::MIGRATOR,
        oms_api::run,
    )
    .await
}
