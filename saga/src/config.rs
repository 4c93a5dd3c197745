//! Layered configuration, resolved once at start-up.
//!
//! Each service reads its own section (`[api]`, `[gateway]`, ...) so that one file can describe a
//! whole deployment. Later layers win:
//!
//! 1. the defaults of the service's config, as its `Default` gives them: a section given in part
//!    keeps the service's defaults for the rest of it (a `[inventory.consumer]` that sets only
//!    `max_attempts` keeps the inventory's group and topics);
//! 2. a TOML file (`--config FILE`, or `OMS_CONFIG`);
//! 3. environment variables `OMS_<SERVICE>__<KEY>`, with `__` for nesting
//!    (`OMS_API__DATABASE__URL`);
//! 4. `--set key=value` flags (`--set kafka.brokers=host:9092`).
//!
//! Secrets are wrapped in [`Secret`], which never prints: `--dump-config` is safe to paste.

use std::{cell::Cell, collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::Value,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// The command-line flags every service binary shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML file with the service's section.
    #[arg(long, env = "OMS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides one setting, as `key.path=value`; may be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Prints the resolved configuration (secrets redacted) and exits.
    #[arg(long)]
    pub dump_config: bool,
}

/// Resolves the `service` section from every layer.
pub fn load<T: DeserializeOwned + Serialize + Default>(
    service: &str,
    args: &ConfigArgs,
) -> Result<T> {
    let defaults = Secret::revealed(|| {
        Value::serialize(T::default()).map_err(|e| Error::Config(format!("the defaults: {e}")))
    })?;
    let mut figment = Figment::from(Serialized::default(service, defaults));
    if let Some(path) = &args.config {
        if !path.exists() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    let prefix = format!("OMS_{}__", service.to_ascii_uppercase());
    let section = service.to_owned();
    figment = figment.merge(Env::prefixed(&prefix).split("__").map(move |key| {
        // Env::prefixed strips the prefix; nest the rest under the service's section.
        format!("{section}.{key}").into()
    }));
    for item in &args.overrides {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--set {item}: expected KEY=VALUE")))?;
        let value = Value::from_str(value).unwrap_or_else(|never| match never {});
        figment = figment.merge((format!("{service}.{}", key.trim()), value));
    }
    figment
        .extract_inner::<T>(service)
        .map_err(|e| Error::Config(e.to_string()))
}

/// What every binary does first: resolves its section and, with `--dump-config`, prints it and
/// returns `None` so the binary exits.
pub fn load_or_dump<T: DeserializeOwned + Serialize + Default>(
    service: &str,
    args: &ConfigArgs,
) -> Result<Option<T>> {
    let config = load(service, args)?;
    if args.dump_config {
        print!("{}", dump(service, &config));
        return Ok(None);
    }
    Ok(Some(config))
}

/// Renders a resolved configuration for `--dump-config`.
pub fn dump<T: Serialize>(service: &str, config: &T) -> String {
    let mut root = BTreeMap::new();
    root.insert(service, config);
    toml::to_string_pretty(&root).unwrap_or_else(|e| format!("# cannot render: {e}"))
}

/// A value that must never reach a log or a dump: database URLs, signing keys, passwords.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// Set only while [`load`] turns the defaults into its first layer.
    static REVEAL: Cell<bool> = const { Cell::new(false) };
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Runs `f` with secrets serializing as themselves, on this thread only: the defaults
    /// layer needs their values, and nothing else ever sees them.
    fn revealed<R>(f: impl FnOnce() -> R) -> R {
        /// Hides secrets again however `f` ends, a panic included.
        struct Hide;
        impl Drop for Hide {
            fn drop(&mut self) {
                REVEAL.with(|reveal| reveal.set(false));
            }
        }
        REVEAL.with(|reveal| reveal.set(true));
        let _hide = Hide;
        f()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REVEAL.with(Cell::get) {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str("[redacted]")
        }
    }
}

