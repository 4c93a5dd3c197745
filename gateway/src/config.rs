use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use oms_saga::config::{LogConfig, Secret};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Role;

/// The gateway's settings: the `[gateway]` section, or `OMS_GATEWAY__*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub jwt: JwtConfig,
    /// Who may log in. Empty by default: a deployment configures its own users.
    pub users: Vec<UserConfig>,
    /// Path prefix to upstream. The longest matching prefix wins.
    pub routes: BTreeMap<String, RouteConfig>,
    /// How long an upstream may take to accept a connection; a dead one fails this fast.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The bound on a whole upstream exchange.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
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
                    "/api/notifications".to_owned(),
                    RouteConfig::Upstream("http://127.0.0.1:8084".into()),
                ),
                (
                    "/api/schemas".to_owned(),
                    RouteConfig::Route(Route {
                        upstream: "http://127.0.0.1:8081".into(),
                        strip_prefix: true,
                        health_path: Route::default_health_path(),
                    }),
                ),
            ]),
            connect_timeout: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
            log: LogConfig::default(),
            trace: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The HS256 signing key: at least 32 bytes. No default, so no deployment runs on a known key.
    pub secret: Option<Secret>,
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            issuer: "oms-gateway".into(),
            audience: "oms".into(),
            ttl: Duration::from_secs(15 * 60),
        }
    }
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
        match &self.jwt.secret {
            None => return Err("jwt.secret is not set".into()),
            Some(s) if s.expose().len() < 32 => {
                return Err("jwt.secret must be at least 32 bytes".into());
            }
            Some(_) => {}
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
            if !prefix.starts_with("/api/") {
                return Err(format!("route {prefix}: prefixes start with /api/"));
            }
            let upstream = &route.resolve().upstream;
            reqwest::Url::parse(upstream)
                .map_err(|e| format!("route {prefix}: {upstream}: {e}"))?;
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
            RouteConfig::Upstream(upstream) => Route {
                upstream: upstream.clone(),
                strip_prefix: false,
                health_path: Route::default_health_path(),
            },
            RouteConfig::Route(route) => route.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub upstream: String,
    /// Removes the prefix before forwarding, for upstreams that serve at their root (a schema
    /// registry).
    #[serde(default)]
    pub strip_prefix: bool,
    /// What readiness asks the upstream.
    #[serde(default = "Route::default_health_path")]
    pub health_path: String,
}

impl Route {
    pub fn default_health_path() -> String {
        "/health/live".into()
    }
}
