//! Work a service does on a clock rather than on an event: firing due deadlines, sending what
//! waits to be sent. Written once: a [`Periodic`] job says what one round does, and [`run`]
//! repeats it until shutdown. Rounds that took a full batch run again at once (there may be
//! more); the others wait the interval (or a wake), as a round that took less than a batch took
//! all there was; failing rounds back off and never end the loop. Jobs claim their
//! rows with `FOR UPDATE SKIP LOCKED`, so any number of instances may run the same job.
//!
//! A service's [`Wake`] shortens the waits of its polling loops (the outbox relay, the jobs that
//! ask for it): whatever commits work for them in the same process (a request, a consumer's
//! batch, a job's round) wakes them at once, instead of leaving it for their next look. Polling
//! stays, for what other processes write; a wake only ends a wait early.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::service::BoxError;

#[async_trait]
pub trait Periodic: std::fmt::Debug + Send + Sync + 'static {
    /// Names the job in logs and metrics.
    fn name(&self) -> &'static str;

    /// How long an idle job waits before looking again.
    fn interval(&self) -> Duration;

    /// The most items one round takes: a round that handled this many runs again at once, as
    /// more may wait. Unbounded, a round takes all that is due.
    fn batch_size(&self) -> usize {
        usize::MAX
    }

    /// Does what is due now, up to [`Periodic::batch_size`] items; returns how many it handled.
    async fn round(&self) -> Result<usize, BoxError>;

    /// Whether its service's [`Wake`] starts a round at once: for a job whose work the
    /// service's commits create as they happen, rather than a clock.
    fn woken(&self) -> bool {
        false
    }
}

/// Tells a service's polling loops that a commit gave them work. Cloned into whatever commits;
/// each loop listens with [`Wake::listen`]. Wakes are counted, so that a loop can tell its own
/// from the others' ([`Listener::wake_others`]).
#[derive(Debug, Clone)]
pub struct Wake(watch::Sender<u64>);

impl Default for Wake {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Wake {
    /// Ends the current wait of every listener, or its next one if it is busy.
    pub fn wake(&self) {
        self.bump();
    }

    /// Wakes, and returns the count this wake made.
    fn bump(&self) -> u64 {
        let mut count = 0;
        self.0.send_modify(|n| {
            *n = n.wrapping_add(1);
            count = *n;
        });
        count
    }

    pub fn listen(&self) -> Listener {
        let receiver = self.0.subscribe();
        let seen = *receiver.borrow();
        Listener { receiver, seen }
    }
}

/// A polling loop's side of a [`Wake`].
#[derive(Debug)]
pub struct Listener {
    receiver: watch::Receiver<u64>,
    /// The count of wakes when the loop last looked.
    seen: u64,
}

impl Listener {
    /// Forgets the wakes so far: the loop is about to look anyway.
    pub fn looking(&mut self) {
        self.seen = *self.receiver.borrow_and_update();
    }

    /// Wakes `wake` for the service's other loops, and lets this one sleep through it unless
    /// someone else woke it too since it last looked: a loop's own wake is no news to itself.
    pub fn wake_others(&mut self, wake: &Wake) {
        let count = wake.bump();
        if count == self.seen.wrapping_add(1) {
            self.seen = count;
        }
    }

    /// Waits `wait`, or less if woken since [`Listener::looking`]; says whether it was woken.
    pub async fn sleep(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            if *self.receiver.borrow_and_update() != self.seen {
                return true;
            }
            tokio::select! {
                _ = &mut deadline => return false,
                changed = self.receiver.changed() => {
                    if changed.is_err() {
                        // Nothing can wake it any more: only the clock.
                        (&mut deadline).await;
                        return false;
                    }
                }
            }
        }
    }
}

