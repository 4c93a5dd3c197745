//! Test support: each test gets its own database, its own topic and group names, and, where it
//! must break something, its own broker or Redis process. Nothing here is a mock; a missing
//! service or tool fails the test with a message saying what to start or install.
//!
//! The bus the tests run on is chosen by `OMS_TEST_BUS`: `kafka` (the default) or `nats`;
//! scripts/test runs the suite on both.

use std::{
    ffi::OsString,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool, migrate::Migrator};

use crate::{
    bus::{self, EventBus},
    config::{BusConfig, BusKind, KafkaConfig, NatsConfig, Secret},
};

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("OMS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The bus the tests run on, from `OMS_TEST_BUS`.
pub fn bus_kind() -> BusKind {
    match std::env::var("OMS_TEST_BUS").as_deref() {
        Err(_) | Ok("" | "kafka") => BusKind::Kafka,
        Ok("nats") => BusKind::Nats,
        Ok(other) => panic!("OMS_TEST_BUS must be kafka or nats, not {other:?}"),
    }
}

/// Where the shared broker of the tests' bus is; tests keep apart by using [`unique`] topic
/// names.
fn shared_broker() -> String {
    match bus_kind() {
        BusKind::Kafka => {
            std::env::var("OMS_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
        }
        BusKind::Nats => {
            std::env::var("OMS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
        }
    }
}

/// `prefix` followed by a random suffix, for topics, groups and databases.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A topic of its own on `bus`, named `prefix` and a random suffix, with `partitions` partitions.
pub async fn topic(bus: &dyn EventBus, prefix: &str, partitions: i32) -> String {
    let topic = unique(prefix);
    bus.ensure_topics(&[bus::TopicSpec::new(&topic, partitions)])
        .await
        .expect("topic");
    topic
}

/// A freshly created, migrated database, named `oms_test_...` (scripts/test drops old ones).
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

pub async fn database(migrator: &Migrator) -> TestDatabase {
    let admin = postgres_admin_url();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin} ({e}); start it or set OMS_TEST_POSTGRES_URL"
        )
    });
    // The creation time in the name lets scripts/test drop only the leftovers of ended runs.
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let name = format!("oms_test_{created}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("OMS_TEST_POSTGRES_URL must name a database"),
    };
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    migrator
        .run(&pool)
        .await
        .expect("migrate the test database");
    TestDatabase { name, url, pool }
}

/// A freshly created database with only the migrations of `dir` numbered below `before`: the
/// schema an earlier release left, on which a test writes what that release would have, then
/// runs the rest of the migrations over it.
pub async fn database_before(dir: &std::path::Path, before: i64) -> TestDatabase {
    let earlier = std::env::temp_dir().join(unique("migrations"));
    std::fs::create_dir_all(&earlier).expect("a directory for the earlier migrations");
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a migration").path();
        let name = path.file_name().expect("a file name").to_string_lossy();
        let version: i64 = name
            .split('_')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not numbered"));
        if version < before {
            std::fs::copy(&path, earlier.join(name.as_ref())).expect("copy a migration");
        }
    }
    let migrator = Migrator::new(earlier.as_path())
        .await
        .expect("the earlier migrations");
    std::fs::remove_dir_all(&earlier).expect("remove the copy");
    database(&migrator).await
}

/// Settings for the tests' bus with its broker at `address`, with short timeouts so that
/// group joins and redeliveries are quick.
fn bus_config_at(kind: BusKind, address: &str) -> BusConfig {
    BusConfig {
        kind,
        kafka: KafkaConfig {
            brokers: address.to_owned(),
            session_timeout: Duration::from_secs(6),
            ..KafkaConfig::default()
        },
        nats: NatsConfig {
            url: Secret::new(address),
            ack_wait: Duration::from_secs(3),
            lease: Duration::from_secs(3),
            group_retention: Duration::from_secs(3600),
            // JetStream reserves each stream's limit against the disk's free space: a suite's
            // hundreds of small streams must not claim gigabytes between them.
            max_bytes: 16 << 20,
            ..NatsConfig::default()
        },
        ..BusConfig::default()
    }
}

/// Where the services a test starts send their spans: nowhere, unless the test called
/// [`export_traces_to`]. Process-wide, so a test that traces lives in a test binary of its own
/// (nextest runs each test in its own process anyway).
pub fn trace_config() -> crate::trace::TraceConfig {
    TRACING.get().cloned().unwrap_or_default()
}

