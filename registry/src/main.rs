use clap::{Parser, Subcommand};
use oms_registry::RegistryConfig;
use oms_saga::config::{self, ConfigArgs};

/// The OMS schema registry (Confluent-compatible, Avro).
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
    /// Serves the registry (the default).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = config::load_or_dump::<RegistryConfig>("registry", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.database.migrate(&oms_registry::MIGRATOR).await?;
            tracing::info!("database migrated");
        }
        Command::Serve => {
            let listener = oms_saga::server::bind(config.listen).await?;
            oms_registry::run(config, listener, oms_saga::server::shutdown_signal()).await?;
        }
    }
    Ok(())
}
