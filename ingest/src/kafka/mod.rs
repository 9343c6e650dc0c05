//! Kafka feeds: department topics consumed into datasets, and platform topics into the
//! camera registry, exactly once.
//!
//! - [`batch`]: a partition's batch of messages and its decoding into rows and dead letters;
//! - [`worker`]: one consumer (a polling thread and a committing thread) per configured
//!   worker of a feed; all workers of a feed, in this process and others, share the topic's
//!   partitions through the consumer group;
//! - [`status`]: per-partition offsets, lag and rates for the API and `/metrics`.

pub mod batch;
pub mod status;
pub mod worker;

use cityhub_catalog::camera::CameraFeed;
use cityhub_catalog::camera::status::Liveness;
use cityhub_catalog::feeds;
use cityhub_catalog::{Catalog, CatalogError, DatasetName};
use cityhub_config::KafkaFeed;

pub use status::{ClusterFeedStatus, FeedWorkerStatus, PartitionStatus, StatusBoard};
pub use worker::{Sink, Worker};

use crate::{Ingest, IngestError};

/// The running feeds of one process.
pub struct KafkaFeeds {
    workers: Vec<Worker>,
    board: StatusBoard,
    catalog: Catalog,
    /// Writes this node's worker reports to the catalog every few seconds.
    reporter: Option<tokio::task::JoinHandle<()>>,
}

impl KafkaFeeds {
    /// Starts `workers` consumers for each feed, reporting on `board`. Every feed's dataset
    /// must exist (or be one of the camera registry's: `hub.cameras`,
    /// `hub.camera_keepalives`, `hub.camera_events`, judged with `liveness`): a feed for a
    /// missing dataset is a configuration error reported before anything starts.
    pub async fn start(
        ingest: &Ingest,
        feeds: &[KafkaFeed],
        board: StatusBoard,
        liveness: Liveness,
    ) -> Result<Self, IngestError> {
        let mut sinks = Vec::with_capacity(feeds.len());
        for (index, feed) in feeds.iter().enumerate() {
            let field = format!("ingest.kafka[{index}].dataset");
            if let Some(camera_feed) = CameraFeed::of_dataset(&feed.dataset) {
                if feed.format != "json" {
                    return Err(IngestError::Invalid {
                        field: format!("ingest.kafka[{index}].format"),
                        message: format!(
                            "{} takes JSON messages; set format = \"json\"",
                            feed.dataset
                        ),
                    });
                }
                sinks.push(Sink::Cameras {
                    feed: camera_feed,
                    liveness,
                });
                continue;
            }
            if feed.dataset.starts_with("hub.") {
                return Err(IngestError::Invalid {
                    field,
                    message: format!(
                        "{} is a system table; a feed writes a department dataset or the camera \
                         registry ({})",
                        feed.dataset,
                        CameraFeed::DATASETS
                    ),
                });
            }
            let name = DatasetName::parse(&feed.dataset).map_err(|err| IngestError::Invalid {
                field: field.clone(),
                message: err.to_string(),
            })?;
            let dataset =
                ingest
                    .catalog()
                    .dataset(&name)
                    .await?
                    .ok_or_else(|| IngestError::Invalid {
                        field,
                        message: format!(
                            "{name} is not registered; register it (POST /api/v1/datasets) before \
                         feeding it from {}",
                            feed.topic
                        ),
                    })?;
            sinks.push(Sink::Dataset {
                name,
                id: dataset.id,
            });
        }
        let runtime = tokio::runtime::Handle::current();
        let mut workers = Vec::new();
        for (index, (feed, sink)) in feeds.iter().zip(sinks).enumerate() {
            for worker in 0..feed.workers.max(1) {
                workers.push(Worker::start(
                    ingest.clone(),
                    feed.clone(),
                    sink.clone(),
                    board.worker_name(index, worker),
                    board.clone(),
                    runtime.clone(),
                )?);
            }
        }
        let catalog = ingest.catalog().clone();
        // The first report also clears what this node reported for feeds it no longer has.
        if let Err(err) = report(&catalog, &board).await {
            tracing::warn!(node = board.node(), error = %err, "Could not write this node's Kafka feed status to the catalog; trying again in a few seconds.");
        }
        let reporter = (!workers.is_empty()).then(|| {
            let (catalog, board) = (catalog.clone(), board.clone());
            tokio::spawn(async move {
                let mut failing = false;
                loop {
                    tokio::time::sleep(feeds::REPORT_EVERY).await;
                    // One warning per outage of the catalog, not one per round.
                    match report(&catalog, &board).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(node = board.node(), "Writing this node's Kafka feed status to the catalog works again.");
                        }
                        Ok(()) => {}
                        Err(err) if !failing => {
                            failing = true;
                            tracing::warn!(node = board.node(), error = %err, "Could not write this node's Kafka feed status to the catalog; trying again every few seconds (logged once until it works).");
                        }
                        Err(_) => {}
                    }
                }
            })
        });
        Ok(Self {
            workers,
            board,
            catalog,
            reporter,
        })
    }

    /// Every partition's offsets, lag and rates.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.board.snapshot()
    }

    /// Stops every worker after committing what it consumed, and tells the catalog.
    pub async fn stop(mut self) {
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
        }
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                worker.stop();
            }
        })
        .await;
        if let Err(err) = report(&self.catalog, &self.board).await {
            tracing::warn!(node = self.board.node(), error = %err, "Could not tell the catalog that this node's Kafka feeds stopped; other nodes will show them as silent.");
        }
    }

    /// Stops every worker without committing or telling the catalog (a crash, for tests of
    /// recovery).
    pub async fn abandon(mut self) {
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
        }
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                worker.abandon();
            }
        })
        .await;
    }
}

/// Writes this node's worker reports to the catalog. A failure only costs the status: the
/// feeds go on without it, and the next round tries again.
async fn report(catalog: &Catalog, board: &StatusBoard) -> Result<(), CatalogError> {
    let now = chrono::Utc::now();
    catalog
        .replace_feed_reports(board.node(), board.reports(now), now)
        .await
}

/// Where the catalog keeps a feed's offsets.
#[derive(Debug, Clone, Copy)]
pub enum OffsetsOf {
    /// A dataset's stream offsets, by its id.
    Dataset(i64),
    /// One of the camera registry's feeds.
    Cameras(CameraFeed),
}

/// The catalog's next offset of each partition of `topic` for the feed whose offsets `of`
/// names: where a worker resumes, and what the status shows as committed.
pub async fn catalog_offsets(
    catalog: &Catalog,
    of: OffsetsOf,
    topic: &str,
) -> Result<std::collections::BTreeMap<i32, i64>, CatalogError> {
    let offsets = match of {
        OffsetsOf::Dataset(id) => catalog
            .stream_offsets(id)
            .await?
            .into_iter()
            .map(|o| (o.topic, o.partition, o.next_offset))
            .collect(),
        OffsetsOf::Cameras(feed) => catalog.camera_stream_offsets(feed).await?,
    };
    Ok(offsets
        .into_iter()
        .filter(|(t, _, _)| t == topic)
        .map(|(_, partition, next)| (partition, next))
        .collect())
}
