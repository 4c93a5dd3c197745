//! The Avro decoding path of every event the services consume: Confluent framing, the Avro datum
//! under each schema version, and its conversion to the JSON the handlers read. The registry
//! lookup is replaced by the schema itself. Nothing may panic, and whatever decodes must encode
//! back to the same Avro value.
#![no_main]
#![allow(deprecated)] // from_avro_datum: the reader the registry decoder uses too

use std::sync::LazyLock;

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use oms_saga::{avro, schemas};

static SCHEMAS: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    // A length prefix from the fuzzer must not make it allocate gigabytes.
    let _ = apache_avro::util::max_allocation_bytes(1 << 20);
    schemas::ALL
        .iter()
        .map(|s| Schema::parse_str(s.source).expect("our schemas parse"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks the schema; the rest is a Confluent-framed body (magic 0, a 4-byte id).
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let schema = &SCHEMAS[usize::from(*pick) % SCHEMAS.len()];
    let Some(datum) = body.strip_prefix(&[0]).and_then(|b| b.get(4..)) else {
        return;
    };
    let Ok(value) = apache_avro::from_avro_datum(schema, &mut &datum[..], None) else {
        return;
    };
    let Ok(json) = avro::to_json(&value, schema) else {
        return;
    };
    let again = avro::to_avro(&json, schema).expect("what decoded encodes back");
    assert_eq!(
        avro::to_json(&again, schema).expect("and decodes again"),
        json,
        "the JSON round trip is stable"
    );
});
