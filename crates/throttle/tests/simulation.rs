//! The simulated server, the four client policies, and the comparison at small scale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use skysync_throttle::simulation::{
    ClientPolicy, LegacyPolicy, MAX_SIMULATED_TIME, NaivePolicy, PidPolicy, PidSettings, Reply,
    ServerConfig, SimConfig, SimServer, SkysyncPolicy, compare_policies, run_policy,
};
use skysync_throttle::{MAX_DELAY_LIMIT, Outcome, PacingController, ThrottleConfig, ThrottleError};
use tokio::time::Instant;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn server(rate: f64, burst: u32) -> SimServer {
    SimServer::new(&ServerConfig {
        rate,
        burst,
        ..ServerConfig::default()
    })
    .unwrap()
}

const THROTTLED_1S: Reply = Reply::Throttled {
    retry_after: Duration::from_secs(1),
    lockout: false,
};

#[test]
fn server_allows_its_burst_then_answers_429_with_retry_after() {
    let mut server = server(1.0, 3);
    for _ in 0..3 {
        assert_eq!(server.handle(Duration::ZERO), Reply::Accepted);
    }
    assert_eq!(server.handle(Duration::ZERO), THROTTLED_1S);
    // Refilled at 1 token per second: two more after two seconds.
    assert_eq!(server.handle(secs(2.0)), Reply::Accepted);
    assert_eq!(server.handle(secs(2.0)), Reply::Accepted);
    assert_eq!(server.handle(secs(2.0)), THROTTLED_1S);
    assert_eq!(server.lockouts(), 0);
}

#[test]
fn retry_after_is_the_time_until_a_token_rounded_up_to_whole_seconds() {
    let mut server = server(0.25, 1);
    assert_eq!(server.handle(Duration::ZERO), Reply::Accepted);
    assert_eq!(
        server.handle(Duration::ZERO),
        Reply::Throttled {
            retry_after: Duration::from_secs(4),
            lockout: false
        }
    );
}

#[test]
fn coming_back_before_retry_after_earns_a_lockout_that_doubles_and_is_forgiven() {
    let mut server = server(1.0, 1);
    assert_eq!(server.handle(Duration::ZERO), Reply::Accepted);
    assert_eq!(server.handle(secs(0.1)), THROTTLED_1S);
    // Back after 0.5 s, inside the 1 s retryAfter: locked out for 10 s.
    assert_eq!(
        server.handle(secs(0.6)),
        Reply::Throttled {
            retry_after: Duration::from_secs(10),
            lockout: true
        }
    );
    // Hammering during the lock-out is refused with the time left.
    assert_eq!(
        server.handle(secs(5.6)),
        Reply::Throttled {
            retry_after: Duration::from_secs(5),
            lockout: true
        }
    );
    assert_eq!(server.lockouts(), 1);
    // After it, the bucket has refilled.
    assert_eq!(server.handle(secs(10.6)), Reply::Accepted);
    assert_eq!(server.handle(secs(10.7)), THROTTLED_1S);
    // A second offence soon after: twice as long.
    assert_eq!(
        server.handle(secs(10.8)),
        Reply::Throttled {
            retry_after: Duration::from_secs(20),
            lockout: true
        }
    );
    assert_eq!(server.lockouts(), 2);
    // Behaving for more than a minute after the lock-out resets the doubling.
    assert_eq!(server.handle(secs(100.0)), Reply::Accepted);
    assert_eq!(server.handle(secs(100.1)), THROTTLED_1S);
    assert_eq!(
        server.handle(secs(100.2)),
        Reply::Throttled {
            retry_after: Duration::from_secs(10),
            lockout: true
        }
    );
}

#[test]
fn a_client_that_obeys_retry_after_is_never_locked_out() {
    let mut server = server(2.0, 2);
    let mut now = Duration::ZERO;
    for _ in 0..2_000 {
        match server.handle(now) {
            Reply::Accepted => now += secs(0.01),
            Reply::Throttled { retry_after, .. } => now += retry_after,
        }
    }
    assert_eq!(server.lockouts(), 0);
}

