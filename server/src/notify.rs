//! Sending GA/T 1400 notifications to upper platforms that subscribed to the hub: the
//! delivery round of one node at a time (the `viid_notifications` job lease).

use std::time::Duration;

use cityhub_catalog::viid::SubscriptionStatus;

use crate::state::AppState;

/// Notifications one subscription may be sent in one round (catching up after a pause).
const NOTIFICATIONS_PER_ROUND: usize = 10;

/// How long a receiver has to answer a notification.
const RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// One round: every active subscription whose next attempt is due gets its new records.
pub async fn deliver_round(state: &AppState, client: &reqwest::Client) {
    let now = state.clock.now();
    let subscriptions = match state.catalog.viid_subscriptions(None).await {
        Ok(subscriptions) => subscriptions,
        Err(err) => {
            tracing::warn!(error = %err, "Could not read the GA/T 1400 subscriptions; the next round tries again.");
            return;
        }
    };
    let due = subscriptions.into_iter().filter(|s| {
        s.status == SubscriptionStatus::Active && s.next_attempt_at <= now && s.begin_at <= now
    });
    let deliveries = due.map(|mut subscription| async move {
        for _ in 0..NOTIFICATIONS_PER_ROUND {
            let now = state.clock.now();
            let next = state
                .viid
                .next_notification(&mut subscription, &state.config.viid.server_id, now)
                .await;
            let notification = match next {
                Ok(Some(notification)) => notification,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(subscription = %subscription.id, error = %err, "Could not prepare a GA/T 1400 notification.");
                    return;
                }
            };
            let error = send(state, client, &subscription.receive_addr, &notification.body).await;
            let failed = error.is_some();
            if let Err(err) = state
                .viid
                .notification_sent(
                    &mut subscription,
                    Some(&notification),
                    error,
                    state.config.viid.notify_max_attempts,
                    now,
                )
                .await
            {
                tracing::warn!(subscription = %subscription.id, error = %err, "Could not record a GA/T 1400 delivery.");
                return;
            }
            if failed {
                return;
            }
        }
    });
    futures::future::join_all(deliveries).await;
}

/// Posts one notification; the error in words, or `None` when the receiver took it.
async fn send(
    state: &AppState,
    client: &reqwest::Client,
    address: &str,
    body: &serde_json::Value,
) -> Option<String> {
    let answer = client
        .post(address)
        .timeout(RECEIVER_TIMEOUT)
        .header("User-Identify", &state.config.viid.server_id)
        .header("Content-Type", "application/VIID+JSON;charset=UTF-8")
        .body(body.to_string())
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("{address} answered {}", response.status())),
        Err(err) => Some(format!("{address} could not be reached: {err}")),
    }
}
