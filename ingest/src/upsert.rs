//! Upsert by primary key, copy-on-write.
//!
//! A dataset with a `primary_key` holds one row per key. Every write keeps that true before
//! it commits, so that a query never has to: the rows of one write are reduced to the last
//! row of each key ([`KeyColumns::last_wins`], in [`Ingest::write_file`]), and the commit
//! rewrites each stored file that holds one of the write's keys without those rows
//! ([`Ingest::commit_keyed`]). Queries on a keyed dataset read plain files like any other,
//! which is why they cost what the same rows unkeyed cost; the price is paid by the write
//! (it reads the files whose key range overlaps its keys, and rewrites those that hold one).
//! Compaction sorts a keyed dataset by its key by default, so that its files cover disjoint
//! key ranges and an upsert reads few of them.
//!
//! Unlike an append, a keyed commit does not rebase onto writes that beat it: they may have
//! added one of its keys. It plans again against the snapshot that won.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    DataType, Date32Type, Int32Type, Int64Type, Schema, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use bytes::Bytes;
use cityhub_catalog::{
    CatalogError, Commit, CommitOutcome, DataFile, Dataset, IdempotencyRecord, Operation,
    StreamProgress,
};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::commit::starting_parent;
use crate::compact::{decode_opened, open_file, read_file};
use crate::{Ingest, IngestError};

/// Stored files read at once while looking for replaced keys.
const READ_AHEAD: usize = 4;

/// A keyed dataset's key columns, and the converter that turns their values into bytes that
/// are equal exactly when the keys are.
pub(crate) struct KeyColumns {
    names: Vec<String>,
    converter: RowConverter,
}

/// The keys of a write, as converted bytes.
type KeySet = HashSet<Box<[u8]>>;

