//! Keeping tables bounded. What a service keeps only for a while (idempotency keys, published
//! outbox rows, inbox records of messages the broker no longer keeps) is deleted by a [`Prune`]
//! job: a rule (a table, and which of its rows have outlived what they were kept for), applied in
//! batches by [`crate::schedule::run`], so that a backlog never holds long locks or one long
//! transaction, and never waits on the saga. Each round reports what it deleted and the table's
//! size, so a table that keeps growing shows in `/metrics`. Once a job has deleted as many rows as
//! its table holds, it vacuums the table, so that the files stop growing too.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    schedule::{Periodic, Wake},
    service::BoxError,
};

/// Runs `work` with `prune` beside it, and stops pruning when `work` ends: how the relay keeps
/// its outbox bounded, and a consumer its inbox.
pub async fn alongside<T>(prune: Prune, work: impl Future<Output = T>) -> T {
    let stop = CancellationToken::new();
    let pruning = crate::schedule::run(
        Arc::new(prune),
        Wake::default(),
        stop.clone().cancelled_owned(),
    );
    let working = async {
        let done = work.await;
        stop.cancel();
        done
    };
    let (done, ()) = tokio::join!(working, pruning);
    done
}

/// Deletes, a batch per round, the rows of `table` that `rule` selects.
#[derive(Debug, Clone)]
pub struct Prune {
    name: &'static str,
    table: &'static str,
    pool: PgPool,
    /// A statement deleting at most `$2` rows of the table that are older than `$1` seconds
    /// (and belong to `$3`, when scoped).
    rule: &'static str,
    scope: Option<String>,
    keep: Duration,
    batch: usize,
    interval: Duration,
    /// Tables vacuumed with this one: its own deletes, and others' that churn beside it.
    vacuumed: Vec<&'static str>,
    /// Rows deleted since the last vacuum.
    unvacuumed: Arc<AtomicU64>,
}

impl Prune {
    /// `rule` deletes at most `$2` (bigint) rows that are older than `$1` (double precision,
    /// seconds): the rows kept for `keep`, and no longer.
    pub fn new(
        name: &'static str,
        table: &'static str,
        pool: PgPool,
        rule: &'static str,
        keep: Duration,
    ) -> Self {
        Self {
            name,
            table,
            pool,
            rule,
            scope: None,
            keep,
            batch: 1000,
            // A short window is looked at twice in its time, so that rows outlive it by half.
            interval: (keep / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            vacuumed: vec![table],
            unvacuumed: Arc::default(),
        }
    }

    /// Binds `scope` as `$3` of the rule: the rows of one consumer group, say.
    pub fn scoped(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Vacuums `table` too whenever it vacuums its own: a queue whose rows others delete.
    pub fn vacuuming(mut self, table: &'static str) -> Self {
        self.vacuumed.push(table);
        self
    }

    /// How often an idle job looks again (a minute, or half the window if that is shorter).
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The most rows one round deletes (1,000 by default).
    pub fn batches_of(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Once it has deleted as many rows as the table holds (1,000 at least), vacuums it, so that
    /// their space is used again rather than the files growing: autovacuum may be off, or wait
    /// for a fifth of a large table to be dead.
    async fn vacuum_if_due(&self, deleted: u64, live: i64) -> Result<(), sqlx::Error> {
        let unvacuumed = self.unvacuumed.fetch_add(deleted, Ordering::Relaxed) + deleted;
        if unvacuumed < u64::try_from(live).unwrap_or(0).max(1000) {
            return Ok(());
        }
        self.unvacuumed.store(0, Ordering::Relaxed);
        for table in &self.vacuumed {
            sqlx::raw_sql(&format!("VACUUM {table}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The table's live rows and bytes, for `/metrics`.
    async fn report_size(&self) -> Result<i64, sqlx::Error> {
        let (rows, bytes): (i64, i64) = sqlx::query_as(
            "SELECT n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables \
             WHERE relname = $1 AND schemaname = current_schema()",
        )
        .bind(self.table)
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("oms_table_rows", "table" => self.table).set(rows as f64);
        metrics::gauge!("oms_table_bytes", "table" => self.table).set(bytes as f64);
        Ok(rows)
    }
}

#[async_trait]
impl Periodic for Prune {
    fn name(&self) -> &'static str {
        self.name
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    async fn round(&self) -> Result<usize, BoxError> {
        let mut delete = sqlx::query(self.rule)
            .bind(self.keep.as_secs_f64())
            .bind(i64::try_from(self.batch).unwrap_or(i64::MAX));
        if let Some(scope) = &self.scope {
            delete = delete.bind(scope);
        }
        let deleted = delete.execute(&self.pool).await?.rows_affected();
        metrics::counter!("oms_retention_deleted_total", "table" => self.table).increment(deleted);
        let live = self.report_size().await?;
        self.vacuum_if_due(deleted, live).await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
