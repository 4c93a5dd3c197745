//! The events of the order saga, the envelope they travel in, and the codec seam.
//!
//! Services write an [`EventRecord`]: a type name, a JSON payload and the metadata that travels in
//! message headers (event id, type, correlation and causation ids, trace context). The outbox keeps
//! records as JSON; a [`Codec`] turns them into bytes only at the edge of the bus, so the wire
//! format can change without touching any service.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    Error, Result,
    bus::{Delivery, Headers, Message},
};

/// The header names every event carries.
pub mod header {
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const OCCURRED_AT: &str = "occurred-at";
    pub const CORRELATION_ID: &str = "correlation-id";
    pub const CAUSATION_ID: &str = "causation-id";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
}

/// When the event that `headers` travel with happened, if they say so validly.
pub fn occurred_at(headers: &Headers) -> Option<DateTime<Utc>> {
    let text = headers.get_str(header::OCCURRED_AT)?;
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc())
}

/// How long before `now` an event that happened at `occurred_at` is, in seconds; 0 for one
/// stamped ahead of this clock.
pub fn age_seconds(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - occurred_at)
        .to_std()
        .map_or(0.0, |age| age.as_secs_f64())
}

/// Whether `text` is a product code: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn is_product_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `text` is a W3C `traceparent`: version, trace id, parent id and flags, in hex.
pub fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 4
        && parts.iter().zip([2, 32, 16, 2]).all(|(part, len)| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The topic that carries every event of the order aggregate, keyed by order id so that one
/// order's events stay in order.
pub const ORDERS_TOPIC: &str = "orders";

/// The topic the inventory writes its answers to.
pub const INVENTORY_TOPIC: &str = "inventory";

/// The topic the payment step writes its outcomes to.
pub const PAYMENTS_TOPIC: &str = "payments";

/// The topic the notification service writes what it sent to.
pub const NOTIFICATIONS_TOPIC: &str = "notifications";

/// A typed event payload.
pub trait Event: Serialize + DeserializeOwned {
    /// The name in the `event-type` header.
    const TYPE: &'static str;
    /// The aggregate the event belongs to; it becomes the message key.
    fn key(&self) -> String;
}

/// An event with its metadata, as the outbox stores it and a consumer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub event_id: Uuid,
    pub event_type: String,
    pub topic: String,
    pub key: String,
    pub occurred_at: DateTime<Utc>,
    /// The id shared by every event of one saga: the first event's id.
    pub correlation_id: Uuid,
    /// The event (or request) that caused this one.
    pub causation_id: Option<Uuid>,
    /// W3C trace context of the span that produced the event.
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
}

impl EventRecord {
    /// A new event that starts a saga: it is its own correlation.
    pub fn new<E: Event>(topic: &str, event: &E) -> Self {
        let event_id = Uuid::now_v7();
        Self {
            event_id,
            event_type: E::TYPE.to_owned(),
            topic: topic.to_owned(),
            key: event.key(),
            // Milliseconds: the precision every store and wire format here keeps.
            occurred_at: Utc::now().trunc_subsecs(3),
            correlation_id: event_id,
            causation_id: None,
            traceparent: None,
            // The event types are plain structs with string keys: serialising them cannot fail.
            payload: serde_json::to_value(event).expect("an event serialises to JSON"),
        }
    }

    /// An event written in reaction to `cause`: the same saga (correlation), caused by it, in the
    /// same trace.
    pub fn following<E: Event>(topic: &str, event: &E, cause: &EventRecord) -> Self {
        Self::new(topic, event)
            .correlated(cause.correlation_id)
            .caused_by(cause.event_id)
            .traced(cause.traceparent.as_deref())
    }

    /// Continues the saga whose first event was `correlation_id`.
    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Carries the W3C trace context of the span that produced the event; malformed values are
    /// dropped rather than passed on.
    pub fn traced(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent
            .filter(|tp| is_traceparent(tp))
            .map(str::to_owned);
        self
    }

    /// Records the event this one reacts to.
    pub fn caused_by(mut self, cause: Uuid) -> Self {
        self.causation_id = Some(cause);
        self
    }

    /// The typed payload, if this record is an `E`.
    pub fn payload_as<E: Event>(&self) -> Option<serde_json::Result<E>> {
        (self.event_type == E::TYPE).then(|| serde_json::from_value(self.payload.clone()))
    }

