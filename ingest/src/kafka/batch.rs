//! A batch of Kafka messages from one partition, and its decoding into rows of the
//! dataset plus dead letters.
//!
//! Messages are decoded together, as one NDJSON (or CSV) body with one message per line, so
//! that a batch costs what a push of the same rows costs; every rejected line maps back to
//! its message. Metadata columns (`_topic`, `_partition`, `_offset`, `_key`, `_timestamp`)
//! that the dataset declares are filled from the messages, not from their payloads.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use cityhub_catalog::{Column, Dataset, RejectedRecord};

use crate::IngestError;
use crate::decode::{CsvDecoder, Decoded, NdJsonDecoder, merge};

/// Dataset columns filled from Kafka metadata when a dataset declares them.
pub use cityhub_catalog::STREAM_METADATA_COLUMNS as METADATA_COLUMNS;
use cityhub_catalog::camera::{CameraFeed, CameraOp};

/// How message payloads are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// One JSON object per message.
    Json,
    /// One CSV line per message, fields in the dataset's column order (metadata columns
    /// left out).
    Csv,
}

/// One consumed message, copied out of librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct Message {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Milliseconds since the epoch, when the broker gives a timestamp.
    pub timestamp_ms: Option<i64>,
}

/// Messages of one partition, in offset order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: String,
    pub partition: i32,
    /// The catalog's next offset for the partition as this worker knows it (`None`: none
    /// stored yet); the commit is refused if it changed meanwhile.
    pub expected: Option<i64>,
    pub messages: Vec<Message>,
    pub bytes: usize,
    pub started: std::time::Instant,
}

impl Batch {
    pub fn new(topic: &str, partition: i32, expected: Option<i64>) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            expected,
            messages: Vec::new(),
            bytes: 0,
            started: std::time::Instant::now(),
        }
    }

    pub fn push(&mut self, message: Message) {
        if self.messages.is_empty() {
            self.started = std::time::Instant::now();
        }
        self.bytes += message.payload.as_ref().map_or(0, Vec::len);
        self.messages.push(message);
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.messages.first().map(|m| m.offset)
    }

    /// The offset after the last message: where the partition continues.
    pub fn next_offset(&self) -> Option<i64> {
        self.messages.last().map(|m| m.offset + 1)
    }
}

/// What a batch became.
pub struct DecodedBatch {
    /// The good rows in the dataset's schema (`None` when there are none).
    pub rows: Option<RecordBatch>,
    pub rejected: Vec<RejectedRecord>,
}

