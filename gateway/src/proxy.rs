//! Forwarding a checked request to its upstream service.
//!
//! The gateway passes on the request id, the trace context and `X-Forwarded-*`, and tells the
//! upstream who the caller is in the identity headers, after removing any the client sent. An
//! upstream that is down (refusing, or not accepting within the connect timeout) answers 502; one
//! that accepted but does not answer within the upstream timeout answers 504. Neither hangs.

use std::net::SocketAddr;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use oms_saga::{
    identity::{CUSTOMER_HEADER, HEADER_PREFIX, ROLE_HEADER, SUBJECT_HEADER},
    problem::Problem,
};

use crate::auth::Claims;

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
}

impl Proxy {
    pub fn new(client: reqwest::Client, max_body_bytes: usize) -> Self {
        Self {
            client,
            max_body_bytes,
        }
    }

    pub async fn forward(
        &self,
        url: String,
        request: Request<Body>,
        caller: &Claims,
        client_addr: Option<SocketAddr>,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let body = match axum::body::to_bytes(body, self.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(e) if is_length_limit(&e) => return Problem::too_large().into_response(),
            Err(e) => {
                return Problem::bad_request(format!("cannot read the request body: {e}"))
                    .into_response();
            }
        };

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
        headers.insert(SUBJECT_HEADER, value(&caller.sub));
        headers.insert(ROLE_HEADER, HeaderValue::from_static(caller.role.as_str()));
        if let Some(customer) = caller.customer_id {
            headers.insert(CUSTOMER_HEADER, value(&customer.to_string()));
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

        let sent = self
            .client
            .request(parts.method, &url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let headers = strip_hop_by_hop(response.headers().clone());
                let mut out = Response::new(Body::from_stream(response.bytes_stream()));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                out
            }
            // A connect timeout is a dead upstream, not a slow one: test it first.
            Err(e) if e.is_connect() => {
                tracing::warn!(%url, error = %e, "upstream unavailable");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    "The service is unavailable",
                )
                .detail("Retry later.")
                .into_response()
            }
            Err(e) if e.is_timeout() => {
                tracing::warn!(%url, error = %e, "upstream timed out");
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    "The service did not answer in time",
                )
                .into_response()
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "upstream exchange failed");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-failed",
                    "The service's answer was broken",
                )
                .into_response()
            }
        }
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
