//! The gateway's OpenAPI document: its own routes, and, for every prefix it forwards, the
//! upstream's document cut to what the prefix reaches, so that one document describes all a
//! client can call through the gateway. Upstreams are asked on each request for the document
//! (it is small and rarely read), so a redeployed service is described as it now is; one that
//! does not answer is left out, and the document says so.

use std::time::Duration;

use oms_saga::docs::{BearerAuth, SPEC_PATH};
use utoipa::{OpenApi as _, openapi::OpenApi};

use crate::proxy::Target;

/// The gateway's own routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "OMS",
        description = "The order-management system, as its gateway serves it. Log in with \
                       POST /auth/login, then send the token as `Authorization: Bearer ...`."
    ),
    paths(
        crate::http::login,
        crate::http::refresh,
        crate::http::logout,
        crate::http::me,
        crate::http::jwks,
        crate::http::audit_log
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sessions and tokens"),
        (name = "admin", description = "The gateway's own administration")
    )
)]
pub struct GatewayDoc;

/// The combined document for `targets`.
pub async fn combined(targets: &[Target]) -> OpenApi {
    let mut doc = GatewayDoc::openapi();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut missing = Vec::new();
    for target in targets {
        let prefix = &target.prefix;
        let Some(instance) = target.pool.pick(&[]) else {
            continue;
        };
        let url = format!("{}{SPEC_PATH}", target.pool.instances()[instance].url);
        match fetch(&client, &url).await {
            Ok(upstream) => doc.merge(reached(upstream, prefix, target.strip_prefix)),
            Err(e) => {
                tracing::debug!(%prefix, error = %e, "no OpenAPI document upstream");
                missing.push(prefix.as_str());
            }
        }
    }
    if !missing.is_empty() {
        let description = doc.info.description.get_or_insert_with(String::new);
        description.push_str(&format!(
            "\n\nNot described here (their services gave no document): {}.",
            missing.join(", ")
        ));
    }
    doc
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<OpenApi, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

/// The part of `upstream` a prefix reaches, under the paths clients use at the gateway.
fn reached(mut upstream: OpenApi, prefix: &str, strip_prefix: bool) -> OpenApi {
    let paths = std::mem::take(&mut upstream.paths.paths);
    upstream.paths.paths = paths
        .into_iter()
        .filter_map(|(path, item)| {
            let public = if strip_prefix {
                format!("{}{path}", prefix.trim_end_matches('/'))
            } else {
                path
            };
            let reached = public
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            reached.then_some((public, item))
        })
        .collect();
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(paths: &[&str]) -> OpenApi {
        let mut doc = GatewayDoc::openapi();
        doc.paths.paths.clear();
        for path in paths {
            doc.paths
                .paths
                .insert((*path).to_owned(), Default::default());
        }
        doc
    }

    fn paths(doc: &OpenApi) -> Vec<&str> {
        doc.paths.paths.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_prefix_reaches_its_own_paths_only() {
        let upstream = doc(&[
            "/api/orders",
            "/api/orders/{id}",
            "/api/ordersx",
            "/internal",
        ]);
        let reached = reached(upstream, "/api/orders", false);
        assert_eq!(paths(&reached), ["/api/orders", "/api/orders/{id}"]);
    }

    #[test]
    fn a_stripped_prefix_is_put_back_in_front() {
        let upstream = doc(&["/subjects", "/schemas/ids/{id}"]);
        let reached = reached(upstream, "/api/schemas", true);
        assert_eq!(
            paths(&reached),
            ["/api/schemas/schemas/ids/{id}", "/api/schemas/subjects"]
        );
    }
}