/// Reads a batch of a camera-registry feed: one JSON object per message. Messages that do
/// not decode are dead letters; the others become operations, each with its message (the
/// registry may still refuse one, which then becomes a dead letter too).
pub fn decode_camera_batch(
    feed: CameraFeed,
    batch: &Batch,
    max_message_bytes: usize,
    now: i64,
) -> (Vec<(RejectedRecord, CameraOp)>, Vec<RejectedRecord>) {
    let mut items = Vec::with_capacity(batch.messages.len());
    let mut rejected = Vec::new();
    for message in &batch.messages {
        let payload = message.payload.as_deref().unwrap_or_default();
        let mut record = RejectedRecord {
            topic: batch.topic.clone(),
            partition: batch.partition,
            offset: message.offset,
            key: message.key.clone(),
            payload: payload[..payload.len().min(max_message_bytes)].to_vec(),
            error: String::new(),
        };
        if payload.len() > max_message_bytes {
            record.error = format!(
                "the message has {} bytes, more than ingest.kafka max_message_bytes \
                 ({max_message_bytes}); only its start is kept here",
                payload.len()
            );
            rejected.push(record);
            continue;
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(payload)
            .map_err(|err| format!("not a JSON object: {err}"))
            .and_then(|value| feed.parse(value, now).map_err(|err| err.to_string()));
        match parsed {
            Ok(op) => items.push((record, op)),
            Err(error) => {
                record.error = error;
                rejected.push(record);
            }
        }
    }
    (items, rejected)
}

/// Decodes a batch against `dataset`'s columns.
pub fn decode_batch(
    dataset: &Dataset,
    batch: &Batch,
    format: MessageFormat,
    max_message_bytes: usize,
) -> Result<DecodedBatch, IngestError> {
    let payload_columns: Arc<[Column]> = dataset
        .columns
        .iter()
        .filter(|c| !METADATA_COLUMNS.contains(&c.name.as_str()))
        .cloned()
        .collect();
    let mut rejected = Vec::new();
    let reject = |message: &Message, error: String| RejectedRecord {
        topic: batch.topic.clone(),
        partition: batch.partition,
        offset: message.offset,
        key: message.key.clone(),
        // Oversize payloads are kept in part: enough to identify them.
        payload: message
            .payload
            .as_deref()
            .map(|p| p[..p.len().min(max_message_bytes)].to_vec())
            .unwrap_or_default(),
        error,
    };

    // One line per message that passed the checks every format shares.
    let mut body = Vec::with_capacity(batch.bytes + batch.messages.len() + 256);
    let mut line_of_message: Vec<usize> = Vec::with_capacity(batch.messages.len());
    if format == MessageFormat::Csv {
        let header: Vec<&str> = payload_columns.iter().map(|c| c.name.as_str()).collect();
        body.extend_from_slice(header.join(",").as_bytes());
        body.push(b'\n');
    }
    for (index, message) in batch.messages.iter().enumerate() {
        let payload = message.payload.as_deref().unwrap_or_default();
        if payload.len() > max_message_bytes {
            rejected.push(reject(
                message,
                format!(
                    "the message has {} bytes, more than ingest.kafka max_message_bytes ({max_message_bytes}); only its start is kept here",
                    payload.len()
                ),
            ));
            continue;
        }
        if payload.iter().all(u8::is_ascii_whitespace) {
            rejected.push(reject(message, "the message is empty".into()));
            continue;
        }
        let has_newline = payload.iter().any(|b| *b == b'\n' || *b == b'\r');
        match (format, has_newline) {
            (_, false) => body.extend_from_slice(payload),
            (MessageFormat::Json, true) => {
                // Pretty-printed JSON: valid JSON has line breaks only between tokens, so
                // they can become spaces once the message is known to be valid.
                if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                    rejected.push(reject(message, format!("not valid JSON: {err}")));
                    continue;
                }
                body.extend(payload.iter().map(|b| match b {
                    b'\n' | b'\r' => b' ',
                    other => *other,
                }));
            }
            (MessageFormat::Csv, true) => {
                rejected.push(reject(
                    message,
                    "a CSV message must be exactly one line".into(),
                ));
                continue;
            }
        }
        body.push(b'\n');
        line_of_message.push(index);
    }
    if line_of_message.is_empty() {
        return Ok(DecodedBatch {
            rows: None,
            rejected,
        });
    }

    let report_all = usize::MAX;
    let (chunks, first_line): (Vec<Decoded>, u64) = match format {
        MessageFormat::Json => (
            NdJsonDecoder::new(&body[..], payload_columns.clone(), usize::MAX, report_all)
                .collect::<Result<_, _>>()?,
            1,
        ),
        MessageFormat::Csv => (
            CsvDecoder::new(&body[..], payload_columns.clone(), usize::MAX, report_all)?
                .collect::<Result<_, _>>()?,
            2,
        ),
    };
    let decoded = merge(
        cityhub_catalog::arrow_schema(&payload_columns),
        chunks,
        report_all,
    )?;

    // Every error of a line, joined, goes to that line's message.
    let mut errors: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for error in &decoded.rejected {
        let position = (error.line.saturating_sub(first_line)) as usize;
        let text = match &error.column {
            Some(column) => format!("{column}: {}", error.error),
            None => error.error.clone(),
        };
        errors.entry(position).or_default().push(text);
    }
    let mut accepted = Vec::with_capacity(line_of_message.len());
    for (position, &index) in line_of_message.iter().enumerate() {
        match errors.remove(&position) {
            Some(texts) => rejected.push(reject(&batch.messages[index], texts.join("; "))),
            None => accepted.push(&batch.messages[index]),
        }
    }
    rejected.sort_by_key(|r| r.offset);
    if accepted.is_empty() {
        return Ok(DecodedBatch {
            rows: None,
            rejected,
        });
    }
    if accepted.len() != decoded.batch.num_rows() {
        return Err(IngestError::Internal(format!(
            "decoded {} rows from {} accepted messages",
            decoded.batch.num_rows(),
            accepted.len()
        )));
    }
    let rows = with_metadata(dataset, batch, &decoded.batch, &accepted)?;
    Ok(DecodedBatch {
        rows: Some(rows),
        rejected,
    })
}

/// The decoded payload columns plus metadata columns, in the dataset's column order.
fn with_metadata(
    dataset: &Dataset,
    batch: &Batch,
    decoded: &RecordBatch,
    accepted: &[&Message],
) -> Result<RecordBatch, IngestError> {
    let schema = dataset.arrow_schema();
    let internal = |err: arrow::error::ArrowError| IngestError::Internal(err.to_string());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array: ArrayRef = match field.name().as_str() {
            "_topic" => Arc::new(StringArray::from(vec![
                batch.topic.as_str();
                accepted.len()
            ])),
            "_partition" => Arc::new(Int64Array::from(vec![
                i64::from(batch.partition);
                accepted.len()
            ])),
            "_offset" => Arc::new(accepted.iter().map(|m| m.offset).collect::<Int64Array>()),
            "_key" => Arc::new(
                accepted
                    .iter()
                    .map(|m| m.key.as_deref().map(String::from_utf8_lossy))
                    .collect::<StringArray>(),
            ),
            "_timestamp" => Arc::new(
                accepted
                    .iter()
                    .map(|m| m.timestamp_ms.map(|ms| ms * 1000))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            name => decoded
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| IngestError::Internal(format!("decoded rows lack {name}")))?,
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast(&array, field.data_type()).map_err(internal)?
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema, columns).map_err(internal)
}

