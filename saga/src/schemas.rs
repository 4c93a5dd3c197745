//! The Avro schemas of every event, embedded from `schemas/<aggregate>/<Event>/v<N>.avsc`.
//!
//! Producers write with the newest version of each event; every version stays listed so that the
//! test suite can hold each against the one before it. `saga/tests/schemas.rs` fails if a file in
//! `schemas/` is missing here, so the table cannot fall behind the folder.

/// One version of one event's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSchema {
    /// The event type, as in the `event-type` header.
    pub event_type: &'static str,
    pub aggregate: &'static str,
    pub version: u32,
    /// The `.avsc` text.
    pub source: &'static str,
}

macro_rules! schema {
    ($aggregate:literal, $event:literal, $version:literal) => {
        EventSchema {
            event_type: $event,
            aggregate: $aggregate,
            version: $version,
            source: include_str!(concat!(
                "../../schemas/",
                $aggregate,
                "/",
                $event,
                "/v",
                stringify!($version),
                ".avsc"
            )),
        }
    };
}

/// Every schema version, oldest first within each event.
pub static ALL: &[EventSchema] = &[
    schema!("orders", "OrderPlaced", 1),
    schema!("orders", "OrderPlaced", 2),
    schema!("orders", "OrderPlaced", 3),
    schema!("orders", "OrderStatusChanged", 1),
    schema!("orders", "OrderStatusChanged", 2),
    schema!("orders", "OrderCancelled", 1),
    schema!("orders", "ShipmentRequested", 1),
    schema!("orders", "RefundRequested", 1),
    schema!("inventory", "StockReserved", 1),
    schema!("inventory", "StockRejected", 1),
    schema!("inventory", "StockReleased", 1),
    schema!("inventory", "ProductPriced", 1),
    schema!("payments", "PaymentAuthorized", 1),
    schema!("payments", "PaymentDeclined", 1),
    schema!("payments", "PaymentVoided", 1),
    schema!("payments", "PaymentActionRequired", 1),
    schema!("payments", "PaymentCaptured", 1),
    schema!("payments", "PaymentCaptureFailed", 1),
    schema!("payments", "PaymentRefunded", 1),
    schema!("notifications", "NotificationSent", 1),
];

/// The newest schema of `event_type`.
pub fn latest(event_type: &str) -> Option<&'static EventSchema> {
    ALL.iter()
        .filter(|s| s.event_type == event_type)
        .max_by_key(|s| s.version)
}

/// The version before `schema`, if any.
pub fn previous(schema: &EventSchema) -> Option<&'static EventSchema> {
    ALL.iter()
        .filter(|s| s.event_type == schema.event_type && s.version < schema.version)
        .max_by_key(|s| s.version)
}

impl EventSchema {
    pub fn parse(&self) -> Result<apache_avro::Schema, apache_avro::Error> {
        apache_avro::Schema::parse_str(self.source)
    }

    /// The record's full name, which with the topic makes its registry subject.
    pub fn full_name(&self) -> String {
        match self.parse() {
            Ok(apache_avro::Schema::Record(record)) => record.name.fullname(None),
            _ => self.event_type.to_owned(),
        }
    }

    /// The subject under TopicRecordNameStrategy.
    pub fn subject(&self, topic: &str) -> String {
        format!("{topic}-{}", self.full_name())
    }
}