    /// Encodes the record for the bus: the body through the codec, the metadata as headers.
    pub async fn to_message(&self, codec: &dyn Codec) -> Result<Message> {
        let payload = codec.encode(self).await.map_err(|reason| Error::Encode {
            event_type: self.event_type.clone(),
            event_id: self.event_id,
            reason,
        })?;
        let mut headers = Headers::default();
        headers.insert(header::EVENT_ID, self.event_id.to_string());
        headers.insert(header::EVENT_TYPE, self.event_type.clone());
        headers.insert(
            header::OCCURRED_AT,
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        headers.insert(header::CORRELATION_ID, self.correlation_id.to_string());
        if let Some(cause) = self.causation_id {
            headers.insert(header::CAUSATION_ID, cause.to_string());
        }
        if let Some(tp) = &self.traceparent {
            headers.insert(header::TRACEPARENT, tp.clone());
        }
        headers.insert(header::CONTENT_TYPE, codec.content_type());
        Ok(Message {
            topic: self.topic.clone(),
            key: self.key.clone(),
            payload,
            headers,
        })
    }

    /// Decodes a delivery. Any failure names where the message came from, so that it can be
    /// dead-lettered with its origin.
    pub async fn from_delivery(delivery: &Delivery, codec: &dyn Codec) -> Result<Self> {
        let failure = |reason: String, transient: bool| Error::Decode {
            topic: delivery.message.topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
            reason,
            transient,
        };
        let fail = |reason: String| failure(reason, false);
        let headers = &delivery.message.headers;
        let uuid_header = |name: &str| -> Result<Uuid> {
            let text = headers
                .get_str(name)
                .ok_or_else(|| fail(format!("no {name} header")))?;
            Uuid::parse_str(text).map_err(|e| fail(format!("{name}: {e}")))
        };
        let event_id = uuid_header(header::EVENT_ID)?;
        let correlation_id = uuid_header(header::CORRELATION_ID)?;
        let causation_id = headers
            .get_str(header::CAUSATION_ID)
            .is_some()
            .then(|| uuid_header(header::CAUSATION_ID))
            .transpose()?;
        let event_type = headers
            .get_str(header::EVENT_TYPE)
            .ok_or_else(|| fail("no event-type header".into()))?
            .to_owned();
        let occurred_at =
            self::occurred_at(headers).ok_or_else(|| fail("no valid occurred-at header".into()))?;
        let payload = codec
            .decode(&event_type, &delivery.message.payload)
            .await
            .map_err(|e| failure(e.reason, e.transient))?;
        Ok(Self {
            event_id,
            event_type,
            topic: delivery.message.topic.clone(),
            key: delivery.message.key.clone(),
            occurred_at,
            correlation_id,
            causation_id,
            traceparent: headers.get_str(header::TRACEPARENT).map(str::to_owned),
            payload,
        })
    }
}

/// Turns event payloads into bytes and back. The one seam the wire format goes through: the
/// services use [`crate::avro::AvroCodec`]; [`JsonCodec`] serves tests of the plumbing itself.
#[async_trait::async_trait]
pub trait Codec: Send + Sync + std::fmt::Debug {
    fn content_type(&self) -> &'static str;
    async fn encode(&self, record: &EventRecord) -> std::result::Result<Vec<u8>, String>;
    /// Decodes a body whose `event-type` header says `event_type`.
    async fn decode(
        &self,
        event_type: &str,
        bytes: &[u8],
    ) -> std::result::Result<serde_json::Value, DecodeError>;
}

/// Why a body did not decode, and whether it might later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: String,
    /// A dependency (the schema registry) was unreachable; the bytes themselves may be fine.
    pub transient: bool,
}

impl DecodeError {
    pub fn poison(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: false,
        }
    }
}

impl From<String> for DecodeError {
    fn from(reason: String) -> Self {
        Self::poison(reason)
    }
}

impl From<&str> for DecodeError {
    fn from(reason: &str) -> Self {
        Self::poison(reason)
    }
}

/// Plain JSON bodies.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

#[async_trait::async_trait]
impl Codec for JsonCodec {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    async fn encode(&self, record: &EventRecord) -> std::result::Result<Vec<u8>, String> {
        serde_json::to_vec(&record.payload).map_err(|e| e.to_string())
    }

    async fn decode(
        &self,
        _event_type: &str,
        bytes: &[u8],
    ) -> std::result::Result<serde_json::Value, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError::poison(e.to_string()))
    }
}

