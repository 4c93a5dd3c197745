use clap::{Parser, Subcommand};
use oms_inventory::InventoryConfig;
use oms_saga::config::{self, ConfigArgs};

/// The OMS inventory service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consumes order events, relays its own, and serves HTTP (the default).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = config::load_or_dump::<InventoryConfig>("inventory", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.database.migrate(&oms_inventory::MIGRATOR).await?;
            tracing::info!("database migrated");
        }
        Command::Serve => {
            let listener = oms_saga::server::bind(config.listen).await?;
            oms_inventory::run(config, listener, oms_saga::server::shutdown_signal()).await?;
        }
    }
    Ok(())
}
