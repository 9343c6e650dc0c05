//! Compaction: merging a dataset's small files (every push and Kafka flush writes one) into
//! files of the target size, sorted by the dataset's sort key, as one `compact` snapshot.
//!
//! A compaction never blocks writers: it reads a snapshot, merges without any lock, and
//! takes the dataset's commit queue only for its commit. The catalog rebases that commit over
//! appends that landed meanwhile (it only removes files it read); if another change removed
//! one of those files (a delete, another compaction), the compaction throws its files away
//! and plans again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use cityhub_catalog::access::may_maintain;
use cityhub_catalog::{
    Action, AuditEvent, CatalogError, Commit, CommitOutcome, DataFile, Dataset, DatasetName,
    Operation, Outcome, Principal,
};
use cityhub_config::Config;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use serde_json::json;

use crate::{Ingest, IngestError};

/// How often a compaction that lost its files to another change is planned again.
const ATTEMPTS: u32 = 3;
/// Files read and decoded at once (each is small; the limit keeps memory bounded).
const READ_AHEAD: usize = 8;

/// What compaction aims for and when it is due (`storage.target_file_*`, `[compaction]`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPolicy {
    pub target_file_bytes: u64,
    pub target_file_rows: u64,
    pub small_file_bytes: u64,
    pub min_small_files: u64,
    pub min_small_bytes: u64,
    pub memory_bytes: u64,
    /// The share of its time a compaction works while writers are busy (`compaction.cpu_share`).
    pub cpu_share: f64,
}

impl CompactionPolicy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            target_file_bytes: config.storage.target_file_bytes,
            target_file_rows: config.storage.target_file_rows,
            small_file_bytes: config.compaction.small_file_bytes,
            min_small_files: config.compaction.min_small_files,
            min_small_bytes: config.compaction.min_small_bytes,
            memory_bytes: config.compaction.memory_bytes,
            cpu_share: config.compaction.cpu_share,
        }
    }

    fn is_small(&self, file: &DataFile) -> bool {
        (file.bytes as u64) < self.small_file_bytes
    }

    /// Whether the background job should compact a dataset with these live files: more
    /// than `min_small_files` small files, or more than `min_small_bytes` in them.
    pub fn is_due(&self, files: &[DataFile]) -> bool {
        let (count, bytes) = files
            .iter()
            .filter(|f| self.is_small(f))
            .fold((0u64, 0u64), |(n, b), f| (n + 1, b + f.bytes as u64));
        count > self.min_small_files || (count > 1 && bytes > self.min_small_bytes)
    }

    /// Groups of small files to merge, in commit order, each of at most the target bytes
    /// and rows; a group of one file is left alone (there is nothing to merge it with).
    fn groups<'a>(&self, files: &'a [DataFile]) -> Vec<Vec<&'a DataFile>> {
        let mut groups = Vec::new();
        let mut group: Vec<&DataFile> = Vec::new();
        let (mut bytes, mut rows) = (0u64, 0u64);
        for file in files.iter().filter(|f| self.is_small(f)) {
            let (b, r) = (file.bytes as u64, file.rows as u64);
            if !group.is_empty()
                && (bytes + b > self.target_file_bytes || rows + r > self.target_file_rows)
            {
                groups.push(std::mem::take(&mut group));
                (bytes, rows) = (0, 0);
            }
            group.push(file);
            bytes += b;
            rows += r;
        }
        groups.push(group);
        groups.retain(|g| g.len() > 1);
        groups
    }
}

/// What a compaction did (the answer of `POST /api/v1/datasets/{name}/compact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CompactionReport {
    /// The `compact` snapshot; `None` when there was nothing to merge.
    pub snapshot_id: Option<i64>,
    /// Live files of the dataset before and after.
    pub files_before: i64,
    pub files_after: i64,
    /// Rows moved into new files.
    pub rows: i64,
    pub files_merged: usize,
    pub files_written: usize,
    pub bytes_merged: i64,
    pub bytes_written: i64,
}

/// How a dataset's storage stands (`storage` in `GET /api/v1/datasets/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StorageHealth {
    pub files: usize,
    pub bytes: i64,
    /// Files under `compaction.small_file_bytes`: what the next compaction would merge.
    pub small_files: usize,
    pub small_bytes: i64,
    pub snapshots: usize,
    /// The oldest snapshot still readable by time travel.
    pub oldest_snapshot_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_compaction_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the background job would compact it at its next round.
    pub compaction_due: bool,
}

/// Progress of one compaction: files read of those planned.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

