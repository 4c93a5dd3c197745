//! The gateway's routes: login, then every `/api/**` request checked and forwarded.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use oms_saga::{
    identity::Role,
    problem::{Json, Problem},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Claims, TokenError, Tokens, Users},
    config::Route,
    policy,
    proxy::Proxy,
};

#[derive(Debug)]
pub struct AppState {
    pub tokens: Tokens,
    pub users: Users,
    pub proxy: Proxy,
    /// Path prefixes and their upstreams, longest prefix first.
    pub routes: Vec<(String, Route)>,
}

impl AppState {
    /// The upstream URL for a request path (with its query), by the longest matching prefix.
    fn upstream_url(&self, path_and_query: &str) -> Option<String> {
        let path = path_and_query.split('?').next().unwrap_or_default();
        self.routes.iter().find_map(|(prefix, route)| {
            let rest = path.strip_prefix(prefix.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let base = route.upstream.trim_end_matches('/');
            Some(if route.strip_prefix {
                let tail = &path_and_query[prefix.len()..];
                if tail.starts_with('/') {
                    format!("{base}{tail}")
                } else {
                    format!("{base}/{tail}")
                }
            } else {
                format!("{base}{path_and_query}")
            })
        })
    }
}

pub fn app(state: Arc<AppState>, max_body_bytes: usize, tracer: oms_saga::trace::Tracer) -> Router {
    let routes = Router::new()
        .route("/auth/login", post(login))
        .route("/api", any(forward))
        .route("/api/{*rest}", any(forward))
        .route("/health/ready", get(ready))
        .route(oms_saga::docs::SPEC_PATH, get(spec))
        .merge(crate::console::routes())
        .merge(
            utoipa_swagger_ui::SwaggerUi::new(oms_saga::docs::UI_PATH)
                .config(utoipa_swagger_ui::Config::from(oms_saga::docs::SPEC_PATH)),
        );
    oms_saga::server::standard(routes, max_body_bytes, tracer).with_state(state)
}

/// The combined OpenAPI document of everything the gateway serves.
async fn spec(State(state): State<Arc<AppState>>) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(crate::docs::combined(&state.routes).await)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// Trades a username and password for a signed access token.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "A bearer token and how long it lasts, in seconds", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid username or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    Json(login): Json<Login>,
) -> Response {
    let Some(user) = state
        .users
        .authenticate(&login.username, &login.password)
        .await
    else {
        metrics::counter!("oms_gateway_login_failures_total").increment(1);
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid username or password",
        )
        .into_response();
    };
    match state.tokens.issue(&user) {
        Ok(access_token) => Json(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: state.tokens.ttl().as_secs(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a token");
            Problem::internal().into_response()
        }
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

/// Checks the token, then the role, then forwards. Authentication comes before routing, so an
/// anonymous caller learns nothing about which routes exist.
async fn forward(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let claims: Claims =
        match bearer(request.headers()).and_then(|token| state.tokens.verify(token)) {
            Ok(claims) => claims,
            Err(e) => return unauthorized(e),
        };
    if policy::requires_admin(request.method(), request.uri().path()) && claims.role != Role::Admin
    {
        return Problem::forbidden("This action is for admins").into_response();
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Some(url) = state.upstream_url(path_and_query) else {
        return Problem::not_found("No such route").into_response();
    };
    state
        .proxy
        .forward(url, request, &claims, Some(client))
        .await
}

/// Ready when every upstream answers its liveness check; the body names any that does not.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build();
    let Ok(client) = client else {
        return Problem::internal().into_response();
    };
    let checks = futures::future::join_all(state.routes.iter().map(|(prefix, route)| {
        let client = client.clone();
        async move {
            let url = format!(
                "{}{}",
                route.upstream.trim_end_matches('/'),
                route.health_path
            );
            let up = client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (prefix.clone(), up)
        }
    }))
    .await;
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, up)| !up)
        .map(|(p, _)| p.as_str())
        .collect();
    let body: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(p, up)| (p.clone(), (if *up { "up" } else { "down" }).into()))
        .collect();
    if down.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready", "upstreams": body })).into_response()
    } else {
        Problem::unavailable(format!("upstreams down: {}", down.join(", ")))
            .with("upstreams", body)
            .into_response()
    }
}
