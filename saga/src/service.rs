//! What a service binary does, written once: parse the shared flags, resolve the config (or dump
//! it), start logging, then either apply the migrations or serve until SIGINT or SIGTERM. A
//! service's `main` is one call to [`main`].

use std::{future::Future, net::SocketAddr};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::TcpListener;

use crate::config::{self, ConfigArgs, DatabaseConfig, LogConfig};

/// The parts of a service's config that starting it needs.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default {
    fn listen(&self) -> SocketAddr;
    fn database(&self) -> &DatabaseConfig;
    fn log(&self) -> &LogConfig;
}

/// Implements [`ServiceConfig`] for a config with `listen`, `database` and `log` fields, the
/// shape every service's config has.
#[macro_export]
macro_rules! service_config {
    ($config:ty) => {
        impl $crate::service::ServiceConfig for $config {
            fn listen(&self) -> ::std::net::SocketAddr {
                self.listen
            }

            fn database(&self) -> &$crate::config::DatabaseConfig {
                &self.database
            }

            fn log(&self) -> &$crate::config::LogConfig {
                &self.log
            }
        }
    };
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service (the default).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the binary `name` of the service whose config is the `[section]` section.
pub async fn main<C, F, Fut, E>(
    name: &'static str,
    about: &'static str,
    section: &str,
    migrator: &sqlx::migrate::Migrator,
    serve: F,
) -> Result<(), BoxError>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, crate::server::ShutdownSignal) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let command = Cli::command()
        .name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let cli = Cli::from_arg_matches(&command.get_matches())?;
    let Some(config) = config::load_or_dump::<C>(section, &cli.config)? else {
        return Ok(());
    };
    crate::telemetry::init_logging(config.log())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.database().migrate(migrator).await?;
            tracing::info!("database migrated");
        }
        Command::Serve => {
            let listener = crate::server::bind(config.listen()).await?;
            serve(config, listener, crate::server::shutdown_signal()).await?;
        }
    }
    Ok(())
}
