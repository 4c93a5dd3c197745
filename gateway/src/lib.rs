//! The OMS gateway: the one public entry point. It logs users in (argon2 password hashes, HS256
//! JWTs), checks the token on every `/api/**` request, refuses admin actions to users, and
//! forwards the rest to the service that owns the path, saying who the caller is in `x-oms-*`
//! headers. Services trust those headers and listen only on private addresses.
//!
//! - [`auth`]: users, passwords and tokens.
//! - [`policy`]: which routes are for admins.
//! - [`proxy`]: forwarding, with bounded waits.
//! - [`http`]: the routes.
//! - [`docs`]: the OpenAPI document of everything it routes, and Swagger UI.
//! - [`console`]: the admin console page.

pub mod auth;
pub mod config;
pub mod console;
pub mod docs;
pub mod http;
pub mod policy;
pub mod proxy;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

pub use config::GatewayConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Saga(#[from] oms_saga::Error),
}

/// Builds the gateway's state from a validated configuration.
pub fn state(config: &GatewayConfig) -> Result<Arc<http::AppState>, Error> {
    config.validate().map_err(Error::Config)?;
    let secret = config
        .jwt
        .secret
        .as_ref()
        .ok_or_else(|| Error::Config("jwt.secret".into()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.upstream_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut routes: Vec<(String, config::Route)> = config
        .routes
        .iter()
        .map(|(prefix, route)| (prefix.clone(), route.resolve()))
        .collect();
    routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    Ok(Arc::new(http::AppState {
        tokens: auth::Tokens::new(&config.jwt, secret.expose().as_bytes()),
        users: auth::Users::new(&config.users),
        proxy: proxy::Proxy::new(client, config.max_body_bytes),
        routes,
    }))
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tracer = oms_saga::trace::Tracer::new("gateway", &config.trace)?;
    let router = http::app(state(&config)?, config.max_body_bytes, tracer);
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    oms_saga::server::serve(listener, router, shutdown).await?;
    Ok(())
}
#[cfg(feature = "testing")]
pub mod testing;