/// The service that writes events of `event_type`: each type has one owner.
pub fn producer_of(event_type: &str) -> &'static str {
    match event_type {
        OrderPlaced::TYPE
        | OrderStatusChanged::TYPE
        | OrderCancelled::TYPE
        | ShipmentRequested::TYPE
        | RefundRequested::TYPE => "orders",
        StockReserved::TYPE | StockRejected::TYPE | StockReleased::TYPE | ProductPriced::TYPE => {
            "inventory"
        }
        NotificationSent::TYPE => "notifications",
        PaymentAuthorized::TYPE
        | PaymentDeclined::TYPE
        | PaymentVoided::TYPE
        | PaymentActionRequired::TYPE
        | PaymentCaptured::TYPE
        | PaymentCaptureFailed::TYPE
        | PaymentRefunded::TYPE => "payments",
        _ => "unknown",
    }
}

/// Whether an event undoes an earlier step of its saga: a cancelled order, the stock released
/// for it, its payment's authorization voided and a capture refunded.
pub fn is_compensation(event_type: &str) -> bool {
    matches!(
        event_type,
        OrderCancelled::TYPE | StockReleased::TYPE | PaymentVoided::TYPE | PaymentRefunded::TYPE
    )
}

/// The trace id in a W3C `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent
        .split('-')
        .nth(1)
        .filter(|_| is_traceparent(traceparent))
}

/// Why the saga itself cancels an order; an admin's cancellation gives a reason of its own.
pub mod cancel_reason {
    /// The inventory could not reserve its items.
    pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
    /// It was not paid before its deadline.
    pub const PAYMENT_TIMEOUT: &str = "PAYMENT_TIMEOUT";
    /// The customer's card was declined.
    pub const PAYMENT_DECLINED: &str = "PAYMENT_DECLINED";
    pub const ALL: [&str; 3] = [OUT_OF_STOCK, PAYMENT_TIMEOUT, PAYMENT_DECLINED];
}

/// Where an order is in its life. The transitions between them are the order service's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Created,
    Reserved,
    Paid,
    Shipped,
    Completed,
    Cancelled,
    /// Shipped or completed, then refunded in full (schema v2 of the events that carry it).
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        Self::Created,
        Self::Reserved,
        Self::Paid,
        Self::Shipped,
        Self::Completed,
        Self::Cancelled,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Reserved => "RESERVED",
            Self::Paid => "PAID",
            Self::Shipped => "SHIPPED",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
        }
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status {s:?}; expected one of CREATED, RESERVED, PAID, SHIPPED, COMPLETED, CANCELLED, REFUNDED"))
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order, as events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    /// A decimal, as a string: `"19.99"`.
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: Decimal,
}

/// A customer placed an order; it starts the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub items: Vec<OrderLine>,
    pub total: Decimal,
    pub placed_at: DateTime<Utc>,
    /// The user who placed it through the gateway (schema v2).
    #[serde(default)]
    pub placed_by: Option<String>,
    /// The ISO 4217 currency of every price in it (schema v3; earlier orders were in USD).
    #[serde(default = "usd")]
    pub currency: String,
    /// What the customer pays with: a payment method of the payment provider (schema v3).
    #[serde(default)]
    pub payment_method: Option<String>,
}

fn usd() -> String {
    "USD".to_owned()
}

impl Event for OrderPlaced {
    const TYPE: &'static str = "OrderPlaced";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// An order moved from one status to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusChanged {
    pub order_id: Uuid,
    pub old_status: OrderStatus,
    pub new_status: OrderStatus,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl Event for OrderStatusChanged {
    const TYPE: &'static str = "OrderStatusChanged";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// An order that held or may hold stock was cancelled; inventory releases its reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub previous_status: OrderStatus,
    pub reason: String,
    /// The amount refunded, when the order had been paid.
    #[serde(default)]
    pub refund: Option<Decimal>,
    pub at: DateTime<Utc>,
}

impl Event for OrderCancelled {
    const TYPE: &'static str = "OrderCancelled";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A quantity of one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLine {
    pub product_id: String,
    pub quantity: u32,
}

/// Every line of an order is reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReserved {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
    pub at: DateTime<Utc>,
}

impl Event for StockReserved {
    const TYPE: &'static str = "StockReserved";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A line that could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortLine {
    pub product_id: String,
    pub requested: u32,
    pub available: u32,
}

/// An order could not be reserved; nothing was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockRejected {
    pub order_id: Uuid,
    pub lines: Vec<ShortLine>,
    pub at: DateTime<Utc>,
}

