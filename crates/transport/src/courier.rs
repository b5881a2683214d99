//! The notification poller: long-polls the webcourier URL that `tokens/create` handed out and turns
//! each notification into a [`ZoneChanged`] signal on a bounded channel.

use crate::client::CloudKitClient;
use crate::database::{ZoneChanged, ZoneNotifications};
use reqwest::Url;
use skysync_model::{CloudError, ErrorClass};
use std::time::Duration;
use tokio::sync::mpsc;

/// Starts the poller for `url` and returns the stream it feeds. The poller stops when the stream is
/// dropped (at once, even mid-poll) or after an error it cannot retry (sent as the last item).
pub(crate) fn start(client: CloudKitClient, url: Url) -> ZoneNotifications {
    let capacity = client.limits().notification_capacity.max(1);
    let (sender, receiver) = mpsc::channel(capacity);
    tokio::spawn(async move {
        tokio::select! {
            () = poll_until_fatal(&client, &url, &sender) => {}
            () = sender.closed() => {
                tracing::debug!("notification stream dropped; poller stopped");
            }
        }
    });
    ZoneNotifications::new(receiver)
}

/// Polls until an error that cannot be retried, or until the reader is gone.
async fn poll_until_fatal(
    client: &CloudKitClient,
    url: &Url,
    sender: &mpsc::Sender<Result<ZoneChanged, CloudError>>,
) {
    let limits = client.limits();
    let mut failures: u32 = 0;
    // Ends when the stream is dropped (a send fails, or `start`'s select sees it closed) or on a
    // fatal error.
    loop {
        match client.poll_courier(url).await {
            Ok(poll) => {
                failures = 0;
                for notification in poll.notifications {
                    let signal = ZoneChanged {
                        zone: client.local_zone(notification.zone_id.to_zone_id()),
                        subscription_id: notification.subscription_id,
                    };
                    if sender.send(Ok(signal)).await.is_err() {
                        return;
                    }
                }
            }
            // A poll has no batch to split, no zone and no sync token: an answer about one of
            // those cannot apply to it and passes like a transient one.
            Err(error)
                if matches!(
                    error.class(),
                    ErrorClass::Throttled
                        | ErrorClass::Transient
                        | ErrorClass::Offline
                        | ErrorClass::TooLarge
                        | ErrorClass::ZoneGone
                        | ErrorClass::TokenExpired
                ) =>
            {
                failures = failures.saturating_add(1);
                let wait = retry_delay(
                    failures,
                    limits.courier_retry_min,
                    limits.courier_retry_max,
                    error.retry_after(),
                );
                tracing::warn!(
                    failures,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error = %error,
                    "notification poll failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "notification poll failed for good; poller stopped");
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
    }
}

/// The wait after the `failures`-th failure in a row: `min` doubled per further failure, capped at
/// `max`, and never shorter than what the server asked for.
pub(crate) fn retry_delay(
    failures: u32,
    min: Duration,
    max: Duration,
    server_asked: Option<Duration>,
) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let backoff = min.saturating_mul(1u32 << doublings).min(max);
    server_asked.map_or(backoff, |asked| backoff.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap_and_honours_the_server() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=8)
            .map(|n| retry_delay(n, min, max, None).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, min, max, None), max);
        assert_eq!(
            retry_delay(1, min, max, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }
}
