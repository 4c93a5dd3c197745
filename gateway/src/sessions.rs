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
//!
//! Asking on every request would cost a database round trip each, so each instance remembers the
//! sessions it found open, for at most [`REMEMBER_FOR`] and never past their expiry. It forgets
//! one as soon as it ends: ending a session notifies every instance (`NOTIFY`) in the same
//! transaction, the instance that ended it forgets at once, and the others within the
//! notification's delivery, milliseconds. Remembering is only on while this instance listens for
//! those notifications: when its listening connection drops, it forgets everything and asks the
//! database again until it listens anew.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

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

/// The channel on which ended sessions are announced, with the session id as the payload.
const ENDED: &str = "oms_session_ended";

/// The longest an instance trusts a session it found open without asking again: a bound on
/// what a notification it somehow missed could cost.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30);

/// The most sessions remembered; past it, they are all forgotten and asked for again.
const REMEMBER_AT_MOST: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Sessions {
    db: PgPool,
    ttl: Duration,
    open: Arc<Remembered>,
}

/// The sessions this instance found open, until when it trusts each.
#[derive(Debug, Default)]
struct Remembered {
    until: Mutex<HashMap<Uuid, Instant>>,
    /// Whether ends are being heard; nothing is remembered otherwise.
    listening: AtomicBool,
    /// Counts ends heard and losses of hearing: an answer the database gave before a change of
    /// it may be stale, and is not remembered.
    epoch: AtomicU64,
}

impl Remembered {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn knows_open(&self, sid: Uuid) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .entries()
                .get(&sid)
                .is_some_and(|until| *until > Instant::now())
    }

    /// Remembers `sid` as open for `left`, unless something changed since `epoch`.
    fn remember(&self, sid: Uuid, left: Duration, epoch: u64) {
        let mut entries = self.entries();
        if !self.listening.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= REMEMBER_AT_MOST {
            entries.clear();
        }
        entries.insert(sid, Instant::now() + left.min(REMEMBER_FOR));
    }

    fn forget(&self, sid: Uuid) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(&sid);
    }

    /// Forgets everything, and remembers from now on only if `listening`.
    fn reset(&self, listening: bool) {
        let mut entries = self.entries();
        self.listening.store(listening, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

fn secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

impl Sessions {
    pub fn new(db: PgPool, ttl: Duration) -> Self {
        Self {
            db,
            ttl,
            open: Arc::default(),
        }
    }

    /// Hears which sessions end, on any instance, for as long as it runs; reconnects when the
    /// connection drops. Until it first listens, and while it is reconnecting, every check asks
    /// the database.
    pub async fn listen(&self) {
        let backoff =
            || oms_saga::retry::backoff(Duration::from_millis(100), Duration::from_secs(5));
        let mut delays = backoff();
        loop {
            match self.hear_ends().await {
                Ok(()) => delays = backoff(),
                Err(e) => tracing::warn!(error = %e,
                    "cannot listen for ended sessions; asking the database every time"),
            }
            self.open.reset(false);
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
        }
    }

    /// Listens until the connection is lost (`Ok`) or cannot be made.
    async fn hear_ends(&self) -> Result<(), sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.db).await?;
        listener.listen(ENDED).await?;
        // Listening now: what was remembered before may have missed an end.
        self.open.reset(true);
        while let Some(notification) = listener.try_recv().await? {
            match Uuid::parse_str(notification.payload()) {
                Ok(sid) => self.open.forget(sid),
                Err(_) => self.open.reset(true),
            }
        }
        Ok(())
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

    /// Whether session `sid` is still open: as remembered, or as the database says.
    pub async fn is_open(&self, sid: Uuid) -> Result<bool, Unavailable> {
        if self.open.knows_open(sid) {
            return Ok(true);
        }
        let epoch = self.open.epoch.load(Ordering::Acquire);
        let left_ms: Option<i64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM expires_at - now()) * 1000)::bigint FROM sessions
              WHERE id = $1 AND ended_at IS NULL AND expires_at > now()",
        )
        .bind(sid)
        .fetch_optional(&self.db)
        .await?;
        let Some(left_ms) = left_ms else {
            return Ok(false);
        };
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        self.open.remember(sid, left, epoch);
        Ok(true)
    }

    /// Ends session `sid`, if open: its refresh token and every access token of it stop working,
    /// on every instance. Returns its user.
    pub async fn end(&self, sid: Uuid, reason: &str) -> Result<Option<String>, Unavailable> {
        let ended = sqlx::query_scalar(
            "WITH ended AS (
                UPDATE sessions SET ended_at = now(), end_reason = $2
                 WHERE id = $1 AND ended_at IS NULL AND expires_at > now()
                 RETURNING username)
             SELECT username, pg_notify($3, $1::text)::text FROM ended",
        )
        .bind(sid)
        .bind(reason)
        .bind(ENDED)
        .fetch_optional(&self.db)
        .await?;
        // Here at once, without waiting for the notification: it also stops a check that read
        // the session as open before the end from remembering it.
        self.open.forget(sid);
        Ok(ended)
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
