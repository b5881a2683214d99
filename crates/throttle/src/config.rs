//! Tuning knobs for the throttle, with validation.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::error::{Result, ThrottleError};

/// The longest wait the throttle ever computes from a configuration value (a backoff cap, a
/// probing period): one week. Keeps every instant it computes far from the limits of the clock.
pub const MAX_DELAY_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest server `retryAfter` honoured as given: one day. A longer value (usually a
/// misparsed body) is treated as one day, which is a halt in all but name.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

/// How the throttle paces operations, backs off, counts retries and caps the request rate.
///
/// Rates are operation *starts* per second, measured start to start. Build one with
/// [`ThrottleConfig::default`] and change the fields you need; every constructor that takes a
/// config validates it and answers [`ThrottleError::InvalidConfig`] for an out-of-range value.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// The rate slow start begins from when nothing has been learned yet (default 0.5 per
    /// second: one start every 2 s). Slow start grows it until the first throttle.
    pub initial_rate: f64,
    /// The lowest rate the controller ever paces at (default 1/600 per second: one start every
    /// 10 minutes), however low the server's capacity looks.
    pub min_rate: f64,
    /// The highest rate the controller ever paces at (default 40 per second). The quota sits
    /// above it.
    pub max_rate: f64,
    /// During slow start, how many accepted operations double the rate (default 4).
    pub slow_start_doubling: u32,
    /// After a throttle, the rate restarts at this fraction of the learned ceiling, then climbs
    /// back towards it (default 0.9; strictly between 0 and 1).
    pub restart_fraction: f64,
    /// The shortest probing period (default 90 s): after a throttle, the rate reaches the
    /// learned ceiling again no sooner than this, and only then probes above it. With the
    /// time the probe takes to use up the server's burst allowance, throttles in a steady
    /// state come more than a minute apart.
    pub probe_interval: Duration,
    /// The fewest operations per probing period (default 100): at a ceiling of `C` per second
    /// the probing period is at least `probe_requests / C`, so that a steady state costs at most
    /// about one throttle per `probe_requests` operations.
    pub probe_requests: u32,
    /// The pacing jitter fraction `j` (default 0.05; from 0 up to, not including, 1): each
    /// start-to-start interval is `1/rate` times a factor drawn uniformly from `[1−j, 1+j]`,
    /// so the mean rate is kept and devices do not stay in step.
    pub jitter: f64,
    /// After a `retryAfter`, the next start lies uniformly within
    /// `[deadline, deadline + retry_after_jitter · retryAfter]` (default 0.1; from 0 to 1), so
    /// that devices told the same deadline do not all come back at the same instant.
    pub retry_after_jitter: f64,
    /// The first backoff after a transient failure (default 1 s); each further consecutive one
    /// doubles it, up to `transient_backoff_cap`. The wait is drawn from `[b/2, b]`.
    pub transient_backoff: Duration,
    /// The longest transient backoff (default 5 minutes).
    pub transient_backoff_cap: Duration,
    /// The first wait before probing again after an offline failure (default 1 s); doubles per
    /// consecutive offline failure, up to `offline_backoff_cap`. The wait is drawn from `[b/2, b]`.
    pub offline_backoff: Duration,
    /// The longest offline probing interval (default 5 minutes).
    pub offline_backoff_cap: Duration,
    /// How many counted failures (throttled or transient) of one operation exhaust it
    /// (default 5; at least 1). Offline failures are not counted.
    pub max_attempts: u32,
    /// The quota's hard cap: at most one request per `quota_interval` on average (default
    /// 20 ms, that is 50 requests per second; must be above zero and leave `1/quota_interval`
    /// at or above `max_rate`). A safety net, never the limit in normal operation.
    pub quota_interval: Duration,
    /// How many requests the quota lets through back to back (default 10).
    pub quota_burst: NonZeroU32,
    /// Seed for the jitter's random numbers. `None` (the default) seeds from the operating
    /// system, so that devices spread apart; tests and simulations set a seed to be repeatable.
    pub seed: Option<u64>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            initial_rate: 0.5,
            min_rate: 1.0 / 600.0,
            max_rate: 40.0,
            slow_start_doubling: 4,
            restart_fraction: 0.9,
            probe_interval: Duration::from_secs(90),
            probe_requests: 100,
            jitter: 0.05,
            retry_after_jitter: 0.1,
            transient_backoff: Duration::from_secs(1),
            transient_backoff_cap: Duration::from_secs(300),
            offline_backoff: Duration::from_secs(1),
            offline_backoff_cap: Duration::from_secs(300),
            max_attempts: 5,
            quota_interval: Duration::from_millis(20),
            quota_burst: NonZeroU32::MIN.saturating_add(9),
            seed: None,
        }
    }
}

