//! What the Kafka workers report about themselves and each partition, for
//! `GET /api/v1/ingest/status` (through the catalog's feed reports, so that every node
//! answers for the whole cluster) and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cityhub_catalog::feeds::{FeedState, FeedWorkerReport, HeldPartition};
use serde::Serialize;

/// One topic partition feeding one dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    pub dataset: String,
    pub topic: String,
    pub partition: i32,
    /// The worker (`{node}#{feed index}.{worker}`) consuming it now, if any.
    pub worker: Option<String>,
    /// The node of that worker.
    pub node: Option<String>,
    /// The next offset the catalog has committed rows up to.
    pub catalog_offset: Option<i64>,
    /// The broker's high watermark (next offset to be written), from librdkafka statistics.
    pub high_watermark: Option<i64>,
    /// `high_watermark - catalog_offset`: messages not yet in the hub.
    pub lag: Option<i64>,
    pub last_flush_at: Option<DateTime<Utc>>,
    pub rows_total: u64,
    pub rejected_total: u64,
    /// Rows per second of the last flush interval.
    pub rows_per_second: f64,
}

impl PartitionStatus {
    /// Messages on the broker not yet in the catalog.
    fn derive_lag(&self) -> Option<i64> {
        match (self.high_watermark, self.catalog_offset) {
            (Some(high), Some(done)) => Some((high - done).max(0)),
            (Some(high), None) => Some(high),
            _ => None,
        }
    }
}

/// (dataset, topic, partition)
type PartitionKey = (String, String, i32);

/// What one worker knows of its standing with the group and the brokers.
#[derive(Debug, Clone)]
struct WorkerStanding {
    dataset: String,
    topic: String,
    group_id: String,
    /// The partitions of the last assignment; `None` while (re)joining the group.
    assigned: Option<BTreeSet<i32>>,
    broker_unreachable_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    stopped: bool,
    state: FeedState,
    state_since: DateTime<Utc>,
}

impl WorkerStanding {
    fn derive_state(&self) -> FeedState {
        if self.stopped {
            FeedState::Stopped
        } else if self.broker_unreachable_since.is_some() {
            FeedState::BrokerUnreachable
        } else {
            match &self.assigned {
                None => FeedState::Joining,
                Some(partitions) if partitions.is_empty() => FeedState::Idle,
                Some(_) => FeedState::Assigned,
            }
        }
    }
}

/// The statuses of this node's workers and of every partition they have held.
#[derive(Clone)]
pub struct StatusBoard {
    node: Arc<str>,
    partitions: Arc<Mutex<BTreeMap<PartitionKey, PartitionStatus>>>,
    workers: Arc<Mutex<BTreeMap<String, WorkerStanding>>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new("local")
    }
}

