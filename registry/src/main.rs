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
    let config: RegistryConfig = config::load("registry", &cli.config)?;
    if cli.config.dump_config {
        print!("{}", config::dump("registry", &config));
        return Ok(());
    }
    oms_saga::telemetry::init_logging(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let pool = sqlx::PgPool::connect(config.database.url.expose()).await?;
            oms_registry::MIGRATOR.run(&pool).await?;
            tracing::info!("registry database migrated");
        }
        Command::Serve => {
            let listener = oms_saga::server::bind(config.listen).await?;
            oms_registry::run(config, listener, oms_saga::server::shutdown_signal()).await?;
        }
    }
    Ok(())
}
