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
