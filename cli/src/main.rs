use std::time::Duration;

use clap::{Parser, Subcommand};
use oms_cli::CliConfig;
use oms_saga::{
    avro::AvroCodec,
    bus,
    config::{self, ConfigArgs},
    consumer::Action,
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
    /// Moves a consumer group back to the start of a topic, so that it receives everything
    /// again (stop the group's consumers first). Refused if it would deliver again a message
    /// older than the group's inbox remembers.
    Rewind {
        group: String,
        topic: String,
        /// Goes back this many messages in each partition, instead of to the start.
        #[arg(long)]
        by: Option<u64>,
        /// How long the group's inbox remembers an event: its service's `consumer.inbox_keep`
        /// (8 days unless set).
        #[arg(long, value_parser = humantime::parse_duration)]
        inbox_keep: Option<Duration>,
    },
    /// Publishes a message that is no event (raw bytes, no headers), as a broken producer
    /// would: a drill for the dead-letter path.
    Inject {
        topic: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        text: String,
    },
    /// Places orders through the gateway at a steady rate, then prints what came back and how
    /// fast (JSON).
    Load {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        gateway: String,
        #[arg(long, default_value = "alice")]
        user: String,
        #[arg(long, env = "OMS_LOAD_PASSWORD")]
        password: String,
        /// The customer the user orders for.
        #[arg(long)]
        customer: uuid::Uuid,
        /// Orders per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// A line of every order, PRODUCT:QUANTITY; may be repeated.
        #[arg(long = "line", required = true, value_parser = parse_line)]
        lines: Vec<(String, u32)>,
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
        /// What every order is paid with: a payment method id of the provider
        /// (`pm_card_chargeCustomerFail` is declined).
        #[arg(long, default_value = "pm_card_visa")]
        payment_method: String,
        /// Writes the ids of the accepted orders here, one a line.
        #[arg(long)]
        ids: Option<std::path::PathBuf>,
        /// Sends each order with an `Idempotency-Key` of its own, as a shop's front end would.
        #[arg(long)]
        idempotency_keys: bool,
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
        #[arg(long = "topic", default_values = ["orders", "inventory", "payments", "notifications"])]
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
    /// Sends dead letters back to TOPIC to be tried again: those at the given offsets of
    /// TOPIC.dlq, or all. The consumer that dead-lettered one applies it, then the later events
    /// of its order that it parked behind it.
    Redrive {
        #[command(flatten)]
        letters: Letters,
    },
    /// Gives up dead letters: the consumer that dead-lettered one applies the later events of
    /// its order that it parked behind it, and never the letter.
    Discard {
        #[command(flatten)]
        letters: Letters,
    },
}

/// The dead letters a redrive or a discard takes.
#[derive(clap::Args)]
struct Letters {
    topic: String,
    /// An offset in TOPIC.dlq, as `dlq list` shows it; may be repeated.
    #[arg(long = "offset", required_unless_present = "all")]
    offsets: Vec<i64>,
    #[arg(long, conflicts_with = "offsets")]
    all: bool,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    idle: Duration,
}

impl Letters {
    async fn release(self, bus: &dyn bus::EventBus, action: Action) -> anyhow::Result<()> {
        let sent = oms_cli::dlq_release(bus, &self.topic, &self.offsets, self.idle, action).await?;
        let done = match action {
            Action::Redrive => "redrove",
            Action::Discard => "discarded",
        };
        eprintln!("{done} {sent} dead letter(s) of {}", self.topic);
        Ok(())
    }
}

fn parse_line(text: &str) -> Result<(String, u32), String> {
    let (product, quantity) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected PRODUCT:QUANTITY"))?;
    let quantity = quantity
        .parse()
        .map_err(|e| format!("{text:?}: quantity: {e}"))?;
    Ok((product.to_owned(), quantity))
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
            command: DlqCommand::Redrive { letters },
        } => letters.release(bus.as_ref(), Action::Redrive).await?,
        Command::Dlq {
            command: DlqCommand::Discard { letters },
        } => letters.release(bus.as_ref(), Action::Discard).await?,
        Command::Rewind {
            group,
            topic,
            by,
            inbox_keep,
        } => {
            let inbox_keep =
                inbox_keep.unwrap_or(oms_saga::consumer::ConsumerConfig::default().inbox_keep);
            let not_before = std::time::SystemTime::now() - inbox_keep;
            let again = bus.rewind(&group, &topic, by, not_before).await?;
            eprintln!("{group} will receive {again} message(s) of {topic} again");
        }
        Command::Inject { topic, key, text } => {
            let message = oms_saga::bus::Message {
                topic: topic.clone(),
                key,
                payload: text.into_bytes(),
                headers: oms_saga::bus::Headers::default(),
            };
            bus.publish(vec![message]).await?;
            eprintln!("published one message that is no event to {topic}");
        }
        Command::Load {
            gateway,
            user,
            password,
            customer,
            rate,
            duration,
            lines,
            max_in_flight,
            payment_method,
            ids,
            idempotency_keys,
        } => {
            let load = oms_cli::load::Load {
                gateway,
                username: user,
                password,
                customer_id: customer,
                rate,
                duration,
                lines,
                max_in_flight,
                payment_method,
                idempotency_keys,
            };
            let report = oms_cli::load::run(&load)
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(path) = ids {
                let lines: String = report
                    .accepted_ids
                    .iter()
                    .map(|id| format!("{id}\n"))
                    .collect();
                std::fs::write(path, lines)?;
            }
            let mut out = out;
            serde_json::to_writer(&mut out, &report)?;
            std::io::Write::write_all(&mut out, b"\n")?;
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
