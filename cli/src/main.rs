use std::time::Duration;

use clap::{Parser, Subcommand};
use oms_cli::CliConfig;
use oms_saga::{
    avro::AvroCodec,
    bus,
    config::{self, ConfigArgs},
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
    /// The schema registry.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// Dead letters: events a consumer could not handle.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Checks the saga's invariants against the services' databases and the dead-letter topics;
    /// prints each with its figures, then PASS or FAIL (exit status 1).
    Check {
        /// Keeps checking until the invariants hold or this long passed (the saga may still be
        /// settling).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Dead letters injected on purpose, which do not count against the verdict.
        #[arg(long, default_value_t = 0)]
        expect_dead_letters: usize,
        /// The topics whose dead letters are counted.
        #[arg(long = "topic", default_values = ["orders", "inventory", "notifications"])]
        topics: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Lists the subjects.
    Subjects,
    /// Shows one version of a subject: its id and schema.
    Show {
        subject: String,
        #[arg(default_value = "latest")]
        version: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Prints the dead letters of TOPIC (from TOPIC.dlq) as JSON lines.
    List {
        topic: String,
        /// Stops reading when no letter came for this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        idle: Duration,
    },
    /// Sends dead letters back to TOPIC: those at the given offsets of TOPIC.dlq, or all.
    Redrive {
        topic: String,
        /// An offset in TOPIC.dlq, as `dlq list` shows it; may be repeated.
        #[arg(long = "offset", required_unless_present = "all")]
        offsets: Vec<i64>,
        #[arg(long, conflicts_with = "offsets")]
        all: bool,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        idle: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(config) = config::load_or_dump::<CliConfig>("cli", &cli.config)? else {
        return Ok(());
    };
    let bus = bus::connect(&config.bus)?;
    let codec = AvroCodec::new(&config.bus.registry)?;
    let out = std::io::stdout().lock();
    match cli.command {
        Command::Tail { topic, count, idle } => {
            oms_cli::tail(bus.as_ref(), &codec, &topic, count, idle, out).await?;
        }
        Command::Schemas {
            command: SchemasCommand::Subjects,
        } => {
            oms_cli::schema_subjects(&config.bus.registry, out).await?;
        }
        Command::Schemas {
            command: SchemasCommand::Show { subject, version },
        } => {
            oms_cli::schema_show(&config.bus.registry, &subject, &version, out).await?;
        }
        Command::Dlq {
            command: DlqCommand::List { topic, idle },
        } => {
            oms_cli::dlq_list(bus.as_ref(), &codec, &topic, idle, out).await?;
        }
        Command::Dlq {
            command:
                DlqCommand::Redrive {
                    topic,
                    offsets,
                    all: _,
                    idle,
                },
        } => {
            let sent = oms_cli::dlq_redrive(bus.as_ref(), &topic, &offsets, idle).await?;
            eprintln!("redrove {sent} dead letter(s) to {topic}");
        }
        Command::Check {
            wait,
            expect_dead_letters,
            topics,
        } => {
            let holds = oms_cli::check(
                &config,
                bus.as_ref(),
                wait,
                expect_dead_letters,
                &topics,
                out,
            )
            .await?;
            if !holds {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