impl KeyColumns {
    /// The key of `dataset`, or `None` when it has none.
    pub(crate) fn of(dataset: &Dataset) -> Result<Option<Self>, IngestError> {
        if dataset.primary_key.is_empty() {
            return Ok(None);
        }
        let schema = dataset.arrow_schema();
        let fields = dataset
            .primary_key
            .iter()
            .map(|name| {
                schema
                    .field_with_name(name)
                    .map(|field| SortField::new(field.data_type().clone()))
                    .map_err(|_| {
                        IngestError::Internal(format!(
                            "primary-key column {name:?} of {} is not in its schema",
                            dataset.name
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let converter = RowConverter::new(fields).map_err(arrow_error)?;
        Ok(Some(Self {
            names: dataset.primary_key.clone(),
            converter,
        }))
    }

    /// The key's leading column (the one files are pruned by, and carry a bloom filter on).
    pub(crate) fn leading(&self) -> &str {
        &self.names[0]
    }

    fn rows(&self, batch: &RecordBatch) -> Result<Rows, IngestError> {
        let columns = self
            .names
            .iter()
            .map(|name| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    IngestError::Internal(format!("a batch lacks the key column {name:?}"))
                })
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        self.converter
            .convert_columns(&columns)
            .map_err(arrow_error)
    }

    /// The last row of each key in `batches` (in order), the others left out: within one
    /// write the last row wins.
    pub(crate) fn last_wins(
        &self,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, IngestError> {
        let mut seen = KeySet::new();
        let mut kept = Vec::with_capacity(batches.len());
        for batch in batches.into_iter().rev() {
            let rows = self.rows(&batch)?;
            let mut keep = vec![false; batch.num_rows()];
            for index in (0..batch.num_rows()).rev() {
                keep[index] = seen.insert(rows.row(index).as_ref().into());
            }
            kept.push(keep_rows(batch, keep)?);
        }
        kept.reverse();
        Ok(kept.into_iter().flatten().collect())
    }

    /// Adds the keys of `batches` to `keys`, and the values of their leading column to
    /// `leading` (which [`LeadingKeys`] prunes stored files by).
    fn insert_keys(
        &self,
        batches: &[RecordBatch],
        keys: &mut KeySet,
        leading: &mut Vec<KeyValue>,
    ) -> Result<(), IngestError> {
        for batch in batches {
            let rows = self.rows(batch)?;
            keys.extend(rows.iter().map(|row| Box::<[u8]>::from(row.as_ref())));
            if let Some(column) = batch.column_by_name(&self.names[0]) {
                leading.extend(key_values(column));
            }
        }
        Ok(())
    }

    /// `batches` without the rows whose key is in `keys`, and how many rows that left out.
    fn without(
        &self,
        batches: Vec<RecordBatch>,
        keys: &KeySet,
    ) -> Result<(Vec<RecordBatch>, usize), IngestError> {
        let mut dropped = 0;
        let mut kept = Vec::with_capacity(batches.len());
        for batch in batches {
            let rows = self.rows(&batch)?;
            let keep: Vec<bool> = rows
                .iter()
                .map(|row| !keys.contains(row.as_ref()))
                .collect();
            dropped += keep.iter().filter(|k| !**k).count();
            kept.extend(keep_rows(batch, keep)?);
        }
        Ok((kept, dropped))
    }
}

/// `batch` with the rows marked in `keep`; `None` when none is.
fn keep_rows(batch: RecordBatch, keep: Vec<bool>) -> Result<Option<RecordBatch>, IngestError> {
    if keep.iter().all(|k| *k) {
        return Ok(Some(batch));
    }
    if !keep.iter().any(|k| *k) {
        return Ok(None);
    }
    let filtered = filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(arrow_error)?;
    Ok(Some(filtered))
}

fn arrow_error(err: arrow::error::ArrowError) -> IngestError {
    IngestError::Internal(format!("comparing primary keys failed: {err}"))
}

/// A keyed commit as planned against one snapshot: the files to add (the write's own, and
/// stored files rewritten without its keys) and the stored files they replace.
#[derive(Default)]
struct Plan {
    rewritten: Vec<DataFile>,
    removed: Vec<String>,
    rows_replaced: usize,
}

impl Ingest {
    /// Commits `files` of a keyed dataset: stored rows carrying one of their keys are
    /// replaced (see the module's documentation). Removes everything it wrote, `files`
    /// included, unless the commit lands.
    pub(crate) async fn commit_keyed(
        &self,
        dataset: &Dataset,
        keys: KeyColumns,
        files: Vec<DataFile>,
        idempotency: Option<IdempotencyRecord>,
        stream: Option<StreamProgress>,
    ) -> Result<CommitOutcome, IngestError> {
        let mut written: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let result = self
            .commit_keyed_files(dataset, &keys, files, idempotency, stream, &mut written)
            .await;
        self.remove_unless_committed(&result, &written).await;
        result
    }

    /// The work of [`Self::commit_keyed`]; `written` collects the paths of files it wrote
    /// that the commit would name, for the caller to remove should it not land.
    async fn commit_keyed_files(
        &self,
        dataset: &Dataset,
        keys: &KeyColumns,
        files: Vec<DataFile>,
        idempotency: Option<IdempotencyRecord>,
        stream: Option<StreamProgress>,
        written: &mut Vec<String>,
    ) -> Result<CommitOutcome, IngestError> {
        let started = Instant::now();
        let schema = dataset.arrow_schema();
        let (files, new_keys, leading) = self
            .fold_within_write(dataset, keys, &schema, files, written)
            .await?;

        let queue = self.commit_queue(dataset.id);
        let mut last_seen = queue.lock().await;
        let mut parent = starting_parent(*last_seen, dataset);
        let max_attempts = self.config.commit_retries.max(1);
        for attempt in 1..=max_attempts {
            let stored = match parent {
                Some(id) => self.catalog.snapshot_files(dataset.id, Some(id)).await?,
                None => Vec::new(),
            };
            let candidates: Vec<DataFile> = stored
                .into_iter()
                .filter(|file| leading.may_hold(file))
                .collect();
            let plan = self
                .plan_replacement(dataset, keys, &schema, candidates, &new_keys, &leading)
                .await?;
            let rewritten_paths: Vec<String> =
                plan.rewritten.iter().map(|f| f.path.clone()).collect();
            let operation = if plan.removed.is_empty() {
                Operation::Append
            } else {
                Operation::Upsert
            };
            let mut added = files.clone();
            added.extend(plan.rewritten);
            let commit = Commit {
                dataset_id: dataset.id,
                expected_parent: parent,
                operation,
                added,
                removed: plan.removed.clone(),
                idempotency: idempotency.clone(),
                stream: stream.clone(),
            };
            let result = self.catalog.commit(commit).await.map_err(IngestError::from);
            // Rewrites planned against a snapshot that is not the one committed on are useless.
            self.remove_unless_committed(&result, &rewritten_paths)
                .await;
            match result {
                Ok(outcome) => {
                    if let CommitOutcome::Committed(snapshot) = &outcome {
                        *last_seen = Some(snapshot.id);
                        self.versions.committed(dataset.id, snapshot.id);
                        written.extend(rewritten_paths);
                        metrics::counter!("cityhub_upsert_rows_replaced_total")
                            .increment(plan.rows_replaced as u64);
                        metrics::counter!("cityhub_upsert_files_rewritten_total")
                            .increment(plan.removed.len() as u64);
                        tracing::debug!(
                            dataset = %dataset.name,
                            snapshot_id = snapshot.id,
                            rows_replaced = plan.rows_replaced,
                            files_rewritten = plan.removed.len(),
                            "A keyed write replaced stored rows."
                        );
                    }
                    metrics::histogram!("cityhub_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return Ok(outcome);
                }
                Err(IngestError::Catalog(CatalogError::Conflict { actual, .. })) => {
                    // Another writer committed first and may have stored one of our keys:
                    // plan again on its snapshot.
                    metrics::counter!("cityhub_commit_retries_total").increment(1);
                    parent = self.lost_race(dataset.id, actual, attempt).await;
                    *last_seen = actual;
                }
                Err(IngestError::Catalog(CatalogError::IdempotencyMismatch { key })) => {
                    return Err(IngestError::IdempotencyMismatch(key));
                }
                Err(other) => return Err(other),
            }
        }
        Err(IngestError::Contention {
            attempts: max_attempts,
        })
    }

    /// A write of several files (an import, a flush of several partitions) whose later
    /// files repeat keys of earlier ones: the earlier files are rewritten without them, so
    /// that the last row wins across the whole write as it does within a file. Returns the
    /// files to commit, all of their keys, and the values of their keys' leading column.
    async fn fold_within_write(
        &self,
        dataset: &Dataset,
        keys: &KeyColumns,
        schema: &Arc<Schema>,
        files: Vec<DataFile>,
        written: &mut Vec<String>,
    ) -> Result<(Vec<DataFile>, KeySet, Arc<LeadingKeys>), IngestError> {
        let mut later = KeySet::new();
        let mut leading = Vec::new();
        let mut folded = Vec::with_capacity(files.len());
        for file in files.into_iter().rev() {
            let batches =
                read_file(self.storage.clone(), file.path.clone(), schema.clone()).await?;
            let (kept, dropped) = if later.is_empty() {
                (batches, 0)
            } else {
                keys.without(batches, &later)?
            };
            keys.insert_keys(&kept, &mut later, &mut leading)?;
            if dropped == 0 {
                folded.push(file);
                continue;
            }
            // The original is not committed by anyone: remove it now.
            self.storage.delete(&file.path).await;
            written.retain(|path| path != &file.path);
            if kept.iter().any(|b| b.num_rows() > 0) {
                let rewrite = self.write_file_labelled(dataset, kept, "upsert").await?;
                written.push(rewrite.path.clone());
                folded.push(rewrite);
            }
        }
        folded.reverse();
        leading.sort_unstable();
        leading.dedup();
        let stored_as_i32 = matches!(
            schema
                .field_with_name(&keys.names[0])
                .map(|f| f.data_type()),
            Ok(DataType::Int32 | DataType::Date32)
        );
        let leading = Arc::new(LeadingKeys {
            column: keys.names[0].clone(),
            values: leading,
            stored_as_i32,
        });
        Ok((folded, later, leading))
    }

    /// The stored `candidates` (files whose key range overlaps the write's) that do hold one
    /// of `new_keys`, rewritten without those rows.
    async fn plan_replacement(
        &self,
        dataset: &Dataset,
        keys: &KeyColumns,
        schema: &Arc<Schema>,
        candidates: Vec<DataFile>,
        new_keys: &KeySet,
        leading: &Arc<LeadingKeys>,
    ) -> Result<Plan, IngestError> {
        let mut plan = Plan::default();
        let storage = self.storage.clone();
        let schema = schema.clone();
        let leading = leading.clone();
        let mut reads = futures::stream::iter(candidates)
            .map(move |file| {
                let (storage, schema, leading) = (storage.clone(), schema.clone(), leading.clone());
                async move {
                    let bytes = storage.get(&file.path).await?;
                    let path = file.path.clone();
                    // Decoded only if its bloom filter does not rule it out.
                    tokio::task::spawn_blocking(move || {
                        // One footer parse serves both the bloom check and the decode.
                        let opened = open_file(&path, bytes)?;
                        if !leading.bloom_may_hold(&opened, leading.within(&file)) {
                            return Ok((file, None));
                        }
                        decode_opened(&path, opened, &schema).map(|batches| (file, Some(batches)))
                    })
                    .await
                    .map_err(|err| IngestError::Internal(format!("decoding task failed: {err}")))?
                }
            })
            .buffered(READ_AHEAD);
        let outcome = async {
            while let Some(read) = reads.next().await {
                let (file, Some(batches)) = read? else {
                    continue;
                };
                let (kept, dropped) = keys.without(batches, new_keys)?;
                if dropped == 0 {
                    continue;
                }
                plan.rows_replaced += dropped;
                plan.removed.push(file.path.clone());
                if kept.iter().any(|b| b.num_rows() > 0) {
                    let rewrite = self.write_file_labelled(dataset, kept, "upsert").await?;
                    plan.rewritten.push(rewrite);
                }
            }
            Ok::<_, IngestError>(())
        }
        .await;
        if let Err(err) = outcome {
            for file in &plan.rewritten {
                self.storage.delete(&file.path).await;
            }
            return Err(err);
        }
        Ok(plan)
    }
}

/// A value of a key's leading column as the per-file statistics hold it: an integer (also a
/// date, as epoch days, and a timestamp, as epoch microseconds) or a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyValue {
    Int(i64),
    Str(String),
}

impl KeyValue {
    fn from_statistic(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_i64().map(KeyValue::Int),
            Value::String(s) => Some(KeyValue::Str(s.clone())),
            _ => None,
        }
    }
}

/// The values of a key column (one of the types a key may have).
fn key_values(column: &ArrayRef) -> Vec<KeyValue> {
    let ints = |values: &[i64]| values.iter().copied().map(KeyValue::Int).collect();
    match column.data_type() {
        DataType::Int32 => column
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(i64::from(*v)))
            .collect(),
        DataType::Date32 => column
            .as_primitive::<Date32Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(i64::from(*v)))
            .collect(),
        DataType::Int64 => ints(column.as_primitive::<Int64Type>().values()),
        DataType::Timestamp(_, _) => {
            ints(column.as_primitive::<TimestampMicrosecondType>().values())
        }
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(|v| KeyValue::Str(v.to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The distinct values of the leading key column in a write, sorted: a stored file may hold
/// one of the write's keys only if one of these lies within its statistics' range. (Per
/// value, not the write's whole range: a write of new ids that also corrects a few old ones
/// spans almost every file, but holds values in only a few.)
struct LeadingKeys {
    column: String,
    values: Vec<KeyValue>,
    /// Whether the column is stored as Parquet INT32 (int32, date), which its bloom filter
    /// hashes as four bytes.
    stored_as_i32: bool,
}

impl LeadingKeys {
    /// The written values within `file`'s statistics range: all of them when it has no
    /// statistics for the column, none when it is empty.
    fn within(&self, file: &DataFile) -> &[KeyValue] {
        if file.rows == 0 {
            return &[];
        }
        let Some(stats) = file.stats.get(&self.column) else {
            return &self.values;
        };
        let bounds = (
            stats.min.as_ref().and_then(KeyValue::from_statistic),
            stats.max.as_ref().and_then(KeyValue::from_statistic),
        );
        let (Some(min), Some(max)) = bounds else {
            return &self.values;
        };
        let start = self.values.partition_point(|v| v < &min);
        let end = self.values.partition_point(|v| v <= &max).max(start);
        &self.values[start..end]
    }

    fn may_hold(&self, file: &DataFile) -> bool {
        !self.within(file).is_empty()
    }

    /// Whether the bloom filters of a stored file (its bytes) say it may hold one of
    /// `values` in the leading column (`builder`: the file opened); `true` when it has none for it (a file written before
    /// the dataset's files carried them, or by another tool).
    fn bloom_may_hold(
        &self,
        builder: &ParquetRecordBatchReaderBuilder<Bytes>,
        values: &[KeyValue],
    ) -> bool {
        let columns = builder.parquet_schema().columns();
        let Some(index) = columns.iter().position(|c| c.name() == self.column) else {
            return true;
        };
        for row_group in 0..builder.metadata().num_row_groups() {
            let Ok(Some(filter)) = builder.get_row_group_column_bloom_filter(row_group, index)
            else {
                return true;
            };
            let hit = values.iter().any(|value| match value {
                KeyValue::Int(v) if self.stored_as_i32 => {
                    i32::try_from(*v).is_ok_and(|v| filter.check(&v))
                }
                KeyValue::Int(v) => filter.check(v),
                KeyValue::Str(v) => filter.check(v.as_str()),
            });
            if hit {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use cityhub_catalog::ColumnStats;
    use serde_json::json;

    use super::*;

    fn keys() -> KeyColumns {
        KeyColumns {
            names: vec!["id".into()],
            converter: RowConverter::new(vec![SortField::new(DataType::Int64)])
                .expect("test value"),
        }
    }

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .expect("test value")
    }

    fn pairs(batches: &[RecordBatch]) -> Vec<(i64, String)> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("test value");
                let names = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("test value");
                (0..b.num_rows())
                    .map(|i| (ids.value(i), names.value(i).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_last_row_of_a_key_wins_across_batches() {
        let batches = vec![
            batch(&[1, 2, 1], &["a", "b", "c"]),
            batch(&[3, 2], &["d", "e"]),
        ];
        let kept = keys().last_wins(batches).expect("test value");
        assert_eq!(
            pairs(&kept),
            vec![(1, "c".into()), (3, "d".into()), (2, "e".into())]
        );
    }

    #[test]
    fn rows_of_replaced_keys_are_left_out() {
        let keys = keys();
        let mut new_keys = KeySet::new();
        let mut leading = Vec::new();
        keys.insert_keys(&[batch(&[2, 9], &["x", "y"])], &mut new_keys, &mut leading)
            .expect("test value");
        assert_eq!(leading, vec![KeyValue::Int(2), KeyValue::Int(9)]);
        let (kept, dropped) = keys
            .without(
                vec![batch(&[1, 2, 3], &["a", "b", "c"]), batch(&[9], &["z"])],
                &new_keys,
            )
            .expect("test value");
        assert_eq!(dropped, 2);
        assert_eq!(pairs(&kept), vec![(1, "a".into()), (3, "c".into())]);
    }

    fn file(min: Value, max: Value) -> DataFile {
        DataFile {
            path: "f".into(),
            rows: 10,
            bytes: 100,
            stats: BTreeMap::from([(
                "id".to_string(),
                ColumnStats {
                    min: Some(min),
                    max: Some(max),
                    null_count: Some(0),
                },
            )]),
        }
    }

    #[test]
    fn statistics_rule_out_files_that_hold_none_of_the_written_values() {
        // A write of new ids 100-120 that also corrects id 7.
        let leading = LeadingKeys {
            column: "id".into(),
            values: [7, 100, 110, 120].map(KeyValue::Int).to_vec(),
            stored_as_i32: false,
        };
        assert!(leading.may_hold(&file(json!(0), json!(10))), "holds 7");
        assert!(leading.may_hold(&file(json!(115), json!(500))), "holds 120");
        assert!(
            !leading.may_hold(&file(json!(8), json!(99))),
            "between the values"
        );
        assert!(
            !leading.may_hold(&file(json!(121), json!(500))),
            "above them"
        );
        // Large integers compare exactly, not as floating point.
        let big = LeadingKeys {
            column: "id".into(),
            values: vec![KeyValue::Int(9_007_199_254_740_993)],
            stored_as_i32: false,
        };
        let just_below = file(
            json!(9_007_199_254_740_992_i64),
            json!(9_007_199_254_740_992_i64),
        );
        assert!(!big.may_hold(&just_below));
        // Without statistics a file may hold anything.
        let mut bare = file(json!(0), json!(1));
        bare.stats.clear();
        assert!(leading.may_hold(&bare));
    }

    #[test]
    fn a_bloom_filter_rules_out_a_file_without_the_written_keys() {
        let batch = batch(&(0..100).collect::<Vec<_>>(), &["x"; 100]);
        let leading = LeadingKeys {
            column: "id".into(),
            values: Vec::new(),
            stored_as_i32: false,
        };
        let open = |bytes: Vec<u8>| open_file("test.parquet", Bytes::from(bytes)).expect("opens");
        let layout = cityhub_config::IngestConfig {
            row_group_rows: 1024,
            ..Default::default()
        };
        let with_bloom = open(
            crate::parquet_file::encode(std::slice::from_ref(&batch), &layout, Some("id"))
                .expect("test value"),
        );
        assert!(leading.bloom_may_hold(&with_bloom, &[KeyValue::Int(1000), KeyValue::Int(42)]));
        let absent: Vec<KeyValue> = (1_000..1_100).map(KeyValue::Int).collect();
        let ruled_out = absent
            .iter()
            .filter(|v| !leading.bloom_may_hold(&with_bloom, std::slice::from_ref(*v)))
            .count();
        assert!(
            ruled_out >= 90,
            "only {ruled_out} of 100 absent keys ruled out"
        );
        // A file without a bloom filter (written before keyed files had one) may hold any.
        let without =
            open(crate::parquet_file::encode(&[batch], &layout, None).expect("test value"));
        assert!(leading.bloom_may_hold(&without, &absent));
    }
}
