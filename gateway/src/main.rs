use std::io::Read;

use clap::{Parser, Subcommand};
use oms_gateway::GatewayConfig;
use oms_saga::config::{self, ConfigArgs};

/// The OMS gateway.
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
    /// Serves the gateway (the default).
    Serve,
    /// Reads a password on standard input and prints its argon2 hash, for the users list.
    HashPassword,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        println!(
            "{}",
            oms_gateway::auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?
        );
        return Ok(());
    }
    let Some(config) = config::load_or_dump::<GatewayConfig>("gateway", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    let listener = oms_saga::server::bind(config.listen).await?;
    oms_gateway::run(config, listener, oms_saga::server::shutdown_signal()).await?;
    Ok(())
}
