//! `oms rewind`, run as the binary, against a real broker: it moves a group back, but never
//! beyond what the group's inbox remembers.

mod common;

use oms_saga::{
    bus::{Headers, Message},
    testing,
};

/// Runs `oms`: whether it succeeded, and what it printed.
async fn oms(args: &[&str]) -> (bool, String) {
    let run = common::oms(&testing::bus_settings(&testing::bus_config()), args).await;
    (run.ok, format!("{}{}", run.stdout, run.stderr))
}

#[tokio::test]
async fn a_rewind_goes_back_only_as_far_as_the_inbox_remembers() {
    let (_, bus) = testing::shared_bus().await;
    let topic = testing::topic(bus.as_ref(), "rewind-cli", 1).await;
    let group = testing::unique("group");
    let message = |n: usize| Message {
        topic: topic.clone(),
        key: "k".into(),
        payload: format!("{n}").into_bytes(),
        headers: Headers::default(),
    };
    bus.publish((0..3).map(message).collect())
        .await
        .expect("publish");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // An inbox that remembers a second: the three messages are older, and nothing moves.
    let (ok, err) = oms(&["rewind", &group, &topic, "--inbox-keep", "1s"]).await;
    assert!(!ok, "a rewind beyond the inbox is refused");
    assert!(err.contains("nothing was moved"), "{err}");

    // One that remembers an hour: the group, which never read the topic, is at its end, and
    // goes back over all three.
    let (ok, err) = oms(&["rewind", &group, &topic, "--inbox-keep", "1h"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("will receive 3 message(s)"), "{err}");
}
