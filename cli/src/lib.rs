//! The OMS command line.
//!
//! - `oms tail TOPIC`: the console consumer; each event as one JSON line with its key, headers
//!   and decoded body.
//! - `oms dlq list TOPIC`: the dead letters of TOPIC, with why and where from.
//! - `oms dlq redrive TOPIC`: sends chosen dead letters (or all) back to TOPIC, to be tried again;
//!   `oms dlq discard TOPIC`: gives them up. Either releases the later events of the same order
//!   that the consumer parked behind each letter.
//! - `oms schemas subjects`, `oms schemas show SUBJECT [VERSION]`: browses the schema registry.
//! - `oms check`: the saga's invariants, read from the databases and dead-letter topics
//!   ([`check`]).
//! - `oms rewind GROUP TOPIC`: a consumer group receives a topic again; `oms inject TOPIC`
//!   publishes bytes that are no event. Drills for redelivery and dead letters.
//! - `oms load`: places orders through the gateway at a steady rate ([`load`]).

pub mod check;
pub mod load;

use std::time::Duration;

use oms_saga::{
    bus::{Delivery, EventBus},
    consumer,
    event::{Codec, header},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Saga(#[from] oms_saga::Error),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("no dead letter at offsets {offsets:?} of {topic}.dlq")]
    NoSuchLetters { topic: String, offsets: Vec<i64> },
    #[error("schema registry at {url}: {message}")]
    Registry { url: String, message: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} is not set: the checker reads every service's database")]
    NotConfigured(&'static str),
    #[error("the payment provider's API: {0}")]
    Stripe(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `[cli]` section, or `OMS_CLI__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CliConfig {
    pub bus: oms_saga::config::BusConfig,
    /// The services' databases, for `oms check`.
    pub databases: check::Databases,
    /// The payment provider's API, for `oms check` to compare its ledger with the orders;
    /// without it, the ledger is not checked.
    pub stripe: Option<oms_payments::StripeConfig>,
}

/// The invariants `snapshot` breaks now.
fn broken(snapshot: &check::Snapshot, expected_dead_letters: usize) -> Vec<&'static str> {
    check::evaluate(snapshot, chrono::Utc::now(), expected_dead_letters)
        .into_iter()
        .filter(|v| !v.holds)
        .map(|v| v.invariant)
        .collect()
}

/// One delivery as a JSON line. A body the codec cannot read is shown raw, with the reason,
/// rather than skipped: a console consumer is for seeing what is really on the topic.
pub async fn render(delivery: &Delivery, codec: &dyn Codec) -> Value {
    let message = &delivery.message;
    let headers: Map<String, Value> = message
        .headers
        .0
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                Value::from(String::from_utf8_lossy(value).into_owned()),
            )
        })
        .collect();
    let event_type = message
        .headers
        .get_str(header::EVENT_TYPE)
        .unwrap_or_default();
    let mut line = json!({
        "topic": message.topic,
        "partition": delivery.partition,
        "offset": delivery.offset,
        "key": message.key,
        "headers": headers,
    });
    match codec.decode(event_type, &message.payload).await {
        Ok(event) => line["event"] = event,
        Err(reason) => {
            line["undecodable"] = json!({ "reason": reason.reason, "raw": String::from_utf8_lossy(&message.payload) });
        }
    }
    line
}

const JOIN_GRACE: Duration = Duration::from_secs(10);

/// Prints `topic` from its start, one line per event, until `count` events were printed or none
/// came for `idle`. Returns how many were printed.
pub async fn tail(
    bus: &dyn EventBus,
    codec: &dyn Codec,
    topic: &str,
    count: Option<usize>,
    idle: Option<Duration>,
    mut out: impl std::io::Write,
) -> Result<usize> {
    let mut subscription = bus.browse(&[topic.to_owned()]).await?;
    let mut printed = 0;
    while count.is_none_or(|c| printed < c) {
        // Joining the group takes a few seconds; the idle clock starts after the first event.
        let wait = idle.map(|idle| {
            if printed == 0 {
                idle + JOIN_GRACE
            } else {
                idle
            }
        });
        let next = match wait {
            Some(wait) => match tokio::time::timeout(wait, subscription.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => subscription.next().await,
        };
        writeln!(out, "{}", render(&next?, codec).await)?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

/// Prints the dead letters of `topic` as JSON lines; returns them for a redrive.
pub async fn dlq_list(
    bus: &dyn EventBus,
    codec: &dyn Codec,
    topic: &str,
    idle: Duration,
    mut out: impl std::io::Write,
) -> Result<Vec<Delivery>> {
    let letters = consumer::dead_letters(bus, topic, idle).await?;
    for letter in &letters {
        writeln!(out, "{}", render(letter, codec).await)?;
    }
    Ok(letters)
}

/// Redrives or discards the dead letters of `topic` at `offsets` of its dead-letter topic, or
/// all of them: either releases the events their consumers parked behind them.
pub async fn dlq_release(
    bus: &dyn EventBus,
    topic: &str,
    offsets: &[i64],
    idle: Duration,
    action: consumer::Action,
) -> Result<usize> {
    let letters = consumer::dead_letters(bus, topic, idle).await?;
    let chosen: Vec<Delivery> = if offsets.is_empty() {
        letters
    } else {
        let missing: Vec<i64> = offsets
            .iter()
            .copied()
            .filter(|o| !letters.iter().any(|l| l.offset == *o))
            .collect();
        if !missing.is_empty() {
            return Err(Error::NoSuchLetters {
                topic: topic.to_owned(),
                offsets: missing,
            });
        }
        letters
            .into_iter()
            .filter(|l| offsets.contains(&l.offset))
            .collect()
    };
    Ok(consumer::release(bus, &chosen, action).await?)
}

/// GETs a registry path and returns its JSON, or the registry's own error message.
async fn registry_get(registry: &oms_saga::avro::RegistryConfig, path: &str) -> Result<Value> {
    let url = format!("{}{path}", registry.url.trim_end_matches('/'));
    let fail = |message: String| Error::Registry {
        url: registry.url.clone(),
        message,
    };
    let client = reqwest::Client::builder()
        .timeout(registry.timeout)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(fail(
            body["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_owned),
        ))
    }
}

/// The registry's subjects, one per line.
pub async fn schema_subjects(
    registry: &oms_saga::avro::RegistryConfig,
    mut out: impl std::io::Write,
) -> Result<()> {
    for subject in registry_get(registry, "/subjects")
        .await?
        .as_array()
        .into_iter()
        .flatten()
    {
        writeln!(out, "{}", subject.as_str().unwrap_or_default())?;
    }
    Ok(())
}

/// One version of a subject (`latest` by default), with its schema as readable JSON.
pub async fn schema_show(
    registry: &oms_saga::avro::RegistryConfig,
    subject: &str,
    version: &str,
    mut out: impl std::io::Write,
) -> Result<()> {
    let mut found =
        registry_get(registry, &format!("/subjects/{subject}/versions/{version}")).await?;
    if let Some(text) = found["schema"].as_str() {
        found["schema"] = serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
    }
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&found).unwrap_or_default()
    )?;
    Ok(())
}

/// Checks the invariants, the dead letters of `topics` counted among them, waiting up to `wait`
/// for them to hold (the saga may still be settling, and a progress line says so). Prints the
/// report; returns whether everything holds.
pub async fn check(
    config: &CliConfig,
    bus: &dyn EventBus,
    wait: Duration,
    expected_dead_letters: usize,
    topics: &[String],
    mut out: impl std::io::Write,
) -> Result<bool> {
    let pool = |url: &Option<oms_saga::config::Secret>, name| -> Result<sqlx::PgPool> {
        let url = url.as_ref().ok_or(Error::NotConfigured(name))?;
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(url.expose())?)
    };
    let databases = &config.databases;
    let orders = pool(&databases.orders, "cli.databases.orders")?;
    let inventory = pool(&databases.inventory, "cli.databases.inventory")?;
    let notifications = pool(&databases.notifications, "cli.databases.notifications")?;
    let payments = databases
        .payments
        .is_some()
        .then(|| pool(&databases.payments, "cli.databases.payments"))
        .transpose()?;
    let stripe = config
        .stripe
        .as_ref()
        .map(oms_payments::Stripe::new)
        .transpose()
        .map_err(|e| Error::Stripe(e.to_string()))?;
    let deadline = std::time::Instant::now() + wait;
    let snapshot = loop {
        let mut snapshot =
            check::snapshot(&orders, &inventory, &notifications, payments.as_ref()).await?;
        for topic in topics {
            let count = consumer::dead_letter_count(bus, topic).await?;
            snapshot
                .dead_letters
                .insert(topic.clone(), usize::try_from(count).unwrap_or(usize::MAX));
        }
        let mut failing = broken(&snapshot, expected_dead_letters);
        // The provider's ledger is read (every page of it) only once the databases agree.
        if let Some(stripe) = stripe.as_ref().filter(|_| failing.is_empty()) {
            let ledger = check::ledger(stripe)
                .await
                .map_err(|e| Error::Stripe(e.to_string()))?;
            snapshot.ledger = Some(ledger);
            failing = broken(&snapshot, expected_dead_letters);
        }
        if failing.is_empty() || std::time::Instant::now() >= deadline {
            break snapshot;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        eprintln!(
            "waiting for the saga to settle ({} left): {}",
            humantime::format_duration(Duration::from_secs(left.as_secs())),
            failing.join(", ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let verdicts = check::evaluate(&snapshot, chrono::Utc::now(), expected_dead_letters);
    Ok(check::report(&verdicts, &mut out)?)
}
