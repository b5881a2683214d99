//! The throttle state machine on tokio's paused clock: slow start, the ceiling a throttle sets,
//! cubic recovery, `retryAfter` as a hard deadline, transient and offline backoff, retry
//! counting per operation, restoring after a restart, the quota and diagnostics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use skysync_model::PacingMemory;
use skysync_throttle::{
    FailureKind, OperationId, Outcome, PacingPhase, Permit, RetryVerdict, Throttle, ThrottleConfig,
    TokioClock, WaitCause,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const IN_FLIGHT: Duration = Duration::from_millis(10);

/// The default configuration without jitter, so that every instant can be computed.
fn exact() -> ThrottleConfig {
    ThrottleConfig {
        jitter: 0.0,
        retry_after_jitter: 0.0,
        seed: Some(1),
        ..ThrottleConfig::default()
    }
}

fn op(key: &str) -> OperationId {
    OperationId::new(key)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1e-12)
}

/// Asks for a permit until it is granted, sleeping (on the paused clock) until each promised
/// instant; answers how long it waited.
async fn start(throttle: &mut Throttle) -> Duration {
    let asked = Instant::now();
    for _ in 0..16 {
        match throttle.permit(Instant::now()) {
            Permit::Granted => return Instant::now() - asked,
            Permit::Wait { until, .. } => tokio::time::sleep_until(until).await,
        }
    }
    panic!("no permit after 16 waits");
}

/// One operation: start it, let it be in flight for 10 ms, report `outcome`.
async fn attempt(throttle: &mut Throttle, key: &str, outcome: Outcome) -> RetryVerdict {
    start(throttle).await;
    tokio::time::sleep(IN_FLIGHT).await;
    throttle.report(Instant::now(), &op(key), &outcome)
}

fn throttled(retry_after: Option<u64>) -> Outcome {
    Outcome::throttled(retry_after.map(Duration::from_secs), "THROTTLED (HTTP 429)")
}

#[tokio::test(start_paused = true)]
async fn slow_start_doubles_the_rate_every_four_accepted_operations() {
    let mut throttle = Throttle::new(&exact()).unwrap();
    let t0 = Instant::now();
    assert_eq!(throttle.rate(), 0.5);
    assert_eq!(throttle.diagnostics(t0).phase, PacingPhase::SlowStart);
    assert_eq!(
        start(&mut throttle).await,
        Duration::ZERO,
        "the first start goes at once"
    );
    tokio::time::sleep(IN_FLIGHT).await;
    throttle.report(Instant::now(), &op("a"), &Outcome::Success);
    for n in 1..=12 {
        let expected = 0.5 * 2f64.powf(f64::from(n) / 4.0);
        assert!(
            close(throttle.rate(), expected, 1e-9),
            "after {n} accepted: {} instead of {expected}",
            throttle.rate()
        );
        // Start to start: the next start comes 1/rate after the previous one, which began
        // 10 ms (the time in flight) before the report.
        let waited = start(&mut throttle).await;
        assert!(
            waited.abs_diff(secs(1.0 / expected) - IN_FLIGHT) <= MS,
            "waited {waited:?} at rate {expected}"
        );
        tokio::time::sleep(IN_FLIGHT).await;
        throttle.report(Instant::now(), &op("a"), &Outcome::Success);
    }
    assert!(close(throttle.rate(), 0.5 * 2f64.powf(13.0 / 4.0), 1e-9));
    assert_eq!(throttle.rate_controller().ceiling(), None);
    assert_eq!(
        throttle.diagnostics(Instant::now()).phase,
        PacingPhase::SlowStart
    );
}