static TRACING: std::sync::OnceLock<crate::trace::TraceConfig> = std::sync::OnceLock::new();

/// Makes every service started after this export its spans to `endpoint`, in batches sent every
/// 200 ms so that the test does not wait.
pub fn export_traces_to(endpoint: &str) {
    let config = crate::trace::TraceConfig {
        zipkin_endpoint: Some(endpoint.to_owned()),
        export_delay: Duration::from_millis(200),
    };
    assert!(
        TRACING.set(config).is_ok(),
        "export_traces_to is called once per test process"
    );
}

/// Settings for the shared broker of the tests' bus.
pub fn bus_config() -> BusConfig {
    bus_config_at(bus_kind(), &shared_broker())
}

/// `--set` values that point a command at the broker of `config`.
pub fn bus_settings(config: &BusConfig) -> Vec<String> {
    vec![
        format!("bus.kind={}", config.kind.as_str()),
        format!("bus.kafka.brokers={}", config.kafka.brokers),
        format!("bus.nats.url={}", config.nats.url.expose()),
    ]
}

/// A bus on the shared broker; panics, saying so, if the broker does not answer.
pub async fn shared_bus() -> (BusConfig, Arc<dyn EventBus>) {
    let config = bus_config();
    let bus = bus::connect(&config).expect("bus client");
    if let Err(e) = bus.ping().await {
        panic!(
            "no {:?} broker at {} ({e}); run scripts/test, which starts one, or set OMS_TEST_KAFKA_BROKERS or OMS_TEST_NATS_URL",
            config.kind,
            shared_broker()
        );
    }
    (config, bus)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process that is killed when the test ends, pass or fail.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    /// Its data, removed with it.
    dir: Option<PathBuf>,
    /// How it was started, to start it again.
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    what: String,
}

impl Process {
    fn start(mut command: Command, addr: SocketAddr, what: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
        let mut process = Self {
            child,
            addr,
            dir: None,
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            cwd: command.get_current_dir().map(ToOwned::to_owned),
            what: what.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{what} exited at start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// SIGKILL, then the same command again, on the same port and data: a crash and a restart.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let mut restarted = Self::start(command, self.addr, &self.what);
        std::mem::swap(&mut self.child, &mut restarted.child);
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing, like a hung broker.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.resume_quietly();
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Process {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

/// Where scripts/test installs the tools the tests use: `OMS_TOOLS_DIR`, or `~/.cache/oms`.
pub fn tools_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OMS_TOOLS_DIR") {
        return dir.into();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("oms")
}

/// The nisshi broker binary that scripts/test builds (`OMS_NISSHI_BIN`, or where scripts/lib.sh
/// keeps its version).
pub fn nisshi_bin() -> PathBuf {
    std::env::var("OMS_NISSHI_BIN").map_or_else(
        |_| tools_dir().join("nisshi-0.8.1/bin/nisshi"),
        PathBuf::from,
    )
}

/// A broker of the test's own, of the tests' bus, for tests that pause or kill it; with the
/// settings that reach it.
pub fn dedicated_broker() -> (Process, BusConfig) {
    dedicated_broker_of(bus_kind())
}

/// A broker of the test's own on the bus `kind`, whatever the run's bus: for what only that
/// bus does.
pub fn dedicated_broker_of(kind: BusKind) -> (Process, BusConfig) {
    let (broker, address) = match kind {
        BusKind::Kafka => {
            let broker = dedicated_nisshi();
            let address = broker.addr.to_string();
            (broker, address)
        }
        BusKind::Nats => {
            let broker = dedicated_nats();
            let address = format!("nats://{}", broker.addr);
            (broker, address)
        }
    };
    (broker, bus_config_at(kind, &address))
}

fn dedicated_nats() -> Process {
    let port = free_port();
    let dir = std::env::temp_dir().join(unique("oms-test-nats"));
    let mut command = Command::new("nats-server");
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir);
    let mut process = Process::start(
        command,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "nats-server (Debian's nats-server package)",
    );
    process.dir = Some(dir);
    process
}

fn dedicated_nisshi() -> Process {
    let bin = nisshi_bin();
    assert!(
        bin.exists(),
        "the nisshi broker is not installed at {}; run scripts/test (it builds it) or set OMS_NISSHI_BIN",
        bin.display()
    );
    let port = free_port();
    let dir = std::env::temp_dir().join(unique("oms-test-nisshi"));
    std::fs::create_dir_all(&dir).expect("nisshi dir");
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(bin);
    // Its SQLite path is relative to its working directory.
    command.current_dir(&dir).args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "sqlite://nisshi.db",
        // A test's groups are its own: none waits for more members to join.
        "--group-initial-rebalance-delay",
        "0s",
    ]);
    let mut process = Process::start(command, SocketAddr::from(([127, 0, 0, 1], port)), "nisshi");
    process.dir = Some(dir);
    process
}