/// A [`ThrottleError::InvalidConfig`] naming `field` and what is wrong with it.
pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> ThrottleError {
    ThrottleError::InvalidConfig {
        field,
        problem: problem.into(),
    }
}

/// Checks that `value` is a finite rate above zero.
fn positive_rate(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("is {value}; it must be a number of starts per second above zero"),
        ))
    }
}

/// Checks that a backoff's first wait and cap are above zero, in order, and within the limit.
fn backoff(
    field: &'static str,
    cap_field: &'static str,
    first: Duration,
    cap: Duration,
) -> Result<()> {
    if first.is_zero() {
        return Err(invalid(field, "is zero; it must be above zero"));
    }
    if cap < first || cap > MAX_DELAY_LIMIT {
        return Err(invalid(
            cap_field,
            format!("is {cap:?}; it must lie within [{first:?}, {MAX_DELAY_LIMIT:?}]"),
        ));
    }
    Ok(())
}

/// Checks that `value` is a fraction within `[0, 1)` (or `[0, 1]` when `one_allowed`).
fn fraction(field: &'static str, value: f64, one_allowed: bool) -> Result<()> {
    let ok = value.is_finite() && value >= 0.0 && (value < 1.0 || (one_allowed && value <= 1.0));
    if ok {
        Ok(())
    } else {
        let top = if one_allowed {
            "1 included"
        } else {
            "not including 1"
        };
        Err(invalid(
            field,
            format!("is {value}; it must be from 0 up to 1 ({top})"),
        ))
    }
}

