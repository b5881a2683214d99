//! Tuning knobs for the throttle, with validation.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::error::{Result, ThrottleError};

/// The longest `max_delay` accepted: one week. Keeps every instant the throttle computes far
/// from the limits of the clock.
pub const MAX_DELAY_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest server `retryAfter` honoured as given: one day. A longer value (usually a
/// misparsed body) is treated as one day, which is a halt in all but name.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

/// How the throttle paces operations, counts retries and caps the request rate.
///
/// Build one with [`ThrottleConfig::default`] and change the fields you need; every
/// constructor that takes a config validates it and answers
/// [`ThrottleError::InvalidConfig`] for an out-of-range value.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// The smallest pacing delay `d_min` (default 0.25 s). Must be above zero, so that
    /// failures can grow it.
    pub min_delay: Duration,
    /// The largest pacing delay `d_max` (default 600 s, at most [`MAX_DELAY_LIMIT`]).
    pub max_delay: Duration,
    /// The delay before any outcome has been seen (default: `min_delay`). The first request
    /// itself is never delayed; this is the delay the first outcome starts from.
    pub initial_delay: Duration,
    /// The factor a failure multiplies the delay by (default 2.0; at least 2.0, at most 1000).
    pub failure_growth: f64,
    /// The factor a success multiplies the delay by (default 2/3; strictly between 0 and 1).
    pub success_shrink: f64,
    /// The jitter fraction `j` (default 0.2; from 0 up to, not including, 1). After each
    /// outcome the wait is drawn uniformly from `[d·(1−j), min(d·(1+j), d_max)]`, so on average
    /// it is `d` (a wait may be shorter than `d_min`, never longer than `d_max`); after a
    /// `retryAfter` the wait ends uniformly within `[deadline, deadline + j·d]`.
    pub jitter: f64,
    /// How many failures of one operation exhaust it (default 5; at least 1).
    pub max_attempts: u32,
    /// The quota's hard cap: at most one request per `quota_interval` on average
    /// (default 250 ms, that is 4 requests per second; must be above zero).
    pub quota_interval: Duration,
    /// How many requests the quota lets through back to back (default 4).
    pub quota_burst: NonZeroU32,
    /// Seed for the jitter's random numbers. `None` (the default) seeds from the operating
    /// system, so that devices spread apart; tests and simulations set a seed to be repeatable.
    pub seed: Option<u64>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(600),
            initial_delay: Duration::from_millis(250),
            failure_growth: 2.0,
            success_shrink: 2.0 / 3.0,
            jitter: 0.2,
            max_attempts: 5,
            quota_interval: Duration::from_millis(250),
            quota_burst: NonZeroU32::MIN.saturating_add(3),
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

impl ThrottleConfig {
    /// Checks every field against its allowed range; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.min_delay.is_zero() {
            return Err(invalid(
                "min_delay",
                "is zero; it must be above zero so that failures can grow the delay",
            ));
        }
        if self.max_delay > MAX_DELAY_LIMIT {
            return Err(invalid(
                "max_delay",
                format!(
                    "is {:?}; it must be at most {:?}",
                    self.max_delay, MAX_DELAY_LIMIT
                ),
            ));
        }
        if self.min_delay > self.max_delay {
            return Err(invalid(
                "min_delay",
                format!(
                    "({:?}) is above max_delay ({:?}); it must not be",
                    self.min_delay, self.max_delay
                ),
            ));
        }
        if self.initial_delay < self.min_delay || self.initial_delay > self.max_delay {
            return Err(invalid(
                "initial_delay",
                format!(
                    "({:?}) must lie within [min_delay, max_delay] = [{:?}, {:?}]",
                    self.initial_delay, self.min_delay, self.max_delay
                ),
            ));
        }
        if !(self.failure_growth.is_finite()
            && self.failure_growth >= 2.0
            && self.failure_growth <= 1000.0)
        {
            return Err(invalid(
                "failure_growth",
                format!(
                    "is {}; it must be a number from 2 to 1000 (a failure at least doubles the delay)",
                    self.failure_growth
                ),
            ));
        }
        if !(self.success_shrink.is_finite()
            && self.success_shrink > 0.0
            && self.success_shrink < 1.0)
        {
            return Err(invalid(
                "success_shrink",
                format!(
                    "is {}; it must be strictly between 0 and 1",
                    self.success_shrink
                ),
            ));
        }
        if !(self.jitter.is_finite() && self.jitter >= 0.0 && self.jitter < 1.0) {
            return Err(invalid(
                "jitter",
                format!(
                    "is {}; it must be from 0 up to, not including, 1",
                    self.jitter
                ),
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "is zero; it must be at least 1"));
        }
        self.quota()?;
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
        assert_eq!(config.min_delay, Duration::from_millis(250));
        assert_eq!(config.max_delay, Duration::from_secs(600));
        assert_eq!(config.max_attempts, 5);
        assert_eq!(config.quota_burst.get(), 4);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_field_named() {
        let cases: Vec<(&str, ThrottleConfig)> = vec![
            (
                "min_delay",
                ThrottleConfig {
                    min_delay: Duration::ZERO,
                    initial_delay: Duration::ZERO,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "max_delay",
                ThrottleConfig {
                    max_delay: MAX_DELAY_LIMIT + Duration::from_secs(1),
                    ..ThrottleConfig::default()
                },
            ),
            (
                "min_delay",
                ThrottleConfig {
                    min_delay: Duration::from_secs(10),
                    max_delay: Duration::from_secs(5),
                    initial_delay: Duration::from_secs(5),
                    ..ThrottleConfig::default()
                },
            ),
            (
                "initial_delay",
                ThrottleConfig {
                    initial_delay: Duration::from_secs(601),
                    ..ThrottleConfig::default()
                },
            ),
            (
                "failure_growth",
                ThrottleConfig {
                    failure_growth: 1.5,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "failure_growth",
                ThrottleConfig {
                    failure_growth: f64::NAN,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "success_shrink",
                ThrottleConfig {
                    success_shrink: 1.0,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "jitter",
                ThrottleConfig {
                    jitter: 1.0,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "jitter",
                ThrottleConfig {
                    jitter: -0.1,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "max_attempts",
                ThrottleConfig {
                    max_attempts: 0,
                    ..ThrottleConfig::default()
                },
            ),
            (
                "quota_interval",
                ThrottleConfig {
                    quota_interval: Duration::ZERO,
                    ..ThrottleConfig::default()
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
