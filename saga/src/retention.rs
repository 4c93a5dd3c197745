//! Keeping tables bounded. What a service keeps only for a while (idempotency keys, published
//! outbox rows, inbox records of messages the broker no longer keeps) is deleted by a [`Prune`] job: a rule (a table, and which of its
//! rows have outlived what they were kept for), applied in batches by [`crate::schedule::run`], so
//! that a backlog never holds long locks or one long transaction, and never waits on the saga.
//! Each round reports what it deleted and the table's size, so a table that keeps growing shows
//! in `/metrics`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::{schedule::Periodic, service::BoxError};

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
            interval: Duration::from_secs(60),
        }
    }

    /// Binds `scope` as `$3` of the rule: the rows of one consumer group, say.
    pub fn scoped(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// How often an idle job looks again (a minute by default).
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The most rows one round deletes (1,000 by default).
    pub fn batches_of(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    async fn report_size(&self) -> Result<(), sqlx::Error> {
        let (rows, bytes): (i64, i64) = sqlx::query_as(
            "SELECT n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables \
             WHERE relname = $1 AND schemaname = current_schema()",
        )
        .bind(self.table)
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("oms_table_rows", "table" => self.table).set(rows as f64);
        metrics::gauge!("oms_table_bytes", "table" => self.table).set(bytes as f64);
        Ok(())
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
        self.report_size().await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
