//! The event contracts: the Rust types and the `.avsc` files cannot drift, and the schema table
//! covers every file.

use std::{collections::BTreeSet, path::Path};

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, types::Value, writer::datum::GenericDatumWriter,
};
use chrono::{TimeZone, Utc};
use oms_saga::{
    avro::{to_avro, to_json},
    event::*,
    schemas,
};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

#[test]
fn every_schema_file_is_in_the_table_and_every_entry_has_a_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut files = BTreeSet::new();
    for aggregate in std::fs::read_dir(&root).expect("schemas/") {
        let aggregate = aggregate.expect("entry").path();
        if !aggregate.is_dir() {
            continue;
        }
        for event in std::fs::read_dir(&aggregate).expect("aggregate") {
            for version in std::fs::read_dir(event.expect("event").path()).expect("event") {
                let path = version.expect("version").path();
                files.insert(
                    path.strip_prefix(&root)
                        .expect("relative")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let listed: BTreeSet<String> = schemas::ALL
        .iter()
        .map(|s| format!("{}/{}/v{}.avsc", s.aggregate, s.event_type, s.version))
        .collect();
    assert_eq!(
        files, listed,
        "schemas/ and oms_saga::schemas::ALL must list the same files"
    );
}

#[test]
fn every_schema_parses_and_is_the_record_its_event_type_names() {
    for schema in schemas::ALL {
        let parsed = schema
            .parse()
            .unwrap_or_else(|e| panic!("{} v{}: {e}", schema.event_type, schema.version));
        let Schema::Record(record) = parsed else {
            panic!("{} is not a record", schema.event_type)
        };
        assert_eq!(record.name.name(), schema.event_type);
        assert!(
            record
                .name
                .namespace()
                .is_some_and(|n| n.starts_with("dev.oms.")),
            "{} has a namespace",
            schema.event_type
        );
        assert!(record.doc.is_some(), "{} is documented", schema.event_type);
        for field in &record.fields {
            assert!(
                field.doc.is_some(),
                "{}.{} is documented",
                schema.event_type,
                field.name
            );
        }
    }
}

fn write(schema: &Schema, value: Value) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("write")
}

/// Reads a datum written with `writer`, resolved to `reader` when given.
fn read(writer: &Schema, bytes: &[u8], reader: Option<&Schema>) -> apache_avro::AvroResult<Value> {
    GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(&mut &bytes[..])
}

/// Writes `event` as Avro with its newest schema and reads it back.
fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E) {
    let schema = schemas::latest(E::TYPE)
        .expect("a schema")
        .parse()
        .expect("parse");
    let json = serde_json::to_value(event).expect("json");
    let value = to_avro(&json, &schema).unwrap_or_else(|e| panic!("{}: {e}", E::TYPE));
    let bytes = write(&schema, value);
    let value = read(&schema, &bytes, None).expect("read");
    let back: E = typed(to_json(&value, &schema).expect("to json"));
    assert_eq!(&back, event, "{} survives its schema", E::TYPE);
}

fn typed<E: DeserializeOwned>(json: serde_json::Value) -> E {
    serde_json::from_value(json).expect("typed")
}

fn at() -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(1_764_000_000_123)
        .single()
        .expect("time")
}

#[test]
fn every_event_type_round_trips_through_its_newest_schema() {
    let order_id = Uuid::new_v4();
    let customer_id = Uuid::new_v4();
    round_trip(&OrderPlaced {
        order_id,
        customer_id,
        items: vec![
            OrderLine {
                product_id: "SKU-1".into(),
                quantity: 3,
                unit_price: "19.9900".parse().expect("dec"),
            },
            OrderLine {
                product_id: "SKU-2".into(),
                quantity: 1,
                unit_price: "0.0000".parse().expect("dec"),
            },
        ],
        total: "59.9700".parse().expect("dec"),
        placed_at: at(),
        placed_by: Some("alice".into()),
        currency: "EUR".into(),
        payment_method: Some("pm_card_visa".into()),
    });
    for (old_status, new_status, reason) in [
        (OrderStatus::Created, OrderStatus::Reserved, None),
        (
            OrderStatus::Reserved,
            OrderStatus::Cancelled,
            Some("PAYMENT_TIMEOUT".to_owned()),
        ),
    ] {
        round_trip(&OrderStatusChanged {
            order_id,
            old_status,
            new_status,
            reason,
            at: at(),
        });
    }
    round_trip(&OrderCancelled {
        order_id,
        customer_id,
        previous_status: OrderStatus::Paid,
        reason: "customer asked".into(),
        refund: Some("12.5000".parse().expect("dec")),
        at: at(),
    });
    let items = vec![StockLine {
        product_id: "SKU-1".into(),
        quantity: 2,
    }];
    round_trip(&StockReserved {
        order_id,
        items: items.clone(),
        at: at(),
    });
    round_trip(&StockRejected {
        order_id,
        lines: vec![ShortLine {
            product_id: "SKU-1".into(),
            requested: 5,
            available: 2,
        }],
        at: at(),
    });
    round_trip(&StockReleased {
        order_id,
        items,
        reason: "OUT_OF_STOCK".into(),
        at: at(),
    });
    round_trip(&ProductPriced {
        product_id: "SKU-MUG".into(),
        name: "Mug".into(),
        price_minor: 1200,
        currency: "USD".into(),
        active: false,
        version: 7,
        at: at(),
    });
    round_trip(&PaymentAuthorized {
        order_id,
        intent_id: "pi_123".into(),
        amount_minor: 2400,
        currency: "USD".into(),
        at: at(),
    });
    round_trip(&PaymentDeclined {
        order_id,
        code: "card_declined".into(),
        at: at(),
    });
    round_trip(&PaymentVoided {
        order_id,
        intent_id: "pi_123".into(),
        at: at(),
    });
    round_trip(&OrderStatusChanged {
        order_id,
        old_status: OrderStatus::Shipped,
        new_status: OrderStatus::Refunded,
        reason: Some("damaged".into()),
        at: at(),
    });
    round_trip(&ShipmentRequested {
        order_id,
        requested_by: Some("admin".into()),
        at: at(),
    });
    round_trip(&RefundRequested {
        order_id,
        reason: None,
        requested_by: Some("admin".into()),
        at: at(),
    });
    round_trip(&PaymentActionRequired {
        order_id,
        customer_id,
        intent_id: "pi_123".into(),
        client_secret: "pi_123_secret_abc".into(),
        at: at(),
    });
    round_trip(&PaymentCaptured {
        order_id,
        intent_id: "pi_123".into(),
        amount_minor: 2400,
        currency: "EUR".into(),
        at: at(),
    });
    round_trip(&PaymentCaptureFailed {
        order_id,
        customer_id,
        intent_id: "pi_123".into(),
        reason: "the authorization was canceled".into(),
        at: at(),
    });
    round_trip(&PaymentRefunded {
        order_id,
        intent_id: "pi_123".into(),
        refund_id: "re_123".into(),
        amount_minor: 2400,
        currency: "EUR".into(),
        at: at(),
    });
    round_trip(&NotificationSent {
        notification_id: Uuid::new_v4(),
        order_id,
        customer_id,
        channel: Channel::Sms,
        kind: "SHIPPED".into(),
        causation_id: Uuid::new_v4(),
        at: at(),
    });
}

