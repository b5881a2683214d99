//! Several devices editing the same records at once, each in its own field: with the default
//! three-way merge, every device's last write to its own field must survive on every device and on
//! the server, however sends, fetches and conflicts interleave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_read_before_another_devices_change_arrived_does_not_revert_it() {
    let server = server().await;
    let a = Device::start(&server, "stale-copy").await;
    let b = Device::start_with(&server, "stale-copy", fetch_only_when_told()).await;
    a.engine
        .save(note("n1", "Draft").with("body", "v1"))
        .await
        .unwrap();
    wait_quiet(&a).await;
    b.engine.sync_now();
    wait_for(&b, "n1", |d| d.tagged_records == 1).await;

    // b's app reads n1 to edit its title...
    let read_by_b = b.engine.get(id("n1")).await.unwrap().unwrap();
    // ...and before it saves, a's change to the body arrives on b.
    let before = a.engine.get(id("n1")).await.unwrap().unwrap();
    a.engine.save(before.with("body", "v2")).await.unwrap();
    wait_quiet(&a).await;
    b.engine.sync_now();
    for _ in 0..600 {
        let now = b.engine.get(id("n1")).await.unwrap().unwrap();
        if text(&now, "body").as_deref() == Some("v2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_quiet(&b).await;
    // The copy b's app saves is the one it read: its body is the old v1, which b never edited.
    b.engine
        .save(read_by_b.with("title", "Groceries"))
        .await
        .unwrap();
    wait_quiet(&b).await;
    settle(&[&a, &b]).await;

    let on_server = server_records(&server, "stale-copy").await;
    let n1 = &on_server["n1"];
    assert_eq!(text(n1, "title").as_deref(), Some("Groceries"), "b's edit");
    assert_eq!(
        text(n1, "body").as_deref(),
        Some("v2"),
        "a's edit was reverted by b's copy of an older version"
    );
    assert_eq!(contents(&a.records().await), contents(&on_server));
    assert_eq!(contents(&b.records().await), contents(&on_server));
    a.engine.shutdown().await;
    b.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_devices_last_write_to_its_own_field_survives_concurrent_edits() {
    const DEVICES: usize = 3;
    const SHARED: usize = 3;
    const EDITS: usize = 60;
    let server = server().await;
    let mut devices = Vec::new();
    for _ in 0..DEVICES {
        devices.push(Device::start(&server, "concurrent").await);
    }
    for s in 0..SHARED {
        devices[0]
            .engine
            .save(note(&format!("s{s}"), "shared"))
            .await
            .unwrap();
    }
    settle(&devices.iter().collect::<Vec<_>>()).await;

    let mut editors = Vec::new();
    for (k, device) in devices.iter().enumerate() {
        let engine = device.engine.clone();
        editors.push(tokio::spawn(async move {
            let mut last = std::collections::BTreeMap::new();
            for e in 0..EDITS {
                let name = format!("s{}", (e * 7 + k) % SHARED);
                let local = engine.get(id(&name)).await.unwrap().unwrap();
                let value = format!("d{k}-e{e}");
                engine
                    .save(local.with(format!("d{k}"), value.as_str()))
                    .await
                    .unwrap();
                last.insert((name, format!("d{k}")), value);
                // Uneven pauses, so that sends, fetches and conflicts interleave with the edits.
                tokio::time::sleep(Duration::from_millis(((e * 13 + k * 5) % 17) as u64)).await;
            }
            last
        }));
    }
    let mut expected = std::collections::BTreeMap::new();
    for editor in editors {
        expected.extend(editor.await.unwrap());
    }
    settle(&devices.iter().collect::<Vec<_>>()).await;

    let on_server = server_records(&server, "concurrent").await;
    let mut lost = Vec::new();
    for ((name, field), value) in &expected {
        let found = text(&on_server[name], field);
        if found.as_deref() != Some(value.as_str()) {
            lost.push(format!(
                "{name}.{field}: wrote {value}, server has {found:?}"
            ));
        }
    }
    assert!(lost.is_empty(), "lost updates: {lost:#?}");
    for (k, device) in devices.iter().enumerate() {
        assert_eq!(
            contents(&device.records().await),
            contents(&on_server),
            "device {k} differs from the server"
        );
    }
    for device in &devices {
        device.engine.shutdown().await;
    }
}
