//! Spreading a route's requests over its upstream instances.
//!
//! An instance is used while its last active health check passed and it is not ejected. Active
//! checks ask each instance's health path every `health.interval`. Passive ejection takes an
//! instance out for `health.eject_for` after `health.eject_after` consecutive failed exchanges
//! (no answer, or 502/503/504), without waiting for the next check. When no instance is usable the
//! route uses them all rather than none: a health check that is wrong everywhere must not take
//! the whole route down.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::config::{Balance, HealthConfig};

#[derive(Debug)]
pub struct Instance {
    pub url: String,
    /// `url`, parsed once: a request's URL is this with its path and query set.
    pub base: reqwest::Url,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    healthy: AtomicBool,
    ejected_until: Mutex<Option<Instant>>,
}

impl Instance {
    fn new(url: &str) -> Result<Self, String> {
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            base: reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            // Trusted until the first check says otherwise, so a fresh gateway routes at once.
            healthy: AtomicBool::new(true),
            ejected_until: Mutex::new(None),
        })
    }

    fn usable(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self
                .ejected_until
                .lock()
                .map(|until| until.is_none_or(|t| t <= now))
                .unwrap_or(true)
    }
}

/// Counts a request in flight on an instance until dropped.
#[derive(Debug)]
pub struct Lease<'a>(&'a Instance);

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Pool {
    instances: Vec<Instance>,
    balance: Balance,
    next: AtomicUsize,
    health: HealthConfig,
    health_path: String,
}

impl Pool {
    pub fn new(
        urls: &[String],
        balance: Balance,
        health: HealthConfig,
        health_path: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            instances: urls
                .iter()
                .map(|u| Instance::new(u))
                .collect::<Result<_, _>>()?,
            balance,
            next: AtomicUsize::new(0),
            health,
            health_path: health_path.to_owned(),
        })
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The instances that may be tried next, other than those in `tried`: the usable ones or,
    /// when none is usable, every one.
    fn candidates(&self, tried: &[usize]) -> Vec<usize> {
        let now = Instant::now();
        let untried = |i: &usize| !tried.contains(i);
        if self.instances.iter().any(|i| i.usable(now)) {
            (0..self.instances.len())
                .filter(untried)
                .filter(|&i| self.instances[i].usable(now))
                .collect()
        } else {
            (0..self.instances.len()).filter(untried).collect()
        }
    }

    /// Whether [`Pool::pick`] has an instance left after `tried`, without taking a turn.
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        !self.candidates(tried).is_empty()
    }

    /// The instance to try next, other than those in `tried`, or `None` when all were tried.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let candidates = self.candidates(tried);
        if candidates.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let by_turn = candidates[start % candidates.len()];
        Some(match self.balance {
            Balance::RoundRobin => by_turn,
            Balance::LeastLoaded => candidates
                .iter()
                .copied()
                .min_by_key(|&i| {
                    // Ties go to the instance whose turn it is.
                    (
                        self.instances[i].in_flight.load(Ordering::Relaxed),
                        i != by_turn,
                    )
                })
                .unwrap_or(by_turn),
        })
    }

    pub fn lease(&self, index: usize) -> Lease<'_> {
        let instance = &self.instances[index];
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(instance)
    }

    /// What an exchange with instance `index` showed: passive ejection counts failures.
    pub fn report(&self, index: usize, ok: bool) {
        let instance = &self.instances[index];
        if ok {
            instance.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = instance.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.health.eject_after.max(1) {
            instance.failures.store(0, Ordering::Relaxed);
            if let Ok(mut until) = instance.ejected_until.lock() {
                *until = Some(Instant::now() + self.health.eject_for);
            }
            metrics::counter!("oms_gateway_upstream_ejections_total", "upstream" => instance.url.clone())
                .increment(1);
            tracing::warn!(upstream = %instance.url, failures, eject_for = ?self.health.eject_for,
                "upstream ejected after consecutive failures");
        }
    }

    /// Asks every instance's health path once, and records the answers.
    pub async fn check(&self, client: &reqwest::Client) {
        let timeout = self.health.timeout;
        futures::future::join_all(self.instances.iter().map(|instance| async move {
            let url = format!("{}{}", instance.url, self.health_path);
            let up = tokio::time::timeout(timeout, client.get(&url).send())
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
            let was = instance.healthy.swap(up, Ordering::Relaxed);
            if was != up {
                tracing::warn!(upstream = %instance.url, up, "upstream health changed");
            }
            metrics::gauge!("oms_gateway_upstream_up", "upstream" => instance.url.clone())
                .set(if up { 1.0 } else { 0.0 });
        }))
        .await;
    }

    /// Whether the route has an instance to send to, and each instance's state.
    pub fn status(&self) -> (bool, Vec<(String, bool)>) {
        let now = Instant::now();
        let each: Vec<(String, bool)> = self
            .instances
            .iter()
            .map(|i| (i.url.clone(), i.usable(now)))
            .collect();
        (each.iter().any(|(_, up)| *up), each)
    }
}

/// Runs the active health checks of `pools` every `interval`, until dropped.
pub async fn check_forever<'a>(
    pools: impl Iterator<Item = &'a Pool> + Clone,
    client: reqwest::Client,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        futures::future::join_all(pools.clone().map(|pool| pool.check(&client))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, balance: Balance) -> Pool {
        let urls: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}")).collect();
        Pool::new(&urls, balance, HealthConfig::default(), "/health/ready").expect("in test")
    }

    #[test]
    fn round_robin_takes_turns_and_skips_what_was_tried() {
        let pool = pool(3, Balance::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| pool.pick(&[]).expect("in test")).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(pool.pick(&[0, 1]), Some(2));
        assert_eq!(pool.pick(&[0, 1, 2]), None);
        assert!(pool.has_untried(&[0, 1]) && !pool.has_untried(&[0, 1, 2]));
        let after: Vec<usize> = (0..3).map(|_| pool.pick(&[]).expect("in test")).collect();
        assert_eq!(after, [1, 2, 0], "asking takes no turn");
    }

    #[test]
    fn least_loaded_prefers_the_instance_with_fewest_in_flight() {
        let pool = pool(2, Balance::LeastLoaded);
        let _busy = pool.lease(0);
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(1));
        }
    }

    #[test]
    fn consecutive_failures_eject_and_an_all_down_route_still_tries_everyone() {
        let pool = pool(2, Balance::RoundRobin);
        for _ in 0..3 {
            pool.report(1, false);
        }
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(0));
        }
        assert_eq!(
            pool.pick(&[0]),
            None,
            "an ejected instance is no retry target"
        );
        for _ in 0..3 {
            pool.report(0, false);
        }
        let mut picks: Vec<usize> = (0..2).map(|_| pool.pick(&[]).expect("in test")).collect();
        picks.sort_unstable();
        assert_eq!(picks, [0, 1]);
        // A success in between resets the count.
        let pool = self::pool(2, Balance::RoundRobin);
        pool.report(1, false);
        pool.report(1, false);
        pool.report(1, true);
        pool.report(1, false);
        assert!(pool.status().1[1].1);
    }
}
