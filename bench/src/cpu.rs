//! Where the machine's CPU went during a phase, by program: the profile every run carries, so
//! that a change can be aimed at the part that costs most before anyone reaches for a profiler.
//!
//! Linux's `/proc` counts each process's user and system time (all its threads) and the whole
//! machine's busy and idle time. A snapshot before and after a phase gives each program's share,
//! summed over its processes (PostgreSQL's backends, every instance of a service) and named by
//! its executable. Processes that start and end inside the phase are missed, as is the time
//! kernel threads spend; both are in the machine's total, so what the programs leave of it is
//! reported as the rest.
//!
//! PostgreSQL's share is split again by the database each backend serves, read from the title
//! the server gives the process: every service owns its database, so this says whose statements
//! the server's time went to, which its total alone does not.
//!
//! Two programs on the machine are not the system's: the load generator (`oms-bench`) and the
//! payment provider's stand-in (localstripe, a Python program, known by its command line). What
//! the machine spent less theirs is reported beside the whole.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

/// The programs whose time is the benchmark's own and the stand-in's, not the system's.
pub const APART: [&str; 2] = ["oms-bench", LOCALSTRIPE];

/// The name localstripe's Python processes are counted under.
pub const LOCALSTRIPE: &str = "localstripe";

/// Linux reports these times in USER_HZ ticks, which it fixes at 100 a second for `/proc` on
/// the architectures it runs here.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time so far, in ticks.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every process's ticks so far, by pid, with its executable name and, for PostgreSQL's
    /// processes, the database it serves ([`SERVER`] for the server's own). Kept per process,
    /// not summed by name: a process that exits between two snapshots would otherwise take its
    /// earlier ticks out of its program's total and make the others' time look smaller.
    processes: BTreeMap<u32, Process>,
    machine_busy: u64,
    machine_idle: u64,
}

#[derive(Debug, Clone)]
struct Process {
    program: String,
    database: Option<String>,
    ticks: u64,
}

impl Snapshot {
    /// The times of every process now; a process that ends while it is read is skipped.
    pub fn now() -> Self {
        let mut snapshot = Self::default();
        if let Some((busy, idle)) = machine_times() {
            snapshot.machine_busy = busy;
            snapshot.machine_idle = idle;
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return snapshot;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(pid) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((program, ticks)) = process(&path) {
                let database = (program == "postgres")
                    .then(|| postgres_database(&path).unwrap_or_else(|| SERVER.into()));
                snapshot.processes.insert(
                    pid,
                    Process {
                        program,
                        database,
                        ticks,
                    },
                );
            }
        }
        snapshot
    }

    /// What was spent from `self` to `later`, per order for `orders` orders. `services` names
    /// the databases by the service that owns them; others keep their own names.
    pub fn until(&self, later: &Snapshot, orders: u64, services: &BTreeMap<String, String>) -> Cpu {
        let per_order =
            |ticks: u64| crate::per_order(ticks as f64 / TICKS_PER_SECOND * 1000.0, orders);
        let mut program_ticks: BTreeMap<&str, u64> = BTreeMap::new();
        let mut database_ticks: BTreeMap<&str, u64> = BTreeMap::new();
        for (pid, process) in &later.processes {
            // A pid taken over by another program since is a new process.
            let before = self
                .processes
                .get(pid)
                .filter(|earlier| earlier.program == process.program)
                .map_or(0, |earlier| earlier.ticks);
            let ticks = process.ticks.saturating_sub(before);
            if ticks == 0 {
                continue;
            }
            *program_ticks.entry(&process.program).or_default() += ticks;
            if let Some(database) = &process.database {
                let name = services.get(database).unwrap_or(database);
                *database_ticks.entry(name).or_default() += ticks;
            }
        }
        let programs_ticks: u64 = program_ticks.values().sum();
        let apart_ticks: u64 = APART
            .iter()
            .filter_map(|program| program_ticks.get(program))
            .sum();
        let programs = program_ticks
            .into_iter()
            .map(|(program, ticks)| (program.to_owned(), per_order(ticks)))
            .collect();
        let postgres_databases = database_ticks
            .into_iter()
            .map(|(database, ticks)| (database.to_owned(), per_order(ticks)))
            .collect();
        let busy = later.machine_busy.saturating_sub(self.machine_busy);
        let idle = later.machine_idle.saturating_sub(self.machine_idle);
        Cpu {
            orders,
            busy_ms_per_order: per_order(busy),
            system_ms_per_order: per_order(busy.saturating_sub(apart_ticks)),
            rest_ms_per_order: per_order(busy.saturating_sub(programs_ticks)),
            idle_share: if busy + idle == 0 {
                0.0
            } else {
                idle as f64 / (busy + idle) as f64
            },
            programs_ms_per_order: programs,
            postgres_ms_per_order: postgres_databases,
        }
    }
}

