//! The gateway's routes: sessions (login, refresh, logout) and their keys, the audit log, and
//! every `/api/**` request checked, limited, forwarded and, for admin actions, audited.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use oms_saga::{
    identity::Role,
    problem::{Json, Problem, Query},
};
use serde::{Deserialize, Serialize};

use crate::{
    audit::{self, Audit},
    auth::{Claims, TokenError, Tokens, Users},
    limits::{self, Limiter},
    policy,
    proxy::{Proxy, Target},
    sessions::{Refresh, Sessions, Unavailable},
};

#[derive(Debug)]
pub struct AppState {
    pub tokens: Tokens,
    pub users: Users,
    pub sessions: Sessions,
    pub audit: Audit,
    pub proxy: Proxy,
    /// Asks the upstreams' health paths.
    pub health_client: reqwest::Client,
    /// Checks the gateway's database.
    pub readiness: oms_saga::server::Readiness,
    /// The routes, longest prefix first.
    pub targets: Vec<Target>,
    /// Requests refused for want of a valid token, per address.
    pub unauthenticated: Limiter<std::net::IpAddr>,
    pub login_per_user: Limiter<String>,
    pub login_per_address: Limiter<std::net::IpAddr>,
}

impl AppState {
    /// The route of a request path, by the longest matching prefix.
    fn target(&self, path: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.matches(path))
    }

    /// Forgets rate-limit buckets that are full again.
    pub fn forget_idle_clients(&self) {
        self.unauthenticated.forget_idle();
        self.login_per_user.forget_idle();
        self.login_per_address.forget_idle();
        for target in &self.targets {
            target.limiter.forget_idle();
        }
    }
}

pub fn app(
    state: Arc<AppState>,
    config: &crate::GatewayConfig,
    tracer: oms_saga::trace::Tracer,
) -> Router {
    let routes = Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/admin/audit", get(audit_log))
        .route("/api", any(forward))
        .route("/api/{*rest}", any(forward))
        .route("/webhooks/{*rest}", post(forward_public))
        .route("/health/ready", get(ready))
        .route(oms_saga::docs::SPEC_PATH, get(spec))
        .merge(crate::console::routes())
        .merge(
            utoipa_swagger_ui::SwaggerUi::new(oms_saga::docs::UI_PATH)
                .config(utoipa_swagger_ui::Config::from(oms_saga::docs::SPEC_PATH)),
        );
    let bounds = limits::HeaderBounds {
        count: config.max_headers,
        bytes: config.max_header_bytes,
    };
    let router = oms_saga::server::standard(routes, config.max_body_bytes, tracer)
        .layer(axum::middleware::from_fn_with_state(
            bounds,
            limits::bound_headers,
        ))
        .with_state(state);
    match cors(&config.cors.allowed_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// CORS for the configured origins; none (closed) when there are none.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("last-event-id"),
                header::HeaderName::from_static(oms_saga::server::REQUEST_ID_HEADER),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                header::HeaderName::from_static(oms_saga::server::REQUEST_ID_HEADER),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The combined OpenAPI document of everything the gateway serves.
async fn spec(State(state): State<Arc<AppState>>) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(crate::docs::combined(&state.targets).await)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

/// A session's tokens: a short-lived access token to send as `Authorization: Bearer`, and a
/// refresh token to trade for the next pair.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Seconds the access token lasts.
    pub expires_in: u64,
    pub refresh_token: String,
    /// Seconds the session lasts without a refresh.
    pub refresh_expires_in: u64,
}

fn invalid_credentials() -> Response {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid username or password",
    )
    .into_response()
}

fn store_down(e: &Unavailable) -> Response {
    tracing::error!(error = %e, "sessions unavailable");
    Problem::unavailable("Sessions are unavailable; retry later.").into_response()
}

