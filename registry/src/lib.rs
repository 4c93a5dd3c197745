//! A schema registry that speaks Confluent's REST API, for Avro schemas, backed by PostgreSQL.
//!
//! Any client built for Confluent's registry works against it unchanged: the same endpoints,
//! status codes and `{"error_code", "message"}` bodies. Schemas are normalised (parsed and
//! re-serialised) before they are compared, so the same schema always gets the same id, and
//! compatibility is decided by Avro's schema-resolution rules as apache-avro implements them.
//!
//! - [`compat`]: compatibility levels and the check.
//! - [`store`]: subjects, versions, schemas and config in PostgreSQL.
//! - [`http`]: the routes.

pub mod compat;
pub mod config;
mod error;
pub mod http;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

pub use config::RegistryConfig;
pub use error::Error;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/registry");

/// Serves the registry on `listener` until `shutdown` resolves.
pub async fn run(
    config: RegistryConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), oms_saga::Error> {
    let pool = config.database.connect_lazy()?;
    let state = Arc::new(http::AppState {
        store: store::Store::new(pool),
    });
    let tracer = oms_saga::trace::Tracer::new("registry", &config.trace)?;
    tracing::info!(addr = ?listener.local_addr().ok(), "schema registry listening");
    oms_saga::server::serve(listener, http::app(state, tracer), shutdown).await
}