#[tokio::test(start_paused = true)]
async fn slow_start_does_not_grow_a_rate_the_caller_never_used() {
    let mut throttle = Throttle::new(&exact()).unwrap();
    // Something to send only once a minute: the rate may not run far ahead of that.
    for _ in 0..20 {
        attempt(&mut throttle, "a", Outcome::Success).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    // Only the first step (before two starts showed the pace actually used) was taken.
    let used: f64 = 1.0 / 60.01;
    assert!((2.0 * used) < 0.5);
    assert!(
        close(throttle.rate(), 0.5 * 2f64.powf(0.25), 1e-9),
        "rate {} grew far past the {used} actually used",
        throttle.rate()
    );
}

/// Slow start through `successes` accepted operations, then one throttle; answers the busy
/// time of the window (first start to the throttle's report) and the rate that was throttled.
async fn slow_start_then_throttle(
    throttle: &mut Throttle,
    successes: u32,
    retry_after: Option<u64>,
) -> (f64, f64) {
    let first = Instant::now();
    for _ in 0..successes {
        attempt(throttle, "a", Outcome::Success).await;
    }
    let rate = throttle.rate();
    attempt(throttle, "a", throttled(retry_after)).await;
    ((Instant::now() - first).as_secs_f64(), rate)
}

#[tokio::test(start_paused = true)]
async fn a_throttle_in_slow_start_sets_the_ceiling_from_the_answered_and_the_throttled_rate() {
    let mut throttle = Throttle::new(&exact()).unwrap();
    let (window, throttled_rate) = slow_start_then_throttle(&mut throttle, 8, Some(5)).await;
    assert!(close(throttled_rate, 2.0, 1e-9));
    // Eight accepted plus the throttled one over the window, since that beats half the
    // throttled rate (1.0).
    let answered = 9.0 / window;
    assert!(answered > 1.0, "{answered}");
    let ceiling = throttle.rate_controller().ceiling().unwrap();
    assert!(close(ceiling, answered, 1e-3), "{ceiling} vs {answered}");
    assert!(close(throttle.rate(), 0.9 * ceiling, 1e-9));
    let diagnostics = throttle.diagnostics(Instant::now());
    assert_eq!(diagnostics.phase, PacingPhase::Recovering);
    assert_eq!(diagnostics.ceiling, Some(ceiling));
    assert_eq!(diagnostics.throttles, 1);

    // A burst allowance can hide the capacity until far above it: then at least half the
    // throttled rate is kept (like TCP's slow start), never more than the throttled rate.
    let mut fast = Throttle::new(&exact()).unwrap();
    let (window, throttled_rate) = slow_start_then_throttle(&mut fast, 20, None).await;
    let ceiling = fast.rate_controller().ceiling().unwrap();
    assert!(21.0 / window < throttled_rate / 2.0);
    assert!(close(ceiling, throttled_rate / 2.0, 1e-9), "{ceiling}");
}

#[tokio::test(start_paused = true)]
async fn a_throttle_below_the_ceiling_measures_the_capacity_from_what_was_answered() {
    let mut throttle = Throttle::new(&exact()).unwrap();
    slow_start_then_throttle(&mut throttle, 8, Some(5)).await;
    let first_ceiling = throttle.rate_controller().ceiling().unwrap();
    let since = Instant::now();
    // The 5 s retryAfter counts in the window: the server's capacity kept refilling.
    let mut accepted = 0.0;
    for _ in 0..6 {
        attempt(&mut throttle, "a", Outcome::Success).await;
        accepted += 1.0;
    }
    let throttled_rate = throttle.rate();
    assert!(throttled_rate <= first_ceiling, "still recovering");
    attempt(&mut throttle, "a", throttled(Some(5))).await;
    let window = (Instant::now() - since).as_secs_f64();
    let ceiling = throttle.rate_controller().ceiling().unwrap();
    assert!(
        close(ceiling, (accepted + 1.0) / window, 1e-3),
        "{ceiling} vs {}",
        (accepted + 1.0) / window
    );
    assert!(ceiling < first_ceiling);
}

#[tokio::test(start_paused = true)]
async fn a_window_spent_waiting_out_a_retry_after_probes_again_sooner() {
    // After an 80 s retryAfter, five starts are answered and the sixth is throttled: the
    // answered rate (6 over about 85 s) may be far too low (the server's burst allowance can
    // overflow during such a wait), so the next probe comes after 90 s, not after 100
    // requests at that rate (about 1400 s).
    let mut throttle = Throttle::new(&exact()).unwrap();
    slow_start_then_throttle(&mut throttle, 8, Some(80)).await;
    for _ in 0..5 {
        attempt(&mut throttle, "a", Outcome::Success).await;
    }
    attempt(&mut throttle, "a", throttled(Some(1))).await;
    let ceiling = throttle.rate_controller().ceiling().unwrap();
    assert!(ceiling < 0.1, "{ceiling}");
    assert_eq!(
        throttle.rate_controller().probing_period(),
        Some(Duration::from_secs(90))
    );
    // It restarts at half the uncertain ceiling, so that the next window is long enough.
    assert!(
        close(throttle.rate(), 0.5 * ceiling, 1e-9),
        "{}",
        throttle.rate()
    );
    // A window that was mostly work keeps the full period of 100 requests.
    let mut steady = Throttle::new(&exact()).unwrap();
    slow_start_then_throttle(&mut steady, 8, Some(1)).await;
    for _ in 0..5 {
        attempt(&mut steady, "a", Outcome::Success).await;
    }
    attempt(&mut steady, "a", throttled(Some(1))).await;
    let ceiling = steady.rate_controller().ceiling().unwrap();
    let period = steady.rate_controller().probing_period().unwrap();
    assert!(
        close(period.as_secs_f64(), 100.0 / ceiling, 1e-6),
        "{period:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_is_cubic_flat_at_the_ceiling_and_probes_above_it_after_the_period() {
    // A known ceiling of 10 per second: probing period max(90 s, 100 / 10) = 90 s.
    let memory = PacingMemory {
        ceiling_per_sec: Some(10.0),
        not_before_unix_ms: None,
    };
    let mut throttle = Throttle::restore(
        &exact(),
        TokioClock,
        &memory,
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        throttle.rate(),
        10.0,
        "a restored ceiling paces at that rate at once"
    );
    // Throttled right at the ceiling, with nothing answered in between: the ceiling stays.
    attempt(&mut throttle, "a", throttled(None)).await;
    let throttled_at = Instant::now();
    assert_eq!(throttle.rate_controller().ceiling(), Some(10.0));
    assert_eq!(
        throttle.rate_controller().probing_period(),
        Some(Duration::from_secs(90))
    );
    assert!(close(throttle.rate(), 9.0, 1e-9), "restarts at 0.9 of it");

    let mut checked = Vec::new();
    for sample in [20.0, 45.0, 80.0, 100.0, 135.0, 180.0] {
        while (Instant::now() - throttled_at).as_secs_f64() < sample {
            attempt(&mut throttle, "a", Outcome::Success).await;
        }
        let t = (Instant::now() - throttled_at).as_secs_f64();
        let expected = 10.0 * (1.0 + 0.1 * ((t - 90.0) / 90.0).powi(3));
        assert!(
            close(throttle.rate(), expected, 0.002),
            "at {t:.1} s: rate {} instead of {expected}",
            throttle.rate()
        );
        checked.push((
            t,
            throttle.rate(),
            throttle.diagnostics(Instant::now()).phase,
        ));
    }
    // Fast at first, flat near the ceiling, above it only after the probing period.
    let phases: Vec<PacingPhase> = checked.iter().map(|(_, _, phase)| *phase).collect();
    assert_eq!(
        phases,
        [
            PacingPhase::Recovering,
            PacingPhase::Recovering,
            PacingPhase::Recovering,
            PacingPhase::Probing,
            PacingPhase::Probing,
            PacingPhase::Probing
        ]
    );
    assert!(checked[2].1 > 9.99 && checked[2].1 < 10.0);
    assert!(checked[5].1 > 10.9, "probes above the ceiling: {checked:?}");
}

#[tokio::test(start_paused = true)]
async fn a_probe_throttled_above_the_ceiling_raises_it_part_of_the_way() {
    let memory = PacingMemory {
        ceiling_per_sec: Some(10.0),
        not_before_unix_ms: None,
    };
    let mut throttle = Throttle::restore(
        &exact(),
        TokioClock,
        &memory,
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    // 3 minutes after the restore the probe runs at 10·(1 + 0.1·2³) = 18 per second.
    let restored_at = Instant::now();
    while Instant::now() - restored_at < Duration::from_secs(180) {
        attempt(&mut throttle, "a", Outcome::Success).await;
    }
    let throttled_rate = throttle.rate();
    assert!(throttled_rate > 17.9, "{throttled_rate}");
    attempt(&mut throttle, "a", throttled(Some(1))).await;
    let ceiling = throttle.rate_controller().ceiling().unwrap();
    // The answered rate (about 12 per second over the window) and a quarter of the way up
    // (12) are both below 0.85 of the throttled rate: the probe went far above the old
    // ceiling, so that is kept.
    assert!(close(ceiling, 0.85 * throttled_rate, 1e-3), "{ceiling}");
    assert!(ceiling > 10.0);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_while_the_round_trip_holds_starts_back_reads_the_rate_actually_used() {
    // A ceiling of 2 per second, but each operation takes 0.3 s: at most 3.3 starts per second
    // are possible, whatever the probing rate climbs to.
    let memory = PacingMemory {
        ceiling_per_sec: Some(2.0),
        not_before_unix_ms: None,
    };
    let mut throttle = Throttle::restore(
        &exact(),
        TokioClock,
        &memory,
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    let restored_at = Instant::now();
    while Instant::now() - restored_at < Duration::from_secs(250) {
        start(&mut throttle).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        throttle.report(Instant::now(), &op("a"), &Outcome::Success);
    }
    let pacing_rate = throttle.rate();
    assert!(pacing_rate > 4.0, "the probe climbed to {pacing_rate}");
    start(&mut throttle).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    throttle.report(Instant::now(), &op("a"), &throttled(Some(1)));
    let ceiling = throttle.rate_controller().ceiling().unwrap();
    // 0.85 of the 3.3 per second the server saw, not of the pacing rate (above 4): the probe
    // went far above the old ceiling.
    assert!(ceiling <= 0.85 / 0.3 + 0.01, "{ceiling}");
    assert!(ceiling >= 0.85 * 3.2, "{ceiling}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_hard_deadline_whatever_the_rate_says() {
    let mut throttle = Throttle::new(&ThrottleConfig {
        seed: Some(3),
        ..ThrottleConfig::default()
    })
    .unwrap();
    attempt(&mut throttle, "send", Outcome::Success).await;
    attempt(&mut throttle, "send", throttled(Some(30))).await;
    let told_at = Instant::now();
    let deadline = told_at + Duration::from_secs(30);
    // Another operation that was not gated reports success meanwhile: the deadline stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    throttle.report(Instant::now(), &op("fetch"), &Outcome::Success);

    let until = match throttle.permit(Instant::now()) {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            until
        }
        Permit::Granted => panic!("granted 2 s into a 30 s retryAfter"),
    };
    // Jitter after the deadline: at most 0.1 · retryAfter.
    assert!(
        until >= deadline && until <= deadline + Duration::from_secs(3),
        "{until:?}"
    );
    assert_eq!(
        throttle.diagnostics(Instant::now()).retry_after_until,
        Some(deadline)
    );
    tokio::time::sleep_until(until - MS).await;
    assert!(
        !throttle.permit(Instant::now()).is_granted(),
        "granted 1 ms before the jittered deadline"
    );
    tokio::time::sleep_until(until).await;
    assert_eq!(throttle.permit(Instant::now()), Permit::Granted);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_on_their_own_and_leave_the_rate_alone() {
    let memory = PacingMemory {
        ceiling_per_sec: Some(2.0),
        not_before_unix_ms: None,
    };
    let config = ThrottleConfig {
        max_attempts: 100,
        seed: Some(4),
        ..ThrottleConfig::default()
    };
    let mut throttle = Throttle::restore(
        &config,
        TokioClock,
        &memory,
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    attempt(&mut throttle, "send", Outcome::Success).await;
    let mut bound = Duration::from_secs(1);
    for n in 1..=12u32 {
        start(&mut throttle).await;
        tokio::time::sleep(IN_FLIGHT).await;
        let rate = throttle.rate();
        throttle.report(
            Instant::now(),
            &op("send"),
            &Outcome::transient(None, "INTERNAL_ERROR (HTTP 500)"),
        );
        assert_eq!(
            throttle.rate(),
            rate,
            "a transient failure changed the rate"
        );
        // Backoff time is not busy time: the cubic does not run on during it.
        assert!(close(rate, 2.0, 0.001), "{rate}");
        assert_eq!(throttle.rate_controller().ceiling(), Some(2.0));
        let now = Instant::now();
        let diagnostics = throttle.diagnostics(now);
        assert_eq!(diagnostics.failures, n);
        let wait = diagnostics.next_permitted_at.unwrap() - now;
        if bound >= Duration::from_secs(2) {
            // Longer than the pacing interval (0.5 s): the backoff is what holds it back.
            assert_eq!(diagnostics.waiting_for, Some(WaitCause::Backoff));
            assert!(
                wait >= bound / 2 && wait <= bound,
                "{n}: {wait:?} for {bound:?}"
            );
        }
        bound = (bound * 2).min(Duration::from_secs(300));
    }
    assert_eq!(bound, Duration::from_secs(300), "capped at 5 minutes");
    // A success ends the streak: the next transient failure waits at most 1 s again.
    attempt(&mut throttle, "send", Outcome::Success).await;
    attempt(&mut throttle, "send", Outcome::transient(None, "reset")).await;
    let now = Instant::now();
    let next = throttle.diagnostics(now).next_permitted_at.unwrap();
    assert!(next - now <= Duration::from_secs(1));
    assert_eq!(throttle.rate_controller().throttles(), 0);
}

#[tokio::test(start_paused = true)]
async fn offline_is_not_counted_not_a_rate_signal_and_probes_on_its_own_backoff() {
    let mut throttle = Throttle::new(&ThrottleConfig {
        seed: Some(5),
        ..ThrottleConfig::default()
    })
    .unwrap();
    attempt(&mut throttle, "send", Outcome::Success).await;
    let rate = throttle.rate();
    let mut longest = Duration::ZERO;
    for _ in 0..20 {
        let verdict = attempt(&mut throttle, "send", Outcome::offline("could not connect")).await;
        assert_eq!(
            verdict,
            RetryVerdict::Retry {
                failures: 0,
                remaining: 5
            },
            "offline was counted"
        );
        let now = Instant::now();
        let diagnostics = throttle.diagnostics(now);
        assert_eq!(diagnostics.failures, 0);
        assert!(!diagnostics.exhausted);
        assert_eq!(
            diagnostics.last_failure.as_ref().map(|f| f.kind),
            Some(FailureKind::Offline)
        );
        longest = longest.max(diagnostics.next_permitted_at.unwrap() - now);
    }
    assert_eq!(throttle.rate(), rate, "offline changed the rate");
    assert!(longest <= Duration::from_secs(300) && longest >= Duration::from_secs(150));
    assert_eq!(
        throttle.diagnostics(Instant::now()).waiting_for,
        Some(WaitCause::Offline)
    );
    // The platform says the network is back: the next probe need not wait for the backoff.
    throttle.network_available();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(throttle.permit(Instant::now()), Permit::Granted);
}

#[tokio::test(start_paused = true)]
async fn a_success_of_another_operation_does_not_reset_the_count() {
    let mut throttle = Throttle::new(&ThrottleConfig {
        seed: Some(6),
        ..ThrottleConfig::default()
    })
    .unwrap();
    for n in 1..=4 {
        assert_eq!(
            attempt(
                &mut throttle,
                "send batch 7",
                Outcome::transient(None, "reset")
            )
            .await,
            RetryVerdict::Retry {
                failures: n,
                remaining: 5 - n
            }
        );
    }
    assert_eq!(
        attempt(&mut throttle, "fetch zone Notes", Outcome::Success).await,
        RetryVerdict::Succeeded
    );
    match attempt(
        &mut throttle,
        "send batch 7",
        Outcome::transient(None, "reset"),
    )
    .await
    {
        RetryVerdict::Exhausted {
            failures,
            last_error,
        } => {
            assert_eq!(failures, 5);
            assert_eq!(last_error.detail, "reset");
        }
        other => panic!("the fetch's success reset the send's count: {other:?}"),
    }
    let diagnostics = throttle.diagnostics(Instant::now());
    assert_eq!(diagnostics.operation, Some(op("send batch 7")));
    assert!(diagnostics.exhausted);
    // Its own success clears it; forgetting it does too.
    throttle.report(Instant::now(), &op("send batch 7"), &Outcome::Success);
    assert_eq!(throttle.retries().failures(&op("send batch 7")), 0);
    throttle.report(Instant::now(), &op("b"), &Outcome::transient(None, "reset"));
    throttle.forget_operation(&op("b"));
    assert_eq!(throttle.retries().failures(&op("b")), 0);
}

#[tokio::test(start_paused = true)]
async fn a_restart_restores_the_ceiling_and_waits_out_the_penalty() {
    let config = exact();
    let mut before = Throttle::new(&config).unwrap();
    slow_start_then_throttle(&mut before, 8, Some(60)).await;
    let told_at = Instant::now();
    let ceiling = before.rate_controller().ceiling().unwrap();

    // The engine saves the memory 5 s later and is restarted 10 s after that.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let memory = before.memory(Instant::now(), wall);
    assert_eq!(memory.ceiling_per_sec, Some(ceiling));
    let deadline_ms = PacingMemory::unix_ms(wall + Duration::from_secs(55));
    assert!(
        memory.not_before_unix_ms.unwrap().abs_diff(deadline_ms) <= 1,
        "{memory:?}"
    );
    drop(before);

    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted_at = Instant::now();
    let mut after = Throttle::restore(
        &config,
        TokioClock,
        &memory,
        restarted_at,
        wall + Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        after.rate(),
        ceiling,
        "paces at the restored ceiling at once"
    );
    assert_eq!(after.rate_controller().ceiling(), Some(ceiling));
    match after.permit(restarted_at) {
        Permit::Wait { until, cause } => {
            assert_eq!(cause, WaitCause::RetryAfter);
            // The penalty ends 60 s after it was given, as measured before the restart.
            let penalty_end = told_at + Duration::from_secs(60);
            assert!(
                until >= penalty_end && until <= penalty_end + 2 * MS,
                "{until:?}"
            );
        }
        Permit::Granted => panic!("a restart during a penalty started at once"),
    }
    tokio::time::sleep_until(told_at + Duration::from_secs(60) + 2 * MS).await;
    assert_eq!(after.permit(Instant::now()), Permit::Granted);
    // Saved again after the penalty: no deadline left.
    assert_eq!(after.memory(Instant::now(), wall).not_before_unix_ms, None);
}

#[tokio::test(start_paused = true)]
async fn memory_that_is_stale_or_empty_starts_without_waiting() {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let past = PacingMemory {
        ceiling_per_sec: None,
        not_before_unix_ms: Some(PacingMemory::unix_ms(wall - Duration::from_secs(1))),
    };
    let mut throttle = Throttle::restore(&exact(), TokioClock, &past, now, wall).unwrap();
    assert_eq!(throttle.permit(now), Permit::Granted);
    assert_eq!(throttle.rate(), 0.5, "no ceiling saved: slow start");
    let nonsense = PacingMemory {
        ceiling_per_sec: Some(f64::NAN),
        not_before_unix_ms: None,
    };
    let throttle = Throttle::restore(&exact(), TokioClock, &nonsense, now, wall).unwrap();
    assert_eq!(throttle.rate_controller().ceiling(), None);
}

#[tokio::test(start_paused = true)]
async fn the_quota_caps_starts_whatever_the_pacing_allows() {
    // Pacing at 1 per second with ±90 % jitter allows intervals of 0.1 s; the quota allows
    // one start per second, none back to back.
    let mut throttle = Throttle::new(&ThrottleConfig {
        initial_rate: 1.0,
        max_rate: 1.0,
        jitter: 0.9,
        quota_interval: Duration::from_secs(1),
        quota_burst: NonZeroU32::MIN,
        seed: Some(7),
        ..ThrottleConfig::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let (mut starts, mut quota_waits) = (0u32, 0u32);
    while Instant::now() - t0 < Duration::from_secs(100) {
        match throttle.permit(Instant::now()) {
            Permit::Granted => {
                starts += 1;
                throttle.report(Instant::now(), &op("a"), &Outcome::Success);
            }
            Permit::Wait { until, cause } => {
                if cause == WaitCause::Quota {
                    quota_waits += 1;
                    assert_eq!(
                        throttle.diagnostics(Instant::now()).waiting_for,
                        Some(WaitCause::Quota)
                    );
                }
                tokio::time::sleep_until(until).await;
            }
        }
    }
    assert!(starts <= 101, "{starts} starts in 100 s under a 1/s quota");
    assert!(quota_waits > 10, "the quota never held a start back");
}

#[tokio::test(start_paused = true)]
async fn diagnostics_say_the_rate_the_ceiling_when_the_next_start_may_go_and_why() {
    let mut throttle = Throttle::new(&exact()).unwrap();
    let t0 = Instant::now();
    let fresh = throttle.diagnostics(t0);
    assert_eq!(fresh.rate, 0.5);
    assert_eq!(fresh.interval, Duration::from_secs(2));
    assert_eq!(fresh.ceiling, None);
    assert_eq!(fresh.next_permitted_at, None);
    assert_eq!(fresh.waiting_for, None);
    assert_eq!(fresh.operation, None);

    attempt(&mut throttle, "send", Outcome::Success).await;
    let now = Instant::now();
    let paced = throttle.diagnostics(now);
    assert_eq!(paced.waiting_for, Some(WaitCause::Pacing));
    assert!(paced.next_permitted_at.unwrap() > now);

    attempt(&mut throttle, "send", throttled(Some(7))).await;
    let now = Instant::now();
    let told = throttle.diagnostics(now);
    assert_eq!(told.waiting_for, Some(WaitCause::RetryAfter));
    assert_eq!(told.next_permitted_at, Some(now + Duration::from_secs(7)));
    assert_eq!(told.retry_after_until, Some(now + Duration::from_secs(7)));
    assert!(told.ceiling.is_some());
    assert_eq!(told.operation, Some(op("send")));
    assert_eq!(told.failures, 1);
    assert_eq!(told.max_attempts, 5);
    assert_eq!(
        told.last_error.as_ref().map(ToString::to_string).as_deref(),
        Some("throttled: THROTTLED (HTTP 429) (retryAfter 7.000 s)")
    );

    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = throttle.diagnostics(Instant::now());
    assert_eq!(later.retry_after_until, None, "the deadline has passed");
    assert_eq!(later.next_permitted_at, None);
}

#[derive(Debug, Clone)]
enum Step {
    Success,
    Throttled(Option<u64>),
    Transient,
    Offline,
    Idle(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Success),
        1 => proptest::option::of(0u64..120).prop_map(Step::Throttled),
        1 => Just(Step::Transient),
        1 => Just(Step::Offline),
        1 => (0u64..3_600).prop_map(Step::Idle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rate_stays_in_bounds_only_throttles_lower_it_and_deadlines_hold(
        steps in proptest::collection::vec(step(), 1..200),
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let config = ThrottleConfig { seed: Some(seed), ..ThrottleConfig::default() };
            let mut throttle = Throttle::new(&config).unwrap();
            let mut deadline: Option<Instant> = None;
            for step in steps {
                if let Step::Idle(s) = step {
                    tokio::time::sleep(Duration::from_secs(s)).await;
                    continue;
                }
                start(&mut throttle).await;
                if let Some(deadline) = deadline {
                    // Never a start before the server's deadline.
                    prop_assert!(Instant::now() >= deadline);
                }
                tokio::time::sleep(IN_FLIGHT).await;
                let (rate, ceiling) = (throttle.rate(), throttle.rate_controller().ceiling());
                let outcome = match step {
                    Step::Success => Outcome::Success,
                    Step::Throttled(s) => throttled(s),
                    Step::Transient => Outcome::transient(None, "reset"),
                    Step::Offline => Outcome::offline("could not connect"),
                    Step::Idle(_) => unreachable!(),
                };
                let now = Instant::now();
                throttle.report(now, &op("a"), &outcome);
                let after = throttle.rate();
                prop_assert!((config.min_rate..=config.max_rate).contains(&after), "{after}");
                match outcome {
                    Outcome::Throttled { retry_after, .. } => {
                        prop_assert!(after <= rate, "a throttle raised the rate: {rate} -> {after}");
                        prop_assert!(throttle.rate_controller().ceiling().is_some());
                        deadline = retry_after.map(|after| now + after);
                    }
                    Outcome::Transient { .. } | Outcome::Offline { .. } => {
                        prop_assert_eq!(after, rate, "not a rate signal");
                        prop_assert_eq!(throttle.rate_controller().ceiling(), ceiling);
                    }
                    Outcome::Success => prop_assert!(after >= rate, "a success lowered the rate"),
                }
            }
            Ok(())
        })?;
    }
}