/// How long a pooled connection may sit idle before it is checked, with a round trip, before use.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A PostgreSQL database that a service owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection before it fails.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl DatabaseConfig {
    pub fn named(database: &str) -> Self {
        Self {
            url: Secret::new(format!("postgres://postgres@127.0.0.1:5432/{database}")),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    /// Applies `migrator` to this database (the services' `migrate` command).
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        let pool = sqlx::PgPool::connect(self.url.expose()).await?;
        migrator.run(&pool).await?;
        pool.close().await;
        Ok(())
    }

    /// Opens a pool without waiting for the database: a service starts, reports not ready, and
    /// recovers when PostgreSQL comes back, instead of crash-looping.
    ///
    /// A connection idle for less than [`PING_IDLE_AFTER`] is handed out as it is. sqlx's
    /// default asks PostgreSQL whether a connection lives before every use, a round trip (and a
    /// wake-up of a server process) for each transaction and each lone statement; a connection
    /// just used is alive unless the server went away in between, and then its statement fails
    /// like any statement during an outage, and sqlx drops the connection.
    pub fn connect_lazy(&self) -> Result<sqlx::PgPool> {
        use sqlx::Connection;
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy(self.url.expose())
            .map_err(Error::Database)
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self::named("oms")
    }
}

/// The event bus a service publishes to and consumes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Which broker carries the events: `kafka` or `nats` (JetStream). Every service and
    /// worker runs unchanged on either.
    pub kind: BusKind,
    pub kafka: KafkaConfig,
    pub nats: NatsConfig,
    /// The schema registry that the events' Avro schemas live in, whatever the broker.
    pub registry: crate::avro::RegistryConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::Kafka,
            kafka: KafkaConfig::default(),
            nats: NatsConfig::default(),
            registry: crate::avro::RegistryConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Kafka,
    Nats,
}

impl BusKind {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Kafka => "kafka",
            BusKind::Nats => "nats",
        }
    }
}

/// A Kafka cluster. `properties` passes any librdkafka setting through, which is how a real
/// cluster's security settings (`security.protocol`, `sasl.*`, `ssl.*`) are given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub client_id: String,
    /// Replication factor for the topics a service creates; 3 on a real cluster.
    pub replication_factor: i32,
    /// The consumer group session timeout. A group join takes about half of it.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long the topics a service creates keep a message (`retention.ms`; their segments
    /// roll daily, so a message is gone at most a day after that). The consumers' inboxes
    /// remember a message's id at least this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub properties: BTreeMap<String, Secret>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "oms".into(),
            replication_factor: 1,
            session_timeout: Duration::from_secs(6),
            retention: Duration::from_secs(7 * 24 * 3600),
            properties: BTreeMap::new(),
        }
    }
}

/// A NATS server with JetStream. A topic is a stream, and its partitions are subjects; see
/// [`crate::bus`] for how the Kafka concepts map.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// The server, as `nats://host:port`; credentials may go in the URL (`nats://user:pass@host`).
    pub url: Secret,
    /// The connection name the server shows.
    pub client_name: String,
    /// Replicas of the streams a service creates; 3 on a real cluster.
    pub replicas: usize,
    /// How long a stream keeps a message (Kafka's `retention.ms`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The most a stream holds, in bytes. A full stream refuses new messages rather than drop
    /// old ones nobody may have read yet: the outbox keeps them and retries.
    pub max_bytes: i64,
    /// How long a delivery may stay unacknowledged before it is redelivered. A consumer busy
    /// with one keeps extending it, so this is how soon a crashed consumer's work moves on.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// A group's consumers that no instance pulled from for this long are removed (Kafka's
    /// `offsets.retention.minutes`).
    #[serde(with = "humantime_serde")]
    pub group_retention: Duration,
    /// The most deliveries of one partition a group's member holds unacknowledged: what it
    /// pulls ahead of the one it is handling.
    pub in_flight: i64,
    /// How long a member's hold on a partition lasts unless renewed: how soon the partitions
    /// of a member that stopped without leaving move to the others. The first service to
    /// start sets it for all.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("nats://127.0.0.1:4222"),
            client_name: "oms".into(),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(10),
            group_retention: Duration::from_secs(7 * 24 * 3600),
            in_flight: 256,
            lease: Duration::from_secs(10),
        }
    }
}