impl Ingest {
    /// Compacts `name` on behalf of `by` (admins and the owner's producers), or of the hub's
    /// own policy when `by` is `None`. Answers once the `compact` snapshot is committed.
    pub async fn compact(
        &self,
        by: Option<&Principal>,
        name: &DatasetName,
        policy: &CompactionPolicy,
        progress: Progress<'_>,
    ) -> Result<CompactionReport, IngestError> {
        let started = Instant::now();
        let dataset = self.maintained_dataset(by, name, "compacting").await?;
        let mut attempt = 1;
        let result = loop {
            match self.compact_once(&dataset.name, policy, progress).await {
                Err(IngestError::Catalog(CatalogError::FilesGone { paths, .. }))
                    if attempt < ATTEMPTS =>
                {
                    tracing::info!(dataset = %name, attempt, first_gone = %paths[0],
                        "A compaction lost files it read to another change; planning it again.");
                    attempt += 1;
                }
                other => break other,
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(IngestError::Catalog(CatalogError::FilesGone { .. })) => "lost",
            Err(_) => "failed",
        };
        metrics::counter!("cityhub_compactions_total", "outcome" => outcome).increment(1);
        metrics::histogram!("cityhub_compaction_seconds").record(started.elapsed().as_secs_f64());
        let event = match by {
            Some(principal) => AuditEvent::by(principal, Action::Compact, audit_outcome(&result)),
            None => AuditEvent::by_hub(Action::Compact, audit_outcome(&result)),
        };
        let detail = match &result {
            Ok(report) => json!(report),
            Err(err) => json!({"error": err.to_string()}),
        };
        self.audit
            .record(event.dataset(name.to_string()).detail(detail));
        if let Ok(report) = &result
            && report.snapshot_id.is_some()
        {
            metrics::counter!("cityhub_compaction_files_merged_total")
                .increment(report.files_merged as u64);
            metrics::counter!("cityhub_compaction_rows_total").increment(report.rows as u64);
            metrics::counter!("cityhub_compaction_bytes_written_total")
                .increment(report.bytes_written as u64);
            tracing::info!(dataset = %name, files_before = report.files_before,
                files_after = report.files_after, rows = report.rows,
                seconds = started.elapsed().as_secs_f64(),
                "Compacted a dataset's small files.");
        }
        result
    }

    /// Files, small files, snapshots and the last compaction of `dataset`.
    pub async fn storage_health(
        &self,
        dataset: &Dataset,
        policy: &CompactionPolicy,
    ) -> Result<StorageHealth, IngestError> {
        let files = self.live_files(dataset).await?;
        let log = self.catalog.snapshot_summary(dataset.id).await?;
        let small: Vec<&DataFile> = files.iter().filter(|f| policy.is_small(f)).collect();
        Ok(StorageHealth {
            files: files.len(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            small_files: small.len(),
            small_bytes: small.iter().map(|f| f.bytes).sum(),
            snapshots: log.snapshots,
            oldest_snapshot_at: log.oldest_at,
            last_compaction_at: log.last_compaction_at,
            compaction_due: policy.is_due(&files),
        })
    }

    /// Compacts every dataset that is due (the server's background job); one failure does
    /// not stop the round. Answers how many datasets were compacted.
    pub async fn compact_due(&self, policy: &CompactionPolicy) -> Result<usize, IngestError> {
        let mut compacted = 0;
        for dataset in self.catalog.list_datasets().await? {
            if !policy.is_due(&self.live_files(&dataset).await?) {
                continue;
            }
            match self.compact(None, &dataset.name, policy, &|_, _| {}).await {
                Ok(report) if report.snapshot_id.is_some() => compacted += 1,
                Ok(_) => {}
                Err(err) => tracing::warn!(dataset = %dataset.name, error = %err,
                    "Could not compact a dataset; the next round tries again."),
            }
        }
        Ok(compacted)
    }

    /// The files of `dataset`'s snapshot as read (not whatever is current by now), so that a
    /// rewrite removes exactly what it read.
    pub async fn live_files(&self, dataset: &Dataset) -> Result<Vec<DataFile>, IngestError> {
        Ok(match dataset.snapshot_id {
            Some(id) => self.catalog.snapshot_files(dataset.id, Some(id)).await?,
            None => Vec::new(),
        })
    }

    /// The dataset `by` may rewrite (`doing` names the change for the refusal).
    pub async fn maintained_dataset(
        &self,
        by: Option<&Principal>,
        name: &DatasetName,
        doing: &str,
    ) -> Result<Dataset, IngestError> {
        let dataset = self
            .catalog
            .dataset(name)
            .await?
            .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))?;
        if let Some(principal) = by {
            may_maintain(principal, &dataset, doing)
                .map_err(|refusal| IngestError::refused(&dataset, refusal))?;
        }
        Ok(dataset)
    }