/// Signs an access token for `user` in session `sid`, and answers with the pair.
fn tokens(
    state: &AppState,
    user: &crate::config::UserConfig,
    sid: uuid::Uuid,
    refresh_token: String,
) -> Response {
    match state.tokens.issue(user, sid) {
        Ok(access_token) => Json(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: state.tokens.ttl().as_secs(),
            refresh_token,
            refresh_expires_in: state.tokens.refresh_ttl().as_secs(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a token");
            Problem::internal().into_response()
        }
    }
}

/// Trades a username and password for a session: an access token and a refresh token.
/// Attempts are limited per username and per address, before the password is even checked.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "The session's tokens", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid username or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Sessions are unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Json(login): Json<Login>,
) -> Response {
    if let Err(wait) = state.login_per_address.check(&client.ip()) {
        return limits::too_many("login_per_address", wait);
    }
    if let Err(wait) = state.login_per_user.check(&login.username) {
        return limits::too_many("login_per_user", wait);
    }
    let Some(user) = state
        .users
        .authenticate(&login.username, &login.password)
        .await
    else {
        metrics::counter!("oms_gateway_login_failures_total").increment(1);
        tracing::warn!(target: "audit", username = %login.username, address = %client.ip(), "failed login");
        return invalid_credentials();
    };
    match state.sessions.open(&user.username).await {
        Ok((sid, refresh_token)) => tokens(&state, &user, sid, refresh_token),
        Err(e) => store_down(&e),
    }
}

/// Trades a refresh token for a new access token and the session's next refresh token. Each
/// refresh token works once: presenting one again ends the session.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The session's next tokens", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, used or ended refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Sessions are unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub(crate) async fn refresh(
    State(state): State<Arc<AppState>>,
    Json(request): Json<RefreshRequest>,
) -> Response {
    let refused = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
            "Invalid refresh token",
        )
        .into_response()
    };
    match state.sessions.refresh(&request.refresh_token).await {
        Err(e) => store_down(&e),
        Ok(Refresh::Unknown) => refused(),
        Ok(Refresh::Reused { username }) => {
            tracing::warn!(target: "audit", %username, "a used refresh token was presented again; session ended");
            refused()
        }
        Ok(Refresh::Renewed {
            sid,
            username,
            token,
        }) => match state.users.get(&username) {
            Some(user) => tokens(&state, user, sid, token),
            None => {
                // The user was removed since: the session goes with them.
                if let Err(e) = state.sessions.end(sid, "removed").await {
                    return store_down(&e);
                }
                refused()
            }
        },
    }
}

/// Ends the caller's session: its refresh token and every access token of it stop working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "The session has ended"),
        (status = 401, description = "Missing, invalid, expired or already ended token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Sessions are unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let claims = match authenticate(&state, &headers, client).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    match state.sessions.end(claims.sid, "logout").await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_down(&e),
    }
}

/// Who the caller is, as their token says: what the services behind the gateway are told.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Me {
    username: String,
    /// The customer whose orders this user places and sees; none for an admin.
    customer_id: Option<uuid::Uuid>,
    #[schema(example = json!(["user"]))]
    roles: Vec<&'static str>,
}

/// The caller: user name, customer id and roles, from their token.
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Missing, invalid, expired or ended token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn me(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&state, &headers, client).await {
        Ok(claims) => axum::Json(Me {
            username: claims.sub,
            customer_id: claims.customer_id,
            roles: vec![claims.role.as_str()],
        })
        .into_response(),
        Err(response) => response,
    }
}

/// The public keys that verify this gateway's tokens (RFC 7517), including those of keys that
/// no longer sign but whose tokens may still be live.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "A JSON Web Key Set", body = Object)),
    security(())
)]
pub(crate) async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.tokens.keys().jwks().clone()),
    )
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// How many entries, newest first (1 to 1000, default 100).
    limit: Option<i64>,
}

/// The newest admin actions, allowed or refused. For admins.
#[utoipa::path(get, path = "/admin/audit", tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = [audit::Entry]),
        (status = 400, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The audit log is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn audit_log(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    let claims = match authenticate(&state, &headers, client).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if claims.role != Role::Admin {
        return Problem::forbidden("The audit log is for admins").into_response();
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Problem::bad_request("limit is from 1 to 1000").into_response();
    }
    match state.audit.recent(limit).await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => store_down(&e),
    }
}

