#[tokio::main]
async fn main() -> Result<(), oms_saga::service::BoxError> {
    oms_saga::service::main::<oms_inventory::InventoryConfig, _, _, _>(
        "oms-inventory",
        "The OMS inventory service.",
        "inventory",
        &oms_inventory::MIGRATOR,
        oms_inventory::run,
    )
    .await
}
