#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    oms_saga::service::main::<oms_registry::RegistryConfig, _, _, _>(
        "oms-registry",
        "The OMS schema registry (Confluent-compatible, Avro).",
        "registry",
        &oms_registry::MIGRATOR,
        oms_registry::run,
    )
    .await
}
