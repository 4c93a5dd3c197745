//! A load generator: places orders through the gateway at a steady rate, as a logged-in customer,
//! and reports what came back and how fast. The failure scenarios run it while they break
//! things; it is bounded in time and in requests in flight, and only talks to the gateway it is
//! given.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Load {
    /// The gateway's base URL.
    pub gateway: String,
    pub username: String,
    pub password: String,
    /// The customer the user orders for.
    pub customer_id: Uuid,
    /// Orders per second.
    pub rate: u32,
    pub duration: Duration,
    /// The lines of every order: product and quantity.
    pub lines: Vec<(String, u32)>,
    /// What every order is paid with: a payment method of the payment provider.
    pub payment_method: String,
    /// Requests in flight at most; beyond it, ticks wait (and the achieved rate says so).
    pub max_in_flight: usize,
    /// Whether each order carries an `Idempotency-Key` of its own.
    pub idempotency_keys: bool,
}

/// What the load did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub sent: usize,
    /// 201: accepted.
    pub accepted: usize,
    /// 409: the inventory said the stock is short.
    pub refused: usize,
    /// Any other answer, or none.
    pub failed: usize,
    pub seconds: f64,
    pub orders_per_second: f64,
    pub latency_ms: Latency,
    /// The ids of the accepted orders.
    #[serde(skip)]
    pub accepted_ids: Vec<Uuid>,
    /// The first few failures, for the log.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

enum Outcome {
    Accepted(Uuid),
    Refused,
    Failed(String),
}

/// Logs in and places orders at `load.rate` for `load.duration`, then waits (at most 30 s) for
/// the answers still in flight.
pub async fn run(load: &Load) -> Result<Report, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let token = login(&http, load).await?;
    let url = format!("{}/api/orders", load.gateway.trim_end_matches('/'));
    let items: Vec<Value> = load
        .lines
        .iter()
        .map(|(product, quantity)| json!({ "productId": product, "quantity": quantity }))
        .collect();
    let body = Arc::new(json!({
        "customerId": load.customer_id,
        "items": items,
        "paymentMethod": load.payment_method,
    }));
    let slots = Arc::new(Semaphore::new(load.max_in_flight.max(1)));
    let total = (f64::from(load.rate) * load.duration.as_secs_f64()).round() as usize;
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load.rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..total {
        ticks.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (http, url, token, body) = (http.clone(), url.clone(), token.clone(), body.clone());
        let key = load.idempotency_keys.then(Uuid::new_v4);
        tasks.spawn(async move {
            let sent = Instant::now();
            let mut request = http.post(&url).bearer_auth(&token).json(&*body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key.to_string());
            }
            let answer = request.send().await;
            let outcome = match answer {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    match r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|o| o["id"].as_str()?.parse().ok())
                    {
                        Some(id) => Outcome::Accepted(id),
                        None => Outcome::Failed("201 without an order id".into()),
                    }
                }
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => Outcome::Refused,
                Ok(r) => Outcome::Failed(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            drop(slot);
            (sent.elapsed(), outcome)
        });
    }
    let mut report = Report::default();
    let mut latencies = Vec::new();
    let drain = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain);
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = &mut drain => {
                report.failed += tasks.len();
                report.failures.push(format!("{} requests unanswered after 30 s", tasks.len()));
                tasks.abort_all();
                break;
            }
        };
        let Some(joined) = joined else { break };
        let Ok((latency, outcome)) = joined else {
            report.failed += 1;
            continue;
        };
        latencies.push(latency.as_secs_f64() * 1000.0);
        match outcome {
            Outcome::Accepted(id) => {
                report.accepted += 1;
                report.accepted_ids.push(id);
            }
            Outcome::Refused => report.refused += 1,
            Outcome::Failed(why) => {
                report.failed += 1;
                if report.failures.len() < 5 {
                    report.failures.push(why);
                }
            }
        }
    }
    report.sent = total;
    report.seconds = started.elapsed().as_secs_f64();
    report.orders_per_second = report.sent as f64 / report.seconds.max(f64::EPSILON);
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    report.latency_ms = Latency {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: latencies.last().copied().unwrap_or(0.0),
    };
    Ok(report)
}

async fn login(http: &reqwest::Client, load: &Load) -> Result<String, String> {
    let url = format!("{}/auth/login", load.gateway.trim_end_matches('/'));
    let response = http
        .post(&url)
        .json(&json!({ "username": load.username, "password": load.password }))
        .send()
        .await
        .map_err(|e| format!("login at {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("login at {url}: {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "login answered without an access_token".into())
}
