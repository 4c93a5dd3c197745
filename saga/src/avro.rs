//! Avro in the Confluent wire format, with schemas from a Confluent-compatible registry.
//!
//! Payloads travel through the rest of the system as JSON; this module converts them to and from
//! Avro values guided by the schema, which is where the logical types are honoured: decimals
//! (exact, from their decimal text), uuids, and timestamp-millis (RFC 3339 text). Encoding and
//! the registry protocol are schema_registry_converter's; subjects follow TopicRecordNameStrategy.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use apache_avro::{
    Schema,
    schema::{Name, ResolvedSchema},
    types::Value,
};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rust_decimal::Decimal;
use schema_registry_converter::{
    async_impl::{
        avro::{AvroDecoder, AvroEncoder},
        schema_registry::{SrSettings, post_schema},
    },
    schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema},
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::{
    Error, Result,
    event::{Codec, DecodeError, EventRecord},
    schemas,
};

/// Where the schema registry is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a service waits at start-up for the registry to accept its schemas.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".into(),
            timeout: Duration::from_secs(5),
            startup_wait: Duration::from_secs(30),
        }
    }
}

impl RegistryConfig {
    fn settings(&self) -> Result<SrSettings> {
        SrSettings::new_builder(self.url.clone())
            .set_timeout(self.timeout)
            .build()
            .map_err(|e| Error::Config(format!("registry.url {}: {e}", self.url)))
    }
}

/// The full record name of each event type's newest schema.
static FULL_NAMES: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    schemas::ALL
        .iter()
        .filter_map(|s| schemas::latest(s.event_type))
        .map(|s| (s.event_type, s.full_name()))
        .collect()
});

/// Registers the newest schema of each event type under `topic`. Waits up to
/// `config.startup_wait` for a registry that is not answering; a schema the registry refuses as
/// incompatible or invalid fails at once, naming the subject and the registry's reason.
pub async fn register(config: &RegistryConfig, topic: &str, event_types: &[&str]) -> Result<()> {
    let settings = config.settings()?;
    let deadline = tokio::time::Instant::now() + config.startup_wait;
    for event_type in event_types {
        let schema = schemas::latest(event_type)
            .ok_or_else(|| Error::Config(format!("no schema for event type {event_type}")))?;
        let subject = schema.subject(topic);
        let supplied = SuppliedSchema::new(
            Some(schema.full_name()),
            SchemaType::Avro,
            schema.source.to_owned(),
        );
        let mut delays = crate::retry::backoff(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            match post_schema(&settings, subject.clone(), supplied.clone()).await {
                Ok(registered) => {
                    tracing::info!(%subject, id = registered.id, "schema registered");
                    break;
                }
                Err(e) => {
                    let reason = match &e.cause {
                        Some(cause) => format!("{}: {cause}", e.error),
                        None => e.error.clone(),
                    };
                    if reason.contains("409") || reason.contains("422") {
                        return Err(Error::SchemaRefused { subject, reason });
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Registry(format!("registering {subject}: {reason}")));
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(2));
                    tracing::warn!(%subject, %reason, retry_in = ?delay, "schema registry not ready");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    Ok(())
}

/// Avro bodies in the Confluent framing: magic byte 0, the schema id, the datum.
pub struct AvroCodec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec").finish_non_exhaustive()
    }
}

impl AvroCodec {
    pub fn new(config: &RegistryConfig) -> Result<Self> {
        let settings = config.settings()?;
        Ok(Self {
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
        })
    }
}

#[async_trait]
impl Codec for AvroCodec {
    fn content_type(&self) -> &'static str {
        "application/vnd.confluent.avro"
    }

    async fn encode(&self, record: &EventRecord) -> std::result::Result<Vec<u8>, String> {
        let full_name = FULL_NAMES
            .get(record.event_type.as_str())
            .ok_or_else(|| format!("no schema for event type {}", record.event_type))?;
        let strategy =
            SubjectNameStrategy::TopicRecordNameStrategy(record.topic.clone(), full_name.clone());
        let subject = format!("{}-{full_name}", record.topic);
        // The registered schema, not the embedded one, is what the bytes must match.
        let registered = self
            .encoder
            .get_schema_and_id(&subject, strategy.clone())
            .await
            .map_err(|e| format!("schema for {subject}: {e}"))?;
        let value = to_avro(&record.payload, &registered.parsed)?;
        self.encoder
            .encode_value(value, &strategy)
            .await
            .map_err(|e| e.to_string())
    }

    async fn decode(
        &self,
        event_type: &str,
        bytes: &[u8],
    ) -> std::result::Result<Json, DecodeError> {
        if bytes.first() != Some(&0) || bytes.len() < 5 {
            return Err("not Confluent-framed Avro (no magic byte 0 and schema id)".into());
        }
        let decoded = self
            .decoder
            .decode_with_schema(Some(bytes))
            .await
            .map_err(|e| DecodeError {
                // An unreachable registry is an outage; an unknown schema id is poison.
                transient: e.retriable,
                reason: e.to_string(),
            })?;
        let decoded = decoded.ok_or("an empty body")?;
        let name = decoded.name.as_ref().map(|n| n.name()).unwrap_or_default();
        if !event_type.is_empty() && name != event_type {
            return Err(format!(
                "the body is a {name}, but the event-type header says {event_type}"
            )
            .into());
        }
        Ok(to_json(&decoded.value, &decoded.schema.parsed)?)
    }
}

