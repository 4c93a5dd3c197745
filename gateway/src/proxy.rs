//! Forwarding a checked request to one of its route's upstream instances.
//!
//! The gateway passes on the request id, the trace context and `X-Forwarded-*`, and tells the
//! upstream who the caller is in the identity headers, after removing any the client sent. An
//! upstream that is down (refusing, or not accepting within the connect timeout) answers 502; one
//! that accepted but does not answer within the route's timeout answers 504. Neither hangs.
//!
//! A request is tried on another instance only when that cannot apply it twice: when the
//! connection was never made (nothing was sent), or when the request is idempotent (GET, HEAD,
//! OPTIONS, or carrying an `Idempotency-Key`, which the services deduplicate) and the instance
//! gave no answer or answered 502/503. A timeout is not retried: the first instance may still be
//! working on it, and retrying would double the wait.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use oms_saga::{
    identity::{CUSTOMER_HEADER, HEADER_PREFIX, ROLE_HEADER, SUBJECT_HEADER},
    problem::Problem,
};

use crate::{auth::Claims, balance::Pool, limits::Limiter};

/// The subject and role a public route's requests carry upstream.
pub const ANONYMOUS: &str = "anonymous";

/// A route: where its requests go, and its own bounds.
#[derive(Debug)]
pub struct Target {
    pub prefix: String,
    pub pool: Pool,
    pub strip_prefix: bool,
    /// The bound on an instance's answer (status and headers).
    pub timeout: Duration,
    /// Per caller.
    pub limiter: Limiter<String>,
}

impl Target {
    /// Whether the route serves `path`.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The URL of `path_and_query` on instance `base`: the base's path, then the request's
    /// (less the route's prefix, if stripped), and its query. Only the path and query are parsed
    /// here; the base was parsed once, at start.
    fn url(&self, base: &reqwest::Url, path_and_query: &str) -> reqwest::Url {
        let rest = if self.strip_prefix {
            &path_and_query[self.prefix.len()..]
        } else {
            path_and_query
        };
        let (path, query) = rest
            .split_once('?')
            .map_or((rest, None), |(path, query)| (path, Some(query)));
        let mut url = base.clone();
        let base_path = base.path().trim_end_matches('/');
        let path = path.strip_prefix('/').unwrap_or(path);
        url.set_path(&format!("{base_path}/{path}"));
        url.set_query(query);
        url
    }
}

/// How many instances one request may be tried on.
const MAX_ATTEMPTS: usize = 3;

/// Why an attempt got no answer.
enum Failure {
    /// The connection was never made: nothing was sent.
    Unreachable,
    /// Sent, but the exchange broke before an answer.
    Broken,
    TimedOut,
}

impl Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Unreachable => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "The service is unavailable",
            )
            .detail("Retry later.")
            .into_response(),
            Failure::Broken => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-failed",
                "The service's answer was broken",
            )
            .into_response(),
            Failure::TimedOut => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "The service did not answer in time",
            )
            .into_response(),
        }
    }
}

/// Headers that describe one connection, not the message, and so never cross the proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[derive(Debug, Clone)]
pub struct Proxy {
    client: reqwest::Client,
    max_body_bytes: usize,
    /// How long a client may take to send its body.
    request_timeout: Duration,
}

impl Proxy {
    pub fn new(client: reqwest::Client, max_body_bytes: usize, request_timeout: Duration) -> Self {
        Self {
            client,
            max_body_bytes,
            request_timeout,
        }
    }

