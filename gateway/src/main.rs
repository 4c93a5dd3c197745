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
    /// Applies the migrations to the gateway's database (sessions and the audit log).
    Migrate,
    /// Reads a password on standard input and prints its argon2 hash, for the users list.
    HashPassword,
    /// Prints a new Ed25519 private key (PKCS#8 PEM), for `jwt.keys`.
    GenerateKey,
    /// Reads a private key PEM on standard input and prints its public half, for a key that
    /// only verifies (after a rotation).
    PublicKey,
}

fn stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => {
            let password = stdin()?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!(
                "{}",
                oms_gateway::auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?
            );
            return Ok(());
        }
        Some(Command::GenerateKey) => {
            print!(
                "{}",
                oms_gateway::keys::generate().map_err(anyhow::Error::msg)?
            );
            return Ok(());
        }
        Some(Command::PublicKey) => {
            print!(
                "{}",
                oms_gateway::keys::public_pem(&stdin()?).map_err(anyhow::Error::msg)?
            );
            return Ok(());
        }
        Some(Command::Serve | Command::Migrate) | None => {}
    }
    let Some(config) = config::load_or_dump::<GatewayConfig>("gateway", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    if let Some(Command::Migrate) = cli.command {
        config.database.migrate(&oms_gateway::MIGRATOR).await?;
        tracing::info!("database migrated");
        return Ok(());
    }
    let listener = oms_saga::server::bind(config.listen).await?;
    oms_gateway::run(config, listener, oms_saga::server::shutdown_signal()).await?;
    Ok(())
}