/// The ticks each name spent from `before` to `after`, for those that spent any; one that
/// started in between counts from zero.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    pub orders: u64,
    /// Every core's busy time, per order.
    pub busy_ms_per_order: f64,
    /// The same less the programs [`APART`]: what the system itself cost.
    pub system_ms_per_order: f64,
    /// By executable name.
    pub programs_ms_per_order: BTreeMap<String, f64>,
    /// PostgreSQL's part of it, by the service whose database the backend served, and
    /// [`SERVER`] for the server's own processes (the log writer, the checkpointer).
    pub postgres_ms_per_order: BTreeMap<String, f64>,
    /// Busy time no program accounts for: kernel threads, interrupts, processes gone by the end.
    pub rest_ms_per_order: f64,
    /// The share of all cores' time that was idle.
    pub idle_share: f64,
}

/// A process's program and its user and system time, all its threads, from
/// `/proc/<pid>/stat`. Named by its executable, which the kernel does not cut at 15 characters
/// as it does the command name, unless the command name says otherwise (redis-server's
/// executable is a link to redis-check-rdb). Kernel threads have no executable, and are left to
/// the machine's rest.
fn process(dir: &Path) -> Option<(String, u64)> {
    let exe = std::fs::read_link(dir.join("exe")).ok()?;
    let exe = exe.file_name()?.to_string_lossy();
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let command = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?;
    let program = if exe.starts_with("python") && runs_localstripe(dir) {
        LOCALSTRIPE.to_owned()
    } else if exe.starts_with(command) {
        exe.into_owned()
    } else {
        command.to_owned()
    };
    Some((program, process_ticks(&stat)?))
}

