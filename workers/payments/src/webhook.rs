//! The provider's word, when it comes on its own: Stripe's webhooks (`POST /webhooks/stripe`,
//! public through the gateway), and a reconciler for what no webhook announces.
//!
//! A webhook proves itself by its `Stripe-Signature`: an HMAC-SHA256 of `"{t}.{body}"` under the
//! endpoint's secret, compared in constant time, with `t` within the tolerance of now (an old
//! capture replayed later is refused). A bad or missing signature is a 400 and changes nothing.
//! Each event's id is recorded with what it did, in one transaction, so a replayed event
//! changes nothing. And an event is only ever a prompt: the intent it names is read again
//! from the provider, and the saga moves on what the provider says now, so even a forged or
//! stale event can only make the step look.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::post,
};
use hmac::{Hmac, Mac};
use oms_saga::{
    config::Secret, consumer::HandlerError, problem::Problem, schedule::Periodic, service::BoxError,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ledger, saga::Payments};

/// The `[payments.webhooks]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint's signing secret (`whsec_...`). None: webhooks are refused, and the
    /// reconciler alone finds what they would have said.
    pub secret: Option<Secret>,
    /// How far a signature's time may be from now.
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    /// How often the reconciler asks about payments that wait for their customer.
    #[serde(with = "humantime_serde")]
    pub reconcile_every: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: None,
            tolerance: Duration::from_secs(300),
            reconcile_every: Duration::from_secs(2),
        }
    }
}

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's time is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// The `Stripe-Signature` header for `body` signed at `t` (Unix seconds) with `secret`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a `Stripe-Signature` header against `body`, at `now` (Unix seconds).
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    // `verify_slice` compares in constant time.
    signatures
        .iter()
        .any(|signature| mac(secret, t, body).verify_slice(signature).is_ok())
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

/// The part of a Stripe event the step reads.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct WebhookEvent {
    /// `evt_...`: what a replay is known by.
    id: String,
    /// `payment_intent.succeeded`, `payment_intent.payment_failed`, ...
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct EventData {
    /// The object the event is about: for `payment_intent.*`, the intent (its `id` is read).
    #[schema(value_type = Object)]
    object: serde_json::Value,
}

/// What a taken webhook is answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Received {
    received: bool,
    /// True when the event was taken before: nothing was done again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

#[derive(Debug)]
struct Webhooks {
    payments: Payments,
    config: WebhookConfig,
}

/// The payment step's OpenAPI document: the one route the gateway lets the public reach.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "OMS payments",
        description = "The payment step's side of the payment provider's conversation: its webhooks."
    ),
    paths(receive),
    components(schemas(Problem, WebhookEvent, EventData, Received)),
    tags((name = "webhooks", description = "Events the payment provider sends"))
)]
pub struct PaymentsDoc;

/// `POST /webhooks/stripe`, and the document that describes it.
pub fn routes(payments: Payments, config: WebhookConfig) -> Router {
    use utoipa::OpenApi as _;
    Router::new()
        .route("/webhooks/stripe", post(receive))
        .with_state(Arc::new(Webhooks { payments, config }))
        .merge(oms_saga::docs::routes(PaymentsDoc::openapi()))
}

fn counted(outcome: &'static str) {
    metrics::counter!("oms_payment_webhooks_total", "outcome" => outcome).increment(1);
}

/// Takes an event of Stripe's (public: no token; its signature proves where it comes from).
/// The intent it names is read again from Stripe, and the saga moves on what Stripe says now.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks", security(()),
    params(("Stripe-Signature" = String, Header,
        description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\" under the endpoint secret>")),
    request_body(content = WebhookEvent, content_type = "application/json",
        description = "A Stripe event, as Stripe sends it"),
    responses(
        (status = 200, description = "Taken, or (`replayed: true`) taken before: nothing changes twice", body = Received),
        (status = 400, description = "No, a malformed, a stale or a wrong signature; or no Stripe event. Nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not configured, or Stripe or the database unreachable: Stripe sends it again later", body = Problem, content_type = "application/problem+json"),
    ))]
