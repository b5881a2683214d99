//! The simulation in CI: many seeds at a small size, a seed replayed for the same trace, the seeds
//! that once failed, and proof that the checks catch a lost save.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skysync_sim::{SimConfig, SimFailure, run};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many seeds CI runs (the issue asks for at least 200).
const CI_SEEDS: u64 = 200;

/// A failure as a test prints it: what broke, the trace, and what the engines did.
fn describe(failure: &SimFailure) -> String {
    format!(
        "{failure}\n--- trace (replays with `cargo xtask sim --from {} --seeds 1`) ---\n{}\
         --- steps and requests by simulated time ---\n{}",
        failure.seed(),
        failure.trace_text(),
        failure.log().join("\n")
    )
}

/// Runs `seeds` on two threads; the failures, by seed.
fn run_seeds(seeds: std::ops::Range<u64>, config: &SimConfig) -> Vec<SimFailure> {
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        return;
                    }
                    if let Err(failure) = run(seed, config) {
                        failures.lock().unwrap().push(failure);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(SimFailure::seed);
    failures
}

fn assert_clean_with(seed: u64, config: &SimConfig) {
    if let Err(failure) = run(seed, config) {
        panic!("{}", describe(&failure));
    }
}

/// The configuration seeds found before power cuts during syncs existed replay with.
fn without_sync_cuts() -> SimConfig {
    SimConfig {
        cuts_during_sync: false,
        ..SimConfig::default()
    }
}

#[test]
fn two_hundred_seeds_at_a_small_size_keep_every_promise() {
    let failures = run_seeds(0..CI_SEEDS, &SimConfig::default());
    for failure in &failures {
        eprintln!("{}\n", describe(failure));
    }
    let seeds: Vec<u64> = failures.iter().map(SimFailure::seed).collect();
    assert!(
        failures.is_empty(),
        "{} of {CI_SEEDS} seeds failed: {seeds:?} (each printed above with its trace)",
        failures.len()
    );
}

/// The same seed gives the same trace, byte for byte: the steps, their devices and their
/// outcomes. Seed 32 has power cuts between steps and inside a save, faults, offline periods and
/// edits of every kind of record.
#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    let config = SimConfig::default();
    let first = run(32, &config).unwrap_or_else(|f| panic!("{}", describe(&f)));
    let second = run(32, &config).unwrap_or_else(|f| panic!("{}", describe(&f)));
    let text = first.trace_text();
    for needed in [
        "power cut at its first",
        "power cut (",
        "fault:",
        "network down",
        "delete",
    ] {
        assert!(
            text.contains(needed),
            "seed 32 should show `{needed}`:\n{text}"
        );
    }
    assert_eq!(text, second.trace_text());
    assert_eq!(first.trace, second.trace);
}

/// Seed 125: device 1 deleted `o1-1` (the delete confirmed), then created it again; its fetch
/// then reported the old life's deletion, which the store took for a conflict with the new life
/// and the resolver's "deletion wins" dropped the new save, which had returned. Fixed in the store
/// (a create is made on no server copy, so a deletion is no conflict with it).
#[test]
fn seed_125_a_record_created_again_outlives_the_report_of_its_old_deletion() {
    assert_clean_with(125, &without_sync_cuts());
}

/// Seed 277: device 0 read `s1` while its engine was about to commit a merge of it, and saved its
/// edit on the copy it had read after the merge landed: device 1's field went back to the value
/// device 0 had read. The engine attaches the newest change tag to a save, so the server takes
/// it; an app's read-modify-write has that race (there is no atomic field update). The checks
/// allow exactly that stale value, for an edit during which the store committed something.
#[test]
fn seed_277_an_edit_that_raced_a_merge_is_judged_by_what_it_read() {
    assert_clean_with(277, &without_sync_cuts());
}

/// Seed 2123 at 4 devices and 150 steps: device 1 deleted `x1`; device 0's token expired and it
/// refetched the zone; the power went at the sync of the refetch's reconciling commit, after the
/// last page had stored the zone's token. Restarted past the deletion it never applied, device 0
/// kept `x1` for good. Fixed in the session (the last page commits with the deletions).
#[test]
fn seed_2123_a_power_cut_inside_a_refetch_never_keeps_a_deleted_record() {
    assert_clean_with(
        2123,
        &SimConfig {
            devices: 4,
            steps: 150,
            ..SimConfig::default()
        },
    );
}

/// The checks catch a lost change: with disks that acknowledge syncs without making anything
/// durable, a power cut loses saves that returned, and seeds fail for it.
#[test]
fn a_disk_that_lies_about_syncs_is_caught() {
    let config = SimConfig {
        lying_disks: true,
        ..SimConfig::default()
    };
    let failures = run_seeds(0..20, &config);
    let caught: Vec<&SimFailure> = failures
        .iter()
        .filter(|f| matches!(f, SimFailure::Broken { .. }))
        .collect();
    assert!(
        caught.len() >= 5,
        "only {} of 20 seeds caught the lying disks: {:?}",
        caught.len(),
        failures.iter().map(|f| f.to_string()).collect::<Vec<_>>()
    );
    assert!(
        caught
            .iter()
            .any(|f| f.to_string().contains("last change that returned")
                || f.to_string().contains("last save that returned")),
        "no seed named a returned save that was lost: {:?}",
        caught.iter().map(|f| f.to_string()).collect::<Vec<_>>()
    );
}
