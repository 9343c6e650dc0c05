//! Writing Parquet files and committing them as a new snapshot of a dataset: the one
//! commit path of every write (push, import, Kafka flush).

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use cityhub_catalog::{
    CatalogError, Commit, CommitOutcome, DataFile, Dataset, IdempotencyRecord, Operation, Snapshot,
    StreamProgress,
};
use rand::Rng;

use crate::parquet_file::{column_stats, encode};
use crate::upsert::KeyColumns;
use crate::{Ingest, IngestError};

impl Ingest {
    /// A new object key for a file of `dataset`:
    /// `datasets/{dataset_id}/{yyyy-mm-dd}/{snapshot_seq}-{uuid}.parquet`. The sequence is
    /// the one the file is expected to land in; the UUID keeps keys unique when a race
    /// moves it to a later snapshot.
    pub fn new_file_key(dataset: &Dataset) -> String {
        Self::new_file_key_labelled(dataset, "")
    }

    /// Like [`Self::new_file_key`], with a label saying where the rows came from
    /// (`{seq}-{label}-{uuid}.parquet`), e.g. a Kafka topic, partition and offset range.
    pub fn new_file_key_labelled(dataset: &Dataset, label: &str) -> String {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("{label}-")
        };
        format!(
            "datasets/{}/{}/{:08}-{label}{}.parquet",
            dataset.id,
            chrono::Utc::now().format("%Y-%m-%d"),
            dataset.snapshot_seq + 1,
            uuid::Uuid::now_v7()
        )
    }

    /// Encodes `batches` as one Parquet file, writes it durably under a new key and returns
    /// its catalog entry (not yet committed).
    pub async fn write_file(
        &self,
        dataset: &Dataset,
        batches: Vec<RecordBatch>,
    ) -> Result<DataFile, IngestError> {
        self.write_file_labelled(dataset, batches, "").await
    }

    /// [`Self::write_file`] under a key carrying `label` (see [`Self::new_file_key_labelled`]).
    pub async fn write_file_labelled(
        &self,
        dataset: &Dataset,
        batches: Vec<RecordBatch>,
        label: &str,
    ) -> Result<DataFile, IngestError> {
        let layout = self.config.clone();
        let keys = KeyColumns::of(dataset)?;
        let (bytes, stats, rows) = tokio::task::spawn_blocking(move || {
            // A keyed dataset stores one row per key: the last of a write wins.
            let (batches, bloom) = match &keys {
                Some(keys) => (keys.last_wins(batches)?, Some(keys.leading())),
                None => (batches, None),
            };
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let bytes = encode(&batches, &layout, bloom)?;
            Ok::<_, IngestError>((bytes, column_stats(&batches), rows))
        })
        .await
        .map_err(|err| IngestError::Internal(format!("encoding task failed: {err}")))??;
        let key = Self::new_file_key_labelled(dataset, label);
        let size = bytes.len() as i64;
        self.storage.put_new(&key, bytes).await?;
        Ok(DataFile {
            path: key,
            rows: rows as i64,
            bytes: size,
            stats,
        })
    }

    /// Commits `files` as an append to `dataset` (an upsert, when it has a primary key: see
    /// [`crate::upsert`]). A commit that lost the race to another
    /// writer is rebased onto the new parent and retried: appends commute, so nothing needs
    /// rewriting. If the commit finally fails, the files are removed (best effort: a file
    /// left behind is an orphan that no snapshot names, never visible data).
    pub async fn commit_append(
        &self,
        dataset: &Dataset,
        files: Vec<DataFile>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<CommitOutcome, IngestError> {
        self.commit_files(dataset, files, idempotency, None).await
    }

    /// Commits `files` (possibly none) of a stream together with its progress: the
    /// partitions' next offsets and the dead letters. A lost race with another writer is
    /// rebased and retried like an append; an offset conflict (another worker took the
    /// partition over) is not, and removes the files.
    pub async fn commit_stream(
        &self,
        dataset: &Dataset,
        files: Vec<DataFile>,
        progress: StreamProgress,
    ) -> Result<CommitOutcome, IngestError> {
        self.commit_files(dataset, files, None, Some(progress))
            .await
    }

    async fn commit_files(
        &self,
        dataset: &Dataset,
        files: Vec<DataFile>,
        idempotency: Option<IdempotencyRecord>,
        stream: Option<StreamProgress>,
    ) -> Result<CommitOutcome, IngestError> {
        if let Some(keys) = KeyColumns::of(dataset)? {
            return self
                .commit_keyed(dataset, keys, files, idempotency, stream)
                .await;
        }
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let result = self
            .commit_with_retries(dataset, files, idempotency, stream)
            .await;
        self.remove_unless_committed(&result, &paths).await;
        result
    }

    /// Removes the files at `paths` unless `result` committed them: a file no snapshot names
    /// would be an orphan until garbage collection (best effort: if this fails, it is one).
    pub(crate) async fn remove_unless_committed(
        &self,
        result: &Result<CommitOutcome, IngestError>,
        paths: &[String],
    ) {
        if !matches!(result, Ok(CommitOutcome::Committed(_))) {
            for path in paths {
                self.storage.delete(path).await;
            }
        }
    }

    async fn commit_with_retries(
        &self,
        dataset: &Dataset,
        files: Vec<DataFile>,
        idempotency: Option<IdempotencyRecord>,
        stream: Option<StreamProgress>,
    ) -> Result<CommitOutcome, IngestError> {
        let started = Instant::now();
        let queue = self.commit_queue(dataset.id);
        let mut last_seen = queue.lock().await;
        let mut parent = starting_parent(*last_seen, dataset);
        let max_attempts = self.config.commit_retries.max(1);
        for attempt in 1..=max_attempts {
            let commit = Commit {
                dataset_id: dataset.id,
                expected_parent: parent,
                operation: Operation::Append,
                added: files.clone(),
                removed: Vec::new(),
                idempotency: idempotency.clone(),
                stream: stream.clone(),
            };
            match self.catalog.commit(commit).await {
                Ok(outcome) => {
                    if let CommitOutcome::Committed(snapshot) = &outcome {
                        *last_seen = Some(snapshot.id);
                        self.versions.committed(dataset.id, snapshot.id);
                    }
                    metrics::histogram!("cityhub_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if attempt > 1 {
                        metrics::counter!("cityhub_commit_retries_total")
                            .increment(u64::from(attempt - 1));
                    }
                    return Ok(outcome);
                }
                Err(CatalogError::Conflict { actual, .. }) => {
                    // Another process committed: rebase onto its snapshot (and let the
                    // caches know before their poller would).
                    parent = self.lost_race(dataset.id, actual, attempt).await;
                    *last_seen = actual;
                }
                Err(CatalogError::IdempotencyMismatch { key }) => {
                    return Err(IngestError::IdempotencyMismatch(key));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(IngestError::Contention {
            attempts: max_attempts,
        })
    }

    /// Commits appends to several datasets as one: every file lands, or none does (a
    /// GA/T 1400 record and its images). Lost races are rebased and retried per dataset,
    /// as [`Self::commit_append`] does; the datasets' commit queues are taken in id order,
    /// so two such writers never wait on each other in a circle. Keyed datasets are not
    /// accepted here (an upsert rewrites files). On failure the files are removed.
    /// Answers one snapshot per dataset (tell them apart by `dataset_id`).
    pub async fn commit_appends_together(
        &self,
        parts: Vec<(&Dataset, Vec<DataFile>)>,
    ) -> Result<Vec<Snapshot>, IngestError> {
        let paths: Vec<String> = parts
            .iter()
            .flat_map(|(_, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        let result = self.commit_together_with_retries(parts).await;
        if result.is_err() {
            for path in &paths {
                self.storage.delete(path).await;
            }
        }
        result
    }

    async fn commit_together_with_retries(
        &self,
        mut parts: Vec<(&Dataset, Vec<DataFile>)>,
    ) -> Result<Vec<Snapshot>, IngestError> {
        for (dataset, _) in &parts {
            if KeyColumns::of(dataset)?.is_some() {
                return Err(IngestError::Internal(format!(
                    "{} has a primary key; keyed datasets are committed alone",
                    dataset.name
                )));
            }
        }
        let started = Instant::now();
        parts.sort_by_key(|(dataset, _)| dataset.id);
        let queues: Vec<_> = parts
            .iter()
            .map(|(dataset, _)| self.commit_queue(dataset.id))
            .collect();
        let mut guards = Vec::with_capacity(queues.len());
        for queue in &queues {
            guards.push(queue.lock().await);
        }
        let mut parents: Vec<Option<i64>> = parts
            .iter()
            .zip(&guards)
            .map(|((dataset, _), seen)| starting_parent(**seen, dataset))
            .collect();
        let max_attempts = self.config.commit_retries.max(1);
        for attempt in 1..=max_attempts {
            let commits = parts
                .iter()
                .zip(&parents)
                .map(|((dataset, files), parent)| Commit {
                    dataset_id: dataset.id,
                    expected_parent: *parent,
                    operation: Operation::Append,
                    added: files.clone(),
                    removed: Vec::new(),
                    idempotency: None,
                    stream: None,
                })
                .collect();
            match self.catalog.commit_together(commits).await {
                Ok(outcomes) => {
                    let mut snapshots = Vec::with_capacity(outcomes.len());
                    for (outcome, seen) in outcomes.into_iter().zip(guards.iter_mut()) {
                        let CommitOutcome::Committed(snapshot) = outcome else {
                            return Err(IngestError::Internal(
                                "an append made together was answered without a snapshot".into(),
                            ));
                        };
                        **seen = Some(snapshot.id);
                        self.versions.committed(snapshot.dataset_id, snapshot.id);
                        snapshots.push(snapshot);
                    }
                    metrics::histogram!("cityhub_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return Ok(snapshots);
                }
                Err(CatalogError::Conflict {
                    dataset_id, actual, ..
                }) => {
                    let Some(at) = parts.iter().position(|(d, _)| d.id == dataset_id) else {
                        return Err(IngestError::Internal(format!(
                            "a conflict on dataset {dataset_id}, which was not committed"
                        )));
                    };
                    parents[at] = self.lost_race(dataset_id, actual, attempt).await;
                    *guards[at] = actual;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(IngestError::Contention {
            attempts: max_attempts,
        })
    }

    /// After commit `attempt` lost to another writer's snapshot `actual`: tells the caches
    /// of it (before their poller would) and backs off with jitter once it is clear that
    /// many writers contend, so that they stop colliding in lock-step. Returns the new parent.
    pub(crate) async fn lost_race(
        &self,
        dataset_id: i64,
        actual: Option<i64>,
        attempt: u32,
    ) -> Option<i64> {
        if let Some(actual) = actual {
            self.versions.committed(dataset_id, actual);
        }
        if attempt > 3 {
            let ceiling = u64::from(attempt.min(50));
            let pause = rand::rng().random_range(0..=ceiling);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        actual
    }
}

/// The parent a commit of `dataset` first tries: the newer of the snapshot the caller read
/// and the last one this process committed (`last_seen`, from the dataset's commit queue).
pub(crate) fn starting_parent(last_seen: Option<i64>, dataset: &Dataset) -> Option<i64> {
    match (last_seen, dataset.snapshot_id) {
        (Some(seen), Some(read)) => Some(seen.max(read)),
        (seen, read) => seen.or(read),
    }
}