/// The caller's claims, if the bearer token is valid and its session open. Refusals are 401
/// (429 once an address keeps presenting bad tokens), or 503 when sessions cannot be checked.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: SocketAddr,
) -> Result<Claims, Response> {
    let refused = |error: TokenError| match state.unauthenticated.check(&client.ip()) {
        Ok(()) => unauthorized(error),
        Err(wait) => limits::too_many("unauthenticated", wait),
    };
    let claims = bearer(headers)
        .and_then(|token| state.tokens.verify(token))
        .map_err(refused)?;
    match state.sessions.is_open(claims.sid).await {
        Ok(true) => Ok(claims),
        Ok(false) => Err(refused(TokenError::Revoked)),
        Err(e) => Err(store_down(&e)),
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?;
    let value = value.to_str().map_err(|_| TokenError::Invalid)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(TokenError::Invalid),
    }
}

fn unauthorized(error: TokenError) -> Response {
    let reason = match error {
        TokenError::Missing => "missing",
        TokenError::Expired => "expired",
        TokenError::BadSignature => "bad_signature",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Revoked => "revoked",
        TokenError::Invalid => "invalid",
    };
    metrics::counter!("oms_gateway_auth_failures_total", "reason" => reason).increment(1);
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authentication required",
    )
    .detail(error.to_string())
    .into_response();
    let challenge = match error {
        TokenError::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Checks the token, then the role, then the caller's rate on the route, then forwards.
/// Authentication comes before routing, so an anonymous caller learns nothing about which routes
/// exist. Admin actions, and users' attempts at them, are audited.
async fn forward(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let claims = match authenticate(&state, request.headers(), client).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let admin_action = policy::requires_admin(request.method(), request.uri().path());
    let entry = admin_action.then(|| audit::Entry {
        at: chrono::Utc::now(),
        who: claims.sub.clone(),
        role: claims.role.as_str().to_owned(),
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        status: 0,
        request_id: request
            .headers()
            .get(oms_saga::server::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        address: client.ip().to_string(),
    });
    let response = if admin_action && claims.role != Role::Admin {
        Problem::forbidden("This action is for admins").into_response()
    } else {
        match state.target(request.uri().path()) {
            None => Problem::not_found("No such route").into_response(),
            Some(target) => match target.limiter.check(&claims.sub) {
                Err(wait) => limits::too_many("per_client", wait),
                Ok(()) => {
                    state
                        .proxy
                        .forward(target, request, Some(&claims), Some(client))
                        .await
                }
            },
        }
    };
    if let Some(mut entry) = entry {
        entry.status = i16::try_from(response.status().as_u16()).unwrap_or_default();
        state.audit.record(entry).await;
    }
    response
}

/// Forwards a public route's request (a payment provider's webhooks, which prove themselves by
/// their signature, checked by the service) without a token, at the route's rate per address.
async fn forward_public(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    match state.target(request.uri().path()) {
        None => Problem::not_found("No such route").into_response(),
        Some(target) => match target.limiter.check(&client.ip().to_string()) {
            Err(wait) => limits::too_many("per_client", wait),
            Ok(()) => {
                state
                    .proxy
                    .forward(target, request, None, Some(client))
                    .await
            }
        },
    }
}

/// Ready when the gateway's database answers and every route has an instance that passes its
/// health check; the body says which are up.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let upstreams = async {
        futures::future::join_all(
            state
                .targets
                .iter()
                .map(|t| t.pool.check(&state.health_client)),
        )
        .await;
        let mut down = Vec::new();
        let mut routes = serde_json::Map::new();
        for target in &state.targets {
            let (usable, instances) = target.pool.status();
            if !usable {
                down.push(target.prefix.clone());
            }
            let instances: serde_json::Map<String, serde_json::Value> = instances
                .into_iter()
                .map(|(url, up)| (url, (if up { "up" } else { "down" }).into()))
                .collect();
            routes.insert(target.prefix.clone(), instances.into());
        }
        let described = serde_json::Map::from_iter([("upstreams".to_owned(), routes.into())]);
        (described, down)
    };
    state.readiness.respond_with(upstreams).await
}