    pub async fn forward(
        &self,
        target: &Target,
        request: Request<Body>,
        caller: Option<&Claims>,
        client_addr: Option<SocketAddr>,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let read = axum::body::to_bytes(body, self.max_body_bytes);
        let body = match tokio::time::timeout(self.request_timeout, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if is_length_limit(&e) => return Problem::too_large().into_response(),
            Ok(Err(e)) => {
                return Problem::bad_request(format!("cannot read the request body: {e}"))
                    .into_response();
            }
            Err(_) => {
                return Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "The request body did not arrive in time",
                )
                .into_response();
            }
        };
        let idempotent = parts.method.is_safe() || parts.headers.contains_key("idempotency-key");
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());

        let mut headers = strip_hop_by_hop(parts.headers);
        let host = headers.remove(header::HOST);
        headers.remove(header::AUTHORIZATION);
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(HEADER_PREFIX))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
        match caller {
            Some(caller) => {
                headers.insert(SUBJECT_HEADER, value(&caller.sub));
                headers.insert(ROLE_HEADER, HeaderValue::from_static(caller.role.as_str()));
                if let Some(customer) = caller.customer_id {
                    headers.insert(CUSTOMER_HEADER, value(&customer.to_string()));
                }
            }
            // A public route's caller is no one: a role no service grants anything to, so that
            // it is never taken for a call from inside (which carries no identity at all).
            None => {
                headers.insert(SUBJECT_HEADER, HeaderValue::from_static(ANONYMOUS));
                headers.insert(ROLE_HEADER, HeaderValue::from_static(ANONYMOUS));
            }
        }
        if let Some(addr) = client_addr {
            let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {}", addr.ip()),
                None => addr.ip().to_string(),
            };
            headers.insert("x-forwarded-for", value(&chain));
        }
        if let Some(host) = host {
            headers.insert("x-forwarded-host", host);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));

        let mut tried = Vec::with_capacity(MAX_ATTEMPTS);
        let mut failure = Failure::Unreachable;
        while tried.len() < MAX_ATTEMPTS {
            let Some(index) = target.pool.pick(&tried) else {
                break;
            };
            tried.push(index);
            let pool = &target.pool;
            let instance = &pool.instances()[index];
            let url = target.url(&instance.base, path_and_query);
            let _lease = pool.lease(index);
            let sent = self
                .client
                .request(parts.method.clone(), url)
                .headers(headers.clone())
                .body(body.clone())
                .send();
            let answer = match tokio::time::timeout(target.timeout, sent).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    pool.report(index, false);
                    tracing::warn!(upstream = %instance.url, path = path_and_query, error = %e,
                        "no answer from upstream");
                    // A connect timeout is a dead upstream, not a slow one: test it first.
                    failure = if e.is_connect() {
                        Failure::Unreachable
                    } else if e.is_timeout() {
                        Failure::TimedOut
                    } else {
                        Failure::Broken
                    };
                    match failure {
                        Failure::Unreachable => continue,
                        Failure::Broken if idempotent => continue,
                        _ => break,
                    }
                }
                Err(_) => {
                    pool.report(index, false);
                    tracing::warn!(upstream = %instance.url, path = path_and_query,
                        timeout = ?target.timeout, "upstream timed out");
                    failure = Failure::TimedOut;
                    break;
                }
            };
            let status = answer.status();
            let unavailable = matches!(
                status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
            pool.report(index, !unavailable);
            if unavailable && idempotent && tried.len() < MAX_ATTEMPTS && pool.has_untried(&tried) {
                tracing::warn!(upstream = %instance.url, path = path_and_query, %status,
                    "upstream unavailable; trying another instance");
                continue;
            }
            let headers = strip_hop_by_hop(answer.headers().clone());
            let mut out = Response::new(Body::from_stream(answer.bytes_stream()));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            return out;
        }
        failure.into_response()
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Removes the hop-by-hop headers, and those the `Connection` header names as such.
fn strip_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, HealthConfig, LimitsConfig};

    fn target(prefix: &str, base: &str, strip_prefix: bool) -> Target {
        let urls = [base.to_owned()];
        Target {
            prefix: prefix.into(),
            pool: Pool::new(
                &urls,
                Balance::default(),
                HealthConfig::default(),
                "/health",
            )
            .expect("in test"),
            strip_prefix,
            timeout: Duration::from_secs(1),
            limiter: Limiter::new(LimitsConfig::default().per_client),
        }
    }

    /// The URL `target` forwards `path_and_query` to, on its one instance.
    fn url(target: &Target, path_and_query: &str) -> String {
        target
            .url(&target.pool.instances()[0].base, path_and_query)
            .to_string()
    }

    #[test]
    fn the_request_path_and_query_follow_the_instance_base() {
        let orders = target("/api/orders", "http://127.0.0.1:8082/", false);
        assert_eq!(
            url(&orders, "/api/orders/7?a=1&b=%20x"),
            "http://127.0.0.1:8082/api/orders/7?a=1&b=%20x"
        );
        assert_eq!(
            url(&orders, "/api/orders"),
            "http://127.0.0.1:8082/api/orders"
        );
        assert_eq!(
            url(&orders, "/api/orders?"),
            "http://127.0.0.1:8082/api/orders?"
        );

        let schemas = target("/api/schemas", "http://127.0.0.1:8081", true);
        assert_eq!(
            url(&schemas, "/api/schemas/subjects"),
            "http://127.0.0.1:8081/subjects"
        );
        assert_eq!(url(&schemas, "/api/schemas"), "http://127.0.0.1:8081/");
        assert_eq!(
            url(&schemas, "/api/schemas?x=1"),
            "http://127.0.0.1:8081/?x=1"
        );

        let nested = target("/api/schemas", "http://registry:8081/v1/", true);
        assert_eq!(
            url(&nested, "/api/schemas/subjects/a%2Fb/versions"),
            "http://registry:8081/v1/subjects/a%2Fb/versions"
        );
    }
}
