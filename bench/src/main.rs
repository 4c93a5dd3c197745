use std::{collections::BTreeMap, future::Future, path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use oms_bench::{
    Error, Result, ceiling, cpu,
    load::{self, Target},
    report::{self, Machine, Phase, Report},
    saga::Follower,
    writes,
};
use oms_cli::CliConfig;
use oms_saga::{
    avro::AvroCodec,
    bus,
    config::{self, ConfigArgs, DatabaseConfig},
};
use sqlx::{PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

/// The OMS benchmark harness (scripts/bench runs it on both buses).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measures the running stack of the config's `[cli]` section and prints a JSON report.
    Run(Box<Run>),
    /// Prints the markdown table of reports (JSON files), one column each.
    Table { reports: Vec<PathBuf> },
}

#[derive(clap::Args)]
struct Run {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    api: String,
    #[arg(long, default_value = "alice")]
    username: String,
    #[arg(long, env = "OMS_BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// The customer the user orders for.
    #[arg(long)]
    customer: Uuid,
    /// A product with stock for every order of the run.
    #[arg(long)]
    product: String,
    /// Orders a second of the open loop.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    open_for: Duration,
    /// Clients of the closed loops, the reads and the PostgreSQL ceiling.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    closed_for: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    reads_for: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ceiling_for: Duration,
    /// Messages through the broker for its ceiling.
    #[arg(long, default_value_t = 20_000)]
    broker_messages: u64,
    /// How long the sagas of a phase may take to complete after it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// A component's version, as NAME=VERSION; may be repeated.
    #[arg(long = "component", value_name = "NAME=VERSION")]
    components: Vec<String>,
}

#[tokio::main]
async fn main() {
    let outcome = match Cli::parse().command {
        Command::Run(run) => measure(*run).await.map(|report| {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
        }),
        Command::Table { reports } => table(&reports).map(|table| print!("{table}")),
    };
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// One phase: what `load` placed, how their sagas went, and what the machine and PostgreSQL
/// spent from its start until they settled (or `settle` ran out).
async fn phase(
    server: &PgPool,
    services: &BTreeMap<String, String>,
    follower: &Follower,
    settle: Duration,
    load: impl Future<Output = load::Placed>,
) -> Result<Phase> {
    let writes = writes::Mark::after_checkpoint(server).await?;
    let cpu = cpu::Snapshot::now();
    let placed = load.await;
    let saga = follower.saga(&placed.orders, settle).await;
    let cpu = cpu.until(&cpu::Snapshot::now(), saga.notified, services);
    let writes = writes.until(&writes::Mark::now(server).await?, saga.notified);
    Ok(Phase {
        placed,
        saga,
        cpu,
        writes,
    })
}

/// The service that owns each database of the config, by the database's name.
fn services_by_database(config: &CliConfig) -> Result<BTreeMap<String, String>> {
    let databases = &config.databases;
    let mut services = BTreeMap::new();
    for (service, url) in [
        ("orders", &databases.orders),
        ("inventory", &databases.inventory),
        ("notifications", &databases.notifications),
        ("payments", &databases.payments),
    ] {
        let Some(url) = url else { continue };
        let options: PgConnectOptions = url
            .expose()
            .parse()
            .map_err(|e| Error::Setup(format!("databases.{service}: {e}")))?;
        if let Some(database) = options.get_database() {
            services.insert(database.to_owned(), service.to_owned());
        }
    }
    Ok(services)
}

fn table(paths: &[PathBuf]) -> Result<String> {
    let mut reports = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
        reports.push(
            serde_json::from_str(&text)
                .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?,
        );
    }
    Ok(report::markdown(&reports))
}

async fn measure(run: Run) -> Result<Report> {
    let config: CliConfig = config::load("cli", &run.config)?;
    let step = |what: &str| eprintln!("==> {what}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(run.clients * 4)
        .build()?;
    let gateway = Target::gateway(
        &http,
        &run.gateway,
        &run.username,
        &run.password,
        run.customer,
    )
    .await?;
    let api = Target::api(&run.api, run.customer);
    let bus = bus::connect(&config.bus)?;
    let codec = Arc::new(AvroCodec::new(&config.bus.registry)?);
    let orders_database = config
        .databases
        .orders
        .as_ref()
        .ok_or_else(|| Error::Setup("the config names no databases.orders".into()))?;
    // Any database of the server will do: what it wrote is counted for the whole server.
    let server = DatabaseConfig {
        url: orders_database.clone(),
        max_connections: 1,
        ..DatabaseConfig::default()
    }
    .connect_lazy()?;
    let services = services_by_database(&config)?;
    let follower = Follower::start(
        bus.clone(),
        codec,
        &["orders".to_owned(), "notifications".to_owned()],
    )
    .await?;

    step(&format!(
        "open loop: {} orders/s for {:?}",
        run.rate, run.open_for
    ));
    let open_loop = phase(
        &server,
        &services,
        &follower,
        run.settle,
        load::open_loop(
            &http,
            &gateway,
            &run.product,
            run.rate,
            run.open_for,
            10_000,
        ),
    )
    .await?;

    step(&format!(
        "closed loop: {} clients for {:?} through the gateway",
        run.clients, run.closed_for
    ));
    let closed_loop = phase(
        &server,
        &services,
        &follower,
        run.settle,
        load::closed_loop(&http, &gateway, &run.product, run.clients, run.closed_for),
    )
    .await?;

    step("closed loop straight to the API");
    let closed_loop_api =
        load::closed_loop(&http, &api, &run.product, run.clients, run.closed_for).await;
    // The reads measure a stack that has settled, as far as it does in a while.
    follower
        .saga(
            &closed_loop_api.orders,
            run.settle.min(Duration::from_secs(20)),
        )
        .await;

    let order = open_loop
        .placed
        .orders
        .first()
        .map(|(id, _)| *id)
        .ok_or_else(|| Error::Setup("the open loop placed no order".into()))?;
    step("cached reads through the gateway, then straight to the API");
    let reads_gateway =
        load::cached_reads(&http, &gateway, order, run.clients, run.reads_for).await;
    let reads_api = load::cached_reads(&http, &api, order, run.clients, run.reads_for).await;
    // What the gateway adds to a request, rather than what queueing for two saturated cores
    // adds to it.
    step("one client's cached reads through the gateway, then straight to the API");
    let lone_reads_gateway = load::cached_reads(&http, &gateway, order, 1, run.reads_for).await;
    let lone_reads_api = load::cached_reads(&http, &api, order, 1, run.reads_for).await;

    step("the PostgreSQL ceiling");
    let postgres_ceiling =
        ceiling::postgres(orders_database.expose(), run.clients, run.ceiling_for).await?;
    step("the broker ceiling, with messages the size of an OrderPlaced");
    let broker_ceiling = ceiling::broker(
        bus.clone(),
        6,
        run.broker_messages,
        follower
            .order_placed_size()
            .ok_or_else(|| Error::Setup("no OrderPlaced was read".into()))?,
        500,
        Duration::from_secs(120),
    )
    .await?;

    let mut components: BTreeMap<String, String> = run
        .components
        .iter()
        .filter_map(|c| c.split_once('='))
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect();
    components.insert("oms".into(), env!("CARGO_PKG_VERSION").into());
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(Report {
        bus: config.bus.kind.as_str().into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::this(),
        components,
        open_loop_rate: run.rate,
        completed_to_postgres: ratio(
            closed_loop.saga.completed_per_second,
            postgres_ceiling.per_second,
        ),
        accepted_to_postgres: ratio(
            closed_loop_api.accepted_per_second,
            postgres_ceiling.per_second,
        ),
        completed_to_broker: ratio(
            closed_loop.saga.completed_per_second,
            broker_ceiling.per_second,
        ),
        gateway_added_p50_ms: lone_reads_gateway.latency_ms.p50 - lone_reads_api.latency_ms.p50,
        gateway_added_p50_loaded_ms: reads_gateway.latency_ms.p50 - reads_api.latency_ms.p50,
        open_loop,
        closed_loop,
        closed_loop_api,
        reads_gateway,
        reads_api,
        lone_reads_gateway,
        lone_reads_api,
        postgres_ceiling,
        broker_ceiling,
    })
}
