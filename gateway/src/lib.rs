//! The OMS gateway: the one public entry point. It logs users in (argon2 password hashes, EdDSA
//! JWTs in sessions that logout ends), checks the token on every `/api/**` request, refuses
//! admin actions to users, limits each caller's rate, and forwards the rest to an instance of the
//! service that owns the path, saying who the caller is in `x-oms-*` headers. Services trust
//! those headers and listen only on private addresses.
//!
//! - [`auth`], [`keys`], [`sessions`]: users, passwords, signing keys, tokens and sessions.
//! - [`policy`]: which routes are for admins; [`audit`]: the record of their actions.
//! - [`limits`]: rate limits and bounds on requests.
//! - [`balance`], [`proxy`]: choosing a healthy instance, and forwarding with bounded waits and
//!   safe retries.
//! - [`http`]: the routes.
//! - [`docs`]: the OpenAPI document of everything it routes, and Swagger UI.
//! - [`console`]: the admin console page.

pub mod audit;
pub mod auth;
pub mod balance;
pub mod config;
pub mod console;
pub mod docs;
pub mod http;
pub mod keys;
pub mod limits;
pub mod policy;
pub mod proxy;
pub mod sessions;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

pub use config::GatewayConfig;

/// The gateway's database: sessions and the audit log.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/gateway");

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
    // The proxy's client passes on what an upstream answers, redirects included, and does its
    // own retrying (see `proxy`).
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.upstream_idle_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .build()?;
    let mut targets: Vec<proxy::Target> = config
        .routes
        .iter()
        .map(|(prefix, route)| {
            let route = route.resolve();
            Ok(proxy::Target {
                prefix: prefix.clone(),
                pool: balance::Pool::new(
                    route.upstream.urls(),
                    route.balance,
                    config.health.clone(),
                    &route.health_path,
                )
                .map_err(|e| Error::Config(format!("route {prefix}: {e}")))?,
                strip_prefix: route.strip_prefix,
                timeout: route.timeout.unwrap_or(config.upstream_timeout),
                limiter: limits::Limiter::new(route.rate_limit.unwrap_or(config.limits.per_client)),
            })
        })
        .collect::<Result<_, Error>>()?;
    targets.sort_by_key(|t| std::cmp::Reverse(t.prefix.len()));
    let db = config.database.connect_lazy()?;
    Ok(Arc::new(http::AppState {
        tokens: auth::Tokens::new(&config.jwt).map_err(Error::Config)?,
        users: auth::Users::new(&config.users),
        sessions: sessions::Sessions::new(db.clone(), config.jwt.refresh_ttl),
        audit: audit::Audit::new(db.clone()),
        readiness: oms_saga::server::Readiness::database(db),
        proxy: proxy::Proxy::new(client, config.max_body_bytes, config.request_timeout),
        health_client: reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()?,
        targets,
        unauthenticated: limits::Limiter::new(config.limits.unauthenticated),
        login_per_user: limits::Limiter::new(config.limits.login_per_user),
        login_per_address: limits::Limiter::new(config.limits.login_per_address),
    }))
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests.
/// Meanwhile it checks the upstreams' health, hears which sessions end, forgets idle clients'
/// rate-limit buckets, and deletes sessions a day after they ended.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tracer = oms_saga::trace::Tracer::new("gateway", &config.trace)?;
    let state = state(&config)?;
    let router = http::app(state.clone(), &config, tracer);
    let housekeeping = {
        let state = state.clone();
        let interval = config.health.interval;
        tokio::spawn(async move {
            let checks = balance::check_forever(
                state.targets.iter().map(|t| &t.pool),
                state.health_client.clone(),
                interval,
            );
            let forget = async {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    state.forget_idle_clients();
                    let day = std::time::Duration::from_secs(24 * 3600);
                    if let Err(e) = state.sessions.forget(day).await {
                        tracing::warn!(error = %e, "cannot delete old sessions");
                    }
                }
            };
            tokio::join!(checks, state.sessions.listen(), forget);
        })
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    let served = oms_saga::server::serve(listener, router, shutdown).await;
    housekeeping.abort();
    served?;
    Ok(())
}
#[cfg(feature = "testing")]
pub mod testing;