/// How a service logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
// figment's `Jail` closures return its own large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Serialize, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Service {
        listen: String,
        database: DatabaseConfig,
        log: LogConfig,
    }

    fn args(config: Option<&str>, overrides: &[&str]) -> ConfigArgs {
        ConfigArgs {
            config: config.map(PathBuf::from),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            dump_config: false,
        }
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "oms.toml",
                r#"
                [svc]
                listen = "from-file"
                log.filter = "debug"
                database.max_connections = 3
                [other]
                listen = "not mine"
                "#,
            )?;
            let from_file: Service = load("svc", &args(Some("oms.toml"), &[])).expect("load");
            assert_eq!(from_file.listen, "from-file");
            assert_eq!(from_file.log.filter, "debug");
            assert_eq!(from_file.database.max_connections, 3);
            assert_eq!(
                from_file.database.acquire_timeout,
                Duration::from_secs(5),
                "a default survives"
            );

            jail.set_env("OMS_SVC__LISTEN", "from-env");
            jail.set_env("OMS_SVC__DATABASE__MAX_CONNECTIONS", "7");
            let from_env: Service = load("svc", &args(Some("oms.toml"), &[])).expect("load");
            assert_eq!(from_env.listen, "from-env");
            assert_eq!(from_env.database.max_connections, 7);
            assert_eq!(from_env.log.filter, "debug");

            let from_flag: Service = load(
                "svc",
                &args(
                    Some("oms.toml"),
                    &["listen=from-flag", "database.acquire_timeout=2s"],
                ),
            )
            .expect("load");
            assert_eq!(from_flag.listen, "from-flag");
            assert_eq!(from_flag.database.acquire_timeout, Duration::from_secs(2));
            Ok(())
        });
    }

    /// A service whose defaults differ from those of the types it is made of.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Worker {
        database: DatabaseConfig,
        consumer: crate::consumer::ConsumerConfig,
    }

    impl Default for Worker {
        fn default() -> Self {
            Self {
                database: DatabaseConfig::named("worker"),
                consumer: crate::consumer::ConsumerConfig {
                    group: "worker".into(),
                    topics: vec!["orders".into()],
                    ..Default::default()
                },
            }
        }
    }

    #[test]
    fn a_section_given_in_part_keeps_the_services_defaults_for_the_rest() {
        Jail::expect_with(|jail| {
            jail.create_file("oms.toml", "[worker.consumer]\nmax_attempts = 5\n")?;
            jail.set_env("OMS_WORKER__CONSUMER__BATCH_SIZE", "1");
            jail.set_env("OMS_WORKER__DATABASE__MAX_CONNECTIONS", "3");
            let worker: Worker = load("worker", &args(Some("oms.toml"), &[])).expect("load");
            assert_eq!(worker.consumer.max_attempts, 5);
            assert_eq!(worker.consumer.batch_size, 1);
            assert_eq!(worker.consumer.group, "worker");
            assert_eq!(worker.consumer.topics, ["orders"]);
            assert_eq!(worker.database.max_connections, 3);
            assert_eq!(
                worker.database.url.expose(),
                Worker::default().database.url.expose(),
                "a secret default survives as itself"
            );
            assert!(
                dump("worker", &worker).contains("[redacted]"),
                "and still never prints"
            );
            Ok(())
        });
    }

    #[test]
    fn a_typo_or_a_bad_value_is_refused_at_start() {
        Jail::expect_with(|jail| {
            jail.create_file("oms.toml", "[svc]\nlog.fromat = \"json\"\n")?;
            let typo =
                load::<Service>("svc", &args(Some("oms.toml"), &[])).expect_err("unknown key");
            assert!(typo.to_string().contains("fromat"), "{typo}");
            jail.set_env("OMS_SVC__DATABASE__MAX_CONNECTIONS", "many");
            assert!(load::<Service>("svc", &args(None, &[])).is_err());
            assert!(load::<Service>("svc", &args(Some("missing.toml"), &[])).is_err());
            assert!(load::<Service>("svc", &args(None, &["no-equals-sign"])).is_err());
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        let config = Service {
            database: DatabaseConfig {
                url: Secret::new("postgres://user:hunter2@db/orders"),
                ..DatabaseConfig::default()
            },
            ..Service::default()
        };
        let dumped = dump("svc", &config);
        assert!(dumped.contains("[redacted]"), "{dumped}");
        assert!(!dumped.contains("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
