//! A typed client of the part of Stripe's REST API the payment step uses, over the project's
//! HTTP client. Bodies are form-encoded and answers JSON, as Stripe's are; amounts are integer
//! minor units and currencies lower-case ISO 4217 codes.
//!
//! Every call that changes something carries an Idempotency-Key derived from the order and the
//! step (`<order id>:<step>`), so that Stripe answers a retried call with its first answer.
//! Servers that ignore the header (localstripe does) make a second object instead: the step
//! must therefore also keep its own record, and look an intent up before it makes another.

use std::{collections::HashMap, sync::Arc, time::Duration};

use oms_saga::{
    config::Secret,
    retry::{Breaker, BreakerConfig},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// Where Stripe is and how to reach it: the `[payments.stripe]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    /// `https://api.stripe.com` for Stripe itself; localstripe's address here.
    pub base_url: String,
    /// A secret key (`sk_test_...` for a test account). Never logged.
    pub secret_key: Secret,
    /// How long one call may take before it counts as the provider being unavailable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After this many unavailable answers in a row, calls fail at once for a while: the
    /// orders wait (their events are retried with backoff) without each call waiting out its
    /// timeout against a provider that is down.
    pub breaker: BreakerConfig,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8420".into(),
            secret_key: Secret::new("sk_test_oms"),
            timeout: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Why a call did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// The card was declined: an answer about the customer's money, not a failure.
    #[error("declined ({code}): {message}")]
    Declined { code: String, message: String },
    /// Stripe refused the request itself (a bad key, an intent in the wrong state): retrying
    /// the same call cannot succeed.
    #[error("refused with {status}: {message}")]
    Refused { status: u16, message: String },
    /// Stripe could not be reached, took too long, or failed on its side: worth retrying.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Where a PaymentIntent is in its life, as Stripe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    /// The customer must act first (3-D Secure); the intent's client secret lets them.
    RequiresAction,
    Processing,
    /// Authorized: the money is held until captured or cancelled.
    RequiresCapture,
    Canceled,
    Succeeded,
}

/// A PaymentIntent, as far as the payment step reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: IntentStatus,
    /// In minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// What a customer's browser needs to complete an action; only its owner may see it.
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// The charge its confirmation made, if it was ever confirmed: an id at Stripe, the charge
    /// itself at localstripe. Only whether there is one is read.
    #[serde(default)]
    pub latest_charge: Option<serde_json::Value>,
}

impl PaymentIntent {
    /// Whether it was ever confirmed: an intent that never was (a draft whose creation's answer
    /// was lost, say) never held money.
    pub fn was_confirmed(&self) -> bool {
        self.latest_charge.as_ref().is_some_and(|c| !c.is_null())
    }
}

/// A refund of a captured PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub status: String,
    pub payment_intent: Option<String>,
}

/// A step of an order's payment, which with the order makes a call's Idempotency-Key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Confirm,
    Capture,
    Cancel,
    Refund,
}

impl Step {
    fn key(self, order_id: Uuid) -> String {
        let step = match self {
            Step::Create => "create",
            Step::Confirm => "confirm",
            Step::Capture => "capture",
            Step::Cancel => "cancel",
            Step::Refund => "refund",
        };
        format!("{order_id}:{step}")
    }
}

/// Stripe's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A page of a list Stripe answers.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// A client of one Stripe account.
#[derive(Debug, Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base_url: String,
    secret_key: Secret,
    breaker: Arc<Breaker>,
}

