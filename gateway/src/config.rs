use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use oms_saga::config::{DatabaseConfig, LogConfig, Secret};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{auth::Role, keys::KeyConfig};

/// The gateway's settings: the `[gateway]` section, or `OMS_GATEWAY__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub jwt: JwtConfig,
    /// Who may log in. Empty by default: a deployment configures its own users.
    pub users: Vec<UserConfig>,
    /// Path prefix to upstream. The longest matching prefix wins. Prefixes under `/api/` need
    /// a token; those under `/webhooks/` are public (a provider's webhooks, signed).
    pub routes: BTreeMap<String, RouteConfig>,
    /// How long an upstream may take to accept a connection; a dead one fails this fast.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long an upstream may take to answer (its status and headers), unless the route sets
    /// its own `timeout`.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// How long an answer's body may go without a byte; a stream of server-sent events sends
    /// keep-alives well within it.
    #[serde(with = "humantime_serde")]
    pub upstream_idle_timeout: Duration,
    /// How long a client may take to send its body.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Bounds on a request's headers: how many, and their total size.
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub health: HealthConfig,
    pub limits: LimitsConfig,
    pub cors: CorsConfig,
    /// The gateway's own database: sessions and the audit log.
    pub database: DatabaseConfig,
    pub log: LogConfig,
    /// Where its spans go.
    pub trace: oms_saga::trace::TraceConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt: JwtConfig::default(),
            users: Vec::new(),
            routes: BTreeMap::from([
                (
                    "/api/orders".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8082".into()),
                ),
                (
                    "/api/inventory".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8083".into()),
                ),
                (
                    "/api/products".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8083".into()),
                ),
                (
                    "/api/notifications".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8084".into()),
                ),
                (
                    "/webhooks/stripe".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8086".into()),
                ),
                (
                    "/api/schemas".to_owned(),
                    RouteConfig::Route(Route {
                        strip_prefix: true,
                        ..Route::new("http://127.0.0.1:8081")
                    }),
                ),
            ]),
            connect_timeout: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            health: HealthConfig::default(),
            limits: LimitsConfig::default(),
            cors: CorsConfig::default(),
            database: DatabaseConfig::named("oms_gateway"),
            log: LogConfig::default(),
            trace: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The Ed25519 keys (`oms-gateway generate-key` makes one). None by default, so no
    /// deployment runs on a known key.
    pub keys: Vec<KeyConfig>,
    /// Which key signs; by default the first private one.
    pub signing_kid: Option<String>,
    pub issuer: String,
    pub audience: String,
    /// How long an access token lasts. Short: a logout ends it at once, but a stolen token
    /// that is never presented after logout is only bounded by this.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a session lasts without a refresh.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            signing_kid: None,
            issuer: "oms-gateway".into(),
            audience: "oms".into(),
            ttl: Duration::from_secs(5 * 60),
            refresh_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// A token bucket: `per_second` (or `per_minute`) on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_second: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_minute: u32,
    pub burst: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Rate {
    pub const fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            per_second,
            per_minute: 0,
            burst,
        }
    }

    pub const fn per_minute(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: 0,
            per_minute,
            burst,
        }
    }

    /// How long the bucket takes to gain one token; `None` unless exactly one rate is set.
    pub fn period(&self) -> Option<Duration> {
        match (self.per_second, self.per_minute) {
            (n, 0) if n > 0 => Some(Duration::from_secs(1) / n),
            (0, n) if n > 0 => Some(Duration::from_secs(60) / n),
            _ => None,
        }
    }
}

/// Rate limits, counted per gateway instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Each caller's (token subject's) requests to each route, unless the route sets its own.
    pub per_client: Rate,
    /// Requests refused for want of a valid token, per client address.
    pub unauthenticated: Rate,
    /// Login attempts, per username and per client address.
    pub login_per_user: Rate,
    pub login_per_address: Rate,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_client: Rate::per_second(200, 400),
            unauthenticated: Rate::per_second(20, 40),
            login_per_user: Rate::per_minute(10, 5),
            login_per_address: Rate::per_minute(60, 20),
        }
    }
}