impl Event for StockRejected {
    const TYPE: &'static str = "StockRejected";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A cancelled order's reservation was released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReleased {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl Event for StockReleased {
    const TYPE: &'static str = "StockReleased";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A product's name, price or availability for sale was set in the catalog (the inventory
/// service owns it); the order service prices orders from the latest of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductPriced {
    pub product_id: String,
    pub name: String,
    /// The price of one unit in the currency's minor units (cents).
    pub price_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// Whether it is for sale.
    pub active: bool,
    /// Bumped by every change, so that a reader keeps the newest whatever order it reads in.
    pub version: i64,
    pub at: DateTime<Utc>,
}

impl Event for ProductPriced {
    const TYPE: &'static str = "ProductPriced";
    fn key(&self) -> String {
        self.product_id.clone()
    }
}

/// The order's total is authorized on the customer's card: held, to be captured when it ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAuthorized {
    pub order_id: Uuid,
    /// The payment provider's PaymentIntent.
    pub intent_id: String,
    /// In minor units of `currency`.
    pub amount_minor: i64,
    pub currency: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentAuthorized {
    const TYPE: &'static str = "PaymentAuthorized";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// The customer's card was declined: nothing is held, and the order cannot be paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    /// The provider's reason: `card_declined`, ...
    pub code: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentDeclined {
    const TYPE: &'static str = "PaymentDeclined";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A cancelled order's authorization was released: the customer's money is no longer held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentVoided {
    pub order_id: Uuid,
    pub intent_id: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentVoided {
    const TYPE: &'static str = "PaymentVoided";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// An admin asked for a paid order to ship: the payment step captures its authorization, and
/// only then is it SHIPPED (`PaymentCaptured`), or it stays PAID (`PaymentCaptureFailed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentRequested {
    pub order_id: Uuid,
    /// The admin who asked.
    pub requested_by: Option<String>,
    pub at: DateTime<Utc>,
}

impl Event for ShipmentRequested {
    const TYPE: &'static str = "ShipmentRequested";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// An admin asked for a shipped or completed order to be refunded in full; it is REFUNDED once
/// the payment step has refunded the capture (`PaymentRefunded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequested {
    pub order_id: Uuid,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub at: DateTime<Utc>,
}

impl Event for RefundRequested {
    const TYPE: &'static str = "RefundRequested";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// The customer's bank wants them to authenticate (3-D Secure) before it authorizes; the
/// client secret lets the order's owner do it. The order waits, RESERVED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentActionRequired {
    pub order_id: Uuid,
    /// Whose order it is.
    pub customer_id: Uuid,
    pub intent_id: String,
    pub client_secret: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentActionRequired {
    const TYPE: &'static str = "PaymentActionRequired";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// The authorization was captured: the money is taken, and the order ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCaptured {
    pub order_id: Uuid,
    pub intent_id: String,
    /// In minor units of `currency`.
    pub amount_minor: i64,
    pub currency: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentCaptured {
    const TYPE: &'static str = "PaymentCaptured";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// The provider would not capture (the authorization expired or was cancelled at the provider,
/// the amount is wrong): nothing was taken and the order stays PAID for an admin to look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCaptureFailed {
    pub order_id: Uuid,
    /// Whose order it is.
    pub customer_id: Uuid,
    pub intent_id: String,
    /// The provider's words.
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentCaptureFailed {
    const TYPE: &'static str = "PaymentCaptureFailed";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

/// A capture was refunded in full: for an admin's refund, or for an order cancelled after its
/// capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub intent_id: String,
    pub refund_id: String,
    /// In minor units of `currency`.
    pub amount_minor: i64,
    pub currency: String,
    pub at: DateTime<Utc>,
}

impl Event for PaymentRefunded {
    const TYPE: &'static str = "PaymentRefunded";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    Email,
    Sms,
}

/// A customer was notified about their order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSent {
    pub notification_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub channel: Channel,
    pub kind: String,
    pub causation_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Event for NotificationSent {
    const TYPE: &'static str = "NotificationSent";
    fn key(&self) -> String {
        self.order_id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_age_counts_from_its_stamp_and_one_stamped_ahead_is_new() {
        let now = DateTime::parse_from_rfc3339("2026-12-08T10:00:01.250Z")
            .expect("time")
            .to_utc();
        let mut headers = Headers::default();
        headers.insert(header::OCCURRED_AT, "2026-12-08T10:00:00.000Z".to_owned());
        let occurred = occurred_at(&headers).expect("a valid stamp");
        assert_eq!(age_seconds(occurred, now), 1.25);
        assert_eq!(age_seconds(now, occurred), 0.0);
        headers.insert(header::OCCURRED_AT, "yesterday".to_owned());
        assert_eq!(occurred_at(&headers), None);
    }

    #[test]
    fn only_well_formed_trace_contexts_are_carried() {
        assert!(is_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent(
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
        ));
        assert!(!is_traceparent("00-0af7651916cd43dd-b7ad6b7169203331-01"));
        assert!(!is_traceparent("garbage"));
    }
}
