//! The web courier: the long-poll URL `tokens/create` hands out (`/_courier/{apnsToken}`), which
//! answers as soon as a subscription of the token's user fires, or with an empty list on timeout.
//!
//! Notifications wait in a bounded mailbox per token until a poll collects them, so a change that
//! happens between two polls is not lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use skysync_model::wire::ZoneNotification;
use tokio::sync::{Notify, watch};

/// The most notifications kept per token between polls (older ones are dropped first).
const MAILBOX_CAPACITY: usize = 1000;

/// The default long-poll timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest long-poll timeout a client may ask for.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Mailbox {
    pending: VecDeque<ZoneNotification>,
    wake: Arc<Notify>,
}

/// Mailboxes of courier tokens.
#[derive(Default)]
pub(crate) struct Courier {
    mailboxes: Mutex<HashMap<String, Mailbox>>,
}

impl Courier {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Mailbox>> {
        // Only plain queue edits happen under the lock, so its data is whole even after a panic.
        self.mailboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts notifications in their tokens' mailboxes and wakes the polls waiting on them.
    pub(crate) fn deliver(&self, notifications: Vec<(String, ZoneNotification)>) {
        if notifications.is_empty() {
            return;
        }
        let mut mailboxes = self.lock();
        let mut woken = Vec::new();
        for (token, notification) in notifications {
            let mailbox = mailboxes.entry(token).or_default();
            if mailbox.pending.len() == MAILBOX_CAPACITY {
                mailbox.pending.pop_front();
            }
            mailbox.pending.push_back(notification);
            woken.push(Arc::clone(&mailbox.wake));
        }
        drop(mailboxes);
        for wake in woken {
            wake.notify_waiters();
        }
    }

    fn take(&self, token: &str) -> Vec<ZoneNotification> {
        let mut mailboxes = self.lock();
        match mailboxes.get_mut(token) {
            Some(mailbox) => mailbox.pending.drain(..).collect(),
            None => Vec::new(),
        }
    }

    fn wake(&self, token: &str) -> Arc<Notify> {
        let mut mailboxes = self.lock();
        Arc::clone(&mailboxes.entry(token.to_owned()).or_default().wake)
    }

    /// Waits until `token` has notifications (returning them), `timeout` passes or the server stops
    /// (returning what is there, possibly nothing).
    pub(crate) async fn poll(
        &self,
        token: &str,
        timeout: Duration,
        mut stopped: watch::Receiver<bool>,
    ) -> Vec<ZoneNotification> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wake = self.wake(token);
            let notified = wake.notified();
            tokio::pin!(notified);
            // Register before looking, so that a delivery between the look and the wait wakes us.
            notified.as_mut().enable();
            let found = self.take(token);
            if !found.is_empty() {
                return found;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return self.take(token),
                _ = stopped.wait_for(|stop| *stop) => return self.take(token),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skysync_model::wire::WireZoneId;

    fn notification(id: &str) -> ZoneNotification {
        ZoneNotification {
            notification_id: id.into(),
            subscription_id: "s".into(),
            zone_id: WireZoneId {
                zone_name: "Notes".into(),
                owner_record_name: None,
                zone_type: None,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_answers_on_delivery_and_empty_on_timeout() {
        let courier = Arc::new(Courier::default());
        let (_stop, stopped) = watch::channel(false);

        let polling = {
            let courier = Arc::clone(&courier);
            let stopped = stopped.clone();
            tokio::spawn(async move { courier.poll("t", Duration::from_secs(30), stopped).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        courier.deliver(vec![("t".into(), notification("n1"))]);
        let got = polling.await.unwrap();
        assert_eq!(got, vec![notification("n1")]);

        let start = tokio::time::Instant::now();
        let empty = courier
            .poll("t", Duration::from_secs(3), stopped.clone())
            .await;
        assert!(empty.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        // Delivered while nobody polls: kept for the next poll, which answers at once.
        courier.deliver(vec![("t".into(), notification("n2"))]);
        let start = tokio::time::Instant::now();
        let kept = courier.poll("t", Duration::from_secs(30), stopped).await;
        assert_eq!(kept, vec![notification("n2")]);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_the_server_ends_a_poll() {
        let courier = Arc::new(Courier::default());
        let (stop, stopped) = watch::channel(false);
        let polling = {
            let courier = Arc::clone(&courier);
            tokio::spawn(async move { courier.poll("t", Duration::from_secs(60), stopped).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.send(true).unwrap();
        let start = tokio::time::Instant::now();
        assert!(polling.await.unwrap().is_empty());
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