impl ThrottleConfig {
    /// Checks every field against its allowed range; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        positive_rate("min_rate", self.min_rate)?;
        positive_rate("max_rate", self.max_rate)?;
        positive_rate("initial_rate", self.initial_rate)?;
        if 1.0 / self.min_rate > MAX_DELAY_LIMIT.as_secs_f64() {
            return Err(invalid(
                "min_rate",
                format!(
                    "is {}; one start per {:?} is the slowest allowed",
                    self.min_rate, MAX_DELAY_LIMIT
                ),
            ));
        }
        if self.min_rate > self.max_rate {
            return Err(invalid(
                "min_rate",
                format!(
                    "({}) is above max_rate ({}); it must not be",
                    self.min_rate, self.max_rate
                ),
            ));
        }
        if self.initial_rate < self.min_rate || self.initial_rate > self.max_rate {
            return Err(invalid(
                "initial_rate",
                format!(
                    "({}) must lie within [min_rate, max_rate] = [{}, {}]",
                    self.initial_rate, self.min_rate, self.max_rate
                ),
            ));
        }
        if self.slow_start_doubling == 0 {
            return Err(invalid(
                "slow_start_doubling",
                "is zero; it must be at least 1 accepted operation per doubling",
            ));
        }
        if !(self.restart_fraction.is_finite()
            && self.restart_fraction > 0.0
            && self.restart_fraction < 1.0)
        {
            return Err(invalid(
                "restart_fraction",
                format!(
                    "is {}; it must be strictly between 0 and 1",
                    self.restart_fraction
                ),
            ));
        }
        if self.probe_interval.is_zero() || self.probe_interval > MAX_DELAY_LIMIT {
            return Err(invalid(
                "probe_interval",
                format!(
                    "is {:?}; it must be above zero and at most {MAX_DELAY_LIMIT:?}",
                    self.probe_interval
                ),
            ));
        }
        if self.probe_requests == 0 {
            return Err(invalid("probe_requests", "is zero; it must be at least 1"));
        }
        fraction("jitter", self.jitter, false)?;
        fraction("retry_after_jitter", self.retry_after_jitter, true)?;
        backoff(
            "transient_backoff",
            "transient_backoff_cap",
            self.transient_backoff,
            self.transient_backoff_cap,
        )?;
        backoff(
            "offline_backoff",
            "offline_backoff_cap",
            self.offline_backoff,
            self.offline_backoff_cap,
        )?;
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "is zero; it must be at least 1"));
        }
        self.quota()?;
        let quota_rate = 1.0 / self.quota_interval.as_secs_f64();
        if quota_rate < self.max_rate {
            return Err(invalid(
                "quota_interval",
                format!(
                    "({:?}) allows {quota_rate:.3} requests per second, below max_rate ({}); \
                     the quota is a safety net above any rate the controller reaches",
                    self.quota_interval, self.max_rate
                ),
            ));
        }
        Ok(())
    }

    /// The governor quota these settings describe: on average one request per
    /// `quota_interval`, `quota_burst` back to back. Refuses a zero `quota_interval`.
    pub(crate) fn quota(&self) -> Result<Quota> {
        Quota::with_period(self.quota_interval)
            .map(|quota| quota.allow_burst(self.quota_burst))
            .ok_or_else(|| {
                invalid(
                    "quota_interval",
                    "is zero; it must be above zero (it is the average time per request)",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_matches_the_design() {
        let config = ThrottleConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.transient_backoff_cap, Duration::from_secs(300));
        assert_eq!(config.offline_backoff_cap, Duration::from_secs(300));
        assert_eq!(config.probe_interval, Duration::from_secs(90));
        assert_eq!(config.probe_requests, 100);
        assert_eq!(config.max_attempts, 5);
        // The quota is a safety net above the controller's highest rate.
        assert!(1.0 / config.quota_interval.as_secs_f64() >= config.max_rate);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_field_named() {
        let base = ThrottleConfig::default;
        let cases: Vec<(&str, ThrottleConfig)> = vec![
            (
                "min_rate",
                ThrottleConfig {
                    min_rate: 0.0,
                    ..base()
                },
            ),
            (
                "min_rate",
                ThrottleConfig {
                    min_rate: 1e-9,
                    initial_rate: 1e-9,
                    ..base()
                },
            ),
            (
                "max_rate",
                ThrottleConfig {
                    max_rate: f64::INFINITY,
                    ..base()
                },
            ),
            (
                "initial_rate",
                ThrottleConfig {
                    initial_rate: f64::NAN,
                    ..base()
                },
            ),
            (
                "min_rate",
                ThrottleConfig {
                    min_rate: 50.0,
                    max_rate: 10.0,
                    ..base()
                },
            ),
            (
                "initial_rate",
                ThrottleConfig {
                    initial_rate: 41.0,
                    ..base()
                },
            ),
            (
                "slow_start_doubling",
                ThrottleConfig {
                    slow_start_doubling: 0,
                    ..base()
                },
            ),
            (
                "restart_fraction",
                ThrottleConfig {
                    restart_fraction: 1.0,
                    ..base()
                },
            ),
            (
                "probe_interval",
                ThrottleConfig {
                    probe_interval: Duration::ZERO,
                    ..base()
                },
            ),
            (
                "probe_requests",
                ThrottleConfig {
                    probe_requests: 0,
                    ..base()
                },
            ),
            (
                "jitter",
                ThrottleConfig {
                    jitter: 1.0,
                    ..base()
                },
            ),
            (
                "retry_after_jitter",
                ThrottleConfig {
                    retry_after_jitter: -0.1,
                    ..base()
                },
            ),
            (
                "transient_backoff",
                ThrottleConfig {
                    transient_backoff: Duration::ZERO,
                    ..base()
                },
            ),
            (
                "transient_backoff_cap",
                ThrottleConfig {
                    transient_backoff_cap: Duration::from_millis(10),
                    ..base()
                },
            ),
            (
                "offline_backoff_cap",
                ThrottleConfig {
                    offline_backoff_cap: MAX_DELAY_LIMIT + Duration::from_secs(1),
                    ..base()
                },
            ),
            (
                "max_attempts",
                ThrottleConfig {
                    max_attempts: 0,
                    ..base()
                },
            ),
            (
                "quota_interval",
                ThrottleConfig {
                    quota_interval: Duration::ZERO,
                    ..base()
                },
            ),
            (
                "quota_interval",
                ThrottleConfig {
                    quota_interval: Duration::from_millis(250),
                    ..base()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(ThrottleError::InvalidConfig { field: got, .. }) => {
                    assert_eq!(got, field, "wrong field blamed for {config:?}")
                }
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
