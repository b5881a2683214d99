//! The loop detector reports an operation that failed more than N times within the window, once
//! per window, and never before the threshold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use skysync_telemetry::{LoopDetector, LoopReport};

const WINDOW: Duration = Duration::from_secs(60);

#[test]
fn reports_once_past_the_threshold_not_before() {
    let mut detector = LoopDetector::new(5, WINDOW);
    let t0 = Instant::now();
    for i in 0..5 {
        let at = t0 + Duration::from_secs(i);
        assert_eq!(
            detector.record_failure("send", at),
            None,
            "failure {} of 5",
            i + 1
        );
    }
    let report = detector.record_failure("send", t0 + Duration::from_secs(5));
    assert_eq!(
        report,
        Some(LoopReport {
            key: "send",
            failures: 6,
            window: WINDOW
        })
    );
    // Still looping within the same window: not reported again.
    for i in 6..30 {
        assert_eq!(
            detector.record_failure("send", t0 + Duration::from_secs(i)),
            None
        );
    }
    // A window after the report, still failing: reported again.
    let again = detector.record_failure("send", t0 + Duration::from_secs(65));
    assert_eq!(again.map(|r| r.failures), Some(6));
}

#[test]
fn failures_spread_wider_than_the_window_are_not_a_loop() {
    let mut detector = LoopDetector::new(3, WINDOW);
    let t0 = Instant::now();
    // One failure every 25 s: never more than 3 within 60 s.
    for i in 0..40 {
        assert_eq!(
            detector.record_failure("fetch_zone", t0 + Duration::from_secs(25 * i)),
            None
        );
    }
}

#[test]
fn a_success_forgets_the_failures_and_keys_are_separate() {
    let mut detector = LoopDetector::new(2, WINDOW);
    let t0 = Instant::now();
    assert_eq!(detector.record_failure("send", t0), None);
    assert_eq!(detector.record_failure("send", t0), None);
    assert_eq!(detector.record_failure("lookup", t0), None);
    detector.record_success(&"send");
    assert_eq!(detector.tracked(), 1);
    assert_eq!(
        detector.record_failure("send", t0),
        None,
        "counting starts over"
    );
    assert_eq!(detector.record_failure("lookup", t0), None);
    assert!(detector.record_failure("lookup", t0).is_some());
}

#[tokio::test(start_paused = true)]
async fn on_the_paused_clock() {
    let mut detector = LoopDetector::new(4, WINDOW);
    let mut reports = 0;
    // A retry loop firing every 2 s for ten minutes of virtual time.
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = tokio::time::Instant::now().into_std();
        if detector.record_failure(("send", "Notes"), now).is_some() {
            reports += 1;
        }
    }
    // The first report after the 5th failure (10 s), then one per 60 s window: 10 s, 70 s, ... 550 s.
    assert_eq!(reports, 10);
}