/// Whether a Python process's command line names localstripe (its own launcher, or the one of
/// scripts/lib.sh, which runs it from `python -c`).
fn runs_localstripe(dir: &Path) -> bool {
    std::fs::read(dir.join("cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(LOCALSTRIPE))
}

/// The name under which PostgreSQL's processes that serve no database are counted.
pub const SERVER: &str = "(server)";

/// The database a PostgreSQL backend serves, from the title it sets on its command line:
/// `postgres: [cluster: ]user database client(port) state`, the client being `[local]` over a
/// socket. The server's other processes (`postgres: walwriter`) have none.
fn postgres_database(dir: &Path) -> Option<String> {
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let title = cmdline.split(|&b| b == 0).next()?;
    database_in_title(&String::from_utf8_lossy(title))
}

fn database_in_title(title: &str) -> Option<String> {
    let words: Vec<&str> = title
        .strip_prefix("postgres: ")?
        .split_whitespace()
        .collect();
    let client = words
        .iter()
        .position(|w| *w == "[local]" || (w.contains('(') && w.ends_with(')')))?;
    // The user and the database come before the client.
    (client >= 2).then(|| words[client - 1].to_owned())
}

/// The user and system time in a `/proc/<pid>/stat` line.
fn process_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name: state is field 3 of proc(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's busy and idle ticks, all cores, from `/proc/stat`.
fn machine_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    let busy = ticks.iter().take(8).sum::<u64>() - idle;
    Some((busy, idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_up_under_its_own_program() {
        let ticks = || {
            let stat = std::fs::read_to_string("/proc/self/stat").expect("this process's stat");
            process_ticks(&stat).expect("this process's times")
        };
        let before = Snapshot::now();
        let start = ticks();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        // 30 ticks (300 ms) of this process's own CPU time, however long the machine takes.
        while ticks() < start + 30 {
            assert!(std::time::Instant::now() < deadline, "no CPU time in 20 s");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let cpu = before.until(&Snapshot::now(), 2, &BTreeMap::new());
        let exe = std::env::current_exe().expect("the test's own path");
        let name = exe.file_name().expect("a file name").to_string_lossy();
        let mine = cpu.programs_ms_per_order.get(name.as_ref()).copied();
        // 300 ms over two orders.
        assert!(
            mine.is_some_and(|ms| ms >= 150.0),
            "{name}: {mine:?} in {:?}",
            cpu.programs_ms_per_order
        );
        assert!(cpu.busy_ms_per_order >= 150.0, "{cpu:?}");
        assert!((0.0..=1.0).contains(&cpu.idle_share), "{cpu:?}");
    }

    #[test]
    fn localstripe_is_known_by_its_command_line_and_counted_apart() {
        let mut stand_in = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, time\nend = time.time() + 20\nwhile time.time() < end: pass",
                "localstripe",
            ])
            .spawn()
            .expect("python3");
        let pid = stand_in.id();
        let before = Snapshot::now();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // 30 ticks of its CPU time.
        let cpu = loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = Snapshot::now();
            let spent = now.processes.get(&pid).map(|p| p.ticks).unwrap_or(0)
                - before.processes.get(&pid).map(|p| p.ticks).unwrap_or(0);
            if spent >= 30 || std::time::Instant::now() > deadline {
                break before.until(&now, 1, &BTreeMap::new());
            }
        };
        let _ = stand_in.kill();
        let _ = stand_in.wait();
        let spent = cpu.programs_ms_per_order.get(LOCALSTRIPE).copied();
        assert!(spent.is_some_and(|ms| ms >= 300.0), "{cpu:?}");
        assert!(
            cpu.busy_ms_per_order - cpu.system_ms_per_order >= 300.0,
            "its time is taken out of the system's: {cpu:?}"
        );
    }

    #[test]
    fn a_backend_is_known_by_its_database_and_the_servers_own_processes_by_none() {
        let titles = [
            (
                "postgres: 15/main: root oms_orders 127.0.0.1(43210) idle",
                Some("oms_orders"),
            ),
            ("postgres: app shop [local] INSERT", Some("shop")),
            ("postgres: 15/main: walwriter ", None),
            ("postgres: checkpointer", None),
            (
                "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql",
                None,
            ),
        ];
        for (title, database) in titles {
            assert_eq!(database_in_title(title).as_deref(), database, "{title}");
        }
    }

    #[tokio::test]
    async fn a_statements_time_goes_to_the_service_whose_database_ran_it() {
        static NONE: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
        let db = oms_saga::testing::database(&NONE).await;
        let services = BTreeMap::from([(db.name.clone(), "shop".to_owned())]);
        let before = Snapshot::now();
        // Half a second or more of one backend's CPU, on any machine that runs the tests.
        sqlx::query("SELECT count(*) FROM generate_series(1, 20000000)")
            .execute(&db.pool)
            .await
            .expect("a long count");
        let cpu = before.until(&Snapshot::now(), 1, &services);
        let shop = cpu.postgres_ms_per_order.get("shop").copied();
        assert!(shop.is_some_and(|ms| ms >= 300.0), "{cpu:?}");
        assert!(!cpu.postgres_ms_per_order.contains_key(&db.name), "{cpu:?}");
        let postgres = cpu.programs_ms_per_order.get("postgres").copied();
        assert!(postgres >= shop, "{cpu:?}");
    }
}