    async fn compact_once(
        &self,
        name: &DatasetName,
        policy: &CompactionPolicy,
        progress: Progress<'_>,
    ) -> Result<CompactionReport, IngestError> {
        // Re-read: a retry must plan against the snapshot that beat it.
        let dataset = self
            .catalog
            .dataset(name)
            .await?
            .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))?;
        let files = self.live_files(&dataset).await?;
        let groups = policy.groups(&files);
        let mut report = CompactionReport {
            snapshot_id: None,
            files_before: files.len() as i64,
            files_after: files.len() as i64,
            rows: 0,
            files_merged: groups.iter().map(Vec::len).sum(),
            files_written: 0,
            bytes_merged: groups.iter().flatten().map(|f| f.bytes).sum(),
            bytes_written: 0,
        };
        if groups.is_empty() {
            return Ok(report);
        }
        let total = report.files_merged as u64;
        let mut read = 0u64;
        progress(read, total);
        let mut written = Vec::new();
        let mut pacer = Pacer::new(policy.cpu_share, self.foreground.clone());
        let merged = async {
            for group in &groups {
                let mut merger = Merger::new(&dataset, policy);
                let schema = merger.schema.clone();
                // Small files cost more in round trips than in bytes: read a few ahead.
                // Owned inputs: a stream of futures borrowing `self` would not be `Send`.
                let paths: Vec<String> = group.iter().map(|f| f.path.clone()).collect();
                let storage = self.storage.clone();
                let mut reads = futures::stream::iter(paths)
                    .map(move |path| read_file(storage.clone(), path, schema.clone()))
                    .buffered(READ_AHEAD);
                while let Some(batches) = reads.next().await {
                    merger.push(batches?);
                    if merger.is_full() {
                        written.extend(self.write_merged(&dataset, &mut merger).await?);
                    }
                    read += 1;
                    progress(read, total);
                    pacer.pace().await;
                }
                written.extend(self.write_merged(&dataset, &mut merger).await?);
            }
            Ok::<_, IngestError>(())
        }
        .await;
        let committed = match merged {
            Ok(()) => {
                let removed = groups.iter().flatten().map(|f| f.path.clone()).collect();
                self.commit_rewrite(&dataset, Operation::Compact, removed, written.clone())
                    .await
            }
            Err(err) => Err(err),
        };
        let snapshot = match committed {
            Ok(snapshot) => snapshot,
            Err(err) => {
                // Nothing was committed: the merged files are orphans, remove them now.
                for file in &written {
                    self.storage.delete(&file.path).await;
                }
                return Err(err);
            }
        };
        report.snapshot_id = Some(snapshot.id);
        report.files_after = snapshot.files;
        report.rows = written.iter().map(|f| f.rows).sum();
        report.files_written = written.len();
        report.bytes_written = written.iter().map(|f| f.bytes).sum();
        Ok(report)
    }

    /// Sorts what `merger` holds and writes it as files of at most the target rows.
    async fn write_merged(
        &self,
        dataset: &Dataset,
        merger: &mut Merger,
    ) -> Result<Vec<DataFile>, IngestError> {
        let Some(sorted) = merger.take_sorted()? else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        let step = merger.max_rows.max(1);
        let mut offset = 0;
        while offset < sorted.num_rows() {
            let length = step.min(sorted.num_rows() - offset);
            let part = sorted.slice(offset, length);
            files.push(
                self.write_file_labelled(dataset, vec![part], "compact")
                    .await?,
            );
            offset += length;
        }
        Ok(files)
    }

    /// Commits a rewrite of `dataset` read at its snapshot: `removed` files replaced by
    /// `added` (a compaction, a delete). The catalog rebases it over appends that landed
    /// since; if another change removed one of `removed`, it fails with `FilesGone`.
    pub async fn commit_rewrite(
        &self,
        dataset: &Dataset,
        operation: Operation,
        removed: Vec<String>,
        added: Vec<DataFile>,
    ) -> Result<cityhub_catalog::Snapshot, IngestError> {
        let commit = Commit {
            dataset_id: dataset.id,
            expected_parent: dataset.snapshot_id,
            operation,
            added,
            removed,
            idempotency: None,
            stream: None,
        };
        // Queue behind this process's other commits of the dataset, for the commit only.
        let queue = self.commit_queue(dataset.id);
        let mut last_seen = queue.lock().await;
        match self.catalog.commit(commit).await? {
            CommitOutcome::Committed(snapshot) => {
                *last_seen = Some(snapshot.id);
                self.versions.committed(dataset.id, snapshot.id);
                Ok(snapshot)
            }
            other => Err(IngestError::Internal(format!(
                "a {operation:?} commit was answered with {other:?}"
            ))),
        }
    }
}

