//! Forwarding a checked request to its upstream service.
//!
//! The gateway passes on the request id and the trace context, and tells the upstream who the
//! caller is in `x-oms-*` headers, after removing any the client sent itself. An upstream that
//! is down answers 502 within the connect timeout; one that is slow answers 504 within the
//! upstream timeout. The gateway never hangs on either.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use oms_saga::problem::Problem;

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

/// The prefix of the identity headers only the gateway may set.
const IDENTITY_PREFIX: &str = "x-oms-";

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
        upstream: &str,
        request: Request<Body>,
        caller: &Claims,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", upstream.trim_end_matches('/'));
        let body = match axum::body::to_bytes(body, self.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "The request body is too large",
                )
                .into_response();
            }
        };

        let mut headers = strip(parts.headers);
        headers.remove(header::HOST);
        headers.remove(header::AUTHORIZATION);
        headers.retain_not_prefixed(IDENTITY_PREFIX);
        headers.insert("x-oms-subject", value(&caller.sub));
        headers.insert("x-oms-role", HeaderValue::from_static(caller.role.as_str()));
        if let Some(customer) = caller.customer_id {
            headers.insert("x-oms-customer-id", value(&customer.to_string()));
        }

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
                let headers = strip(response.headers().clone());
                let mut out = Response::new(Body::from_stream(response.bytes_stream()));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                out
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
                tracing::warn!(%url, error = %e, "upstream unavailable");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unavailable",
                    "The service is unavailable",
                )
                .detail("Retry later.")
                .into_response()
            }
        }
    }
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn strip(mut headers: HeaderMap) -> HeaderMap {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

trait RetainNotPrefixed {
    fn retain_not_prefixed(&mut self, prefix: &str);
}

impl RetainNotPrefixed for HeaderMap {
    fn retain_not_prefixed(&mut self, prefix: &str) {
        let spoofed: Vec<HeaderName> = self
            .keys()
            .filter(|name| name.as_str().starts_with(prefix))
            .cloned()
            .collect();
        for name in spoofed {
            self.remove(name);
        }
    }
}