/// The real Prometheus (Debian's `prometheus` package), scraping `targets`' `/metrics` every
/// second, with its storage in a directory of its own.
pub fn prometheus(targets: &[SocketAddr]) -> Process {
    let port = free_port();
    let dir = std::env::temp_dir().join(unique("oms-test-prometheus"));
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: oms\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).expect("prometheus config");
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut process = Process::start(
        command,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "prometheus (Debian's prometheus package; scripts/test installs it)",
    );
    process.dir = Some(dir);
    process
}

/// A Redis server of the test's own, for tests that take Redis away.
pub fn dedicated_redis() -> Process {
    let port = free_port();
    let mut command = Command::new("redis-server");
    command.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    Process::start(
        command,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "redis-server",
    )
}

/// Polls `check` until it returns `Some`, at most for `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letters of `topic` once there is at least one, failing after 30 s: a poison event
/// is dead-lettered when its retries are spent, whenever that is.
pub async fn dead_letters(bus: &dyn EventBus, topic: &str) -> Vec<crate::bus::Delivery> {
    dead_letters_when(bus, topic, "the dead letter", |n| n > 0).await
}

/// The dead letters of `topic`, once there are exactly `count`, failing after 30 s.
pub async fn dead_letters_counting(
    bus: &dyn EventBus,
    topic: &str,
    count: usize,
) -> Vec<crate::bus::Delivery> {
    let what = format!("{count} dead letters");
    dead_letters_when(bus, topic, &what, |n| n == count).await
}

async fn dead_letters_when(
    bus: &dyn EventBus,
    topic: &str,
    what: &str,
    enough: impl Fn(usize) -> bool,
) -> Vec<crate::bus::Delivery> {
    eventually(Duration::from_secs(30), what, || async {
        let letters = crate::consumer::dead_letters(bus, topic, Duration::from_secs(1))
            .await
            .ok()?;
        enough(letters.len()).then_some(letters)
    })
    .await
}

/// Reads `count` messages from `topic` with a new group, failing after `limit`.
pub async fn consume(
    bus: &dyn EventBus,
    topic: &str,
    count: usize,
    limit: Duration,
) -> Vec<crate::bus::Delivery> {
    read(bus, topic, count, limit, |_| true).await
}

/// Reads `topic` until `count` distinct events (by `event-id` header) arrived, failing after
/// `limit`; returns each event's first delivery, in arrival order. Delivery is at least once, so
/// a test that counts events must not count a legitimate redelivery twice.
pub async fn consume_events(
    bus: &dyn EventBus,
    topic: &str,
    count: usize,
    limit: Duration,
) -> Vec<crate::bus::Delivery> {
    let mut seen = std::collections::HashSet::new();
    read(bus, topic, count, limit, |delivery| {
        seen.insert(
            delivery
                .message
                .headers
                .get_str(crate::event::header::EVENT_ID)
                .unwrap_or_default()
                .to_owned(),
        )
    })
    .await
}

/// Reads `topic` with a new group until `count` deliveries were kept, failing after `limit`.
async fn read(
    bus: &dyn EventBus,
    topic: &str,
    count: usize,
    limit: Duration,
    mut keep: impl FnMut(&crate::bus::Delivery) -> bool,
) -> Vec<crate::bus::Delivery> {
    let mut subscription = bus.browse(&[topic.to_owned()]).await.expect("browse");
    let mut kept = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + limit;
    while kept.len() < count {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Ok(delivery)) if keep(&delivery) => kept.push(delivery),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => panic!(
                "only {} of {count} messages arrived on {topic} within {limit:?}",
                kept.len()
            ),
        }
    }
    kept
}

