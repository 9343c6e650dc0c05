//! What the Kafka workers report about each partition, for `GET /api/v1/ingest/status` and
//! `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One topic partition feeding one dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    pub dataset: String,
    pub topic: String,
    pub partition: i32,
    /// The worker (`{host}/{feed index}.{worker}`) consuming it now, if any in this process.
    pub worker: Option<String>,
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

/// (dataset, topic, partition)
type PartitionKey = (String, String, i32);

/// The statuses of every partition this process has seen.
#[derive(Clone, Default)]
pub struct StatusBoard {
    partitions: Arc<Mutex<BTreeMap<PartitionKey, PartitionStatus>>>,
}

impl StatusBoard {
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
        status.lag = match (status.high_watermark, status.catalog_offset) {
            (Some(high), Some(done)) => Some((high - done).max(0)),
            (Some(high), None) => Some(high),
            _ => None,
        };
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
