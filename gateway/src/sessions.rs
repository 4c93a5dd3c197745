//! Sessions: what a login opens, a refresh continues and a logout ends.
//!
//! Access tokens are short-lived and name their session (`sid`); the gateway lets one through
//! only while its session is open, so a logout ends every token of the session at once. A refresh
//! token is `{sid}.{secret}`. The gateway's database keeps, per session, the user and a hash of
//! the current secret; a session expires after `refresh_ttl` without a refresh. Each refresh
//! replaces the secret. Presenting a replaced secret means the token was copied: the whole
//! session ends, so the copy and the original both stop working (reuse detection).
//!
//! Sessions are in PostgreSQL, which every instance shares and which outlives restarts. When it
//! cannot be asked, the gateway answers 503: it never lets a token through unchecked.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// The database did not answer, or failed.
#[derive(Debug, thiserror::Error)]
#[error("the gateway's database is unavailable: {0}")]
pub struct Unavailable(#[from] sqlx::Error);

/// What a refresh token was worth.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The session goes on, for `username`, with a new refresh token.
    Renewed {
        sid: Uuid,
        username: String,
        token: String,
    },
    /// No such open session, or not this gateway's token.
    Unknown,
    /// A replaced token: the session has been ended.
    Reused { username: String },
}

#[derive(Debug, Clone)]
pub struct Sessions {
    db: PgPool,
    ttl: Duration,
}

fn secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

impl Sessions {
    pub fn new(db: PgPool, ttl: Duration) -> Self {
        Self { db, ttl }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Opens a session for `username`: its id and first refresh token.
    pub async fn open(&self, username: &str) -> Result<(Uuid, String), Unavailable> {
        let (sid, secret) = (Uuid::new_v4(), secret());
        sqlx::query(
            "INSERT INTO sessions (id, username, refresh_hash, expires_at)
             VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')",
        )
        .bind(sid)
        .bind(username)
        .bind(digest(&secret))
        .bind(self.ttl_ms())
        .execute(&self.db)
        .await?;
        Ok((sid, format!("{sid}.{secret}")))
    }

    /// Trades a refresh token for the next one.
    pub async fn refresh(&self, token: &str) -> Result<Refresh, Unavailable> {
        let Some((sid, secret)) = token.split_once('.') else {
            return Ok(Refresh::Unknown);
        };
        let Ok(sid) = Uuid::parse_str(sid) else {
            return Ok(Refresh::Unknown);
        };
        let next = self::secret();
        let renewed: Option<String> = sqlx::query_scalar(
            "UPDATE sessions
                SET refresh_hash = $3, expires_at = now() + $4 * interval '1 millisecond'
              WHERE id = $1 AND refresh_hash = $2 AND ended_at IS NULL AND expires_at > now()
              RETURNING username",
        )
        .bind(sid)
        .bind(digest(secret))
        .bind(digest(&next))
        .bind(self.ttl_ms())
        .fetch_optional(&self.db)
        .await?;
        if let Some(username) = renewed {
            return Ok(Refresh::Renewed {
                sid,
                username,
                token: format!("{sid}.{next}"),
            });
        }
        // Not the current secret of an open session: if the session is open, the token is an
        // earlier one, copied.
        Ok(match self.end(sid, "reused").await? {
            Some(username) => Refresh::Reused { username },
            None => Refresh::Unknown,
        })
    }

    /// Whether session `sid` is still open.
    pub async fn is_open(&self, sid: Uuid) -> Result<bool, Unavailable> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sessions
                             WHERE id = $1 AND ended_at IS NULL AND expires_at > now())",
        )
        .bind(sid)
        .fetch_one(&self.db)
        .await?)
    }

    /// Ends session `sid`, if open: its refresh token and every access token of it stop working.
    /// Returns its user.
    pub async fn end(&self, sid: Uuid, reason: &str) -> Result<Option<String>, Unavailable> {
        Ok(sqlx::query_scalar(
            "UPDATE sessions SET ended_at = now(), end_reason = $2
              WHERE id = $1 AND ended_at IS NULL AND expires_at > now()
              RETURNING username",
        )
        .bind(sid)
        .bind(reason)
        .fetch_optional(&self.db)
        .await?)
    }

    /// Deletes sessions that ended or expired more than `after` ago.
    pub async fn forget(&self, after: Duration) -> Result<u64, Unavailable> {
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        Ok(sqlx::query(
            "DELETE FROM sessions
              WHERE coalesce(ended_at, expires_at) < now() - $1 * interval '1 millisecond'",
        )
        .bind(after_ms)
        .execute(&self.db)
        .await?
        .rows_affected())
    }
}
