//! What every node's Kafka workers say about themselves, kept in the catalog so that any
//! node can answer `GET /api/v1/ingest/status` for the whole cluster: a feed that has not
//! been given partitions yet, or whose broker is down, is visible as such instead of absent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A node that has not reported for this long is shown as silent (stopped by a crash, or cut
/// off from the catalog); nodes report every [`REPORT_EVERY`].
pub const SILENT_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// How often a node writes its workers' reports.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Reports of workers not heard of for this long are forgotten (a node taken out of the
/// cluster for good).
pub const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Where a worker stands with its consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    /// Subscribed; the group has not assigned it partitions yet (or is rebalancing).
    Joining,
    /// Holds at least one partition.
    Assigned,
    /// In the group without partitions: the feed has more workers than the topic has
    /// partitions.
    Idle,
    /// No broker of the feed answers.
    BrokerUnreachable,
    /// Stopped with its node, after committing what it consumed.
    Stopped,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Joining => "joining",
            FeedState::Assigned => "assigned",
            FeedState::Idle => "idle",
            FeedState::BrokerUnreachable => "broker_unreachable",
            FeedState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "joining" => FeedState::Joining,
            "assigned" => FeedState::Assigned,
            "idle" => FeedState::Idle,
            "broker_unreachable" => FeedState::BrokerUnreachable,
            "stopped" => FeedState::Stopped,
            _ => return None,
        })
    }
}

/// One partition a worker holds, with what it measured (the catalog's offset is read from
/// the catalog itself when the status is asked for).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: Option<i64>,
    pub last_flush_at: Option<DateTime<Utc>>,
    pub rows_total: u64,
    pub rejected_total: u64,
    pub rows_per_second: f64,
}

/// One Kafka worker of one node, as it last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedWorkerReport {
    /// `{node}#{feed index}.{worker}`: unique in the cluster, the same across restarts.
    pub worker: String,
    pub node: String,
    pub dataset: String,
    pub topic: String,
    pub group_id: String,
    pub state: FeedState,
    pub state_since: DateTime<Utc>,
    pub broker_unreachable_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub partitions: Vec<HeldPartition>,
    pub reported_at: DateTime<Utc>,
}

impl FeedWorkerReport {
    /// Whether its node has stopped reporting without saying it stopped.
    pub fn is_silent(&self, now: DateTime<Utc>) -> bool {
        self.state != FeedState::Stopped && now - self.reported_at > SILENT_AFTER
    }
}

/// The `feed_workers` columns, in the order both stores read them.
pub(crate) const COLUMNS: &str = "worker, node, dataset, topic, group_id, state, state_since, \
     broker_unreachable_since, last_error, last_error_at, partitions, reported_at";

/// Completes a report read from the catalog with its state and partitions, stored as text.
pub(crate) fn read_stored_report(
    mut report: FeedWorkerReport,
    state: &str,
    partitions: &str,
) -> crate::Result<FeedWorkerReport> {
    report.state = FeedState::parse(state).ok_or_else(|| {
        crate::CatalogError::Storage(format!(
            "feed worker {} has an unknown state {state:?}",
            report.worker
        ))
    })?;
    report.partitions = serde_json::from_str(partitions)?;
    Ok(report)
}