/// Active health checks and passive ejection of upstream instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed exchanges (no answer, or 502/503/504) that eject an instance...
    pub eject_after: u32,
    /// ...for this long.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            eject_after: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Which browser origins may call the gateway. None by default: CORS is closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// An argon2 PHC string (`oms-gateway hash-password` makes one).
    pub password_hash: Secret,
    pub role: Role,
    /// The customer whose orders a `user` acts on.
    pub customer_id: Option<Uuid>,
}

impl GatewayConfig {
    /// Checks what serde cannot, once, at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt.keys.is_empty() {
            return Err("jwt.keys is empty: `oms-gateway generate-key` makes one".into());
        }
        for (what, rate) in [
            ("per_client", self.limits.per_client),
            ("unauthenticated", self.limits.unauthenticated),
            ("login_per_user", self.limits.login_per_user),
            ("login_per_address", self.limits.login_per_address),
        ]
        .into_iter()
        .chain(
            self.routes
                .iter()
                .filter_map(|(prefix, route)| Some((prefix.as_str(), route.resolve().rate_limit?))),
        ) {
            if rate.period().is_none() || rate.burst == 0 {
                return Err(format!(
                    "rate {what}: set one of per_second and per_minute, and a burst, all positive"
                ));
            }
        }
        for user in &self.users {
            argon2::PasswordHash::new(user.password_hash.expose()).map_err(|e| {
                format!(
                    "user {}: password_hash is not an argon2 PHC string: {e}",
                    user.username
                )
            })?;
            if user.role == Role::User && user.customer_id.is_none() {
                return Err(format!(
                    "user {} has role user but no customer_id",
                    user.username
                ));
            }
        }
        for (prefix, route) in &self.routes {
            if !prefix.starts_with("/api/") && !prefix.starts_with("/webhooks/") {
                return Err(format!(
                    "route {prefix}: prefixes start with /api/ (signed-in callers) or /webhooks/ \
                     (public: the service checks the caller)"
                ));
            }
            let route = route.resolve();
            if route.upstream.urls().is_empty() {
                return Err(format!("route {prefix}: no upstream"));
            }
            for upstream in route.upstream.urls() {
                reqwest::Url::parse(upstream)
                    .map_err(|e| format!("route {prefix}: {upstream}: {e}"))?;
            }
        }
        for origin in &self.cors.allowed_origins {
            axum::http::HeaderValue::from_str(origin)
                .map_err(|e| format!("cors origin {origin}: {e}"))?;
        }
        Ok(())
    }
}

/// Where a path prefix goes: an upstream URL, or a table with the details.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RouteConfig {
    Upstream(String),
    Route(Route),
}

impl RouteConfig {
    pub fn resolve(&self) -> Route {
        match self {
            RouteConfig::Upstream(upstream) => Route::new(upstream),
            RouteConfig::Route(route) => route.clone(),
        }
    }
}

/// One instance's URL, or several, which share the route's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Upstream {
    One(String),
    Many(Vec<String>),
}

impl Upstream {
    pub fn urls(&self) -> &[String] {
        match self {
            Upstream::One(url) => std::slice::from_ref(url),
            Upstream::Many(urls) => urls,
        }
    }
}

/// How a route picks among its healthy instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// The instance with the fewest requests in flight from this gateway.
    LeastLoaded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub upstream: Upstream,
    #[serde(default)]
    pub balance: Balance,
    /// Removes the prefix before forwarding, for upstreams that serve at their root (a schema
    /// registry).
    #[serde(default)]
    pub strip_prefix: bool,
    /// What the health checks ask each instance.
    #[serde(default = "Route::default_health_path")]
    pub health_path: String,
    /// This route's bound on an upstream's answer, instead of `upstream_timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// This route's per-client limit, instead of `limits.per_client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
}

impl Route {
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: Upstream::One(upstream.into()),
            balance: Balance::default(),
            strip_prefix: false,
            health_path: Self::default_health_path(),
            timeout: None,
            rate_limit: None,
        }
    }

    pub fn default_health_path() -> String {
        "/health/ready".into()
    }
}