#[test]
fn legacy_policy_follows_cloud_sync_sessions_rules() {
    let mut legacy = LegacyPolicy::new();
    assert_eq!(legacy.delay(), secs(2.0));
    legacy.on_reply(false, None);
    assert_eq!(legacy.delay(), secs(4.0), "no retryAfter: doubles");
    legacy.on_reply(false, Some(secs(30.0)));
    assert_eq!(legacy.delay(), secs(30.0), "retryAfter replaces the delay");
    legacy.on_reply(true, None);
    assert_eq!(legacy.delay(), secs(20.0), "success: two thirds");
    for _ in 0..20 {
        legacy.on_reply(true, None);
    }
    assert_eq!(legacy.delay(), secs(2.0), "floor");
    legacy.on_reply(false, Some(secs(1.0)));
    assert_eq!(
        legacy.delay(),
        secs(2.0),
        "a short retryAfter is raised to the floor"
    );
    for _ in 0..20 {
        legacy.on_reply(false, None);
    }
    assert_eq!(legacy.delay(), secs(600.0), "ceiling");
}

#[test]
fn pid_policy_is_a_textbook_pid_on_the_window_success_rate() {
    let mut pid = PidPolicy::new(PidSettings::default());
    assert_eq!(pid.delay(), secs(1.0));
    // First failure: window [F], rate 0, e = 0.96, Σe = 0.96, Δe = 0.96.
    pid.on_reply(false);
    let expected = 1.0 + 2.0 * 0.96 + 0.05 * 0.96 + 0.02 * 0.96;
    assert!(
        (pid.delay().as_secs_f64() - expected).abs() < 1e-9,
        "{:?}",
        pid.delay()
    );
    // Twenty failures: e = 0.96, Σe = 19.2, Δe = 0.
    for _ in 0..19 {
        pid.on_reply(false);
    }
    let expected = 1.0 + 2.0 * 0.96 + 0.05 * 19.2;
    assert!(
        (pid.delay().as_secs_f64() - expected).abs() < 1e-9,
        "{:?}",
        pid.delay()
    );
    // The window is 20 outcomes: 20 successes push every failure out of it.
    for _ in 0..20 {
        pid.on_reply(true);
    }
    assert!(pid.delay() < secs(expected));
}

#[test]
fn pid_policy_winds_up_where_skysyncs_controller_does_not() {
    let mut pid = PidPolicy::new(PidSettings::default());
    let mut ours = PacingController::new(&ThrottleConfig {
        seed: Some(1),
        ..ThrottleConfig::default()
    })
    .unwrap();
    let now = Instant::now();
    for _ in 0..1_000 {
        pid.on_reply(true);
        ours.record(now, &Outcome::Success);
    }
    assert!(pid.integral() < -39.0, "Σe = {}", pid.integral());
    assert_eq!(pid.delay(), secs(0.25));
    assert_eq!(ours.delay(), secs(0.25));

    pid.on_reply(false);
    ours.record(now, &Outcome::throttled(None, "THROTTLED"));
    // The PID's banked credit holds its delay at the floor; ours doubles at once.
    assert_eq!(
        pid.delay(),
        secs(0.25),
        "the PID reacted despite its wound-up integral"
    );
    assert_eq!(ours.delay(), secs(0.5));
    // Even five failures in a row do not lift the PID off its floor.
    for _ in 0..4 {
        pid.on_reply(false);
    }
    assert_eq!(pid.delay(), secs(0.25));
}