/// Converts a JSON payload to an Avro value of `schema`.
pub fn to_avro(json: &Json, schema: &Schema) -> std::result::Result<Value, String> {
    let resolved = ResolvedSchema::new(schema).map_err(|e| e.to_string())?;
    Converter {
        names: resolved.get_names(),
    }
    .to_avro(json, schema, "$")
}

/// Converts an Avro value of `schema` to JSON, logical types as their text forms.
pub fn to_json(value: &Value, schema: &Schema) -> std::result::Result<Json, String> {
    let resolved = ResolvedSchema::new(schema).map_err(|e| e.to_string())?;
    Converter {
        names: resolved.get_names(),
    }
    .to_json(value, schema)
}

struct Converter<'a> {
    names: &'a HashMap<Name, &'a Schema>,
}

impl Converter<'_> {
    fn named<'s>(&'s self, schema: &'s Schema) -> std::result::Result<&'s Schema, String> {
        match schema {
            Schema::Ref { name } => self
                .names
                .get(name)
                .copied()
                .ok_or_else(|| format!("unknown named type {name}")),
            other => Ok(other),
        }
    }

    fn to_avro(
        &self,
        json: &Json,
        schema: &Schema,
        at: &str,
    ) -> std::result::Result<Value, String> {
        let wrong = || format!("{at}: {json} does not fit {schema:?}");
        Ok(match self.named(schema)? {
            Schema::Null if json.is_null() => Value::Null,
            Schema::Boolean => Value::Boolean(json.as_bool().ok_or_else(wrong)?),
            Schema::Int => Value::Int(
                json.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(wrong)?,
            ),
            Schema::Long => Value::Long(json.as_i64().ok_or_else(wrong)?),
            Schema::Float => Value::Float(json.as_f64().ok_or_else(wrong)? as f32),
            Schema::Double => Value::Double(json.as_f64().ok_or_else(wrong)?),
            Schema::String => Value::String(json.as_str().ok_or_else(wrong)?.to_owned()),
            Schema::Uuid(_) => Value::Uuid(
                json.as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .ok_or_else(wrong)?,
            ),
            Schema::TimestampMillis => Value::TimestampMillis(match json {
                Json::String(s) => DateTime::parse_from_rfc3339(s)
                    .map_err(|_| wrong())?
                    .timestamp_millis(),
                other => other.as_i64().ok_or_else(wrong)?,
            }),
            Schema::Decimal(decimal) => {
                let text = match json {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    _ => return Err(wrong()),
                };
                let mut exact = Decimal::from_str_exact(&text).map_err(|_| wrong())?;
                let scale = u32::try_from(decimal.scale).map_err(|_| wrong())?;
                if exact.normalize().scale() > scale {
                    return Err(format!("{at}: {text} has more than {scale} decimal places"));
                }
                exact.rescale(scale);
                let bytes =
                    decimal_bytes(exact.mantissa(), decimal.precision).ok_or_else(|| {
                        format!(
                            "{at}: {text} does not fit decimal({}, {scale})",
                            decimal.precision
                        )
                    })?;
                Value::Decimal(apache_avro::Decimal::from(bytes))
            }
            Schema::Enum(e) => {
                let symbol = json.as_str().ok_or_else(wrong)?;
                let index = e
                    .symbols
                    .iter()
                    .position(|s| s == symbol)
                    .ok_or_else(wrong)?;
                Value::Enum(index as u32, symbol.to_owned())
            }
            Schema::Array(array) => Value::Array(
                json.as_array()
                    .ok_or_else(wrong)?
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.to_avro(item, &array.items, &format!("{at}[{i}]")))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            Schema::Map(map) => Value::Map(
                json.as_object()
                    .ok_or_else(wrong)?
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.to_avro(v, &map.types, &format!("{at}.{k}"))?,
                        ))
                    })
                    .collect::<std::result::Result<_, String>>()?,
            ),
            Schema::Record(record) => {
                let object = json.as_object().ok_or_else(wrong)?;
                let mut fields = Vec::with_capacity(record.fields.len());
                for field in &record.fields {
                    let path = format!("{at}.{}", field.name);
                    let value = match (object.get(&field.name), &field.default) {
                        (Some(value), _) => value,
                        (None, Some(default)) => default,
                        (None, None) => return Err(format!("{path} is missing")),
                    };
                    fields.push((
                        field.name.clone(),
                        self.to_avro(value, &field.schema, &path)?,
                    ));
                }
                Value::Record(fields)
            }
            Schema::Union(union) => {
                let mut last_error = wrong();
                for (i, variant) in union.variants().iter().enumerate() {
                    match self.to_avro(json, variant, at) {
                        Ok(value) => return Ok(Value::Union(i as u32, Box::new(value))),
                        Err(e) => last_error = e,
                    }
                }
                return Err(last_error);
            }
            _ => return Err(wrong()),
        })
    }

    fn to_json(&self, value: &Value, schema: &Schema) -> std::result::Result<Json, String> {
        let schema = self.named(schema)?;
        Ok(match (value, schema) {
            (Value::Null, _) => Json::Null,
            (Value::Boolean(b), _) => Json::from(*b),
            (Value::Int(n), _) => Json::from(*n),
            (Value::Long(n), _) => Json::from(*n),
            (Value::Float(n), _) => Json::from(*n),
            (Value::Double(n), _) => Json::from(*n),
            (Value::String(s), _) | (Value::Enum(_, s), _) => Json::from(s.clone()),
            (Value::Uuid(u), _) => Json::from(u.to_string()),
            (Value::TimestampMillis(ms), _) => {
                // RFC 3339 has four-digit years: a time outside 0000-9999 has no text that
                // reads back, so it is as undecodable as a time outside chrono's range.
                let at = DateTime::<Utc>::from_timestamp_millis(*ms)
                    .filter(|at| (0..=9999).contains(&at.year()))
                    .ok_or("timestamp out of range")?;
                Json::from(at.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
            (Value::Decimal(d), Schema::Decimal(decimal)) => {
                let bytes = <Vec<u8>>::try_from(d).map_err(|e| e.to_string())?;
                let scale = u32::try_from(decimal.scale).map_err(|e| e.to_string())?;
                Json::from(Decimal::from_i128_with_scale(from_be_bytes(&bytes)?, scale).to_string())
            }
            (Value::Array(items), Schema::Array(array)) => Json::Array(
                items
                    .iter()
                    .map(|item| self.to_json(item, &array.items))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            (Value::Map(entries), Schema::Map(map)) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.to_json(v, &map.types)?)))
                    .collect::<std::result::Result<_, String>>()?,
            ),
            (Value::Record(fields), Schema::Record(record)) => {
                let mut object = serde_json::Map::with_capacity(fields.len());
                for (name, value) in fields {
                    let field = record
                        .lookup
                        .get(name)
                        .map(|&i| &record.fields[i])
                        .ok_or_else(|| format!("field {name} is not in the schema"))?;
                    object.insert(name.clone(), self.to_json(value, &field.schema)?);
                }
                Json::Object(object)
            }
            (Value::Union(i, inner), Schema::Union(union)) => {
                let variant = union
                    .variants()
                    .get(*i as usize)
                    .ok_or("union index out of range")?;
                self.to_json(inner, variant)?
            }
            (other, schema) => return Err(format!("cannot read {other:?} as {schema:?}")),
        })
    }
}

