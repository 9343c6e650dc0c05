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

use cityhub_catalog::DatasetName;
use cityhub_catalog::camera::CameraFeed;
use cityhub_catalog::camera::status::Liveness;
use cityhub_config::KafkaFeed;

pub use status::{PartitionStatus, StatusBoard};
pub use worker::{Sink, Worker};

use crate::{Ingest, IngestError};

/// The running feeds of one process.
pub struct KafkaFeeds {
    workers: Vec<Worker>,
    board: StatusBoard,
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
                    format!("{}/{index}.{worker}", std::process::id()),
                    board.clone(),
                    runtime.clone(),
                )?);
            }
        }
        Ok(Self { workers, board })
    }

    /// Every partition's offsets, lag and rates.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.board.snapshot()
    }

    /// Stops every worker after committing what it consumed.
    pub async fn stop(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                worker.stop();
            }
        })
        .await;
    }

    /// Stops every worker without committing (a crash, for tests of recovery).
    pub async fn abandon(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                worker.abandon();
            }
        })
        .await;
    }
}
