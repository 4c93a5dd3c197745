//! What a run found, as JSON to keep and as the markdown table BENCHMARKS.md shows: one column
//! per run, so that runs on the two buses read side by side.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{
    ceiling::Rate,
    cpu::Cpu,
    load::{Placed, Reads},
    saga::Saga,
    writes::Writes,
};

/// The machine a run measured, as it reports itself.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
            })
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub bus: String,
    pub command: String,
    pub machine: Machine,
    /// Each component's version.
    pub components: BTreeMap<String, String>,
    /// The orders a second the open loop was due to send: the rate its latencies were taken at.
    pub open_loop_rate: u32,
    /// Orders at a fixed rate through the gateway, and how their sagas went.
    pub open_loop: Phase,
    /// Orders as fast as the clients go, through the gateway.
    pub closed_loop: Phase,
    /// The same, straight to the order API.
    pub closed_loop_api: Placed,
    /// Cached reads by all the clients at once.
    pub reads_gateway: Reads,
    pub reads_api: Reads,
    /// Cached reads by one client, one after another.
    pub lone_reads_gateway: Reads,
    pub lone_reads_api: Reads,
    /// The gateway's p50 over the API's, with one client.
    pub gateway_added_p50_ms: f64,
    /// The same with all the clients, where it is mostly the queueing for the cores that the
    /// gateway's own work adds.
    pub gateway_added_p50_loaded_ms: f64,
    pub postgres_ceiling: Rate,
    pub broker_ceiling: Rate,
    /// Completed sagas a second (closed loop) over the PostgreSQL ceiling.
    pub completed_to_postgres: f64,
    /// Accepted orders a second (closed loop, API) over the PostgreSQL ceiling.
    pub accepted_to_postgres: f64,
    /// Completed sagas a second over the broker ceiling.
    pub completed_to_broker: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub placed: Placed,
    pub saga: Saga,
    /// From the first placement until the sagas settled, per notified order.
    pub cpu: Cpu,
    /// What PostgreSQL wrote over the same span, per notified order.
    pub writes: Writes,
}

/// One row of the table: a label, where its figure is in a report, and the target if any.
const ROWS: &[(&str, &str, &str)] = &[
    ("open loop: orders/s due", "/openLoopRate", ""),
    (
        "open loop: orders sent (rate × duration)",
        "/openLoop/placed/sent",
        "",
    ),
    (
        "open loop: accepted orders/s",
        "/openLoop/placed/acceptedPerSecond",
        "",
    ),
    (
        "open loop: POST p50 / p99 ms",
        "/openLoop/placed/latencyMs",
        "",
    ),
    (
        "open loop: place → RESERVED p50 / p99 ms",
        "/openLoop/saga/placeToReservedMs",
        "p99 ≤ 50 with 1,000/s due",
    ),
    (
        "open loop: place → told PAID p50 / p99 ms",
        "/openLoop/saga/placeToNotifiedMs",
        "",
    ),
    (
        "open loop: sagas completed/s",
        "/openLoop/saga/completedPerSecond",
        "",
    ),
    (
        "open loop: most orders in flight",
        "/openLoop/saga/maxBacklog",
        "",
    ),
    (
        "closed loop: accepted orders/s (gateway)",
        "/closedLoop/placed/acceptedPerSecond",
        "",
    ),
    (
        "closed loop: sagas completed/s",
        "/closedLoop/saga/completedPerSecond",
        "≥ 3,000",
    ),
    (
        "closed loop: place → told PAID p50 / p99 ms",
        "/closedLoop/saga/placeToNotifiedMs",
        "",
    ),
    (
        "closed loop: most orders in flight",
        "/closedLoop/saga/maxBacklog",
        "",
    ),
    (
        "closed loop: CPU ms per saga, whole machine",
        "/closedLoop/cpu/busyMsPerOrder",
        "",
    ),
    (
        "closed loop: CPU ms per saga, less the load generator and localstripe",
        "/closedLoop/cpu/systemMsPerOrder",
        "",
    ),
    ("closed loop: cores idle", "/closedLoop/cpu/idleShare", ""),
    (
        "closed loop: PostgreSQL write transactions per saga",
        "/closedLoop/writes/transactionsPerOrder",
        "",
    ),
    (
        "closed loop: PostgreSQL WAL bytes per saga",
        "/closedLoop/writes/walBytesPerOrder",
        "",
    ),
    (
        "closed loop: accepted orders/s (API direct)",
        "/closedLoopApi/acceptedPerSecond",
        "",
    ),
    (
        "cached GET via gateway, req/s",
        "/readsGateway/perSecond",
        "≥ 20,000",
    ),
    ("cached GET via API, req/s", "/readsApi/perSecond", ""),
    (
        "cached GET p50 / p99 ms, one client, via gateway",
        "/loneReadsGateway/latencyMs",
        "",
    ),
    (
        "cached GET p50 / p99 ms, one client, via API",
        "/loneReadsApi/latencyMs",
        "",
    ),
    (
        "gateway's added p50 ms, one client",
        "/gatewayAddedP50Ms",
        "≤ 0.2",
    ),
    (
        "gateway's added p50 ms, all clients",
        "/gatewayAddedP50LoadedMs",
        "",
    ),
    (
        "ceiling: PostgreSQL order+outbox tx/s",
        "/postgresCeiling/perSecond",
        "",
    ),
    (
        "ceiling: broker produce+consume msg/s",
        "/brokerCeiling/perSecond",
        "",
    ),
    (
        "completed sagas / PostgreSQL ceiling",
        "/completedToPostgres",
        "≥ 0.3",
    ),
    (
        "accepted orders (API) / PostgreSQL ceiling",
        "/acceptedToPostgres",
        "",
    ),
    ("completed sagas / broker ceiling", "/completedToBroker", ""),
];