/// Runs `job` until `shutdown` resolves. A round in progress finishes first. A round that
/// handled something wakes the service's other loops (it may have written events); a job that
/// is [`Periodic::woken`] waits its interval only until someone else's wake says there is work.
/// A failing job's backoff is never cut short.
pub async fn run(job: Arc<dyn Periodic>, wake: Wake, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    let backoff = || crate::retry::backoff(job.interval(), Duration::from_secs(30));
    let mut failures = backoff();
    let mut listener = job.woken().then(|| wake.listen());
    loop {
        if let Some(listener) = &mut listener {
            listener.looking();
        }
        let wait = match job.round().await {
            Ok(handled) => {
                failures = backoff();
                if handled > 0 {
                    metrics::counter!("oms_periodic_items_total", "job" => job.name())
                        .increment(handled as u64);
                    match &mut listener {
                        Some(listener) => listener.wake_others(&wake),
                        None => wake.wake(),
                    }
                }
                // A batch size of 0 would call every round full.
                if handled > 0 && handled >= job.batch_size() {
                    Ok(Duration::ZERO)
                } else {
                    Ok(job.interval())
                }
            }
            Err(e) => {
                let delay = failures.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(job = job.name(), error = %e, retry_in = ?delay, "periodic job failed");
                metrics::counter!("oms_periodic_failures_total", "job" => job.name()).increment(1);
                Err(delay)
            }
        };
        let waited = async {
            match (wait, &mut listener) {
                (Ok(wait), Some(listener)) => {
                    listener.sleep(wait).await;
                }
                (Ok(wait) | Err(wait), _) => tokio::time::sleep(wait).await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = waited => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A job on a ten-minute clock that counts its rounds and handles `handles` items in each.
    #[derive(Debug)]
    struct Counting {
        rounds: AtomicUsize,
        woken: bool,
        /// What its first round handles; the others find nothing.
        handles: usize,
        batch_size: usize,
    }

    #[async_trait]
    impl Periodic for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(600)
        }
        fn batch_size(&self) -> usize {
            self.batch_size
        }
        async fn round(&self) -> Result<usize, BoxError> {
            let round = self.rounds.fetch_add(1, Ordering::SeqCst);
            // Only the first round finds work, or the job would never go idle.
            Ok(if round == 0 { self.handles } else { 0 })
        }
        fn woken(&self) -> bool {
            self.woken
        }
    }

    fn start(
        woken: bool,
        (handles, batch_size): (usize, usize),
        wake: &Wake,
        stop: &CancellationToken,
    ) -> Arc<Counting> {
        let job = Arc::new(Counting {
            rounds: AtomicUsize::new(0),
            woken,
            handles,
            batch_size,
        });
        tokio::spawn(run(
            job.clone(),
            wake.clone(),
            stop.clone().cancelled_owned(),
        ));
        job
    }

    /// Waits up to 10 s for `job` to have run `rounds` rounds.
    async fn rounds(job: &Counting, rounds: usize) {
        for _ in 0..1000 {
            if job.rounds.load(Ordering::SeqCst) >= rounds {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{rounds} rounds were not run within 10 s");
    }

    #[tokio::test]
    async fn a_wake_starts_a_round_of_a_woken_job_only() {
        let wake = Wake::default();
        let stop = CancellationToken::new();
        let woken = start(true, (0, 10), &wake, &stop);
        let clocked = start(false, (0, 10), &wake, &stop);
        rounds(&woken, 1).await;
        rounds(&clocked, 1).await;

        wake.wake();
        rounds(&woken, 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            clocked.rounds.load(Ordering::SeqCst),
            1,
            "a job that did not ask to be woken waits for its clock"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_round_that_handled_something_wakes_the_other_loops() {
        let wake = Wake::default();
        let mut listener = wake.listen();
        listener.looking();
        let stop = CancellationToken::new();
        let job = start(false, (3, 3), &wake, &stop);
        assert!(
            listener.sleep(Duration::from_secs(10)).await,
            "the round's work woke the listener"
        );
        // A full batch: it went on at once, found nothing, and waits for its clock.
        rounds(&job, 2).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_round_that_took_less_than_a_batch_waits_though_its_own_wake_went_out() {
        let wake = Wake::default();
        let mut listener = wake.listen();
        listener.looking();
        let stop = CancellationToken::new();
        let job = start(true, (3, 10), &wake, &stop);
        assert!(
            listener.sleep(Duration::from_secs(10)).await,
            "the round's work woke the other loops"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            job.rounds.load(Ordering::SeqCst),
            1,
            "it took all there was, and its own wake is no news to it"
        );
        // Someone else's wake still starts a round.
        wake.wake();
        rounds(&job, 2).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_job_with_a_batch_of_nothing_that_found_nothing_waits_its_interval() {
        let wake = Wake::default();
        let stop = CancellationToken::new();
        let job = start(false, (0, 0), &wake, &stop);
        rounds(&job, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(job.rounds.load(Ordering::SeqCst), 1);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_wake_from_elsewhere_during_a_round_is_not_lost_to_the_loops_own() {
        let wake = Wake::default();
        let mut listener = wake.listen();
        listener.looking();
        // Another commit while the loop was looking, then the loop's own wake.
        wake.wake();
        listener.wake_others(&wake);
        assert!(listener.sleep(Duration::from_secs(10)).await);
        // The loop's own wake alone: nothing to wake for.
        listener.looking();
        listener.wake_others(&wake);
        assert!(!listener.sleep(Duration::from_millis(100)).await);
    }
}