/// Avro's decimal bytes: two's complement, big-endian, sign-extended to the width that can hold
/// `precision` digits. Shorter encodings are valid Avro too, but apache-avro refuses to resolve a
/// decimal whose byte length could not hold the schema's precision, which would break every Rust
/// reader that reads with a newer schema. `None` if the value needs more than 16 bytes.
fn decimal_bytes(value: i128, precision: usize) -> Option<Vec<u8>> {
    let bytes = value.to_be_bytes();
    let mut minimal = 16;
    while minimal > 1 {
        let (this, next) = (bytes[16 - minimal], bytes[17 - minimal]);
        let redundant = (this == 0x00 && next & 0x80 == 0) || (this == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        minimal -= 1;
    }
    // The smallest n with 2^(8n - 1) - 1 >= 10^precision - 1.
    let for_precision =
        (1..=16).find(|&n| ((8 * n - 1) as f64) * std::f64::consts::LOG10_2 >= precision as f64)?;
    let width = minimal.max(for_precision);
    Some(bytes[16 - width..].to_vec())
}

fn from_be_bytes(bytes: &[u8]) -> std::result::Result<i128, String> {
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("a decimal of {} bytes", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(i128::from_be_bytes(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_bytes_are_twos_complement_wide_enough_for_the_precision_and_round_trip() {
        for (value, expected) in [
            (0i128, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x00, 0x80]),
            (-1, vec![0xff]),
            (-128, vec![0x80]),
            (-129, vec![0xff, 0x7f]),
        ] {
            assert_eq!(decimal_bytes(value, 2), Some(expected.clone()), "{value}");
            assert_eq!(from_be_bytes(&expected), Ok(value));
        }
        // decimal(28, _) needs 12 bytes: small values are sign-extended to that width.
        assert_eq!(decimal_bytes(1, 28).map(|b| b.len()), Some(12));
        assert_eq!(decimal_bytes(-1, 28), Some(vec![0xff; 12]));
        let big = 79_228_162_514_264_337_593_543_950_335i128;
        for value in [big, -big, 400_800, -5] {
            assert_eq!(
                from_be_bytes(&decimal_bytes(value, 28).expect("fits")),
                Ok(value)
            );
        }
    }
}