/// The markdown table of `reports` (JSON, as written by a run), one column each.
pub fn markdown(reports: &[Value]) -> String {
    let mut out = String::from("| measure |");
    for report in reports {
        out += &format!(" {} |", report["bus"].as_str().unwrap_or("?"));
    }
    out += " target |\n|---|";
    out += &"---|".repeat(reports.len() + 1);
    out.push('\n');
    for (label, pointer, target) in ROWS {
        out += &format!("| {label} |");
        for report in reports {
            out += &format!(" {} |", cell(report.pointer(pointer)));
        }
        out += &format!(" {target} |\n");
    }
    let mut parts: Vec<(String, String)> = costliest(reports, "programsMsPerOrder")
        .into_iter()
        .map(|program| {
            let pointer = format!("/closedLoop/cpu/programsMsPerOrder/{program}");
            (program, pointer)
        })
        .collect();
    // PostgreSQL's share by service, under its own row.
    if let Some(at) = parts.iter().position(|(program, _)| program == "postgres") {
        let databases = costliest(reports, "postgresMsPerOrder")
            .into_iter()
            .map(|database| {
                let pointer = format!("/closedLoop/cpu/postgresMsPerOrder/{database}");
                (format!("postgres on {database}"), pointer)
            });
        parts.splice(at + 1..at + 1, databases);
    }
    for (part, pointer) in parts {
        out += &format!("| closed loop: CPU ms per saga, {part} |");
        for report in reports {
            out += &format!(" {} |", cell(report.pointer(&pointer)));
        }
        out += " |\n";
    }
    out += "| closed loop: CPU ms per saga, rest (kernel threads, interrupts) |";
    for report in reports {
        out += &format!(
            " {} |",
            cell(report.pointer("/closedLoop/cpu/restMsPerOrder"))
        );
    }
    out += " |\n";
    for report in reports {
        let machine = &report["machine"];
        let components: Vec<String> = report["components"]
            .as_object()
            .map(|c| {
                c.iter()
                    .map(|(name, version)| format!("{name} {}", version.as_str().unwrap_or("?")))
                    .collect()
            })
            .unwrap_or_default();
        out += &format!(
            "\n`{}`: {} cores, {} GiB, Linux {}; {}.\n`{}`\n",
            report["bus"].as_str().unwrap_or("?"),
            machine["cores"],
            machine["memoryGib"],
            machine["kernel"].as_str().unwrap_or("?"),
            components.join(", "),
            report["command"].as_str().unwrap_or("?")
        );
    }
    out
}

