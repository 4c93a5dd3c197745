//! HTTP load: placing orders open loop (a fixed rate, each latency measured from when the
//! request was due, so a slow answer cannot hide the requests it delayed) or closed loop
//! (clients back to back, at whatever rate the stack sustains), and reading one order over and
//! over, which the cache serves.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use reqwest::{RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Error, Percentiles, Result, histogram, record};

/// Where requests go: through the gateway with a token, or straight to the order API with the
/// identity headers the gateway would add.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    auth: Auth,
    customer_id: Uuid,
}

#[derive(Debug, Clone)]
enum Auth {
    Bearer(String),
    Identity,
}

impl Target {
    pub async fn gateway(
        http: &reqwest::Client,
        base: &str,
        username: &str,
        password: &str,
        customer_id: Uuid,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let answer: Value = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| Error::Setup("the login answered without an access_token".into()))?;
        Ok(Self {
            base,
            auth: Auth::Bearer(token.to_owned()),
            customer_id,
        })
    }

    pub fn api(base: &str, customer_id: Uuid) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            auth: Auth::Identity,
            customer_id,
        }
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Identity => request
                .header(oms_saga::identity::ROLE_HEADER, "user")
                .header(
                    oms_saga::identity::CUSTOMER_HEADER,
                    self.customer_id.to_string(),
                )
                .header(oms_saga::identity::SUBJECT_HEADER, "bench"),
        }
    }

    fn order_body(&self, product: &str) -> Value {
        json!({
            "customerId": self.customer_id,
            "items": [{ "productId": product, "quantity": 1 }],
            "paymentMethod": "pm_card_visa",
        })
    }

    async fn place(&self, http: &reqwest::Client, body: &Value) -> Result<Uuid, String> {
        let answer = self
            .authorize(http.post(format!("{}/api/orders", self.base)))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status() != StatusCode::CREATED {
            return Err(format!("{}", answer.status()));
        }
        let order: Value = answer.json().await.map_err(|e| e.to_string())?;
        order["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| "201 without an order id".into())
    }
}

/// What a run of placements got.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    pub seconds: f64,
    pub accepted_per_second: f64,
    pub latency_ms: Percentiles,
    pub first_failure: Option<String>,
    /// The accepted orders, with when each was sent.
    #[serde(skip)]
    pub orders: Vec<(Uuid, DateTime<Utc>)>,
}

struct Tally {
    histogram: Histogram<u64>,
    orders: Vec<(Uuid, DateTime<Utc>)>,
    failed: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: histogram(),
            orders: Vec::new(),
            failed: 0,
            first_failure: None,
        }
    }

    fn add(&mut self, latency: Duration, sent_at: DateTime<Utc>, outcome: Result<Uuid, String>) {
        record(&mut self.histogram, latency);
        match outcome {
            Ok(id) => self.orders.push((id, sent_at)),
            Err(why) => {
                self.failed += 1;
                self.first_failure.get_or_insert(why);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of the same bounds");
        self.orders.extend(other.orders);
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn finish(self, sent: u64, elapsed: Duration) -> Placed {
        let seconds = elapsed.as_secs_f64();
        Placed {
            sent,
            accepted: self.orders.len() as u64,
            failed: self.failed,
            seconds,
            accepted_per_second: self.orders.len() as f64 / seconds.max(f64::EPSILON),
            latency_ms: Percentiles::from(&self.histogram),
            first_failure: self.first_failure,
            orders: self.orders,
        }
    }
}

/// Places `rate` orders a second for `duration`, each sent when it is due whatever the answers
/// before it; at most `max_in_flight` unanswered (beyond that, requests are counted failed, not
/// delayed). Waits at most 30 s for the last answers.
pub async fn open_loop(
    http: &reqwest::Client,
    target: &Target,
    product: &str,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> Placed {
    let body = Arc::new(target.order_body(product));
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    let mut tally = Tally::new();
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        while let Some(done) = requests.try_join_next() {
            let (latency, sent_at, outcome) = done.expect("request task");
            tally.add(latency, sent_at, outcome);
        }
        if requests.len() >= max_in_flight {
            tally.failed += 1;
            tally
                .first_failure
                .get_or_insert_with(|| format!("more than {max_in_flight} requests in flight"));
            continue;
        }
        let (http, target, body) = (http.clone(), target.clone(), body.clone());
        requests.spawn(async move {
            let sent_at = Utc::now();
            let outcome = target.place(&http, &body).await;
            // From when it was due, not from when it went out.
            (due.elapsed(), sent_at, outcome)
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, requests.join_next()).await {
        let (latency, sent_at, outcome) = done.expect("request task");
        tally.add(latency, sent_at, outcome);
    }
    tally.failed += requests.len() as u64;
    tally.finish(total, started.elapsed())
}

/// `clients` place orders back to back for `duration`.
pub async fn closed_loop(
    http: &reqwest::Client,
    target: &Target,
    product: &str,
    clients: usize,
    duration: Duration,
) -> Placed {
    let body = Arc::new(target.order_body(product));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, target, body) = (http.clone(), target.clone(), body.clone());
        workers.spawn(async move {
            let mut tally = Tally::new();
            let mut sent = 0;
            while started.elapsed() < duration {
                let (at, sent_at) = (Instant::now(), Utc::now());
                let outcome = target.place(&http, &body).await;
                tally.add(at.elapsed(), sent_at, outcome);
                sent += 1;
            }
            (sent, tally)
        });
    }
    let mut tally = Tally::new();
    let mut sent = 0;
    while let Some(done) = workers.join_next().await {
        let (n, worker) = done.expect("load worker");
        sent += n;
        tally.merge(worker);
    }
    tally.finish(sent, started.elapsed())
}

/// What reading one order over and over got.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reads {
    pub requests: u64,
    pub failed: u64,
    pub per_second: f64,
    pub latency_ms: Percentiles,
}

/// `clients` read `order` back to back for `duration`.
pub async fn cached_reads(
    http: &reqwest::Client,
    target: &Target,
    order: Uuid,
    clients: usize,
    duration: Duration,
) -> Reads {
    let url = Arc::new(format!("{}/api/orders/{order}", target.base));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, target, url) = (http.clone(), target.clone(), url.clone());
        workers.spawn(async move {
            let mut histogram = histogram();
            let mut failed = 0;
            while started.elapsed() < duration {
                let at = Instant::now();
                let ok = match target.authorize(http.get(url.as_str())).send().await {
                    Ok(answer) => answer.status() == StatusCode::OK && answer.bytes().await.is_ok(),
                    Err(_) => false,
                };
                record(&mut histogram, at.elapsed());
                failed += u64::from(!ok);
            }
            (histogram, failed)
        });
    }
    let mut all = histogram();
    let mut failed = 0;
    while let Some(done) = workers.join_next().await {
        let (histogram, n) = done.expect("read worker");
        all.add(&histogram).expect("histograms of the same bounds");
        failed += n;
    }
    let seconds = started.elapsed().as_secs_f64();
    Reads {
        requests: all.len(),
        failed,
        per_second: all.len() as f64 / seconds.max(f64::EPSILON),
        latency_ms: Percentiles::from(&all),
    }
}
