//! The pacing controller and the throttle state machine: growth, shrink, bounds, deadlines,
//! jitter, no wind-up, the governor cap, retry counting and diagnostics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use proptest::prelude::*;
use skysync_throttle::{
    FailureKind, Outcome, PacingController, Permit, RetryVerdict, Throttle, ThrottleConfig,
    WaitCause,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn config(seed: u64) -> ThrottleConfig {
    ThrottleConfig {
        seed: Some(seed),
        ..ThrottleConfig::default()
    }
}

fn throttled() -> Outcome {
    Outcome::throttled(None, "THROTTLED (429)")
}

fn near(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_nanos(2)
}

#[test]
fn throttled_failure_doubles_the_delay() {
    let mut pacing = PacingController::new(&config(1)).unwrap();
    let now = Instant::now();
    let mut expected = Duration::from_millis(250);
    for _ in 0..5 {
        pacing.record(now, &throttled());
        expected *= 2;
        assert_eq!(pacing.delay(), expected);
    }
}

#[test]
fn transient_failure_also_doubles_the_delay() {
    let mut pacing = PacingController::new(&config(1)).unwrap();
    pacing.record(
        Instant::now(),
        &Outcome::transient(None, "TRY_AGAIN_LATER (503)"),
    );
    assert_eq!(pacing.delay(), Duration::from_millis(500));
}

#[test]
fn larger_growth_factor_grows_by_that_factor() {
    let mut pacing = PacingController::new(&ThrottleConfig {
        failure_growth: 3.0,
        ..config(1)
    })
    .unwrap();
    pacing.record(Instant::now(), &throttled());
    assert!(near(pacing.delay(), Duration::from_millis(750)));
}

#[test]
fn success_shrinks_the_delay_by_a_third() {
    let mut pacing = PacingController::new(&ThrottleConfig {
        initial_delay: Duration::from_millis(900),
        ..config(1)
    })
    .unwrap();
    let now = Instant::now();
    pacing.record(now, &Outcome::Success);
    assert!(
        near(pacing.delay(), Duration::from_millis(600)),
        "{:?}",
        pacing.delay()
    );
    pacing.record(now, &Outcome::Success);
    assert!(
        near(pacing.delay(), Duration::from_millis(400)),
        "{:?}",
        pacing.delay()
    );
}

#[test]
fn success_never_takes_the_delay_below_the_minimum() {
    let mut pacing = PacingController::new(&ThrottleConfig {
        initial_delay: Duration::from_millis(300),
        ..config(1)
    })
    .unwrap();
    pacing.record(Instant::now(), &Outcome::Success);
    // 300 ms · 2/3 = 200 ms would be below d_min = 250 ms.
    assert_eq!(pacing.delay(), Duration::from_millis(250));
    for _ in 0..50 {
        pacing.record(Instant::now(), &Outcome::Success);
    }
    assert_eq!(pacing.delay(), Duration::from_millis(250));
}

#[test]
fn failures_never_take_the_delay_above_the_maximum() {
    let mut pacing = PacingController::new(&config(1)).unwrap();
    for _ in 0..40 {
        pacing.record(Instant::now(), &throttled());
    }
    assert_eq!(pacing.delay(), Duration::from_secs(600));
    let (_, high) = pacing.wait_range();
    assert_eq!(
        high,
        Duration::from_secs(600),
        "the jittered wait is capped too"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Success,
    Throttled(Option<u64>),
    Transient(Option<u64>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Success),
        1 => proptest::option::of(0u64..120_000).prop_map(Step::Throttled),
        1 => proptest::option::of(0u64..120_000).prop_map(Step::Transient),
    ]
}

proptest! {
    #[test]
    fn delay_and_wait_stay_within_bounds_and_react_in_the_right_direction(
        steps in proptest::collection::vec(step(), 1..300),
        seed in any::<u64>(),
        min_ms in 1u64..2_000,
        span_ms in 0u64..1_000_000,
        jitter in 0.0f64..0.9,
    ) {
        let min = Duration::from_millis(min_ms);
        let max = min + Duration::from_millis(span_ms);
        let mut pacing = PacingController::new(&ThrottleConfig {
            min_delay: min,
            max_delay: max,
            initial_delay: min,
            jitter,
            seed: Some(seed),
            ..ThrottleConfig::default()
        }).unwrap();
        let mut now = Instant::now();
        for step in steps {
            let before = pacing.delay();
            let outcome = match step {
                Step::Success => Outcome::Success,
                Step::Throttled(ms) => Outcome::throttled(ms.map(Duration::from_millis), "THROTTLED"),
                Step::Transient(ms) => Outcome::transient(ms.map(Duration::from_millis), "reset"),
            };
            pacing.record(now, &outcome);
            let after = pacing.delay();
            prop_assert!(after >= min && after <= max, "{after:?} outside [{min:?}, {max:?}]");
            if outcome.is_failure() {
                // At least doubles, unless the cap stops it.
                prop_assert!(after >= (before * 2).min(max), "{before:?} -> {after:?}");
            } else {
                prop_assert!(after <= before);
                prop_assert!(near(after, before.mul_f64(2.0 / 3.0).max(min)), "{before:?} -> {after:?}");
            }
            let (at, cause) = pacing.next_permitted().unwrap();
            let (low, high) = pacing.wait_range();
            prop_assert!(low >= min.mul_f64(1.0 - jitter) && high <= max && low <= high);
            prop_assert!(low <= after && after <= high, "d = {after:?} outside its own wait range");
            let wait = at - now;
            if let Some(retry_after) = outcome.retry_after() {
                prop_assert!(wait >= retry_after, "permitted {wait:?} after a retryAfter of {retry_after:?}");
            }
            if cause == WaitCause::Pacing {
                prop_assert!(wait >= low && wait <= high, "{wait:?} outside [{low:?}, {high:?}]");
            }
            // The next outcome comes after the permitted instant, as with a real session.
            now = at + MS;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_hard_deadline_whatever_the_delay_says() {
    let mut throttle = Throttle::new(&config(3)).unwrap();
    let start = Instant::now();
    assert_eq!(throttle.permit(start), Permit::Granted);
    let retry_after = Duration::from_secs(30);
    throttle.report(
        start,
        &Outcome::throttled(Some(retry_after), "THROTTLED (429)"),
    );
    // The delay itself is small (0.5 s), far below the deadline.
    assert_eq!(throttle.delay(), Duration::from_millis(500));

    tokio::time::advance(Duration::from_secs(1)).await;
    match throttle.permit(Instant::now()) {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            assert!(until >= start + retry_after);
            // Jitter after a deadline is at most j·d = 0.2 · 0.5 s.
            assert!(until <= start + retry_after + Duration::from_millis(100));
        }
        Permit::Granted => panic!("granted 1 s into a 30 s retryAfter"),
    }

    tokio::time::advance(retry_after - Duration::from_secs(1) - MS).await;
    assert!(
        !throttle.permit(Instant::now()).is_granted(),
        "granted 1 ms before the retryAfter deadline"
    );

    tokio::time::advance(Duration::from_millis(101)).await;
    assert_eq!(throttle.permit(Instant::now()), Permit::Granted);
}

#[tokio::test(start_paused = true)]
async fn pending_deadline_survives_a_success_reported_before_it() {
    let mut throttle = Throttle::new(&config(4)).unwrap();
    let start = Instant::now();
    throttle.report(
        start,
        &Outcome::throttled(Some(Duration::from_secs(20)), "THROTTLED"),
    );
    // An operation the session did not gate (or an old one) reports success at 2 s.
    tokio::time::advance(Duration::from_secs(2)).await;
    throttle.report(Instant::now(), &Outcome::Success);
    tokio::time::advance(Duration::from_secs(5)).await;
    match throttle.permit(Instant::now()) {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            assert!(until >= start + Duration::from_secs(20));
        }
        Permit::Granted => panic!("a success erased the server's retryAfter deadline"),
    }
    let diagnostics = throttle.diagnostics(Instant::now());
    assert_eq!(
        diagnostics.retry_after_until,
        Some(start + Duration::from_secs(20))
    );
}

/// Draws waits at a fixed delay: failure then success with growth 2 and shrink 1/2 returns the
/// delay to where it was.
fn sample_waits(seed: u64, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut pacing = PacingController::new(&ThrottleConfig {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(100),
        initial_delay: Duration::from_secs(10),
        success_shrink: 0.5,
        jitter: 0.2,
        seed: Some(seed),
        ..ThrottleConfig::default()
    })
    .unwrap();
    let now = Instant::now();
    let (mut at_20, mut at_10) = (Vec::new(), Vec::new());
    for _ in 0..n {
        pacing.record(now, &Outcome::transient(None, "reset"));
        assert_eq!(pacing.delay(), Duration::from_secs(20));
        at_20.push(pacing.next_permitted().unwrap().0 - now);
        pacing.record(now, &Outcome::Success);
        assert_eq!(pacing.delay(), Duration::from_secs(10));
        at_10.push(pacing.next_permitted().unwrap().0 - now);
    }
    (at_20, at_10)
}

fn assert_spread(waits: &[Duration], low: Duration, high: Duration) {
    let min = *waits.iter().min().unwrap();
    let max = *waits.iter().max().unwrap();
    assert!(
        min >= low && max <= high,
        "[{min:?}, {max:?}] not within [{low:?}, {high:?}]"
    );
    // The draws use the whole range, not a corner of it.
    let tenth = (high - low) / 10;
    assert!(min < low + tenth, "lowest draw {min:?} far above {low:?}");
    assert!(
        max > high - tenth,
        "highest draw {max:?} far below {high:?}"
    );
}

#[test]
fn jittered_wait_is_uniform_over_d_plus_minus_j() {
    let (at_20, at_10) = sample_waits(11, 500);
    assert_spread(&at_20, Duration::from_secs(16), Duration::from_secs(24));
    assert_spread(&at_10, Duration::from_secs(8), Duration::from_secs(12));
    // Roughly uniform: the mean lies near the middle.
    let mean = at_20.iter().sum::<Duration>() / 500;
    assert!(
        mean.abs_diff(Duration::from_secs(20)) < Duration::from_millis(500),
        "{mean:?}"
    );
}

#[test]
fn jitter_range_is_centred_on_d_and_clipped_only_at_d_max() {
    let mut pacing = PacingController::new(&config(5)).unwrap();
    pacing.record(Instant::now(), &Outcome::Success);
    // At d = d_min the range stays centred on d, so the mean spacing is d_min.
    assert_eq!(
        pacing.wait_range(),
        (Duration::from_millis(200), Duration::from_millis(300))
    );
    let waits: Vec<Duration> = (0..400)
        .map(|_| {
            let now = Instant::now();
            pacing.record(now, &Outcome::Success);
            pacing.next_permitted().unwrap().0 - now
        })
        .collect();
    assert_spread(
        &waits,
        Duration::from_millis(200),
        Duration::from_millis(300),
    );
    for _ in 0..40 {
        pacing.record(Instant::now(), &throttled());
    }
    // At d = d_max the top is clipped: no wait exceeds d_max.
    assert_eq!(
        pacing.wait_range(),
        (Duration::from_secs(480), Duration::from_secs(600))
    );
}

#[test]
fn same_seed_repeats_and_different_seeds_spread_devices_apart() {
    assert_eq!(sample_waits(21, 50), sample_waits(21, 50));
    assert_ne!(sample_waits(21, 50), sample_waits(22, 50));
}

#[test]
fn no_wind_up_first_failure_after_a_thousand_successes_raises_the_delay_at_once() {
    let mut long_run = PacingController::new(&config(8)).unwrap();
    let mut short_run = PacingController::new(&config(8)).unwrap();
    let mut now = Instant::now();
    for _ in 0..1_000 {
        long_run.record(now, &Outcome::Success);
        now += Duration::from_secs(1);
    }
    short_run.record(now, &Outcome::Success);
    assert_eq!(long_run.delay(), Duration::from_millis(250));

    long_run.record(now, &throttled());
    short_run.record(now, &throttled());
    // Raised immediately, by the full factor, exactly as after a single success.
    assert_eq!(long_run.delay(), Duration::from_millis(500));
    assert_eq!(long_run.delay(), short_run.delay());
    let (at, _) = long_run.next_permitted().unwrap();
    // The wait is beyond anything a success could have produced (at most 1.2 · 0.25 s).
    assert!(at - now >= Duration::from_millis(400), "{:?}", at - now);
    long_run.record(now, &throttled());
    assert_eq!(long_run.delay(), Duration::from_secs(1));
}

/// A throttle whose pacing barely matters (d = 1 ms, no jitter) and whose quota is 1 request
/// per second with a burst of 2, on governor's fake clock.
fn quota_bound_throttle() -> (Throttle<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let throttle = Throttle::with_clock(
        &ThrottleConfig {
            min_delay: MS,
            initial_delay: MS,
            jitter: 0.0,
            quota_interval: Duration::from_secs(1),
            quota_burst: NonZeroU32::new(2).unwrap(),
            seed: Some(1),
            ..ThrottleConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    (throttle, clock)
}

#[test]
fn quota_refuses_when_the_controller_would_allow_and_says_until_when() {
    let (mut throttle, clock) = quota_bound_throttle();
    let start = Instant::now();
    let mut now = start;
    for _ in 0..2 {
        assert_eq!(throttle.permit(now), Permit::Granted);
        throttle.report(now, &Outcome::Success);
        now += MS;
        clock.advance(MS);
    }
    // The controller permits (1 ms passed), the quota's burst of 2 is used up.
    assert_eq!(throttle.pacing().check(now), Ok(()));
    assert_eq!(
        throttle.permit(now),
        Permit::Wait {
            until: start + Duration::from_secs(1),
            cause: WaitCause::Quota
        }
    );
    let diagnostics = throttle.diagnostics(now);
    assert_eq!(
        diagnostics.next_permitted_at,
        Some(start + Duration::from_secs(1))
    );
    assert_eq!(diagnostics.waiting_for, Some(WaitCause::Quota));

    clock.advance(Duration::from_secs(1) - 2 * MS - Duration::from_nanos(1));
    assert!(
        !throttle
            .permit(start + Duration::from_secs(1) - Duration::from_nanos(1))
            .is_granted()
    );
    clock.advance(Duration::from_nanos(1));
    assert_eq!(
        throttle.permit(start + Duration::from_secs(1)),
        Permit::Granted
    );
}

#[test]
fn quota_caps_the_rate_over_a_long_run_whatever_the_controller_says() {
    let (mut throttle, clock) = quota_bound_throttle();
    let start = Instant::now();
    let mut now = start;
    let mut grants = 0u32;
    // Ten simulated seconds of a client that always does what the throttle says.
    for _ in 0..10_000 {
        if now - start >= Duration::from_secs(10) {
            break;
        }
        match throttle.permit(now) {
            Permit::Granted => {
                grants += 1;
                throttle.report(now, &Outcome::Success);
                now += MS;
                clock.advance(MS);
            }
            Permit::Wait { until, .. } => {
                clock.advance(until - now);
                now = until;
            }
        }
    }
    // Pacing alone would allow ~10,000; the quota allows its burst plus one per second.
    assert!(
        grants <= 2 + 10,
        "{grants} grants in 10 s under a 1/s quota"
    );
    assert!(
        grants >= 11,
        "{grants}: the quota should be the only limit here"
    );
}

#[test]
fn exhausted_after_max_attempts_failures_with_the_last_error_kept() {
    let mut throttle = Throttle::new(&config(9)).unwrap();
    let now = Instant::now();
    for n in 1..5 {
        assert_eq!(
            throttle.report(now, &Outcome::transient(None, format!("reset #{n}"))),
            RetryVerdict::Retry {
                failures: n,
                remaining: 5 - n
            }
        );
    }
    match throttle.report(
        now,
        &Outcome::throttled(Some(Duration::from_secs(2)), "THROTTLED (429)"),
    ) {
        RetryVerdict::Exhausted {
            failures,
            last_error,
        } => {
            assert_eq!(failures, 5);
            assert_eq!(last_error.kind, FailureKind::Throttled);
            assert_eq!(last_error.detail, "THROTTLED (429)");
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    let diagnostics = throttle.diagnostics(now);
    assert!(diagnostics.exhausted);
    assert_eq!(diagnostics.failures, 5);
    assert_eq!(diagnostics.max_attempts, 5);
    assert_eq!(
        diagnostics
            .last_error
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("throttled: THROTTLED (429) (retryAfter 2.000 s)")
    );
}

#[test]
fn success_resets_the_retry_count_but_keeps_the_pacing() {
    let mut throttle = Throttle::new(&config(10)).unwrap();
    let now = Instant::now();
    for _ in 0..4 {
        throttle.report(now, &throttled());
    }
    assert_eq!(throttle.delay(), Duration::from_secs(4));
    assert_eq!(
        throttle.report(now, &Outcome::Success),
        RetryVerdict::Succeeded
    );
    let diagnostics = throttle.diagnostics(now);
    assert_eq!(diagnostics.failures, 0);
    assert_eq!(diagnostics.last_error, None);
    assert!(!diagnostics.exhausted);
    // The pacing remembers the server's mood: 4 s · 2/3.
    assert!(near(
        throttle.delay(),
        Duration::from_secs(4).mul_f64(2.0 / 3.0)
    ));
    // A new run of failures gets the full allowance again.
    for n in 1..5 {
        assert!(matches!(
            throttle.report(now, &throttled()),
            RetryVerdict::Retry { failures, .. } if failures == n
        ));
    }
}

#[test]
fn begin_operation_resets_the_count_for_the_next_operation() {
    let mut throttle = Throttle::new(&ThrottleConfig {
        max_attempts: 2,
        ..config(12)
    })
    .unwrap();
    let now = Instant::now();
    throttle.report(now, &throttled());
    assert!(matches!(
        throttle.report(now, &throttled()),
        RetryVerdict::Exhausted { failures: 2, .. }
    ));
    throttle.begin_operation();
    assert!(!throttle.diagnostics(now).exhausted);
    assert!(matches!(
        throttle.report(now, &throttled()),
        RetryVerdict::Retry {
            failures: 1,
            remaining: 1
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn diagnostics_report_delay_next_instant_deadline_and_error() {
    let mut throttle = Throttle::new(&ThrottleConfig {
        jitter: 0.0,
        ..config(13)
    })
    .unwrap();
    let start = Instant::now();
    let before = throttle.diagnostics(start);
    assert_eq!(before.delay, Duration::from_millis(250));
    assert_eq!(before.next_permitted_at, None);
    assert_eq!(before.retry_after_until, None);
    assert_eq!(before.failures, 0);

    throttle.report(
        start,
        &Outcome::transient(Some(Duration::from_secs(3)), "TRY_AGAIN_LATER (503)"),
    );
    let after = throttle.diagnostics(start);
    assert_eq!(after.taken_at, start);
    assert_eq!(after.delay, Duration::from_millis(500));
    assert_eq!(
        after.next_permitted_at,
        Some(start + Duration::from_secs(3))
    );
    assert_eq!(after.waiting_for, Some(WaitCause::RetryAfter));
    assert_eq!(
        after.retry_after_until,
        Some(start + Duration::from_secs(3))
    );
    assert_eq!(after.failures, 1);
    assert_eq!(after.last_error.unwrap().kind, FailureKind::Transient);

    tokio::time::advance(Duration::from_secs(4)).await;
    let later = throttle.diagnostics(Instant::now());
    assert_eq!(later.next_permitted_at, None, "the deadline has passed");
    assert_eq!(later.retry_after_until, None);
}
