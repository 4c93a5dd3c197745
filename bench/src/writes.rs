//! What PostgreSQL wrote for a phase: its write transactions and its write-ahead log, per saga.
//!
//! Rates and CPU times drift with the machine's speed from one run to the next; what the
//! services write does not. The same statements write the same log whatever else the cores are
//! doing, so a change to what a saga writes (a row, an index entry, a transaction) shows here
//! even when the throughput's drift hides it. Both come from the server's own counters, exact at
//! the moment they are read (unlike the statistics views, which backends report late):
//! `pg_current_wal_lsn()` for the log, and the next transaction id to assign for the
//! transactions that wrote anything (a read-only one takes no id).
//!
//! They are the whole server's: a phase measured while something else writes to the same server
//! counts that too. A checkpoint makes the next change to each page log the whole page, so each
//! phase starts with one, and every phase pays the same way for the pages it touches first.

use serde::Serialize;
use sqlx::PgPool;

/// The server's log position and next transaction id.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    wal_bytes: i64,
    next_xid: i64,
}

impl Mark {
    /// Checkpoints, then marks where the server is; a role that may not checkpoint is warned
    /// about and measured all the same.
    pub async fn after_checkpoint(pool: &PgPool) -> sqlx::Result<Self> {
        if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
            eprintln!("warning: no checkpoint before the phase ({e}); its log may vary more");
        }
        Self::now(pool).await
    }

    pub async fn now(pool: &PgPool) -> sqlx::Result<Self> {
        let (wal_bytes, next_xid) = sqlx::query_as(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, \
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            wal_bytes,
            next_xid,
        })
    }

    /// What was written from `self` to `later`, per order for `orders` orders.
    pub fn until(&self, later: &Mark, orders: u64) -> Writes {
        let per_order = |n: i64| crate::per_order(n as f64, orders);
        Writes {
            orders,
            transactions_per_order: per_order(later.next_xid - self.next_xid),
            wal_bytes_per_order: per_order(later.wal_bytes - self.wal_bytes),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Writes {
    pub orders: u64,
    /// Transactions that wrote (took a transaction id), committed or not.
    pub transactions_per_order: f64,
    pub wal_bytes_per_order: f64,
}

#[cfg(test)]
mod tests {
    use oms_saga::testing;

    use super::*;

    #[tokio::test]
    async fn each_writing_transaction_and_its_log_are_counted() {
        static NONE: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
        let db = testing::database(&NONE).await;
        sqlx::query("CREATE TABLE notes (body TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .expect("create a table");
        let before = Mark::after_checkpoint(&db.pool).await.expect("a mark");
        // Short enough that PostgreSQL stores it as it is, uncompressed.
        let body = "x".repeat(1_500);
        for _ in 0..10 {
            sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                .bind(&body)
                .execute(&db.pool)
                .await
                .expect("insert");
        }
        let writes = before.until(&Mark::now(&db.pool).await.expect("a mark"), 10);
        // Other tests may write to the same server meanwhile: these are lower bounds.
        assert!(writes.transactions_per_order >= 1.0, "{writes:?}");
        assert!(writes.wal_bytes_per_order >= 1_500.0, "{writes:?}");
        assert_eq!(writes.orders, 10);
    }
}