impl StatusBoard {
    /// A board for the node the catalog knows as `node` (unique in the cluster, the same
    /// across restarts).
    pub fn new(node: impl Into<Arc<str>>) -> Self {
        Self {
            node: node.into(),
            partitions: Default::default(),
            workers: Default::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster-wide name of a node's `worker`th consumer of its `feed`th feed.
    pub fn worker_name(&self, feed: usize, worker: u64) -> String {
        format!("{}#{feed}.{worker}", self.node)
    }

    /// A worker has subscribed, or is rejoining after its partitions were revoked.
    pub fn worker_joining(
        &self,
        worker: &str,
        dataset: &str,
        topic: &str,
        group_id: &str,
        now: DateTime<Utc>,
    ) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        let standing = workers
            .entry(worker.to_string())
            .or_insert_with(|| WorkerStanding {
                dataset: dataset.to_string(),
                topic: topic.to_string(),
                group_id: group_id.to_string(),
                assigned: None,
                broker_unreachable_since: None,
                last_error: None,
                last_error_at: None,
                stopped: false,
                state: FeedState::Joining,
                state_since: now,
            });
        standing.assigned = None;
        Self::restate(standing, now);
    }

    /// The group gave a worker `partitions` (possibly none).
    pub fn worker_assigned(&self, worker: &str, partitions: &[i32], now: DateTime<Utc>) {
        self.change_worker(worker, now, |standing| {
            standing.assigned = Some(partitions.iter().copied().collect());
        });
    }

    /// Whether any of a worker's brokers answers, from librdkafka's statistics or errors.
    pub fn worker_brokers_reachable(&self, worker: &str, reachable: bool, now: DateTime<Utc>) {
        self.change_worker(worker, now, |standing| {
            if reachable {
                standing.broker_unreachable_since = None;
            } else if standing.broker_unreachable_since.is_none() {
                standing.broker_unreachable_since = Some(now);
            }
        });
    }

    /// The last trouble a worker met (kept after it recovers, with its time).
    pub fn worker_error(&self, worker: &str, error: &str, now: DateTime<Utc>) {
        self.change_worker(worker, now, |standing| {
            standing.last_error = Some(error.to_string());
            standing.last_error_at = Some(now);
        });
    }

    /// A worker stopped after committing what it consumed.
    pub fn worker_stopped(&self, worker: &str, now: DateTime<Utc>) {
        self.change_worker(worker, now, |standing| {
            standing.stopped = true;
            standing.assigned = Some(BTreeSet::new());
        });
    }

    fn change_worker(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut WorkerStanding),
    ) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        if let Some(standing) = workers.get_mut(worker) {
            change(standing);
            Self::restate(standing, now);
        }
    }

    fn restate(standing: &mut WorkerStanding, now: DateTime<Utc>) {
        let state = standing.derive_state();
        if state != standing.state {
            standing.state = state;
            standing.state_since = now;
        }
    }

    /// This node's workers as the catalog keeps them, with the partitions each holds.
    pub fn reports(&self, now: DateTime<Utc>) -> Vec<FeedWorkerReport> {
        let partitions = self.snapshot();
        let Ok(workers) = self.workers.lock() else {
            return Vec::new();
        };
        workers
            .iter()
            .map(|(name, standing)| {
                let held = standing.assigned.clone().unwrap_or_default();
                FeedWorkerReport {
                    worker: name.clone(),
                    node: self.node.to_string(),
                    dataset: standing.dataset.clone(),
                    topic: standing.topic.clone(),
                    group_id: standing.group_id.clone(),
                    state: standing.state,
                    state_since: standing.state_since,
                    broker_unreachable_since: standing.broker_unreachable_since,
                    last_error: standing.last_error.clone(),
                    last_error_at: standing.last_error_at,
                    partitions: partitions
                        .iter()
                        .filter(|p| {
                            p.dataset == standing.dataset
                                && p.topic == standing.topic
                                && held.contains(&p.partition)
                        })
                        .map(|p| HeldPartition {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            high_watermark: p.high_watermark,
                            last_flush_at: p.last_flush_at,
                            rows_total: p.rows_total,
                            rejected_total: p.rejected_total,
                            rows_per_second: p.rows_per_second,
                        })
                        .collect(),
                    reported_at: now,
                }
            })
            .collect()
    }
    pub fn update(
        &self,
        dataset: &str,
        topic: &str,
        partition: i32,
        change: impl FnOnce(&mut PartitionStatus),
    ) {
        let Ok(mut partitions) = self.partitions.lock() else {
            return;
        };
        let status = partitions
            .entry((dataset.to_string(), topic.to_string(), partition))
            .or_insert_with(|| PartitionStatus {
                dataset: dataset.to_string(),
                topic: topic.to_string(),
                partition,
                ..Default::default()
            });
        change(status);
        status.lag = status.derive_lag();
        let labels = [
            ("dataset", dataset.to_string()),
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        if let Some(lag) = status.lag {
            metrics::gauge!("cityhub_kafka_lag", &labels).set(lag as f64);
        }
        if let Some(offset) = status.catalog_offset {
            metrics::gauge!("cityhub_kafka_catalog_offset", &labels).set(offset as f64);
        }
        if let Some(high) = status.high_watermark {
            metrics::gauge!("cityhub_kafka_high_watermark", &labels).set(high as f64);
        }
    }

    pub fn snapshot(&self) -> Vec<PartitionStatus> {
        self.partitions
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// One worker of one node, as `GET /api/v1/ingest/status` shows it: what it last reported
/// (its state is the last it reported, see `silent`).
#[derive(Debug, Clone, Serialize)]
pub struct FeedWorkerStatus {
    #[serde(flatten)]
    pub report: FeedWorkerReport,
    /// Its node has not reported for a while without saying it stopped: it crashed, hangs
    /// or cannot reach the catalog, and its partitions go to other workers once the group
    /// notices.
    pub silent: bool,
}

/// Every node's feeds and every partition of their topics, as any node of the cluster sees
/// them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFeedStatus {
    pub feeds: Vec<FeedWorkerStatus>,
    pub partitions: Vec<PartitionStatus>,
}

impl ClusterFeedStatus {
    /// Reads the feed reports of every node whose dataset `visible` accepts, and the
    /// catalog's offsets of their topics; a partition nobody holds yet shows its catalog
    /// offset, one a live worker holds shows that worker's figures too. This node's own
    /// workers are taken from `local` as they are now rather than from its last report.
    pub async fn read(
        catalog: &cityhub_catalog::Catalog,
        local: &StatusBoard,
        now: DateTime<Utc>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Self, cityhub_catalog::CatalogError> {
        use super::{OffsetsOf, catalog_offsets};
        use cityhub_catalog::camera::CameraFeed;

        let mut reports = catalog.feed_reports().await?;
        let fresh = local.reports(now);
        if !fresh.is_empty() {
            reports.retain(|r| r.node != local.node());
            reports.extend(fresh);
            reports.sort_by(|a, b| a.worker.cmp(&b.worker));
        }
        reports.retain(|r| visible(&r.dataset));
        let mut partitions: BTreeMap<PartitionKey, PartitionStatus> = BTreeMap::new();
        let feeds: BTreeSet<(String, String)> = reports
            .iter()
            .map(|r| (r.dataset.clone(), r.topic.clone()))
            .collect();
        for (dataset, topic) in &feeds {
            let of = match CameraFeed::of_dataset(dataset) {
                Some(feed) => OffsetsOf::Cameras(feed),
                None => {
                    let Ok(name) = cityhub_catalog::DatasetName::parse(dataset) else {
                        continue;
                    };
                    let Some(found) = catalog.dataset(&name).await? else {
                        continue;
                    };
                    OffsetsOf::Dataset(found.id)
                }
            };
            for (partition, next) in catalog_offsets(catalog, of, topic).await? {
                partitions.insert(
                    (dataset.clone(), topic.clone(), partition),
                    PartitionStatus {
                        dataset: dataset.clone(),
                        topic: topic.clone(),
                        partition,
                        catalog_offset: Some(next),
                        ..Default::default()
                    },
                );
            }
        }
        // Oldest reports first, so that of two workers claiming a partition during a
        // handover the latest word wins.
        let mut live: Vec<&FeedWorkerReport> = reports
            .iter()
            .filter(|r| r.state == FeedState::Assigned && !r.is_silent(now))
            .collect();
        live.sort_by_key(|r| r.reported_at);
        for report in live {
            for held in &report.partitions {
                let status = partitions
                    .entry((report.dataset.clone(), held.topic.clone(), held.partition))
                    .or_insert_with(|| PartitionStatus {
                        dataset: report.dataset.clone(),
                        topic: held.topic.clone(),
                        partition: held.partition,
                        ..Default::default()
                    });
                status.worker = Some(report.worker.clone());
                status.node = Some(report.node.clone());
                status.high_watermark = held.high_watermark;
                status.last_flush_at = held.last_flush_at;
                status.rows_total = held.rows_total;
                status.rejected_total = held.rejected_total;
                status.rows_per_second = held.rows_per_second;
            }
        }
        let mut partitions: Vec<PartitionStatus> = partitions.into_values().collect();
        for status in &mut partitions {
            status.lag = status.derive_lag();
        }
        let feeds = reports
            .into_iter()
            .map(|report| FeedWorkerStatus {
                silent: report.is_silent(now),
                report,
            })
            .collect();
        Ok(Self { feeds, partitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
            + chrono::Duration::seconds(seconds)
    }

    fn state_of(board: &StatusBoard, now: DateTime<Utc>) -> (FeedState, DateTime<Utc>) {
        let reports = board.reports(now);
        assert_eq!(reports.len(), 1);
        (reports[0].state, reports[0].state_since)
    }

    /// A worker's state follows the group and the brokers, and its `state_since` moves only
    /// when the state does.
    #[test]
    fn a_workers_state_follows_the_group_and_the_brokers() {
        let board = StatusBoard::new("node-a");
        let worker = board.worker_name(0, 1);
        assert_eq!(worker, "node-a#0.1");
        board.worker_joining(&worker, "gongan.alarms", "alarms", "cityhub", at(0));
        assert_eq!(state_of(&board, at(1)), (FeedState::Joining, at(0)));

        // The brokers go quiet before the group answered; the trouble is kept after it ends.
        board.worker_brokers_reachable(&worker, false, at(5));
        board.worker_error(&worker, "talking to the brokers: all brokers down", at(5));
        board.worker_brokers_reachable(&worker, false, at(6));
        let report = &board.reports(at(7))[0];
        assert_eq!(report.state, FeedState::BrokerUnreachable);
        assert_eq!(
            report.broker_unreachable_since,
            Some(at(5)),
            "the first round counts"
        );
        board.worker_brokers_reachable(&worker, true, at(8));
        let report = &board.reports(at(9))[0];
        assert_eq!(
            (report.state, report.state_since),
            (FeedState::Joining, at(8))
        );
        assert_eq!(report.broker_unreachable_since, None);
        assert_eq!(report.last_error_at, Some(at(5)));

        // Assigned two partitions: the report carries their figures, and only theirs.
        for partition in [0, 1, 2] {
            board.update("gongan.alarms", "alarms", partition, |status| {
                status.high_watermark = Some(100 + i64::from(partition));
            });
        }
        board.worker_assigned(&worker, &[0, 2], at(10));
        let report = &board.reports(at(11))[0];
        assert_eq!(
            (report.state, report.state_since),
            (FeedState::Assigned, at(10))
        );
        let held: Vec<(i32, Option<i64>)> = report
            .partitions
            .iter()
            .map(|p| (p.partition, p.high_watermark))
            .collect();
        assert_eq!(held, vec![(0, Some(100)), (2, Some(102))]);
        board.worker_assigned(&worker, &[0, 2], at(12));
        assert_eq!(state_of(&board, at(13)), (FeedState::Assigned, at(10)));

        // A rebalance: revoked (joining again), then nothing left for this worker.
        board.worker_joining(&worker, "gongan.alarms", "alarms", "cityhub", at(14));
        assert_eq!(state_of(&board, at(14)), (FeedState::Joining, at(14)));
        board.worker_assigned(&worker, &[], at(15));
        assert_eq!(state_of(&board, at(15)), (FeedState::Idle, at(15)));
        board.worker_stopped(&worker, at(20));
        let report = &board.reports(at(21))[0];
        assert_eq!(
            (report.state, report.state_since),
            (FeedState::Stopped, at(20))
        );
        assert!(report.partitions.is_empty());
        assert!(
            !report.is_silent(at(3600)),
            "a stopped worker is not silent"
        );
    }

    /// Changes for a worker the board does not know (a stray callback after a restart) are
    /// ignored rather than invented.
    #[test]
    fn an_unknown_worker_is_not_invented() {
        let board = StatusBoard::new("node-a");
        board.worker_assigned("node-a#9.9", &[1], at(0));
        board.worker_error("node-a#9.9", "boom", at(0));
        assert!(board.reports(at(1)).is_empty());
    }
}
