//! The order book in numbers, for Prometheus: orders per status, and sagas ended per outcome and
//! reason. Read from the database, the one place that knows them whichever instance or worker
//! moved an order; counted in memory they would start again from zero with every process, and
//! each instance would see only its own share.

use std::time::Duration;

use async_trait::async_trait;
use oms_saga::{event::cancel_reason, service::BoxError};
use sqlx::PgPool;

#[derive(Debug)]
pub struct OrderStats {
    pub pool: PgPool,
    pub interval: Duration,
}

#[async_trait]
impl oms_saga::schedule::Periodic for OrderStats {
    fn name(&self) -> &'static str {
        "order-stats"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn round(&self) -> Result<usize, BoxError> {
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, CASE WHEN status IN ('CANCELLED', 'COMPLETED') THEN status_reason END, \
             count(*) FROM orders GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut per_status = std::collections::BTreeMap::<String, i64>::new();
        let mut ended = std::collections::BTreeMap::<(&str, &str), i64>::new();
        for (status, reason, count) in &rows {
            *per_status.entry(status.clone()).or_default() += count;
            let outcome = match status.as_str() {
                "COMPLETED" => ("completed", ""),
                "CANCELLED" => ("cancelled", reason_label(reason.as_deref())),
                _ => continue,
            };
            *ended.entry(outcome).or_default() += count;
        }
        for status in oms_saga::event::OrderStatus::ALL {
            let count = per_status.get(status.as_str()).copied().unwrap_or(0);
            metrics::gauge!("oms_orders", "status" => status.as_str()).set(count as f64);
        }
        for ((outcome, reason), count) in ended {
            metrics::counter!("oms_sagas_total", "outcome" => outcome, "reason" => reason)
                .absolute(u64::try_from(count).unwrap_or(0));
        }
        // Nothing to go on with at once: the next round is one interval away.
        Ok(0)
    }
}

/// A cancellation reason as a label: the saga's own, or `requested` for whatever an admin
/// wrote, which would make a series per sentence.
pub fn reason_label(reason: Option<&str>) -> &'static str {
    cancel_reason::ALL
        .into_iter()
        .find(|known| Some(*known) == reason)
        .unwrap_or("requested")
}

/// Records how long a saga took, from placement to the end it just reached.
pub fn record_ended(order: &crate::store::Order) {
    let outcome = match order.status {
        oms_saga::event::OrderStatus::Completed => "completed",
        oms_saga::event::OrderStatus::Cancelled => "cancelled",
        _ => return,
    };
    let took = (order.updated_at - order.created_at)
        .num_milliseconds()
        .max(0) as f64
        / 1000.0;
    metrics::histogram!("oms_saga_duration_seconds", "outcome" => outcome).record(took);
}