#[test]
fn invalid_simulation_configs_are_refused() {
    let base = SimConfig::new(10.0, 20, 100, 1);
    let cases = [
        ("rate", {
            let mut c = base.clone();
            c.server.rate = 0.0;
            c
        }),
        ("rate", {
            let mut c = base.clone();
            c.server.rate = f64::NAN;
            c
        }),
        ("burst", {
            let mut c = base.clone();
            c.server.burst = 0;
            c
        }),
        ("latency", {
            let mut c = base.clone();
            c.server.latency = Duration::ZERO;
            c
        }),
        ("work", SimConfig::new(10.0, 20, 0, 1)),
        ("max_requests", {
            let mut c = base.clone();
            c.max_requests = 10;
            c
        }),
    ];
    for (field, config) in cases {
        match compare_policies(&config) {
            Err(ThrottleError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn small_scale_comparison_ranks_the_policies() {
    let comparison = compare_policies(&SimConfig::new(10.0, 20, 500, 7)).unwrap();
    let names: Vec<&str> = comparison.rows.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(
        names,
        [
            "skysync",
            "legacy (2 s, x2 / x2/3)",
            "PID (CloudSyncSession)",
            "naive (no pacing)"
        ]
    );
    for row in &comparison.rows {
        assert!(row.completed, "{} did not finish", row.policy);
        assert_eq!(row.accepted, 500, "{}", row.policy);
        assert_eq!(row.requests, row.accepted + row.throttled, "{}", row.policy);
        assert!(
            row.goodput > 0.0 && row.goodput <= 1.0 + 20.0 / 500.0,
            "{row:?}"
        );
    }
    let skysync = &comparison.rows[0];
    let legacy = &comparison.rows[1];
    let pid = &comparison.rows[2];
    let naive = &comparison.rows[3];

    // Pacing keeps skysync well under R = 10/s: nothing throttled, nothing locked out.
    assert_eq!(skysync.throttled, 0, "{skysync:?}");
    assert_eq!(skysync.lockouts, 0);
    assert!(naive.throttled_fraction > 0.9, "{naive:?}");
    assert!(skysync.throttled_fraction * 10.0 <= naive.throttled_fraction);
    assert!(naive.lockouts > 0, "the naive client should be locked out");
    // Obeying retryAfter, the other paced clients are never locked out either.
    assert_eq!(legacy.lockouts, 0);
    assert_eq!(pid.lockouts, 0);
    // skysync gets the work done at least as fast as every other policy here.
    assert!(
        skysync.goodput >= legacy.goodput,
        "{skysync:?} vs {legacy:?}"
    );
    assert!(skysync.goodput >= naive.goodput, "{skysync:?} vs {naive:?}");
    assert!(skysync.elapsed <= legacy.elapsed);
    // Legacy never goes faster than one request per 2 s: at most 5 % of R.
    assert!(legacy.goodput <= 0.05 + 1e-9, "{legacy:?}");
}

#[test]
fn overloaded_server_keeps_skysync_out_of_lockouts_and_ahead_of_legacy() {
    // R = 1/s is below skysync's floor pace (4/s): the controller has to back off.
    let config = SimConfig::new(1.0, 5, 300, 3);
    let comparison = compare_policies(&config).unwrap();
    let skysync = comparison.row("skysync").unwrap();
    let legacy = comparison.row("legacy (2 s, x2 / x2/3)").unwrap();
    let naive = comparison.row("naive (no pacing)").unwrap();
    assert!(skysync.completed);
    assert_eq!(skysync.lockouts, 0, "{skysync:?}");
    assert!(
        skysync.throttled > 0,
        "R is below the floor pace: some requests must be throttled"
    );
    // ×2 on failure against ×2/3 on success balances at ln 1.5 / ln 3 ≈ 37 % failures.
    assert!(skysync.throttled_fraction < 0.45, "{skysync:?}");
    assert!(skysync.throttled_fraction < naive.throttled_fraction);
    assert!(
        skysync.goodput >= legacy.goodput,
        "{skysync:?} vs {legacy:?}"
    );
}

#[test]
fn comparison_is_repeatable_for_a_seed_and_varies_with_it() {
    let config = SimConfig::new(10.0, 20, 200, 11);
    assert_eq!(
        compare_policies(&config).unwrap(),
        compare_policies(&config).unwrap()
    );
    let other = compare_policies(&SimConfig::new(10.0, 20, 200, 12)).unwrap();
    let first = compare_policies(&config).unwrap();
    assert_ne!(first.rows[0].elapsed, other.rows[0].elapsed);
}

#[test]
fn a_run_stops_at_max_requests_and_says_it_did_not_finish() {
    let mut config = SimConfig::new(1.0, 1, 50, 1);
    config.max_requests = 100;
    let row = run_policy(&config, &mut NaivePolicy).unwrap();
    assert!(!row.completed);
    assert_eq!(row.requests, 100);
    assert!(row.accepted < 50);
}

#[test]
fn skysync_policy_waits_for_the_retry_after_it_was_given() {
    let mut policy = SkysyncPolicy::new(&ThrottleConfig {
        seed: Some(2),
        ..ThrottleConfig::default()
    })
    .unwrap();
    assert_eq!(policy.ready_at(Duration::ZERO), Duration::ZERO);
    policy.observe(
        secs(0.02),
        &Reply::Throttled {
            retry_after: secs(7.0),
            lockout: false,
        },
    );
    let ready = policy.ready_at(secs(0.03));
    assert!(ready >= secs(7.02), "ready at {ready:?}");
    assert!(
        policy.ready_at(ready) <= ready,
        "a permit at the promised time"
    );
    assert_eq!(policy.throttle().retries().failures(), 1);
}

#[test]
fn table_shows_every_policy_and_its_numbers() {
    let comparison = compare_policies(&SimConfig::new(10.0, 20, 100, 5)).unwrap();
    let table = comparison.to_string();
    assert!(table.contains("R = 10/s, burst B = 20"), "{table}");
    assert!(table.contains("goodput (R)"), "{table}");
    for row in &comparison.rows {
        let line = table
            .lines()
            .find(|line| line.starts_with(&row.policy))
            .unwrap_or_else(|| panic!("no line for {} in\n{table}", row.policy));
        assert!(line.contains(&row.requests.to_string()), "{line}");
        assert!(line.contains(&format!("{:.3}", row.goodput)), "{line}");
        assert!(line.trim_end().ends_with("yes"), "{line}");
    }
}

#[test]
fn a_server_too_slow_for_the_work_ends_the_runs_at_the_time_limit() {
    // One token per ~32 years: 1000 requests cannot be accepted within the 100-year limit.
    let config = SimConfig::new(1e-9, 1, 1000, 1);
    let comparison = compare_policies(&config).unwrap();
    for row in &comparison.rows {
        assert!(!row.completed, "{row:?}");
        assert!(row.accepted < 1000, "{row:?}");
    }
    let skysync = comparison.row("skysync").unwrap();
    assert!(
        skysync.requests < config.max_requests,
        "the time limit, not max_requests, ends the run: {skysync:?}"
    );
    assert!(skysync.elapsed >= MAX_SIMULATED_TIME, "{skysync:?}");
    assert!(
        skysync.elapsed < MAX_SIMULATED_TIME + Duration::from_secs(1),
        "{skysync:?}"
    );
}

#[test]
fn a_vanishing_rate_or_an_endless_lockout_ends_the_runs_without_overflow() {
    // The time until the next token (about 10^19 s) is near the largest Duration.
    let comparison = compare_policies(&SimConfig::new(1e-19, 1, 10, 1)).unwrap();
    for row in &comparison.rows {
        assert!(!row.completed, "{row:?}");
        assert!(row.elapsed <= MAX_SIMULATED_TIME, "{row:?}");
    }

    let mut config = SimConfig::new(1.0, 1, 10, 1);
    config.server.lockout = Duration::MAX;
    config.server.max_lockout = Duration::MAX;
    let naive = run_policy(&config, &mut NaivePolicy).unwrap();
    assert_eq!(naive.lockouts, 1, "locked out for good: {naive:?}");
    assert!(!naive.completed);
}

#[test]
fn a_round_trip_longer_than_the_delay_limit_is_refused() {
    let mut config = SimConfig::new(10.0, 20, 100, 1);
    config.server.latency = MAX_DELAY_LIMIT + Duration::from_secs(1);
    match compare_policies(&config) {
        Err(ThrottleError::InvalidConfig { field, .. }) => assert_eq!(field, "latency"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
