//! Background jobs of a running hub. Each runs until aborted (at shutdown) and survives
//! its own failures: a failed round is logged and the next one comes. Of several nodes on
//! one catalog, one runs each job at a time: the node that holds the job's lease in the
//! catalog, renewed every round and taken over by another node once it expires.

use std::time::Duration;

use crate::state::AppState;

/// The jobs a serving hub runs; aborted together at shutdown.
pub struct Tasks {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts every job on the current runtime.
    pub fn start(state: &AppState) -> Self {
        let mut handles = vec![
            tokio::spawn(purge_audit_daily(state.clone())),
            tokio::spawn(sweep_cameras(state.clone())),
            tokio::spawn(notify_subscribers(state.clone())),
        ];
        if state.config.compaction.enabled {
            handles.push(tokio::spawn(compact_due_datasets(state.clone())));
        }
        if state.config.retention.enabled {
            handles.push(tokio::spawn(collect_garbage(state.clone())));
        }
        Self { handles }
    }

    /// Stops every job.
    pub fn stop(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

/// Whether this node runs the job's round now: it holds the job's lease, or takes it over
/// (free or expired), until two periods and ten seconds from now, so that a node that dies
/// hands the job on within that time. On a single node it always does.
async fn lead(state: &AppState, job: &str, period: Duration) -> bool {
    let now = state.clock.now();
    let hold = chrono::Duration::from_std(period * 2 + Duration::from_secs(10))
        .unwrap_or(chrono::Duration::MAX);
    let until = now
        .checked_add_signed(hold)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    match state
        .catalog
        .take_job_lease(job, &state.node, now, until)
        .await
    {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(
                job,
                "Another node holds this job's lease; it runs the round."
            );
            false
        }
        Err(err) => {
            tracing::warn!(job, error = %err, "Could not take this job's lease; skipping the round.");
            false
        }
    }
}

/// Sends upper platforms the records they subscribed to, every second.
async fn notify_subscribers(state: AppState) {
    let period = Duration::from_secs(1);
    let client = reqwest::Client::new();
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // Most hubs have no subscribers: a read, not the lease's write, every second.
        let any = state
            .catalog
            .viid_subscriptions(None)
            .await
            .is_ok_and(|all| {
                all.iter()
                    .any(|s| s.status == cityhub_catalog::viid::SubscriptionStatus::Active)
            });
        if !any || !lead(&state, "viid_notifications", period).await {
            continue;
        }
        crate::notify::deliver_round(&state, &client).await;
    }
}

/// Deletes audit entries past `audit.retention_days` once at start and then daily.
async fn purge_audit_daily(state: AppState) {
    let period = Duration::from_secs(24 * 3600);
    let mut every_day = tokio::time::interval(period);
    loop {
        every_day.tick().await;
        if !lead(&state, "audit_purge", period).await {
            continue;
        }
        let days = state.config.audit.retention_days;
        if let Err(err) = state.sharing.purge_expired_audit(days).await {
            tracing::error!(error = %err, "Could not purge expired audit entries; will retry tomorrow.");
        }
    }
}

/// Appends keepalive timeouts to the camera history and keeps the camera gauges current,
/// every `cameras.sweep_interval_secs` (on the node that holds the sweeper's lease: the
/// `cityhub_cameras` gauges are that node's).
async fn sweep_cameras(state: AppState) {
    let period = Duration::from_secs(state.config.cameras.sweep_interval_secs.max(1));
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        if !lead(&state, "camera_sweep", period).await {
            continue;
        }
        if let Err(err) = state.cameras.sweep().await {
            tracing::warn!(error = %err, "The camera sweeper failed; it will run again.");
        }
    }
}

/// Merges the small files of every dataset that has too many, every
/// `compaction.interval_secs` (the first round one interval after start, so that a restart
/// loop does not compact over and over).
async fn compact_due_datasets(state: AppState) {
    let period = Duration::from_secs(state.config.compaction.interval_secs.max(1));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !lead(&state, "compaction", period).await {
            continue;
        }
        if let Err(err) = state.ingest.compact_due(&state.compaction).await {
            tracing::warn!(error = %err, "The compaction round failed; it will run again.");
        }
    }
}

/// Deletes rows past their dataset's row retention, then expires replaced snapshots past
/// their retention and deletes the files no kept snapshot names and the orphans, every `retention.gc_interval_secs` (first one interval after
/// start).
async fn collect_garbage(state: AppState) {
    let period = Duration::from_secs(state.config.retention.gc_interval_secs.max(1));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !lead(&state, "garbage_collection", period).await {
            continue;
        }
        let now = state.clock.now();
        if let Err(err) = crate::deletes::expire_rows(&state, now).await {
            tracing::warn!(error = %err, "Row retention failed; it will run again.");
        }
        if let Err(err) = state.viid.expire_images(now).await {
            tracing::warn!(error = %err, "Deleting GA/T 1400 images past retention failed; it will run again.");
        }
        if let Err(err) = state
            .ingest
            .collect_garbage(None, &state.retention, now, false)
            .await
        {
            tracing::warn!(error = %err, "Garbage collection failed; it will run again.");
        }
    }
}