/// Every part of one of the closed loops' CPU breakdowns (`programsMsPerOrder`, say) that any
/// report spent CPU on, the costliest first.
fn costliest(reports: &[Value], breakdown: &str) -> Vec<String> {
    let mut most: BTreeMap<String, f64> = BTreeMap::new();
    for report in reports {
        let programs = report.pointer(&format!("/closedLoop/cpu/{breakdown}"));
        for (program, ms) in programs.and_then(Value::as_object).into_iter().flatten() {
            let ms = ms.as_f64().unwrap_or(0.0);
            let entry = most.entry(program.clone()).or_default();
            *entry = entry.max(ms);
        }
    }
    let mut programs: Vec<(String, f64)> = most.into_iter().collect();
    programs.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Below a hundredth of a millisecond a saga, a program is the machine's background.
    programs
        .into_iter()
        .filter(|(_, ms)| *ms >= 0.01)
        .map(|(program, _)| program)
        .collect()
}

fn cell(value: Option<&Value>) -> String {
    match value {
        // Percentiles.
        Some(Value::Object(p)) if p.contains_key("p99") => {
            format!("{} / {}", number(&p["p50"]), number(&p["p99"]))
        }
        Some(value) => number(value),
        None => "–".into(),
    }
}

fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(n) if n >= 100.0 => format!("{}", n.round() as i64),
        Some(n) if n >= 1.0 => format!("{n:.1}"),
        Some(n) => format!("{n:.3}"),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_open_loop_latencies_follow_the_rate_they_were_taken_at() {
        let report = |bus: &str, rate: u32| {
            json!({"bus": bus, "openLoopRate": rate,
                "openLoop": {"saga": {"placeToReservedMs": {"p50": 43.0, "p99": 73.0}}}})
        };
        let table = markdown(&[report("kafka", 100), report("nats", 1000)]);
        let rows: Vec<&str> = table.lines().skip(2).take(5).collect();
        assert_eq!(rows[0], "| open loop: orders/s due | 100 | 1000 |  |");
        assert_eq!(
            rows[4],
            "| open loop: place → RESERVED p50 / p99 ms | 43.0 / 73.0 | 43.0 / 73.0 | \
             p99 ≤ 50 with 1,000/s due |"
        );
    }

    #[test]
    fn postgres_is_followed_by_its_share_of_each_service_the_costliest_first() {
        let report = |bus: &str, inventory: f64| {
            json!({"bus": bus, "closedLoop": {"cpu": {
                "programsMsPerOrder": {"oms-api": 0.5, "postgres": 1.4, "tansu": 0.7},
                "postgresMsPerOrder": {"orders": 0.6, "inventory": inventory, "(server)": 0.1},
            }}})
        };
        let table = markdown(&[report("kafka", 0.3), report("nats", 0.9)]);
        let rows: Vec<&str> = table
            .lines()
            .filter(|line| line.starts_with("| closed loop: CPU ms per saga, "))
            .skip_while(|line| !line.contains("saga, postgres |"))
            .collect();
        assert_eq!(
            rows,
            [
                "| closed loop: CPU ms per saga, postgres | 1.4 | 1.4 | |",
                "| closed loop: CPU ms per saga, postgres on inventory | 0.300 | 0.900 | |",
                "| closed loop: CPU ms per saga, postgres on orders | 0.600 | 0.600 | |",
                "| closed loop: CPU ms per saga, postgres on (server) | 0.100 | 0.100 | |",
                "| closed loop: CPU ms per saga, tansu | 0.700 | 0.700 | |",
                "| closed loop: CPU ms per saga, oms-api | 0.500 | 0.500 | |",
                "| closed loop: CPU ms per saga, rest (kernel threads, interrupts) | – | – | |",
            ]
        );
    }
}
