//! Compatibility levels and the check they imply, by Avro's schema-resolution rules (the ones
//! apache-avro implements): a reader schema can read data written with a writer schema.

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const DEFAULT: Level = Level::Backward;

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::from(text.to_ascii_uppercase())).ok()
    }

    /// Whether the check runs against every earlier version, not just the newest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// The same direction against one version only (the compatibility endpoint's check).
    pub fn single(self) -> Level {
        match self {
            Level::BackwardTransitive => Level::Backward,
            Level::ForwardTransitive => Level::Forward,
            Level::FullTransitive => Level::Full,
            other => other,
        }
    }
}

fn readable(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => {
            Err("only partially compatible: some data could not be read".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Checks `new` against `existing` (oldest first) at `level`. The error lists, per version that
/// fails, why: apache-avro names the field.
pub fn check(level: Level, new: &Schema, existing: &[(i32, Schema)]) -> Result<(), Vec<String>> {
    let against: &[(i32, Schema)] = match (level, existing.last()) {
        (Level::None, _) | (_, None) => return Ok(()),
        (level, Some(_)) if level.transitive() => existing,
        (_, Some(_)) => &existing[existing.len() - 1..],
    };
    let mut problems = Vec::new();
    for (version, old) in against {
        let backward = || {
            readable(old, new).map_err(|e| format!("new schema cannot read version {version}: {e}"))
        };
        let forward = || {
            readable(new, old)
                .map_err(|e| format!("version {version} cannot read the new schema: {e}"))
        };
        let result = match level.single() {
            Level::Backward => backward(),
            Level::Forward => forward(),
            Level::Full => backward().and_then(|()| forward()),
            _ => Ok(()),
        };
        problems.extend(result.err());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("schema")
    }

    #[test]
    fn adding_a_field_with_a_default_is_backward_and_forward_compatible() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(
            r#"{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}"#,
        );
        for level in [
            Level::Backward,
            Level::Forward,
            Level::Full,
            Level::FullTransitive,
        ] {
            assert_eq!(check(level, &v2, &[(1, v1.clone())]), Ok(()), "{level:?}");
        }
    }

    #[test]
    fn adding_a_required_field_breaks_backward_and_names_the_field() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"qty","type":"int"}"#);
        let problems = check(Level::Backward, &v2, &[(1, v1.clone())]).expect_err("incompatible");
        assert!(problems[0].contains("qty"), "{problems:?}");
        assert_eq!(check(Level::Forward, &v2, &[(1, v1.clone())]), Ok(()));
        assert_eq!(check(Level::None, &v2, &[(1, v1)]), Ok(()));
    }

    #[test]
    fn transitive_levels_check_every_earlier_version_and_plain_ones_only_the_newest() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"b","type":"string","default":"x"}"#);
        // v3 requires b: it can read v2's data, but not v1's, which has no b.
        let v3 = schema(r#"{"name":"b","type":"string"}"#);
        let existing = [(1, v1), (2, v2)];
        assert_eq!(check(Level::Backward, &v3, &existing), Ok(()));
        let problems = check(Level::BackwardTransitive, &v3, &existing).expect_err("v1 lacks b");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("version 1"), "{problems:?}");
    }

    #[test]
    fn levels_parse_in_any_case_and_refuse_unknown_names() {
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::parse("BACKWARD"), Some(Level::Backward));
        assert_eq!(Level::parse("SIDEWAYS"), None);
    }
}
