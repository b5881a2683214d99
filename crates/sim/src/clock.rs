//! Who moves tokio's paused clock: the simulation, and nothing else.
//!
//! On a paused clock, tokio moves time forward by itself whenever the runtime has nothing to run
//! (auto-advance), straight to the next timer. That is what makes a simulated minute cost
//! microseconds, and also what would let timers fire at random moments here: the store commits on
//! a thread of its own, and while a task waits for that thread the runtime looks idle, so time
//! would jump ahead in the middle of a save. tokio does not advance while a `spawn_blocking` task
//! runs (documented for `tokio::time::pause`), so [`Clock`] keeps one parked blocking task alive
//! whenever time must stand still, and lets it go only while the simulation lets time pass.
//!
//! A second guard covers the other risk of a clock that stands still: an operation that waits for
//! a timer would wait forever. [`Watchdog`] bounds every such wait in real time, so a stuck
//! operation fails the run instead of hanging it.

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The simulation's hold on tokio's paused clock.
#[derive(Debug)]
pub(crate) struct Clock {
    /// While `Some`: a blocking task waits on this channel, and time stands still.
    hold: Option<(mpsc::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Clock {
    /// A clock held still from the start.
    pub(crate) fn held() -> Clock {
        let mut clock = Clock { hold: None };
        clock.hold();
        clock
    }

    /// Stops time from moving by itself.
    fn hold(&mut self) {
        if self.hold.is_none() {
            let (release, wait) = mpsc::channel::<()>();
            let task = tokio::task::spawn_blocking(move || {
                // Returns once the sender is dropped (or sends): the clock is let go.
                let _ = wait.recv();
            });
            self.hold = Some((release, task));
        }
    }

    /// Lets time move by itself again (returns once the hold is gone).
    async fn release(&mut self) {
        if let Some((release, task)) = self.hold.take() {
            drop(release);
            // The task only waits on the channel; it ends as soon as the sender is gone.
            let _ = task.await;
        }
    }

    /// Lets `span` of simulated time pass: every timer due meanwhile fires, and every device runs
    /// what it has to; then time stands still again.
    pub(crate) async fn pass(&mut self, span: Duration) {
        self.release().await;
        tokio::time::sleep(span).await;
        self.hold();
    }

    /// Runs `work` with time moving by itself (for waits that need timers: an engine shutting
    /// down, say), at most `limit` of simulated time; `None` if it did not finish by then.
    pub(crate) async fn run_in_time<F: Future>(
        &mut self,
        limit: Duration,
        work: F,
    ) -> Option<F::Output> {
        self.release().await;
        let out = tokio::time::timeout(limit, work).await.ok();
        self.hold();
        out
    }

    /// Releases the clock for good (at the end of a run, so that the runtime can shut down).
    pub(crate) async fn finish(mut self) {
        self.release().await;
    }
}

/// Bounds waits in real time: a thread that wakes whoever registered a deadline once it passes.
#[derive(Debug)]
pub(crate) struct Watchdog {
    deadlines: Option<mpsc::Sender<(Instant, tokio::sync::oneshot::Sender<()>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog's thread.
    pub(crate) fn start() -> Result<Watchdog, std::io::Error> {
        let (deadlines, incoming) = mpsc::channel::<(Instant, tokio::sync::oneshot::Sender<()>)>();
        let thread = std::thread::Builder::new()
            .name("skysync-sim-watchdog".into())
            .spawn(move || {
                let mut waiting: Vec<(Instant, tokio::sync::oneshot::Sender<()>)> = Vec::new();
                loop {
                    waiting.retain(|(_, waker)| !waker.is_closed());
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        waiting.drain(..).partition(|(at, _)| *at <= now);
                    waiting = later;
                    for (_, waker) in due {
                        let _ = waker.send(());
                    }
                    // Wakes at the next deadline, or at least every 100 ms to drop finished waits.
                    let next = waiting
                        .iter()
                        .map(|(at, _)| at.saturating_duration_since(now))
                        .min()
                        .unwrap_or(Duration::from_millis(100))
                        .min(Duration::from_millis(100));
                    match incoming.recv_timeout(next) {
                        Ok(entry) => waiting.push(entry),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Watchdog {
            deadlines: Some(deadlines),
            thread: Some(thread),
        })
    }

    /// Runs `work`, or gives up on it after `limit` of real time (`None`).
    pub(crate) async fn bound<F: Future>(&self, limit: Duration, work: F) -> Option<F::Output> {
        let (waker, expired) = tokio::sync::oneshot::channel();
        if let Some(deadlines) = &self.deadlines {
            let _ = deadlines.send((Instant::now() + limit, waker));
        }
        tokio::select! {
            biased;
            out = work => Some(out),
            // An error (the watchdog is gone) disables this branch: the work is then unbounded.
            Ok(()) = expired => None,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.deadlines = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
