//! The one retry policy of the plumbing: exponential backoff with jitter, without end. Callers
//! that must not skip work (the relay, the consumer, dead-lettering) wait as long as it takes.
//! And a circuit breaker for a step's calls to a service outside: once it has failed several
//! times in a row, calls fail at once for a while instead of each waiting for its timeout.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from `min` doubling up to `max`, each jittered, forever.
pub fn backoff(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    let delays = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build();
    // `without_max_times` never ends; the fallback only satisfies the type.
    delays.chain(std::iter::repeat(max))
}

/// How many failures in a row open a [`Breaker`], and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// A circuit breaker. Closed, every call goes through; `failures` failures in a row open it,
/// and for `open_for` every call is refused at once ([`Breaker::admit`] says so). Then one call
/// at a time is let through (half-open): a success closes it, a failure opens it again. The
/// gauge `oms_circuit_open{circuit}` is 1 while it is open.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    config: BreakerConfig,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// Half-open: the one call let through is under way.
    trial: bool,
}

impl Breaker {
    pub fn new(name: &'static str, config: BreakerConfig) -> Self {
        metrics::gauge!("oms_circuit_open", "circuit" => name).set(0.0);
        Self {
            name,
            config,
            state: Mutex::default(),
        }
    }

    /// Whether a call may go now; when not, how long until one may.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = state.open_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now < until {
            return Err(until - now);
        }
        if state.trial {
            return Err(Duration::ZERO);
        }
        state.trial = true;
        Ok(())
    }

    /// The call went through (whatever it answered): the service is there.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.open_until.is_some() {
            tracing::info!(circuit = self.name, "circuit closed");
            metrics::gauge!("oms_circuit_open", "circuit" => self.name).set(0.0);
        }
        *state = BreakerState::default();
    }

    /// The call failed for want of the service.
    pub fn failed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failures = state.failures.saturating_add(1);
        if state.trial || state.failures >= self.config.failures {
            if state.open_until.is_none() {
                tracing::warn!(
                    circuit = self.name,
                    failures = state.failures,
                    "circuit open"
                );
                metrics::gauge!("oms_circuit_open", "circuit" => self.name).set(1.0);
            }
            state.open_until = Some(Instant::now() + self.config.open_for);
            state.trial = false;
        }
    }
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    fn breaker(failures: u32, open_for: Duration) -> Breaker {
        Breaker::new("test", BreakerConfig { failures, open_for })
    }

    #[test]
    fn it_opens_after_failures_in_a_row_and_not_before() {
        let b = breaker(3, Duration::from_secs(60));
        b.failed();
        b.failed();
        assert!(b.admit().is_ok());
        b.succeeded();
        b.failed();
        b.failed();
        assert!(
            b.admit().is_ok(),
            "a success in between starts the count again"
        );
        b.failed();
        let wait = b.admit().expect_err("open");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }

    #[test]
    fn once_open_for_its_time_it_lets_one_call_through_which_decides() {
        let b = breaker(1, Duration::ZERO);
        b.failed();
        assert!(b.admit().is_ok(), "the trial call");
        assert!(b.admit().is_err(), "only one at a time while half-open");
        b.failed();
        assert!(
            b.admit().is_ok(),
            "open again, and again tried after its time"
        );
        b.succeeded();
        assert!(b.admit().is_ok());
        assert!(b.admit().is_ok(), "closed: every call goes");
    }
}
