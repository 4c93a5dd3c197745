//! Every event schema against the version before it, under the registry's own BACKWARD check:
//! a breaking change fails the suite and the message names the field.

use oms_registry::compat::{self, Level};
use oms_saga::schemas;

#[test]
fn every_schema_version_reads_the_data_of_the_version_before_it() {
    let mut checked = 0;
    for schema in schemas::ALL {
        let Some(previous) = schemas::previous(schema) else {
            continue;
        };
        let (new, old) = (
            schema.parse().expect("parse"),
            previous.parse().expect("parse"),
        );
        if let Err(problems) =
            compat::check(Level::Backward, &new, &[(previous.version as i32, old)])
        {
            panic!(
                "{} v{} breaks BACKWARD compatibility: {problems:?}",
                schema.event_type, schema.version
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 1,
        "at least one evolution (OrderPlaced v2) is checked"
    );
}

#[test]
fn the_check_catches_a_breaking_change_and_names_the_field() {
    let v1 = schemas::ALL
        .iter()
        .find(|s| s.event_type == "OrderPlaced" && s.version == 1)
        .expect("v1");
    // v2 with its new field made mandatory: new readers could not read v1 data.
    let breaking = schemas::latest("OrderPlaced").expect("v2").source.replace(
        r#""type": [
        "null",
        "string"
      ],
      "default": null,"#,
        r#""type": "string","#,
    );
    assert_ne!(
        breaking,
        schemas::latest("OrderPlaced").expect("v2").source,
        "the edit applied"
    );
    let breaking = apache_avro::Schema::parse_str(&breaking).expect("parse");
    let problems = compat::check(Level::Backward, &breaking, &[(1, v1.parse().expect("v1"))])
        .expect_err("breaking");
    assert!(problems[0].contains("placedBy"), "{problems:?}");
}