#[test]
fn a_value_that_does_not_fit_its_schema_is_refused_with_its_path() {
    let schema = schemas::latest("OrderPlaced")
        .expect("schema")
        .parse()
        .expect("parse");
    let mut json = serde_json::to_value(OrderPlaced {
        order_id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        items: vec![OrderLine {
            product_id: "A".into(),
            quantity: 1,
            unit_price: "1".parse().expect("dec"),
        }],
        total: "1".parse().expect("dec"),
        placed_at: at(),
        placed_by: None,
        currency: "USD".into(),
        payment_method: None,
    })
    .expect("json");
    json["items"][0]["unitPrice"] = "0.00001".into();
    let error = to_avro(&json, &schema).expect_err("too many decimal places");
    assert!(error.contains("items[0].unitPrice"), "{error}");
}

fn serialize_with<T: Serialize>(event: &T, schema: &Schema) -> Vec<u8> {
    let json = serde_json::to_value(event).expect("json");
    write(schema, to_avro(&json, schema).expect("avro"))
}

#[test]
fn order_placed_v3_is_read_by_v2_consumers_and_v3_consumers_read_v2_events() {
    let version = |n| {
        schemas::ALL
            .iter()
            .find(|s| s.event_type == "OrderPlaced" && s.version == n)
            .expect("version")
    };
    assert_eq!(schemas::latest("OrderPlaced").expect("latest").version, 3);
    let (v2, v3) = (
        version(2).parse().expect("v2"),
        version(3).parse().expect("v3"),
    );
    let event = OrderPlaced {
        order_id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        items: vec![OrderLine {
            product_id: "A".into(),
            quantity: 2,
            unit_price: "3.5000".parse().expect("dec"),
        }],
        total: "7.0000".parse().expect("dec"),
        placed_at: at(),
        placed_by: Some("bob".into()),
        currency: "EUR".into(),
        payment_method: Some("pm_card_visa".into()),
    };

    // An old consumer (reader v2) reads a new event (writer v3): the new fields are skipped.
    let new_bytes = serialize_with(&event, &v3);
    let old_view = read(&v3, &new_bytes, Some(&v2)).expect("v2 reads v3");
    let old_json = to_json(&old_view, &v2).expect("json");
    assert!(old_json.get("currency").is_none());
    assert!(old_json.get("paymentMethod").is_none());
    assert_eq!(old_json["total"], "7.0000");

    // A new consumer (reader v3) reads an old event (writer v2): an order of before was in USD,
    // with no payment method.
    let old_bytes = serialize_with(&event, &v2);
    let new_view = read(&v2, &old_bytes, Some(&v3)).expect("v3 reads v2");
    let read: OrderPlaced = typed(to_json(&new_view, &v3).expect("json"));
    assert_eq!(
        read,
        OrderPlaced {
            currency: "USD".into(),
            payment_method: None,
            ..event
        }
    );
}

/// Found by fuzzing: a timestamp far outside RFC 3339's four-digit years decoded to text that
/// could not be read back. Such a time is now refused as it is decoded.
#[test]
fn a_timestamp_beyond_four_digit_years_is_refused_as_it_is_decoded() {
    let schema = schemas::latest("ProductPriced")
        .expect("schema")
        .parse()
        .expect("parse");
    let json = serde_json::to_value(ProductPriced {
        product_id: "A".into(),
        name: "A".into(),
        price_minor: 1,
        currency: "USD".into(),
        active: true,
        version: 1,
        at: at(),
    })
    .expect("json");
    let mut value = to_avro(&json, &schema).expect("avro");
    if let Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "at");
        fields.push(("at".into(), Value::TimestampMillis(-281_474_976_710_656)));
    }
    let error = to_json(&value, &schema).expect_err("year -6950");
    assert!(error.contains("timestamp out of range"), "{error}");
}