#[cfg(test)]
mod tests {
    use cityhub_catalog::{Classification, ColumnType, DatasetName, Sharing};

    use super::*;

    fn dataset() -> Dataset {
        Dataset {
            id: 1,
            name: DatasetName::parse("gongan.alarms").expect("name"),
            owner: "gongan".into(),
            description: String::new(),
            classification: Classification::General,
            sharing: Sharing::Unconditional,
            resource_code: None,
            update_cycle: None,
            tags: vec![],
            sort_key: vec![],
            primary_key: vec![],
            snapshot_retention_days: None,
            row_retention: None,
            last_gc_at: None,
            columns: vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new("kind", ColumnType::String, true),
                Column::new("_partition", ColumnType::Int32, false),
                Column::new("_offset", ColumnType::Int64, false),
                Column::new("_key", ColumnType::String, true),
            ],
            schema_version: 1,
            snapshot_id: None,
            snapshot_seq: 0,
            rows: 0,
            bytes: 0,
            files: 0,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            region_column: None,
            region_free: false,
        }
    }

    fn batch(payloads: &[&str]) -> Batch {
        let mut batch = Batch::new("alarms", 2, Some(100));
        for (i, payload) in payloads.iter().enumerate() {
            batch.push(Message {
                offset: 100 + i as i64,
                key: Some(format!("k{i}").into_bytes()),
                payload: Some(payload.as_bytes().to_vec()),
                timestamp_ms: Some(1_764_288_000_000),
            });
        }
        batch
    }

    #[test]
    fn good_rows_get_metadata_and_bad_messages_become_dead_letters() {
        let batch = batch(&[
            r#"{"id":1,"kind":"theft"}"#,
            "{not json",
            r#"{"id":"two"}"#,
            "",
            "{\n  \"id\": 5,\n  \"kind\": \"fraud\"\n}",
            r#"{"id":6,"kind":"fight","extra":1}"#,
            r#"{"id":7}"#,
        ]);
        let decoded = decode_batch(&dataset(), &batch, MessageFormat::Json, 1024).expect("decode");
        let rows = decoded.rows.expect("rows");
        assert_eq!(rows.num_rows(), 3);
        let offsets = rows
            .column_by_name("_offset")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .expect("offsets");
        assert_eq!(offsets.values().to_vec(), vec![100, 104, 106]);
        assert_eq!(
            rows.column_by_name("_partition")
                .map(|c| c.data_type().clone()),
            Some(arrow::datatypes::DataType::Int32)
        );
        let dead: Vec<(i64, &str)> = decoded
            .rejected
            .iter()
            .map(|r| (r.offset, r.error.as_str()))
            .collect();
        assert_eq!(dead.len(), 4, "{dead:?}");
        assert_eq!(dead[0].0, 101);
        assert!(dead[0].1.contains("not valid JSON"), "{dead:?}");
        assert_eq!(dead[1].0, 102);
        assert!(dead[1].1.starts_with("id:"), "{dead:?}");
        assert_eq!(dead[2], (103, "the message is empty"));
        assert_eq!(dead[3].0, 105);
        assert!(dead[3].1.contains("extra"), "{dead:?}");
        assert_eq!(decoded.rejected[0].payload, b"{not json");
        assert_eq!(decoded.rejected[0].key.as_deref(), Some(&b"k1"[..]));
    }

    #[test]
    fn oversize_messages_are_rejected_and_csv_lines_decode() {
        let batch = batch(&["1,theft", "2,fraud,extra", "x,fight", &"9".repeat(50)]);
        let decoded = decode_batch(&dataset(), &batch, MessageFormat::Csv, 40).expect("decode");
        assert_eq!(decoded.rows.map(|r| r.num_rows()), Some(1));
        let dead: Vec<i64> = decoded.rejected.iter().map(|r| r.offset).collect();
        assert_eq!(dead, [101, 102, 103]);
        assert_eq!(decoded.rejected[2].payload.len(), 40);
        assert!(decoded.rejected[2].error.contains("max_message_bytes"));
    }

    #[test]
    fn a_batch_of_only_bad_messages_has_no_rows() {
        let batch = batch(&["nope", "[]"]);
        let decoded = decode_batch(&dataset(), &batch, MessageFormat::Json, 1024).expect("decode");
        assert!(decoded.rows.is_none());
        assert_eq!(decoded.rejected.len(), 2);
    }
}