async fn receive(State(hooks): State<Arc<Webhooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &hooks.config.secret else {
        counted("unconfigured");
        return Problem::unavailable("webhooks are not configured (payments.webhooks.secret)")
            .into_response();
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify(secret.expose(), header, &body, now, hooks.config.tolerance) {
        counted("bad_signature");
        return Problem::bad_request(format!("Stripe-Signature: {e}")).into_response();
    }
    let event: WebhookEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => {
            counted("malformed");
            return Problem::bad_request(format!("not a Stripe event: {e}")).into_response();
        }
    };
    match take(&hooks.payments, &event).await {
        Ok(taken) => {
            counted(if taken { "taken" } else { "replayed" });
            Json(Received {
                received: true,
                replayed: !taken,
            })
            .into_response()
        }
        // Stripe sends it again later.
        Err(e) => {
            counted("failed");
            tracing::warn!(event = %event.id, error = %e, "webhook not taken");
            Problem::unavailable(e.to_string()).into_response()
        }
    }
}

/// Records the event and does what it prompts, in one transaction; `Ok(false)` if it was taken
/// before.
async fn take(payments: &Payments, event: &WebhookEvent) -> Result<bool, HandlerError> {
    let mut tx = payments.pool.begin().await?;
    if !ledger::take_webhook(&mut tx, &event.id, &event.kind).await? {
        return Ok(false);
    }
    let intent_id = event
        .kind
        .starts_with("payment_intent.")
        .then(|| event.data.object.get("id").and_then(|id| id.as_str()))
        .flatten();
    if let Some(intent_id) = intent_id
        && let Some(order_id) = ledger::order_of(&mut *tx, intent_id).await?
    {
        match payments.reconcile(&mut tx, order_id).await {
            Ok(moved) => {
                tracing::info!(event = %event.id, kind = %event.kind, %order_id, moved, "webhook taken");
            }
            Err(HandlerError::Poison(why)) => {
                tracing::error!(event = %event.id, %order_id, %why, "webhook cannot be acted on");
            }
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Asks the provider about every payment that waits for its customer, a few at a time.
#[derive(Debug)]
pub struct Reconciler {
    pub payments: Payments,
    pub every: Duration,
}

#[async_trait]
impl Periodic for Reconciler {
    fn name(&self) -> &'static str {
        "reconcile_payments"
    }

    fn interval(&self) -> Duration {
        self.every
    }

    fn batch_size(&self) -> usize {
        100
    }

    async fn round(&self) -> Result<usize, BoxError> {
        let waiting = ledger::waiting(&self.payments.pool, 100).await?;
        let mut moved = 0;
        for order_id in &waiting {
            let mut tx = self.payments.pool.begin().await?;
            if self.payments.reconcile(&mut tx, *order_id).await? {
                moved += 1;
            }
            tx.commit().await?;
        }
        if moved > 0 {
            tracing::info!(moved, "payments that waited for their customer moved on");
        }
        // Those still waiting are not more work now: a round is only run again at once when
        // all it looked at moved on.
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const TOLERANCE: Duration = Duration::from_secs(300);

    #[test]
    fn a_signature_made_with_the_secret_is_accepted_within_the_tolerance() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_000, body);
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_000, TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_300, TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_301, TOLERANCE),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn another_secret_another_body_or_another_time_does_not_match() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_000, body);
        let refused = |secret, header: &str, body: &[u8]| {
            verify(secret, Some(header), body, 1_000, TOLERANCE)
        };
        assert_eq!(
            refused("whsec_other", &header, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            refused(SECRET, &header, br#"{"id":"evt_2"}"#),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(refused(SECRET, &moved, body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn one_matching_signature_among_several_is_enough_and_a_bad_header_is_named() {
        let body = b"{}";
        let good = sign(SECRET, 1_000, body);
        let (_, signature) = good.split_once("v1=").expect("a v1 signature");
        // Stripe sends one per secret while an endpoint's secret is being rolled.
        let both = format!("t=1000,v1={},v1={signature}", "ab".repeat(32));
        assert_eq!(verify(SECRET, Some(&both), body, 1_000, TOLERANCE), Ok(()));
        assert_eq!(
            verify(SECRET, None, body, 1_000, TOLERANCE),
            Err(SignatureError::Missing)
        );
        for malformed in ["", "t=1000", "v1=abcd", "t=x,v1=abcd", "t=1000,v1=zz"] {
            assert_eq!(
                verify(SECRET, Some(malformed), body, 1_000, TOLERANCE),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use utoipa::OpenApi as _;

    /// The gateway reads each service's document back into its own model to combine them.
    #[test]
    fn the_document_reads_back_as_the_gateway_reads_it() {
        let json = serde_json::to_string(&super::PaymentsDoc::openapi()).expect("json");
        let read = serde_json::from_str::<utoipa::openapi::OpenApi>(&json).map(|_| ());
        assert!(read.is_ok(), "{read:?}\n{json}");
    }
}
