//! Serving a router. Servers take an already bound listener and a shutdown future, so that tests
//! bind port 0 and run side by side, and binaries drain in-flight requests on SIGTERM.

use std::{future::Future, net::SocketAddr};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use opentelemetry::trace::SpanKind;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

use crate::{Error, Result, trace::Tracer};

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Connection info lets handlers see the peer address (the gateway's X-Forwarded-For).
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(Error::Serve)
}

/// The future [`shutdown_signal`] returns.
pub type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on SIGINT or SIGTERM.
pub fn shutdown_signal() -> ShutdownSignal {
    Box::pin(wait_for_signal())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; draining");
}

/// The `/metrics` handler: Prometheus text format.
pub async fn metrics() -> String {
    crate::telemetry::metrics().render()
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every service's router has around its own routes: `/health/live` and `/metrics`;
/// problem+json for unknown routes and methods; a body limit; a request id (kept from the
/// caller, or made) echoed in the response; and, per request, a span of `tracer`'s and the
/// request metrics.
pub fn standard<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    max_body_bytes: usize,
    tracer: Tracer,
) -> Router<S> {
    crate::telemetry::metrics();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    routes
        .route("/health/live", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(crate::problem::no_route)
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(middleware::from_fn_with_state(tracer, traced))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves one request inside a server span, a child of the caller's trace context. The span's
/// own `traceparent` replaces the caller's on the request, so that whatever the handler calls
/// or writes (an upstream, an outbox row) continues the trace from here. Counts the request and
/// its latency per route (the route's pattern, not the path, so ids do not explode the series).
async fn traced(State(tracer): State<Tracer>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let mut span = tracer.start_from_headers(
        format!("{method} {route}"),
        SpanKind::Server,
        request.headers(),
    );
    span.set("http.method", method.to_string());
    span.set("http.route", route.clone());
    if let Ok(value) = HeaderValue::from_str(&span.traceparent()) {
        request
            .headers_mut()
            .insert(crate::event::header::TRACEPARENT, value);
    }
    let log = tracing::info_span!("request", %method, path = %request.uri().path(),
        request_id = request.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()),
        trace_id = %span.trace_id());
    let response = next.run(request).instrument(log.clone()).await;
    let status = response.status();
    span.set("http.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.fail(status.to_string());
    }
    let elapsed = started.elapsed();
    log.in_scope(|| tracing::debug!(status = status.as_u16(), ?elapsed, "served"));
    let service = tracer.service().to_owned();
    metrics::counter!("oms_http_requests_total", "service" => service.clone(),
        "method" => method.to_string(), "route" => route.clone(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("oms_http_request_duration_seconds", "service" => service,
        "method" => method.to_string(), "route" => route)
    .record(elapsed.as_secs_f64());
    response
}

/// What a service needs to serve: its database, and, for those that write or read events, the
/// broker and the schema registry. `GET /health/ready` checks each within two seconds, all at
/// once, and answers 200 or 503 problem+json naming what is down.
#[derive(Clone, Default)]
pub struct Readiness {
    database: Option<sqlx::PgPool>,
    bus: Option<std::sync::Arc<dyn crate::bus::EventBus>>,
    registry: Option<RegistryCheck>,
}

/// The registry's address, and a client made once: making one loads the system's certificate
/// store, which took nearly half of an idle worker's CPU when every check made its own.
#[derive(Clone)]
struct RegistryCheck {
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("database", &self.database.is_some())
            .field("bus", &self.bus.is_some())
            .field("registry", &self.registry.as_ref().map(|r| &r.url))
            .finish()
    }
}

const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

type Check = std::result::Result<(), String>;

async fn bounded(check: impl Future<Output = Check>) -> Check {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

impl Readiness {
    pub fn database(pool: sqlx::PgPool) -> Self {
        Self {
            database: Some(pool),
            ..Self::default()
        }
    }

    pub fn bus(mut self, bus: std::sync::Arc<dyn crate::bus::EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The schema registry at `url`.
    pub fn registry(mut self, url: impl Into<String>) -> Self {
        self.registry = Some(RegistryCheck {
            url: url.into(),
            http: reqwest::Client::new(),
        });
        self
    }

    /// Each dependency, `up` or `down: why`.
    pub async fn check(&self) -> Vec<(&'static str, Check)> {
        let database = async {
            match &self.database {
                Some(pool) => Some(
                    bounded(async {
                        sqlx::query("SELECT 1")
                            .execute(pool)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                    .await,
                ),
                None => None,
            }
        };
        let broker = async {
            match &self.bus {
                Some(bus) => {
                    Some(bounded(async { bus.ping().await.map_err(|e| e.to_string()) }).await)
                }
                None => None,
            }
        };
        let registry = async {
            match &self.registry {
                Some(registry) => Some(bounded(registry.answers()).await),
                None => None,
            }
        };
        let (database, broker, registry) = tokio::join!(database, broker, registry);
        [
            ("database", database),
            ("broker", broker),
            ("registry", registry),
        ]
        .into_iter()
        .filter_map(|(name, check)| check.map(|c| (name, c)))
        .collect()
    }

    /// The readiness answer, with `extra` facts for operators that do not decide it.
    pub async fn respond(
        &self,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> axum::response::Response {
        self.respond_with(async { (extra, Vec::new()) }).await
    }

    /// [`Readiness::respond`] for a service with checks of its own, run beside the shared ones:
    /// `own` describes them and names those down, which make the service not ready either.
    pub async fn respond_with(
        &self,
        own: impl Future<Output = (serde_json::Map<String, serde_json::Value>, Vec<String>)>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (checks, (extra, also_down)) = tokio::join!(self.check(), own);
        let mut down: Vec<String> = checks
            .iter()
            .filter(|(_, c)| c.is_err())
            .map(|(name, _)| (*name).to_owned())
            .collect();
        down.extend(also_down);
        let mut described = extra;
        for (name, check) in &checks {
            let state = match check {
                Ok(()) => "up".to_owned(),
                Err(e) => format!("down: {e}"),
            };
            described.insert((*name).to_owned(), state.into());
        }
        if down.is_empty() {
            axum::Json(serde_json::json!({ "status": "ready", "checks": described }))
                .into_response()
        } else {
            crate::problem::Problem::unavailable(format!("not ready: {} down", down.join(", ")))
                .with("checks", serde_json::Value::Object(described))
                .into_response()
        }
    }
}

impl RegistryCheck {
    async fn answers(&self) -> Check {
        let answer = self
            .http
            .get(format!("{}/subjects", self.url.trim_end_matches('/')))
            .timeout(CHECK_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}
