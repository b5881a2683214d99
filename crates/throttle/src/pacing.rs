//! The rate controller: paces operation starts by rate, learns the server's capacity from its
//! throttles, and probes above it rarely. Pure: no I/O, no clock reads; the caller passes `now`.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::error::Result;

/// Why a caller has to wait before starting the next operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitCause {
    /// The pacing rate: the interval since the last start has not passed yet.
    Pacing,
    /// The server's `retryAfter` deadline (plus jitter) has not passed yet.
    RetryAfter,
    /// The backoff after a transient failure has not passed yet.
    Backoff,
    /// The device looked offline; the next probe is not due yet.
    Offline,
    /// The governor quota (the hard cap on the request rate) has no cell free yet.
    Quota,
}

/// Where the rate controller is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacingPhase {
    /// Nothing learned yet: the rate grows with every accepted operation until the first
    /// throttle.
    SlowStart,
    /// After a throttle: the rate climbs back towards the learned ceiling, fast at first and
    /// flattening out as it nears it.
    Recovering,
    /// The probing period has passed: the rate rises above the learned ceiling, slowly at first,
    /// to find out whether the server now allows more.
    Probing,
}

/// What the rate controller is told about an operation that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateSignal {
    /// The server accepted it.
    Accepted,
    /// The server throttled it: the only signal that lowers the rate.
    Throttled,
    /// The server answered with a passing failure: it was heard, the rate stays.
    Transient,
    /// No connection: the server never saw it, the rate stays.
    Offline,
}

/// The cubic recovery after a throttle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Epoch {
    /// Busy time at the throttle.
    busy_at: f64,
    /// The ceiling learned at the throttle, starts per second.
    ceiling: f64,
    /// The probing period `τ` in seconds: the rate is back at the ceiling `τ` after the throttle.
    period: f64,
    /// The fraction of the ceiling the rate restarted from.
    start: f64,
}

/// `at + by`, saturating: if the clock cannot represent it, the furthest instant it can (found
/// by adding ever smaller halvings of `by`), so a deadline is never silently dropped.
pub(crate) fn instant_after(at: Instant, by: Duration) -> Instant {
    if let Some(later) = at.checked_add(by) {
        return later;
    }
    let mut result = at;
    let mut step = by;
    // Each halving level adds at most once before failing again, and a Duration has fewer
    // than 100 halvings before it reaches zero: 256 rounds always suffice.
    for _ in 0..256 {
        if step.is_zero() {
            break;
        }
        match result.checked_add(step) {
            Some(later) => result = later,
            None => step /= 2,
        }
    }
    result
}

/// A throttle at a rate within this fraction above the learned ceiling counts as one at the
/// ceiling (the capacity is lower than it), not as the end of a probe.
const AT_CEILING: f64 = 0.02;

/// After a probe above the ceiling was throttled, the new ceiling moves this fraction of the
/// way from the old ceiling to the throttled rate.
const PROBE_GAIN: f64 = 0.25;

/// A measuring window at least this fraction of which was a wait for the server's `retryAfter`
/// gives an uncertain estimate.
const WAIT_DOMINATED: f64 = 0.5;

/// A start this soon after the instant it was permitted counts as on time: the caller was
/// waiting, its timer just fired late.
const WAKE_SLACK: Duration = Duration::from_millis(5);

/// The weight of the latest interval in the smoothed interval between starts.
const USED_SMOOTHING: f64 = 0.125;

/// Starts that came at less than this fraction of the pacing rate were held back by the round
/// trip, not by the pacing: a throttle then reads the rate actually used.
const ROUND_TRIP_BOUND: f64 = 0.9;

/// After a throttle whose window was mostly a wait (an uncertain estimate), the rate restarts
/// at this fraction of the ceiling.
const UNCERTAIN_RESTART: f64 = 0.5;

/// After a probe climbed far above a ceiling that was too low, the new ceiling is at least this
/// fraction of the throttled rate (which overshoots the capacity by what the server's burst
/// allowance hid).
const PROBE_FLOOR: f64 = 0.85;

