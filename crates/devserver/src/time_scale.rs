//! Server time: every duration the server keeps (throttle intervals, `retryAfter` penalties and
//! lock-outs, fault delays, courier long-poll timeouts, the `--rate-limit` period) runs
//! [`TimeScale`] times faster than real time, so that tests and the demo can live through minutes
//! of CloudKit behaviour in seconds.
//!
//! What a client is told to wait (`retryAfter` and `Retry-After`) is real time: the server-side
//! duration divided by the scale, rounded up to whole seconds and at least 1, so a client that waits
//! as told is never early. Two things are not scaled: the ten-minute window of server-to-server
//! signature dates (it compares wall-clock dates) and record timestamps.

use std::time::Duration;

use crate::DevServerError;

/// The largest time scale accepted: a million times faster than real time.
pub const MAX_TIME_SCALE: f64 = 1_000_000.0;

/// How many times faster than real time the server's own durations run (1 is real time).
///
/// ```
/// use std::time::Duration;
/// use skysync_devserver::time_scale::TimeScale;
///
/// let scale = TimeScale::new(100.0).unwrap();
/// assert_eq!(scale.real(Duration::from_secs(40)), Duration::from_millis(400));
/// assert_eq!(scale.server(Duration::from_millis(400)), Duration::from_secs(40));
/// // A 40 s penalty lasts 0.4 s; the client is told to wait 1 whole second.
/// assert_eq!(scale.retry_after_secs(Duration::from_secs(40)), 1);
/// assert!(TimeScale::new(0.0).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct TimeScale(f64);

impl Default for TimeScale {
    /// Real time.
    fn default() -> Self {
        TimeScale::REAL
    }
}

impl TimeScale {
    /// Real time: server durations last what they say.
    pub const REAL: TimeScale = TimeScale(1.0);

    /// A scale of `factor` (finite, above zero, at most [`MAX_TIME_SCALE`]; below 1 runs slower
    /// than real time).
    pub fn new(factor: f64) -> Result<TimeScale, DevServerError> {
        if factor.is_finite() && factor > 0.0 && factor <= MAX_TIME_SCALE {
            Ok(TimeScale(factor))
        } else {
            Err(DevServerError::InvalidSetting {
                setting: "time-scale",
                reason: format!(
                    "{factor} is not a speed-up; give a number above 0 and at most {MAX_TIME_SCALE} \
                     (1 is real time, 100 runs server durations 100 times faster)"
                ),
            })
        }
    }

    /// The factor.
    pub fn factor(self) -> f64 {
        self.0
    }

    /// How long a server-side duration lasts in real time (saturating at `Duration::MAX`).
    pub fn real(self, server: Duration) -> Duration {
        Duration::try_from_secs_f64(server.as_secs_f64() / self.0).unwrap_or(Duration::MAX)
    }

    /// How much server time passes in `real` time (saturating at `Duration::MAX`).
    pub fn server(self, real: Duration) -> Duration {
        Duration::try_from_secs_f64(real.as_secs_f64() * self.0).unwrap_or(Duration::MAX)
    }

    /// The `retryAfter` to tell a client for a server-side wait: its real duration in whole
    /// seconds, rounded up, at least 1.
    pub fn retry_after_secs(self, server: Duration) -> u64 {
        let real = self.real(server);
        let whole = real.as_secs();
        let rounded = if real.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole
        };
        rounded.max(1)
    }
}

/// The server's clock: server time elapsed since the server started, read from tokio's clock (so a
/// test on tokio's paused clock drives it) and sped up by the [`TimeScale`].
#[derive(Clone, Copy, Debug)]
pub struct ServerClock {
    started: tokio::time::Instant,
    scale: TimeScale,
}

impl ServerClock {
    /// A clock that starts now, running `scale` times faster than real time.
    pub fn start(scale: TimeScale) -> ServerClock {
        ServerClock {
            started: tokio::time::Instant::now(),
            scale,
        }
    }

    /// Server time since the clock started.
    pub fn now(&self) -> Duration {
        self.scale.server(self.started.elapsed())
    }

    /// The clock's time scale.
    pub fn scale(&self) -> TimeScale {
        self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_speeds_above_zero_are_accepted() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_TIME_SCALE * 2.0] {
            assert!(TimeScale::new(bad).is_err(), "{bad}");
        }
        assert_eq!(TimeScale::new(1.0).unwrap(), TimeScale::REAL);
        assert_eq!(TimeScale::new(0.5).unwrap().factor(), 0.5);
    }

    #[test]
    fn durations_convert_both_ways_and_saturate() {
        let scale = TimeScale::new(1000.0).unwrap();
        assert_eq!(
            scale.real(Duration::from_secs(15)),
            Duration::from_millis(15)
        );
        assert_eq!(
            scale.server(Duration::from_millis(15)),
            Duration::from_secs(15)
        );
        let slow = TimeScale::new(0.001).unwrap();
        assert_eq!(slow.real(Duration::MAX), Duration::MAX);
        assert_eq!(scale.server(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn retry_after_is_real_whole_seconds_rounded_up_and_at_least_one() {
        let real = TimeScale::REAL;
        assert_eq!(real.retry_after_secs(Duration::ZERO), 1);
        assert_eq!(real.retry_after_secs(Duration::from_secs(10)), 10);
        assert_eq!(real.retry_after_secs(Duration::from_millis(10_001)), 11);
        let fast = TimeScale::new(10.0).unwrap();
        assert_eq!(fast.retry_after_secs(Duration::from_secs(80)), 8);
        assert_eq!(fast.retry_after_secs(Duration::from_secs(81)), 9);
        assert_eq!(fast.retry_after_secs(Duration::from_secs(3)), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_clock_runs_scaled_on_tokio_time() {
        let clock = ServerClock::start(TimeScale::new(100.0).unwrap());
        assert_eq!(clock.now(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(clock.now(), Duration::from_secs(15));
    }
}
