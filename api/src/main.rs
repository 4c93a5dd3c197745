use clap::{Parser, Subcommand};
use oms_api::ApiConfig;
use oms_saga::config::{self, ConfigArgs};

/// The OMS order service.
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
    /// Serves the API and runs the outbox relay (the default).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = config::load_or_dump::<ApiConfig>("api", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.database.migrate(&oms_api::MIGRATOR).await?;
            tracing::info!("database migrated");
        }
        Command::Serve => {
            let listener = oms_saga::server::bind(config.listen).await?;
            oms_api::run(config, listener, oms_saga::server::shutdown_signal()).await?;
        }
    }
    Ok(())
}
