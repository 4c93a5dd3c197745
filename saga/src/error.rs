use std::net::SocketAddr;

/// Everything that can fail in the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("event bus: {0}")]
    Bus(String),

    #[error("publishing to {topic} (key {key}) failed: {reason}")]
    Publish {
        topic: String,
        key: String,
        reason: String,
    },

    #[error("cannot encode {event_type} event {event_id}: {reason}")]
    Encode {
        event_type: String,
        event_id: uuid::Uuid,
        reason: String,
    },

    #[error("cannot decode the event at {topic}/{partition}@{offset}: {reason}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
        /// The bytes may decode later (the schema registry was unreachable).
        transient: bool,
    },

    #[error("http server: {0}")]
    Serve(std::io::Error),

    #[error("the schema registry refused the schema of {subject}: {reason}")]
    SchemaRefused { subject: String, reason: String },

    #[error("schema registry: {0}")]
    Registry(String),

    #[error("telemetry: {0}")]
    Telemetry(String),

    #[error(
        "rewinding {group} on {topic} would deliver again messages of partition {partition} \
         published before {not_before}, the oldest its inbox remembers: an event applied then \
         could be applied twice; nothing was moved"
    )]
    RewindTooFar {
        group: String,
        topic: String,
        partition: i32,
        /// RFC 3339.
        not_before: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: a consumer retries these instead of
    /// dead-lettering the event.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Decode {
                transient: true,
                ..
            }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a database error means the server is away (down, restarting, unreachable) rather
/// than that the statement is wrong: callers answer 503 and retry, not 500.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down, crashed or
        // is starting up.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unavailable_and_a_bad_statement_is_not() {
        assert!(database_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(database_unavailable(&sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset)
        )));
        assert!(!database_unavailable(&sqlx::Error::RowNotFound));
        assert!(!database_unavailable(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
    }
}
