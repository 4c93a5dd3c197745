use std::time::Duration;

use clap::{Parser, Subcommand};
use oms_cli::CliConfig;
use oms_saga::{
    bus,
    config::{self, ConfigArgs},
    event::JsonCodec,
};

/// The OMS command line.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints every event on TOPIC, from the start, as JSON lines (key, headers, decoded body).
    Tail {
        topic: String,
        /// Stops after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stops when no event came for this long (e.g. 5s); follows forever without it.
        #[arg(long, value_parser = humantime::parse_duration)]
        idle: Option<Duration>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: CliConfig = config::load("cli", &cli.config)?;
    if cli.config.dump_config {
        print!("{}", config::dump("cli", &config));
        return Ok(());
    }
    match cli.command {
        Command::Tail { topic, count, idle } => {
            let bus = bus::connect(&config.bus)?;
            oms_cli::tail(
                bus.as_ref(),
                &JsonCodec,
                &topic,
                count,
                idle,
                std::io::stdout().lock(),
            )
            .await?;
        }
    }
    Ok(())
}
