//! The audit log: every admin action that reaches the gateway (status changes, cancellations,
//! stock changes, registry changes, the live event stream), whether it was allowed or refused,
//! with who, what, when and how it ended.
//!
//! Entries go to the gateway's database, shared by every instance and only ever appended to, and
//! to the log under the `audit` target. The gateway records after the upstream answered, so the
//! entry says what happened; if the database is down the action still stands, the entry is only
//! in the log, and `oms_gateway_audit_failures_total` counts it.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::sessions::Unavailable;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When the gateway answered.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The token's subject.
    pub who: String,
    pub role: String,
    pub method: String,
    pub path: String,
    /// The answer's status: 403 for a refused attempt.
    pub status: i16,
    pub request_id: String,
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct Audit {
    db: PgPool,
}

impl Audit {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    pub async fn record(&self, entry: Entry) {
        tracing::info!(target: "audit", who = %entry.who, role = %entry.role, method = %entry.method,
            path = %entry.path, status = entry.status, request_id = %entry.request_id,
            address = %entry.address, "admin action");
        let written = sqlx::query(
            "INSERT INTO audit_log (at, who, role, method, path, status, request_id, address)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(entry.at)
        .bind(&entry.who)
        .bind(&entry.role)
        .bind(&entry.method)
        .bind(&entry.path)
        .bind(entry.status)
        .bind(&entry.request_id)
        .bind(&entry.address)
        .execute(&self.db)
        .await;
        if let Err(e) = written {
            metrics::counter!("oms_gateway_audit_failures_total").increment(1);
            tracing::error!(error = %e, "audit entry not stored; it is only in this log");
        }
    }

    /// The newest `limit` entries, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<Entry>, Unavailable> {
        Ok(sqlx::query_as(
            "SELECT at, who, role, method, path, status, request_id, address
               FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db)
        .await?)
    }
}
