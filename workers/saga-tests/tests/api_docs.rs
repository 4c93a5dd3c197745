//! The OpenAPI documents say what the services serve: every documented operation is routed,
//! the gateway's document combines everything it routes, and Swagger UI shows them.
//! Schemathesis, generating requests from the documents, gets no server error from the order
//! API, and none from the gateway with a valid token, where every error is problem+json.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use oms_saga::identity::{ROLE_HEADER, SUBJECT_HEADER};
use oms_saga_tests::Stack;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn spec(url: String) -> Value {
    let answer = reqwest::get(&url).await.expect("spec");
    assert_eq!(answer.status(), 200, "{url}");
    answer.json().await.expect("json")
}

/// Every (method, path) a document describes.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

/// Calls each documented operation on `base` as an admin, with made-up path parameters: none
/// may fall through to the router's "no such route" or "method not allowed".
async fn assert_routed(base: &str, spec: &Value) {
    let http = reqwest::Client::new();
    for (method, path) in operations(spec) {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{product_id}", "SKU-DOCS");
        let answer = http
            .request(method.parse().expect("method"), format!("{base}{concrete}"))
            .header(SUBJECT_HEADER, "docs-admin")
            .header(ROLE_HEADER, "admin")
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("call");
        let status = answer.status();
        let streaming = answer
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        // A stream never ends: its answering is enough.
        let body: Value = if streaming {
            Value::Null
        } else {
            answer.json().await.unwrap_or(Value::Null)
        };
        assert_ne!(status, 405, "{method} {path} is documented but not served");
        assert_ne!(
            body["title"], "No such route",
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn the_documents_describe_what_is_served_and_the_gateway_combines_them() {
    let stack = Stack::spawn().await;
    let api = spec(stack.api.url("/api-docs/openapi.json")).await;
    assert!(
        api["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        api["openapi"]
    );
    assert_eq!(
        operations(&api),
        owned(&[
            ("GET", "/api/orders"),
            ("POST", "/api/orders"),
            ("GET", "/api/orders/{id}"),
            ("GET", "/api/orders/{id}/timeline"),
            ("GET", "/api/orders/events"),
            ("PUT", "/api/orders/{id}/status"),
            ("POST", "/api/orders/{id}/cancel"),
        ])
    );
    assert_routed(&stack.api.url(""), &api).await;
    let inventory = spec(stack.inventory.url("/api-docs/openapi.json")).await;
    assert_routed(&stack.inventory.url(""), &inventory).await;
    let notifications = spec(stack.notifications.service.url("/api-docs/openapi.json")).await;
    assert_routed(&stack.notifications.service.url(""), &notifications).await;
    let payments = spec(stack.payments.service.url("/api-docs/openapi.json")).await;
    assert_eq!(
        operations(&payments),
        owned(&[("POST", "/webhooks/stripe")])
    );
    assert_routed(&stack.payments.service.url(""), &payments).await;

    // The gateway's document: its login, and every upstream's operations under its routes.
    let combined = spec(stack.gateway.url("/api-docs/openapi.json")).await;
    let mut expected = operations(&api);
    expected.extend(operations(&inventory));
    expected.extend(operations(&notifications));
    expected.extend(operations(&payments));
    expected.extend(owned(&[
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/logout"),
        ("GET", "/auth/me"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/admin/audit"),
    ]));
    assert_eq!(operations(&combined), expected);
    assert_eq!(
        combined["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(combined["security"][0]["bearer"], serde_json::json!([]));
    assert_eq!(
        combined["paths"]["/auth/login"]["post"]["security"],
        serde_json::json!([{}]),
        "logging in needs no token"
    );
    assert_eq!(
        combined["paths"]["/webhooks/stripe"]["post"]["security"],
        serde_json::json!([{}]),
        "the provider's webhooks carry no token"
    );
    // Errors are documented as problem+json.
    assert!(
        combined["paths"]["/api/orders"]["post"]["responses"]["422"]["content"]
            ["application/problem+json"]
            .is_object()
    );

    for ui in [
        stack.api.url("/swagger-ui/"),
        stack.gateway.url("/swagger-ui/"),
    ] {
        let page = reqwest::get(&ui).await.expect("swagger ui");
        assert_eq!(page.status(), 200, "{ui}");
        let html = page.text().await.expect("html");
        assert!(html.contains("swagger-ui"), "{ui}: {html}");
    }
}

/// Runs schemathesis (from PyPI; `scripts/test` installs it) on the document at `schema`, with
/// our own checks, and returns its report; fails the test if it found a failure.
async fn schemathesis(schema: String, args: &[&str]) -> String {
    let st = std::env::var("OMS_SCHEMATHESIS").map_or_else(
        |_| oms_saga::testing::tools_dir().join("schemathesis/bin/st"),
        PathBuf::from,
    );
    assert!(
        st.exists(),
        "schemathesis is not installed at {}; run scripts/test (it installs it) or set OMS_SCHEMATHESIS",
        st.display()
    );
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let mut command = Command::new(st);
    command
        .args(["run", &schema])
        // A live stream never ends, so it cannot be judged by its answer's end.
        .args(["--exclude-path", "/api/orders/events"])
        .args(["--seed", "1", "--workers", "1", "--request-timeout", "10"])
        .args(args)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", hooks)
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output().expect("run schemathesis"))
        .await
        .expect("schemathesis");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_in_the_order_api() {
    let stack = Stack::spawn().await;
    let report = schemathesis(
        stack.api.url("/api-docs/openapi.json"),
        &[
            "--checks",
            "not_a_server_error",
            // The stateful phase has no links to follow here and would only repeat the others.
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "45",
            "--header",
            &format!("{SUBJECT_HEADER}: fuzz-admin"),
            "--header",
            &format!("{ROLE_HEADER}: admin"),
        ],
    )
    .await;
    // It did test every operation.
    for operation in [
        "POST /api/orders",
        "GET /api/orders/{id}",
        "PUT /api/orders/{id}/status",
        "GET /api/orders/{id}/timeline",
    ] {
        assert!(
            report.contains(operation),
            "{operation} untested:\n{report}"
        );
    }
}

/// The number after `label` on the first line of the report that has it ("Test cases:" is
/// followed by "N generated, ..." on the next line; "Tested: N" and "Selected: N/M" are inline).
fn count_after(report: &str, label: &str) -> u64 {
    let mut lines = report.lines().map(str::trim);
    let found = lines.find(|l| l.starts_with(label)).and_then(|line| {
        let rest = line[label.len()..].trim();
        let rest = if rest.is_empty() { lines.next()? } else { rest };
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    found.unwrap_or_else(|| panic!("no {label:?} in the report:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_through_the_gateway_with_a_valid_token_gets_no_5xx_and_only_problem_json_errors()
 {
    let stack = Stack::spawn().await;
    let report = schemathesis(
        stack.gateway.url("/api-docs/openapi.json"),
        &[
            "--checks",
            "not_a_server_error,errors_are_problem_json",
            "--phases",
            "examples,coverage,fuzzing",
            // Logging out would end the token's session, and every request after it would only
            // test the refusal.
            "--exclude-path",
            "/auth/logout",
            "--max-examples",
            "80",
            "--max-time",
            "80",
            "--header",
            &format!("authorization: Bearer {}", stack.admin),
        ],
    )
    .await;
    let cases = count_after(&report, "Test cases:");
    assert!(cases >= 1000, "only {cases} requests:\n{report}");
    // Every operation but the two left out (the stream and logout) was tested.
    let selected = count_after(&report, "Selected:");
    assert_eq!(count_after(&report, "Tested:"), selected, "{report}");
    let documented = count_after(&report, &format!("Selected: {selected}/"));
    assert_eq!(selected + 2, documented, "{report}");
}
