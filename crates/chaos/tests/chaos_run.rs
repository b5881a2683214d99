//! A small chaos run in `cargo test`: the harness, the device and the server binaries (debug
//! builds) against each other, with kills, a server restart and faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skysync_chaos::harness::{self, ChaosConfig};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chaos_run_loses_nothing_and_converges() {
    let out = tempfile::tempdir().unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_chaos-device"))
        .parent()
        .unwrap()
        .to_owned();
    let mut config = ChaosConfig::new(7, 5, bin_dir, out.path());
    config.changes = 300;
    config.server_restarts = Some(1);
    let report = harness::run(&config).await.unwrap();
    let written: harness::Report =
        serde_json::from_slice(&std::fs::read(&config.report_path).unwrap()).unwrap();
    assert_eq!(written, report, "the report file is the report");
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.kills, 5);
    assert_eq!(report.server_restarts, 1);
    assert!(report.faults_armed >= 1, "{report:#?}");
    assert_eq!(report.journaled, vec![150, 150]);
}
