//! Before accepting an order, the API asks the inventory whether it could be served right now.
//! The answer is a hint for the customer's sake, not a decision: the saga decides. So the check
//! never stands in the way of an order:
//! - "definitely insufficient" (the inventory answered, and a line is short) refuses the order
//!   at once with 409;
//! - an inventory that is down, slow or failing is skipped, and the order is accepted;
//! - after `failure_threshold` failures in a row a circuit breaker opens, and for `open_for` the
//!   inventory is not asked at all (no request waits on a timeout it is sure to hit); then one
//!   trial request decides whether it closes again.
//!
//! The breaker's state is in readiness and in the `oms_circuit_breaker_state` gauge.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use oms_saga::event::{OrderLine, ShortLine};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvailabilityConfig {
    /// The inventory service's base URL; unset turns the check off.
    pub inventory_url: Option<String>,
    /// How long one check may take before it counts as a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker skips the check before trying again.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        Self {
            inventory_url: Some("http://127.0.0.1:8083".into()),
            timeout: Duration::from_millis(300),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Available,
    /// The inventory says these lines cannot be served.
    Short(Vec<ShortLine>),
    /// Not checked; the order goes ahead and the saga decides.
    Skipped(&'static str),
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is out; if it never reports (its request was dropped), another may go after
    /// `until`.
    HalfOpen {
        until: Instant,
    },
}

/// Counts failures in a row and stops calls while a dependency is known to be away.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    circuit: Mutex<Circuit>,
    threshold: u32,
    open_for: Duration,
    trial_timeout: Duration,
}

impl Breaker {
    pub fn new(
        name: &'static str,
        threshold: u32,
        open_for: Duration,
        trial_timeout: Duration,
    ) -> Self {
        let breaker = Self {
            name,
            circuit: Mutex::new(Circuit::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
            trial_timeout,
        };
        breaker.report(BreakerState::Closed);
        breaker
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        // A panic elsewhere while holding it cannot leave the enum half-written.
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.circuit() {
            Circuit::Closed { .. } => BreakerState::Closed,
            Circuit::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Circuit::Open { .. } => BreakerState::Open,
            Circuit::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out now.
    pub fn admit(&self) -> bool {
        let mut circuit = self.circuit();
        let now = Instant::now();
        match *circuit {
            Circuit::Closed { .. } => true,
            Circuit::Open { until } | Circuit::HalfOpen { until } if now >= until => {
                *circuit = Circuit::HalfOpen {
                    until: now + self.trial_timeout,
                };
                drop(circuit);
                self.report(BreakerState::HalfOpen);
                true
            }
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => false,
        }
    }

    pub fn succeeded(&self) {
        let mut circuit = self.circuit();
        let was_closed = matches!(*circuit, Circuit::Closed { .. });
        *circuit = Circuit::Closed { failures: 0 };
        drop(circuit);
        if !was_closed {
            tracing::info!(breaker = self.name, "circuit closed");
            self.report(BreakerState::Closed);
        }
    }

    pub fn failed(&self) {
        let mut circuit = self.circuit();
        let failures = match *circuit {
            Circuit::Closed { failures } => failures + 1,
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => self.threshold,
        };
        if failures < self.threshold {
            *circuit = Circuit::Closed { failures };
            return;
        }
        *circuit = Circuit::Open {
            until: Instant::now() + self.open_for,
        };
        drop(circuit);
        tracing::warn!(breaker = self.name, open_for = ?self.open_for, "circuit opened");
        self.report(BreakerState::Open);
    }

    fn report(&self, state: BreakerState) {
        metrics::gauge!("oms_circuit_breaker_state", "breaker" => self.name).set(state.gauge());
    }
}

/// The inventory's availability endpoint, behind a breaker.
#[derive(Debug)]
pub struct Availability {
    url: Option<String>,
    http: reqwest::Client,
    pub breaker: Breaker,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wanted<'a> {
    product_id: &'a str,
    quantity: u32,
}

#[derive(Deserialize)]
struct Answer {
    available: bool,
    short: Vec<ShortLine>,
}

impl Availability {
    pub fn new(config: &AvailabilityConfig) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url: config
                .inventory_url
                .as_ref()
                .map(|url| format!("{}/api/inventory/availability", url.trim_end_matches('/'))),
            http: reqwest::Client::builder().timeout(config.timeout).build()?,
            breaker: Breaker::new(
                "inventory",
                config.failure_threshold,
                config.open_for,
                config.timeout * 2,
            ),
        })
    }

    /// Asks whether `items` could be reserved now, as part of the trace `traceparent` names.
    pub async fn check(&self, items: &[OrderLine], traceparent: Option<&str>) -> Check {
        let Some(url) = &self.url else {
            return Check::Skipped("the availability check is off");
        };
        if !self.breaker.admit() {
            count("skipped_open");
            return Check::Skipped("the inventory is unavailable (circuit open)");
        }
        let wanted: Vec<Wanted> = items
            .iter()
            .map(|l| Wanted {
                product_id: &l.product_id,
                quantity: l.quantity,
            })
            .collect();
        let answer = async {
            let mut request = self.http.post(url);
            if let Some(traceparent) = traceparent {
                request = request.header(oms_saga::event::header::TRACEPARENT, traceparent);
            }
            let response = request
                .json(&serde_json::json!({ "items": wanted }))
                .send()
                .await?
                .error_for_status()?;
            response.json::<Answer>().await
        };
        match answer.await {
            Ok(answer) => {
                self.breaker.succeeded();
                if answer.available {
                    count("available");
                    Check::Available
                } else {
                    count("short");
                    Check::Short(answer.short)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the availability check failed; accepting the order unchecked");
                self.breaker.failed();
                count("skipped_error");
                Check::Skipped("the inventory did not answer (down, slow or failing)")
            }
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("oms_availability_checks_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_one_trial_closes_it() {
        let breaker = Breaker::new("test", 3, Duration::from_millis(50), Duration::from_secs(5));
        breaker.failed();
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        breaker.failed();
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        breaker.failed();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.admit());

        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit(), "one trial after open_for");
        assert!(!breaker.admit(), "and only one");
        breaker.failed();
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a failed trial opens it again"
        );

        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit());
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit());
    }

    #[test]
    fn a_trial_that_never_reports_does_not_hold_the_breaker_forever() {
        let breaker = Breaker::new(
            "test",
            1,
            Duration::from_millis(10),
            Duration::from_millis(30),
        );
        breaker.failed();
        std::thread::sleep(Duration::from_millis(15));
        assert!(breaker.admit());
        assert!(!breaker.admit());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.admit(), "the lost trial's slot expired");
    }
}
