//! The admin console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (npm), both installed by `scripts/test`, against a whole stack. The browser
//! script is `tests/console/console.mjs`; it logs in, places an order, sees its saga timeline
//! reach RESERVED, and looks at the stock, the schemas and the live events.

use std::{path::PathBuf, process::Command};

use oms_saga_tests::Stack;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_places_an_order_in_the_console_and_watches_its_saga() {
    let browser_dir = oms_saga::testing::tools_dir().join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed under {}; run scripts/test (it installs it)",
        browser_dir.display()
    );
    let chromium = std::env::var("OMS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "no Chromium at {chromium}; run scripts/test (it installs Debian's chromium)"
    );
    let stack = Stack::spawn().await;
    stack.set_stock("SKU-CONSOLE", 10).await;
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.mjs");
    let mut command = Command::new("node");
    command
        .arg(script)
        .env("OMS_BROWSER_DIR", &browser_dir)
        .env("OMS_CHROMIUM", &chromium)
        .env("GATEWAY_URL", stack.gateway.url(""))
        .env("PASSWORD", oms_gateway::testing::PASSWORD)
        .env("CUSTOMER", stack.alice().to_string())
        .env("PRODUCT", "SKU-CONSOLE")
        .env("SCREENSHOT", &screenshot);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run node"))
        .await
        .expect("browser");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the script's report");
    assert_eq!(
        seen["problems"],
        serde_json::json!([]),
        "script errors in the page"
    );

    // What the browser showed is what the system holds.
    let id = seen["orderId"]
        .as_str()
        .expect("order id")
        .parse()
        .expect("uuid");
    let order = stack.order(id).await;
    assert_eq!(order["customerId"], stack.alice().to_string());
    assert_ne!(order["status"], "CREATED");
    let timeline: Vec<String> = seen["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|row| row[1].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(timeline.first().map(String::as_str), Some("OrderPlaced"));
    for step in ["StockReserved", "PaymentAuthorized"] {
        assert!(timeline.iter().any(|t| t == step), "{step}: {timeline:?}");
    }
    assert!(seen["live"].as_u64().is_some_and(|n| n > 0));
    let sku = seen["stock"]
        .as_array()
        .expect("stock")
        .iter()
        .find(|row| row[0] == "SKU-CONSOLE")
        .cloned()
        .expect("the product's row");
    assert_eq!(sku[2], "2", "reserved: {sku}");
    assert!(
        seen["subjects"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.ends_with(".OrderPlaced")))),
        "{}",
        seen["subjects"]
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("screenshot: {}", screenshot.display());
}
