use clap::Parser;
use oms_saga::config::{self, ConfigArgs};
use oms_status::StatusConfig;

/// The OMS order status worker (the order service's side of the saga).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = config::load_or_dump::<StatusConfig>("status", &cli.config)? else {
        return Ok(());
    };
    oms_saga::telemetry::init_logging(&config.log)?;
    let listener = oms_saga::server::bind(config.listen).await?;
    oms_status::run(config, listener, oms_saga::server::shutdown_signal()).await?;
    Ok(())
}
