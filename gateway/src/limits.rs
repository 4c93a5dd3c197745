//! Bounds on what one client may ask of the gateway: token-bucket rate limits per caller and
//! route, per address for login attempts and unauthenticated requests, and bounds on a request's
//! headers. Each refusal is a 4xx problem+json; a rate limit says, in `Retry-After`, when to come
//! back.
//!
//! The buckets live in this instance's memory: behind N gateways a client gets up to N times the
//! rate, which the configured rates allow for.

use std::{hash::Hash, num::NonZeroU32, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use oms_saga::problem::Problem;

use crate::config::Rate;

/// A token bucket per key.
#[derive(Debug)]
pub struct Limiter<K: Hash + Eq + Clone>(DefaultKeyedRateLimiter<K>);

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        let period = rate.period().unwrap_or(Duration::from_secs(1));
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self(DefaultKeyedRateLimiter::keyed(quota))
    }

    /// Takes a token from `key`'s bucket, or says how long until there is one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.0.check_key(key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// Forgets the buckets that are full again, so that memory follows the active clients.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// 429, with `Retry-After` in whole seconds (at least one).
pub fn too_many(what: &str, wait: Duration) -> Response {
    metrics::counter!("oms_gateway_rate_limited_total", "limit" => what.to_owned()).increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
    )
    .detail(format!("Retry in {seconds} s."))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// How many headers a request may have, and their total size.
#[derive(Debug, Clone, Copy)]
pub struct HeaderBounds {
    pub count: usize,
    pub bytes: usize,
}

/// Refuses a request whose headers exceed the bounds with 431.
pub async fn bound_headers(
    State(bounds): State<HeaderBounds>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > bounds.count || bytes > bounds.bytes {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
        )
        .detail(format!(
            "At most {} headers of {} bytes in all.",
            bounds.count, bounds.bytes
        ))
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refuses_until_it_refills() {
        let limiter = Limiter::new(Rate::per_minute(1, 3));
        for _ in 0..3 {
            assert!(limiter.check(&"alice").is_ok());
        }
        let wait = limiter.check(&"alice").expect_err("over the burst");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert!(limiter.check(&"bob").is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response = too_many("test", Duration::from_millis(1200));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            too_many("test", Duration::ZERO).headers()[header::RETRY_AFTER],
            "1"
        );
    }
}