/// The longest an operation in flight counts as busy time without being reported.
const MAX_IN_FLIGHT: Duration = Duration::from_secs(120);

/// `secs` seconds as a duration; the longest one for a value too large, zero for a negative one.
fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// Paces operation starts by rate and learns the server's capacity.
///
/// The rate `r` is in starts per second, measured start to start: the next start is permitted
/// `1/r` after the previous one (times a jitter factor drawn per start from `[1−j, 1+j]`). One
/// operation in flight already bounds the rate by the round trip; the controller adds the
/// bound the server sets.
///
/// * **Slow start.** From `initial_rate` (or a ceiling restored from a previous run), the rate
///   doubles every `slow_start_doubling` accepted operations until the first throttle.
/// * **On a throttle** a learned ceiling `C` is set from two measurements: the *throttled
///   rate* (the pacing rate, or the rate actually used when the round trip held the starts
///   back) and the *answered rate* since the previous throttle, `(answered + 1) / busy time`
///   (the `+ 1` counts the throttled request, which found the server only just out of
///   capacity). Which one says more depends on where the throttle came:
///   - in slow start, the answered rate, but at least half the throttled rate (as TCP's slow
///     start: a burst allowance can hide the capacity until far above it);
///   - at or below the old ceiling, the answered rate: the capacity is lower, and the client
///     ran near or above it since the server was last out of capacity, so it is measured;
///   - while probing above the old ceiling, the capacity lies between the two: at least a
///     quarter of the way up from the old ceiling to the throttled rate, and at least 0.85 of
///     the throttled rate when the probe climbed far above a ceiling that was too low.
///
///   `C` never exceeds the throttled rate. The rate restarts at `restart_fraction · C`.
/// * **Recovery and probing** follow a cubic in busy time `t` since the throttle, as TCP CUBIC
///   does: `r(t) = C · (1 + (1 − restart_fraction) · ((t − τ)/τ)³)`, with the probing period
///   `τ = max(probe_interval, probe_requests / C)`. The rate climbs fast, flattens at `C` around
///   `t = τ`, and only then rises above it, slowly at first. At a steady capacity this costs at
///   most about one throttle per probing period.
/// * **Uncertain windows.** When the window since the previous throttle was mostly a wait for
///   the server's `retryAfter`, the answered rate may be far off either way (a burst allowance
///   that overflowed during a long wait; a short window after it). The rate then restarts at
///   half of `C` and the probing period is `probe_interval` alone, so that the next window is
///   long enough to measure and comes soon.
/// * **Only throttles lower the rate.** Transient and offline failures leave it alone.
/// * **Growth needs use.** The rate never grows past twice the rate the caller actually
///   started operations at, so a client held back by its round trip or by having nothing to
///   send does not build up a rate it never tried.
///
/// *Busy time* is the time the caller was pacing-bound: waiting for the pacing interval or a
/// `retryAfter`, or with an operation in flight. Idle stretches (nothing to send) and
/// transient or offline backoffs do not count, so a device that was idle for a day neither
/// "recovers" past the ceiling in the meantime nor reads its idleness as a low capacity.
#[derive(Debug, Clone)]
pub struct RateController {
    min_rate: f64,
    max_rate: f64,
    growth: f64,
    restart_fraction: f64,
    probe_interval: f64,
    probe_requests: f64,
    jitter: f64,

    rate: f64,
    ceiling: Option<f64>,
    epoch: Option<Epoch>,
    busy: f64,
    last_start: Option<Instant>,
    last_report: Option<Instant>,
    interval_factor: f64,
    used_rate: Option<f64>,
    used_interval: Option<f64>,
    window_busy_at: f64,
    window_answered: u64,
    window_waited: f64,
    throttles: u64,
}

