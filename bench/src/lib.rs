//! The benchmark harness: how fast the whole saga goes on this machine, and how that compares
//! with what the machine's PostgreSQL and broker can do at all.
//!
//! Speed is measured here and nowhere else: the tests assert behaviour, never timings. A run
//! places real orders through the running stack (scripts/up), reads the saga's progress from the
//! events' own timestamps rather than by polling, and measures the two ceilings an order pays
//! for, one durable transaction and one message through the broker, in the same run with the
//! same client counts. Every phase is bounded in count and time.

pub mod ceiling;
pub mod cpu;
pub mod load;
pub mod report;
pub mod saga;
pub mod writes;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Saga(#[from] oms_saga::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `amount` shared over `orders` orders; nothing when there were none.
pub fn per_order(amount: f64, orders: u64) -> f64 {
    if orders == 0 {
        0.0
    } else {
        amount / orders as f64
    }
}

/// A latency histogram in microseconds, from 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed`, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}