fn audit_outcome<T>(result: &Result<T, IngestError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(IngestError::Forbidden(_) | IngestError::DatasetNotFound(_)) => Outcome::Refused,
        Err(_) => Outcome::Failed,
    }
}

/// Reads one Parquet file whole (it is small) into batches of `schema`.
pub(crate) async fn read_file(
    storage: crate::Storage,
    path: String,
    schema: Arc<Schema>,
) -> Result<Vec<RecordBatch>, IngestError> {
    let bytes = storage.get(&path).await?;
    tokio::task::spawn_blocking(move || decode_file(&path, bytes, &schema))
        .await
        .map_err(|err| IngestError::Internal(format!("decoding task failed: {err}")))?
}

/// Decodes a whole Parquet file and conforms its batches to `schema`.
pub(crate) fn decode_file(
    path: &str,
    bytes: Bytes,
    schema: &Arc<Schema>,
) -> Result<Vec<RecordBatch>, IngestError> {
    decode_opened(path, open_file(path, bytes)?, schema)
}

fn unreadable(path: &str, err: &dyn std::fmt::Display) -> IngestError {
    IngestError::Storage(format!("{path} is not a readable Parquet file: {err}"))
}

/// A Parquet file's footer parsed, ready to decode (or to look at first: its bloom filters).
pub(crate) fn open_file(
    path: &str,
    bytes: Bytes,
) -> Result<ParquetRecordBatchReaderBuilder<Bytes>, IngestError> {
    ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|err| unreadable(path, &err))
}

/// Decodes a file [`open_file`] opened and conforms its batches to `schema`.
pub(crate) fn decode_opened(
    path: &str,
    file: ParquetRecordBatchReaderBuilder<Bytes>,
    schema: &Arc<Schema>,
) -> Result<Vec<RecordBatch>, IngestError> {
    let reader = file
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|err| unreadable(path, &err))?;
    reader
        .map(|batch| {
            let batch = batch.map_err(|err| unreadable(path, &err))?;
            conform(&batch, schema).map_err(|err| unreadable(path, &err))
        })
        .collect()
}

