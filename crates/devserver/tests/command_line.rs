//! The `skysync-devserver` binary's flags: `--throttle-profile cloudkit` with `--time-scale` and
//! `--seed` throttles a real server, and a `--s2s-key` value that is neither a PEM nor `@file` is
//! refused before anything listens, with an error showing both forms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;

use common::{CONTAINER, client};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

fn devserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skysync-devserver"))
}

#[tokio::test]
async fn the_cloudkit_profile_flag_throttles_the_fourth_save_in_a_row() {
    // Ten times faster: four saves within a real second are a burst over the pace of one per
    // 10-15 s (1-1.5 real seconds).
    let mut child = devserver()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--throttle-profile",
            "cloudkit",
            "--time-scale",
            "10",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).await.unwrap();
    let base_url = line
        .trim()
        .strip_prefix("skysync-devserver listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    let url = format!(
        "{base_url}/database/1/{CONTAINER}/development/private/records/modify?ckAPIToken=api&ckWebAuthToken=flags"
    );
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..4 {
        let response = client()
            .post(&url)
            .json(
                &json!({"operations": [{"operationType": "forceReplace", "record": {
                "recordName": format!("n{i}"), "recordType": "Note"}}]}),
            )
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3], "a burst of three");
    assert!(
        [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&statuses[3]),
        "{statuses:?}"
    );
    // 10-80 s at ten times the speed: 1-8 real seconds.
    let seconds: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert!((1..=8).contains(&seconds), "{seconds}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_s2s_key_that_is_neither_pem_nor_a_file_is_refused_showing_both_forms() {
    let output = devserver()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--s2s-key",
            "key-1=MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it must not claim to listen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key-1"), "{stderr}");
    assert!(
        stderr.contains("neither a PEM public key nor @file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("KEY_ID=\"-----BEGIN PUBLIC KEY-----...\"")
            && stderr.contains("KEY_ID=@path/to/key.pem"),
        "both forms: {stderr}"
    );
}

#[tokio::test]
async fn a_time_scale_of_zero_is_refused_naming_the_flag() {
    let output = devserver()
        .args(["--listen", "127.0.0.1:0", "--time-scale", "0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("time-scale"), "{stderr}");
}
