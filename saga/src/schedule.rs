//! Work a service does on a clock rather than on an event: firing due deadlines, sending what
//! waits to be sent. Written once: a [`Periodic`] job says what one round does, and [`run`]
//! repeats it until shutdown. Rounds that found work run again at once (there may be more);
//! idle rounds wait the interval; failing rounds back off and never end the loop. Jobs claim their
//! rows with `FOR UPDATE SKIP LOCKED`, so any number of instances may run the same job.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::service::BoxError;

#[async_trait]
pub trait Periodic: std::fmt::Debug + Send + Sync + 'static {
    /// Names the job in logs and metrics.
    fn name(&self) -> &'static str;

    /// How long an idle job waits before looking again.
    fn interval(&self) -> Duration;

    /// Does what is due now, in bounded batches; returns how many items it handled.
    async fn round(&self) -> Result<usize, BoxError>;
}

/// Runs `job` until `shutdown` resolves. A round in progress finishes first.
pub async fn run(job: Arc<dyn Periodic>, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    let backoff = || crate::retry::backoff(job.interval(), Duration::from_secs(30));
    let mut failures = backoff();
    loop {
        let wait = match job.round().await {
            Ok(handled) => {
                failures = backoff();
                if handled == 0 {
                    job.interval()
                } else {
                    metrics::counter!("oms_periodic_items_total", "job" => job.name())
                        .increment(handled as u64);
                    Duration::ZERO
                }
            }
            Err(e) => {
                let delay = failures.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(job = job.name(), error = %e, retry_in = ?delay, "periodic job failed");
                metrics::counter!("oms_periodic_failures_total", "job" => job.name()).increment(1);
                delay
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