/// A batch as `schema` wants it: columns by name, cast where the schema widened them, and
/// NULLs for columns added after the file was written.
pub fn conform(
    batch: &RecordBatch,
    schema: &Arc<Schema>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow::compute::cast(column, field.data_type()),
            None => Ok::<ArrayRef, _>(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Gives the CPU back to writers: while pushes or Kafka flushes are in flight, a compaction
/// works `share` of its time and sleeps for the rest (so on two cores, eight busy writers
/// keep most of their throughput); with no writer it never sleeps. Merging is background
/// work whose interval has room for it; a push is someone waiting.
struct Pacer {
    share: f64,
    foreground: Arc<AtomicUsize>,
    since: Instant,
}

impl Pacer {
    /// The longest single pause: a compaction keeps moving even under constant writes.
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    fn new(share: f64, foreground: Arc<AtomicUsize>) -> Self {
        Self {
            share: share.clamp(0.01, 1.0),
            foreground,
            since: Instant::now(),
        }
    }

    /// Called between units of work (a file read): pauses if writers are busy.
    async fn pace(&mut self) {
        if self.share < 1.0 && self.foreground.load(AtomicOrdering::Relaxed) > 0 {
            let worked = self.since.elapsed();
            let pause = worked.mul_f64((1.0 - self.share) / self.share);
            tokio::time::sleep(pause.min(Self::MAX_PAUSE)).await;
        }
        self.since = Instant::now();
    }
}

/// Rows of one output file being gathered: flushed when they would hold more memory than
/// the policy allows (a third of it: the sort copies the rows once more, and so does the
/// encoder's buffer).
struct Merger {
    schema: Arc<Schema>,
    order: Vec<usize>,
    batches: Vec<RecordBatch>,
    memory: usize,
    memory_limit: usize,
    max_rows: usize,
}

impl Merger {
    fn new(dataset: &Dataset, policy: &CompactionPolicy) -> Self {
        let schema = dataset.arrow_schema();
        let order = dataset
            .compaction_order()
            .iter()
            .filter_map(|name| schema.index_of(name).ok())
            .collect();
        Self {
            schema,
            order,
            batches: Vec::new(),
            memory: 0,
            memory_limit: (policy.memory_bytes / 3) as usize,
            max_rows: policy.target_file_rows as usize,
        }
    }

    fn push(&mut self, batches: Vec<RecordBatch>) {
        for batch in batches {
            self.memory += batch.get_array_memory_size();
            self.batches.push(batch);
        }
    }

    fn is_full(&self) -> bool {
        self.memory >= self.memory_limit
    }

    /// Everything held, as one batch sorted by the sort key; `None` when empty.
    fn take_sorted(&mut self) -> Result<Option<RecordBatch>, IngestError> {
        let batches = std::mem::take(&mut self.batches);
        self.memory = 0;
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(None);
        }
        let failed = |err: arrow::error::ArrowError| {
            IngestError::Internal(format!("merging files failed: {err}"))
        };
        let all = concat_batches(&self.schema, &batches).map_err(failed)?;
        drop(batches);
        if self.order.is_empty() {
            return Ok(Some(all));
        }
        let keys: Vec<SortColumn> = self
            .order
            .iter()
            .map(|&index| SortColumn {
                values: all.column(index).clone(),
                options: None,
            })
            .collect();
        let indices = lexsort_to_indices(&keys, None).map_err(failed)?;
        Ok(Some(take_record_batch(&all, &indices).map_err(failed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn compaction_pauses_only_while_writers_are_busy() {
        let foreground = Arc::new(AtomicUsize::new(0));
        let mut pacer = Pacer::new(0.25, foreground.clone());
        let work = Duration::from_millis(20);
        std::thread::sleep(work);
        let idle = Instant::now();
        pacer.pace().await;
        assert!(idle.elapsed() < work, "alone it does not pause");

        foreground.store(2, AtomicOrdering::Relaxed);
        std::thread::sleep(work);
        let busy = Instant::now();
        pacer.pace().await;
        // A quarter of the time working: at least three times the work spent paused (a
        // lower bound only: a slow machine pauses longer, never shorter).
        assert!(busy.elapsed() >= work * 3, "{:?}", busy.elapsed());
    }

    fn policy() -> CompactionPolicy {
        CompactionPolicy {
            target_file_bytes: 1000,
            target_file_rows: 100,
            small_file_bytes: 500,
            min_small_files: 3,
            min_small_bytes: 800,
            memory_bytes: 1 << 30,
            cpu_share: 1.0,
        }
    }

    fn file(path: &str, bytes: i64, rows: i64) -> DataFile {
        DataFile {
            path: path.into(),
            rows,
            bytes,
            stats: BTreeMap::new(),
        }
    }

    fn paths(groups: Vec<Vec<&DataFile>>) -> Vec<Vec<&str>> {
        groups
            .into_iter()
            .map(|g| g.into_iter().map(|f| f.path.as_str()).collect())
            .collect()
    }

    #[test]
    fn small_files_are_grouped_up_to_the_target_and_big_ones_are_left_alone() {
        let files = vec![
            file("a", 400, 10),
            file("big", 900, 10),
            file("b", 400, 10),
            file("c", 400, 10),
            file("d", 100, 10),
            file("lonely", 100, 90),
        ];
        // a+b = 800, adding c would pass 1000 bytes; c+d, then 20+90 rows pass the row cap.
        assert_eq!(
            paths(policy().groups(&files)),
            vec![vec!["a", "b"], vec!["c", "d"]]
        );
    }

    #[test]
    fn a_dataset_is_due_by_count_or_by_bytes_of_small_files() {
        let p = policy();
        let few: Vec<_> = (0..3).map(|i| file(&i.to_string(), 10, 1)).collect();
        assert!(!p.is_due(&few), "3 small files is not more than 3");
        let many: Vec<_> = (0..4).map(|i| file(&i.to_string(), 10, 1)).collect();
        assert!(p.is_due(&many));
        let heavy = vec![file("a", 450, 1), file("b", 450, 1)];
        assert!(p.is_due(&heavy), "900 small bytes is more than 800");
        let big = vec![file("a", 600, 1), file("b", 600, 1), file("c", 600, 1)];
        assert!(!p.is_due(&big), "files over small_file_bytes never count");
    }
}