type Start = dyn Fn(
        tokio::net::TcpListener,
        tokio_util::sync::WaitForCancellationFutureOwned,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync;

/// A service running inside the test process, that the test can stop (a crash or an outage, as
/// its peers see it) and start again on the same address, or run more instances of.
pub struct TestService {
    /// Where the first instance listens, and a restart listens again.
    pub addr: SocketAddr,
    start: Arc<Start>,
    running: Vec<(
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    )>,
}

impl std::fmt::Debug for TestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestService")
            .field("addr", &self.addr)
            .field("instances", &self.running.len())
            .finish()
    }
}

impl TestService {
    /// Starts `run` (a service's `run(config, listener, shutdown)` with its config bound) on a
    /// port of its own.
    pub async fn start<F, Fut, E>(run: F) -> Self
    where
        F: Fn(tokio::net::TcpListener, tokio_util::sync::WaitForCancellationFutureOwned) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(listener, run)
    }

    /// Starts `run` on `listener`: for a service whose address others must know before it
    /// starts.
    pub fn start_on<F, Fut, E>(listener: tokio::net::TcpListener, run: F) -> Self
    where
        F: Fn(tokio::net::TcpListener, tokio_util::sync::WaitForCancellationFutureOwned) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let start: Arc<Start> = Arc::new(move |listener, shutdown| {
            let served = run(listener, shutdown);
            Box::pin(async move {
                if let Err(e) = served.await {
                    eprintln!("a test service stopped with an error: {e}");
                }
            })
        });
        let mut service = Self {
            addr: listener.local_addr().expect("addr"),
            start,
            running: Vec::new(),
        };
        service.run_on(listener);
        service
    }

    async fn spawn(&mut self, addr: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        self.run_on(listener)
    }

    fn run_on(&mut self, listener: tokio::net::TcpListener) -> SocketAddr {
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn((self.start)(listener, stop.clone().cancelled_owned()));
        self.running.push((stop, task));
        addr
    }

    /// Another instance (same database, same consumer group), on a port of its own.
    pub async fn another_instance(&mut self) -> SocketAddr {
        self.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Stops every instance, the way SIGTERM does, and waits until they are gone.
    pub async fn stop(&mut self) {
        for (stop, task) in self.running.drain(..) {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Starts the service again where it first listened.
    pub async fn restart(&mut self) {
        self.spawn(self.addr).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        for (stop, _) in &self.running {
            stop.cancel();
        }
    }
}

/// Plays the service that writes a topic: creates it, registers its event types, and publishes
/// records the way that service's relay would (Avro through the registry), duplicates and all.
pub struct TopicWriter {
    pub bus: Arc<dyn EventBus>,
    pub codec: crate::avro::AvroCodec,
    pub topic: String,
}

impl std::fmt::Debug for TopicWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicWriter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl TopicWriter {
    /// A fresh topic named after `prefix`, with 3 partitions, on `config`'s broker and registry.
    pub async fn new(config: &BusConfig, prefix: &str, event_types: &[&str]) -> Self {
        let bus = bus::connect(config).expect("bus");
        let topic = unique(prefix);
        bus.ensure_topics(&[crate::bus::TopicSpec::new(&topic, 3)])
            .await
            .expect("create the topic");
        crate::avro::register(&config.registry, &topic, event_types)
            .await
            .expect("register the schemas");
        let codec = crate::avro::AvroCodec::new(&config.registry).expect("codec");
        Self { bus, codec, topic }
    }

    /// Publishes `records` in one batch, in order.
    pub async fn publish(&self, records: &[&crate::event::EventRecord]) {
        let mut messages = Vec::new();
        for record in records {
            messages.push(record.to_message(&self.codec).await.expect("encode"));
        }
        self.bus.publish(messages).await.expect("publish");
    }

    /// Reads the first `count` distinct events of `topic` (another service's answers, say),
    /// decoded with this writer's registry, failing after a minute.
    pub async fn read(&self, topic: &str, count: usize) -> Vec<crate::event::EventRecord> {
        let deliveries =
            consume_events(self.bus.as_ref(), topic, count, Duration::from_secs(60)).await;
        let mut records = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            records.push(
                crate::event::EventRecord::from_delivery(delivery, &self.codec)
                    .await
                    .expect("decode"),
            );
        }
        records
    }
}