impl RateController {
    /// A controller in slow start at `initial_rate`, permitting the first start at once.
    /// Answers [`crate::ThrottleError::InvalidConfig`] if the configuration is out of range.
    pub fn new(config: &ThrottleConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            min_rate: config.min_rate,
            max_rate: config.max_rate,
            growth: 2f64.powf(1.0 / f64::from(config.slow_start_doubling)),
            restart_fraction: config.restart_fraction,
            probe_interval: config.probe_interval.as_secs_f64(),
            probe_requests: f64::from(config.probe_requests),
            jitter: config.jitter,
            rate: config.initial_rate,
            ceiling: None,
            epoch: None,
            busy: 0.0,
            last_start: None,
            last_report: None,
            interval_factor: 1.0,
            used_rate: None,
            used_interval: None,
            window_busy_at: 0.0,
            window_answered: 0,
            window_waited: 0.0,
            throttles: 0,
        })
    }

    /// A controller that starts from a ceiling learned in a previous run: it paces at that
    /// rate at once, at the top of its recovery, and probes above it only after a full probing
    /// period. A ceiling that is not a positive number is ignored (slow start instead); one
    /// outside `[min_rate, max_rate]` is brought within it.
    pub fn restored(config: &ThrottleConfig, ceiling: f64) -> Result<Self> {
        let mut controller = Self::new(config)?;
        if ceiling.is_finite() && ceiling > 0.0 {
            let ceiling = controller.clamp(ceiling);
            let period = controller.period(ceiling);
            controller.ceiling = Some(ceiling);
            controller.epoch = Some(Epoch {
                busy_at: -period,
                ceiling,
                period,
                start: controller.restart_fraction,
            });
            controller.rate = ceiling;
        }
        Ok(controller)
    }

    fn clamp(&self, rate: f64) -> f64 {
        rate.clamp(self.min_rate, self.max_rate)
    }

    fn period(&self, ceiling: f64) -> f64 {
        self.probe_interval.max(self.probe_requests / ceiling)
    }

    /// The current pacing rate, in starts per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The mean interval between starts at the current rate, `1/rate`.
    pub fn interval(&self) -> Duration {
        seconds(1.0 / self.rate)
    }

    /// The learned ceiling in starts per second, once a throttle has taught one (or one was
    /// restored).
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// How many throttles the controller has taken in.
    pub fn throttles(&self) -> u64 {
        self.throttles
    }

    /// The probing period `τ` of the current recovery, if a ceiling is known.
    pub fn probing_period(&self) -> Option<Duration> {
        self.epoch.map(|epoch| seconds(epoch.period))
    }

    /// Where the controller is in its cycle, as of `now`.
    pub fn phase(&self, now: Instant) -> PacingPhase {
        match self.epoch {
            None => PacingPhase::SlowStart,
            Some(epoch) if self.busy_at(now, None) - epoch.busy_at < epoch.period => {
                PacingPhase::Recovering
            }
            Some(_) => PacingPhase::Probing,
        }
    }

    /// Busy time so far, in seconds, as of `now` (see the type's docs).
    pub fn busy_time(&self, now: Instant) -> Duration {
        seconds(self.busy_at(now, None))
    }

    /// The earliest instant the pacing permits the next start; `None` before the first start.
    pub fn next_start(&self) -> Option<Instant> {
        let last = self.last_start?;
        Some(instant_after(
            last,
            seconds(self.interval_factor / self.rate),
        ))
    }

    /// Whether the pacing permits a start at `now`; otherwise the instant to wait for.
    pub fn check(&self, now: Instant) -> std::result::Result<(), Instant> {
        match self.next_start() {
            Some(at) if at > now => Err(at),
            _ => Ok(()),
        }
    }

    /// Busy seconds as of `now`. Since the last start, the time counts up to the latest of the
    /// pacing instant, the report of the operation, and `retry_after` (a wait the server
    /// imposed); beyond that the caller was idle or backing off.
    fn busy_at(&self, now: Instant, retry_after: Option<Instant>) -> f64 {
        let Some(start) = self.last_start else {
            return self.busy;
        };
        let counted_until = match self.last_report {
            // In flight: it all counts, up to a bound on how long a request can take (an
            // operation that was never reported, lost to a local failure, is not busy for ever).
            None => {
                let scheduled = self.next_start().unwrap_or(start);
                now.min(scheduled.max(instant_after(start, MAX_IN_FLIGHT)))
            }
            Some(report) => {
                let scheduled = self.next_start().unwrap_or(start);
                let mut until = scheduled.max(report);
                if let Some(deadline) = retry_after {
                    until = until.max(deadline);
                }
                // A caller that woke a little late (timers have a granularity) was not idle.
                if now <= instant_after(until, WAKE_SLACK) {
                    now
                } else {
                    until
                }
            }
        };
        self.busy + counted_until.saturating_duration_since(start).as_secs_f64()
    }

    /// The rate the cubic asks for at busy time `busy`, within `[min_rate, max_rate]`.
    fn curve(&self, epoch: &Epoch, busy: f64) -> f64 {
        let x = (busy - epoch.busy_at - epoch.period) / epoch.period;
        self.clamp(epoch.ceiling * (1.0 + (1.0 - epoch.start) * x * x * x))
    }

    /// Moves the rate towards `target`; a rise stops at twice the rate actually used (once
    /// two starts have shown what that is).
    fn move_to(&mut self, target: f64) {
        if target <= self.rate {
            self.rate = self.clamp(target);
            return;
        }
        let allowed = self
            .used_rate
            .map_or(target, |used| (2.0 * used).max(self.rate));
        self.rate = self.clamp(target.min(allowed));
    }

    /// A start at `now`, permitted by the caller's checks. `retry_after` is the end of the
    /// server's latest `retryAfter` wait, if any (it counts as busy time); `held_until` is the
    /// latest hard wait of any kind (`retryAfter`, backoff, offline probing), so that a start it
    /// delayed is not read as the caller's own pace.
    pub fn on_start(
        &mut self,
        now: Instant,
        retry_after: Option<Instant>,
        held_until: Option<Instant>,
        rng: &mut impl Rng,
    ) {
        if let Some(start) = self.last_start {
            let scheduled = self.next_start().unwrap_or(start);
            let held = held_until.is_some_and(|until| until > scheduled && until > start);
            if !held {
                let gap = now.saturating_duration_since(start).as_secs_f64();
                if gap > 0.0 {
                    self.used_rate = Some(1.0 / gap);
                    self.used_interval = Some(
                        self.used_interval
                            .map_or(gap, |mean| mean + USED_SMOOTHING * (gap - mean)),
                    );
                }
            }
            let busy = self.busy_at(now, retry_after);
            self.window_waited += busy - self.busy_at(now, None);
            self.busy = busy;
        }
        if let Some(epoch) = self.epoch {
            let target = self.curve(&epoch, self.busy);
            self.move_to(target);
        }
        self.interval_factor = 1.0 + self.jitter * (2.0 * rng.random::<f64>() - 1.0);
        self.last_start = Some(now);
        self.last_report = None;
    }

    /// The operation started last ended at `now` with `signal`.
    pub fn on_report(&mut self, now: Instant, signal: RateSignal) {
        let busy = self.busy_at(now, None);
        if self.last_start.is_some() && self.last_report.is_none() {
            self.last_report = Some(now);
        }
        match signal {
            RateSignal::Accepted => {
                self.window_answered = self.window_answered.saturating_add(1);
                match self.epoch {
                    None => self.move_to(self.rate * self.growth),
                    Some(epoch) => self.move_to(self.curve(&epoch, busy)),
                }
            }
            RateSignal::Transient => {
                self.window_answered = self.window_answered.saturating_add(1);
            }
            RateSignal::Offline => {}
            RateSignal::Throttled => self.on_throttle(busy),
        }
    }

    fn on_throttle(&mut self, busy: f64) {
        let window = (busy - self.window_busy_at).max(1e-3);
        // The answered count stays far below 2^53, so the conversion is exact.
        let answered = (self.window_answered as f64 + 1.0) / window;
        // The rate the server saw: the pacing rate, unless the round trip clearly held the
        // starts back (then the rate actually used). Not in slow start, where the rate grows
        // too fast for a smoothed interval to keep up.
        let throttled = match self.used_interval {
            Some(mean) if self.epoch.is_some() && 1.0 / mean < ROUND_TRIP_BOUND * self.rate => {
                1.0 / mean
            }
            _ => self.rate,
        };
        let estimate = match self.epoch {
            // The rate climbed from far below the capacity: the answered rate is dragged down
            // by the slow early part, and the throttled rate may be far above the capacity
            // (a burst allowance hides it). Like TCP's slow start, keep at least half of the
            // throttled rate; the next throttle, if any, comes below that ceiling and is exact.
            None => answered.max(throttled / 2.0),
            // Throttled at or below the old ceiling: the capacity is lower. The client ran
            // close to or above it since the previous throttle, when the server's bucket was
            // empty, so the answered rate measures it.
            Some(epoch) if throttled <= epoch.ceiling * (1.0 + AT_CEILING) => answered,
            // Throttled while probing above a ceiling it held: the capacity lies between that
            // ceiling and the throttled rate (which overshoots it by as much as the server's
            // burst allowance hid). The answered rate undercounts it when the client ran below
            // it for most of the period, so move part of the way up from the old ceiling, and
            // at least to `restart_fraction` of the throttled rate when the probe climbed far
            // above an old ceiling that was too low.
            Some(epoch) => answered
                .max(epoch.ceiling + PROBE_GAIN * (throttled - epoch.ceiling))
                .max(PROBE_FLOOR * throttled),
        };
        let ceiling = self.clamp(estimate.min(throttled));
        // A window spent mostly waiting out the server's `retryAfter` says little: the
        // answered rate may be far too low (the server's burst allowance may have overflowed
        // during the wait) or far too high (a short window after a long wait). Probe again
        // after `probe_interval` alone, not after `probe_requests` at a rate that may be wrong.
        // Steady-state windows are long and keep the full period.
        // Restart lower too, so that the next window is long enough to measure.
        let (period, start) = if self.window_waited >= WAIT_DOMINATED * window {
            (self.probe_interval, UNCERTAIN_RESTART)
        } else {
            (self.period(ceiling), self.restart_fraction)
        };
        self.ceiling = Some(ceiling);
        self.epoch = Some(Epoch {
            busy_at: busy,
            ceiling,
            period,
            start,
        });
        self.rate = self.clamp(start * ceiling);
        self.window_busy_at = busy;
        self.window_answered = 0;
        self.window_waited = 0.0;
        self.throttles = self.throttles.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            jitter: 0.0,
            seed: Some(1),
            ..ThrottleConfig::default()
        }
    }

    #[test]
    fn instant_after_adds_exactly_when_representable() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(instant_after(now, Duration::ZERO), now);
    }

    #[test]
    fn instant_after_saturates_instead_of_overflowing() {
        let now = Instant::now();
        let far = instant_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn first_start_is_permitted_at_once_and_the_next_one_interval_later() {
        let mut rate = RateController::new(&config()).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        assert_eq!(rate.check(now), Ok(()));
        rate.on_start(now, None, None, &mut rng);
        assert_eq!(rate.check(now), Err(now + Duration::from_secs(2)));
    }

    #[test]
    fn idle_time_is_not_busy_time() {
        let mut rate = RateController::new(&config()).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let start = Instant::now();
        rate.on_start(start, None, None, &mut rng);
        // A transient failure leaves the rate (0.5 per second) alone.
        rate.on_report(start + Duration::from_millis(100), RateSignal::Transient);
        // Nothing to send for an hour: only the 2 s pacing interval counts.
        let later = start + Duration::from_secs(3600);
        assert_eq!(rate.busy_time(later), Duration::from_secs(2));
        rate.on_start(later, None, None, &mut rng);
        assert_eq!(rate.busy_time(later), Duration::from_secs(2));
    }

    #[test]
    fn a_restored_ceiling_that_is_not_a_rate_is_ignored() {
        for bad in [f64::NAN, -1.0, 0.0, f64::INFINITY] {
            let rate = RateController::restored(&config(), bad).unwrap();
            assert_eq!(rate.ceiling(), None);
            assert_eq!(rate.rate(), 0.5);
        }
        let rate = RateController::restored(&config(), 1e6).unwrap();
        assert_eq!(rate.ceiling(), Some(40.0));
    }
}