impl Stripe {
    pub fn new(config: &StripeConfig) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| StripeError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            secret_key: config.secret_key.clone(),
            breaker: Arc::new(Breaker::new("stripe", config.breaker)),
        })
    }

    /// Makes the order's PaymentIntent for `amount_minor` of `currency`, to be authorized with
    /// `payment_method` and captured later, without confirming it: its id can be kept before
    /// any money moves.
    pub async fn create_intent(
        &self,
        order_id: Uuid,
        amount_minor: i64,
        currency: &str,
        payment_method: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let form = [
            ("amount", amount_minor.to_string()),
            ("currency", currency.to_ascii_lowercase()),
            ("capture_method", "manual".to_owned()),
            ("payment_method", payment_method.to_owned()),
            ("metadata[order_id]", order_id.to_string()),
        ];
        self.post("/v1/payment_intents", &form, Step::Create.key(order_id))
            .await
    }

    /// Asks the card's issuer to authorize the intent: `RequiresCapture` when it did,
    /// `RequiresAction` when the customer must authenticate first, [`StripeError::Declined`]
    /// when it said no.
    pub async fn confirm(
        &self,
        order_id: Uuid,
        intent_id: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{intent_id}/confirm");
        self.post(&path, &[], Step::Confirm.key(order_id)).await
    }

    /// Takes the authorized amount.
    pub async fn capture(
        &self,
        order_id: Uuid,
        intent_id: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{intent_id}/capture");
        self.post(&path, &[], Step::Capture.key(order_id)).await
    }

    /// Releases an authorization (or an intent never authorized): no money is taken.
    pub async fn cancel(
        &self,
        order_id: Uuid,
        intent_id: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{intent_id}/cancel");
        self.post(&path, &[], Step::Cancel.key(order_id)).await
    }

    /// Refunds a captured intent in full.
    pub async fn refund(&self, order_id: Uuid, intent_id: &str) -> Result<Refund, StripeError> {
        let form = [("payment_intent", intent_id.to_owned())];
        self.post("/v1/refunds", &form, Step::Refund.key(order_id))
            .await
    }

    /// The intent as Stripe has it now.
    pub async fn intent(&self, intent_id: &str) -> Result<PaymentIntent, StripeError> {
        self.get(&format!("/v1/payment_intents/{intent_id}"), &[])
            .await
    }

    /// The refunds of an intent, newest first (at most 100: the step makes one).
    pub async fn refunds(&self, intent_id: &str) -> Result<Vec<Refund>, StripeError> {
        let query = [("payment_intent", intent_id), ("limit", "100")];
        let list: List<Refund> = self.get("/v1/refunds", &query).await?;
        Ok(list.data)
    }

    /// A page of the account's intents, after `starting_after` (an intent id): Stripe lists
    /// the newest first, localstripe the oldest.
    pub async fn intents(
        &self,
        starting_after: Option<&str>,
    ) -> Result<List<PaymentIntent>, StripeError> {
        let mut query = vec![("limit", "100")];
        query.extend(starting_after.map(|id| ("starting_after", id)));
        self.get("/v1/payment_intents", &query).await
    }

    /// A page of the account's refunds, after `starting_after` (a refund id).
    pub async fn all_refunds(
        &self,
        starting_after: Option<&str>,
    ) -> Result<List<Refund>, StripeError> {
        let mut query = vec![("limit", "100")];
        query.extend(starting_after.map(|id| ("starting_after", id)));
        self.get("/v1/refunds", &query).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        let request = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(query);
        self.send(request).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: String,
    ) -> Result<T, StripeError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("idempotency-key", idempotency_key)
            .form(form);
        self.send(request).await
    }

    /// Sends `request` unless the breaker is open, and tells the breaker how it went.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        if let Err(wait) = self.breaker.admit() {
            return Err(StripeError::Unavailable(format!(
                "the circuit is open after failures in a row; next try in {} ms",
                wait.as_millis()
            )));
        }
        let answer = self.exchange(request).await;
        match &answer {
            Err(StripeError::Unavailable(_)) => self.breaker.failed(),
            _ => self.breaker.succeeded(),
        }
        answer
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        let response = request
            .bearer_auth(self.secret_key.expose())
            .send()
            .await
            .map_err(|e| StripeError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| StripeError::Unavailable(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                StripeError::Unavailable(format!("an answer that does not parse: {e}"))
            });
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| b.error);
        let message = detail
            .as_ref()
            .and_then(|d| d.message.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        let code = detail.and_then(|d| d.code);
        Err(match status.as_u16() {
            // 402: the request was valid, the card was not.
            402 => StripeError::Declined {
                code: code.unwrap_or_else(|| "card_declined".into()),
                message,
            },
            429 | 500.. => StripeError::Unavailable(format!("{status}: {message}")),
            status => StripeError::Refused { status, message },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_of_an_order_has_its_own_idempotency_key() {
        let order = Uuid::nil();
        let keys: std::collections::HashSet<String> = [
            Step::Create,
            Step::Confirm,
            Step::Capture,
            Step::Cancel,
            Step::Refund,
        ]
        .into_iter()
        .map(|step| step.key(order))
        .collect();
        assert_eq!(keys.len(), 5);
        assert_eq!(Step::Capture.key(order), format!("{order}:capture"));
    }

    #[test]
    fn the_secret_key_never_shows_in_the_config_or_the_client() {
        let config = StripeConfig {
            secret_key: Secret::new("sk_test_do_not_print"),
            ..StripeConfig::default()
        };
        let client = Stripe::new(&config).expect("client");
        for shown in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!shown.contains("do_not_print"), "{shown}");
        }
    }
}
