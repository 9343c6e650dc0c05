//! Bulk loads of local files (`cityhub import`): streamed, so files larger than memory load
//! in bounded memory, and committed as one snapshot at the end (all or nothing).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use cityhub_catalog::{
    Action, AuditEvent, Classification, Column, CommitOutcome, DatasetName, NewDataset, Outcome,
    Principal, Sharing,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::Ingest;
use crate::IngestError;
use crate::decode::{CsvDecoder, Decoded, Format, NdJsonDecoder, parquet_batches};
use crate::infer::infer_columns;
use crate::push::PushOutcome;

/// Rows decoded per chunk.
const CHUNK_ROWS: usize = 65_536;
/// Decoded chunks waiting to be written; bounds memory when storage is slower than parsing.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How far an import has come, for a progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportProgress {
    /// Input consumed so far, in bytes (for Parquet: in rows).
    pub done: u64,
    /// Total input size in the same unit.
    pub total: u64,
    pub rows: u64,
}

/// The result of a finished import.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub dataset: DatasetName,
    /// Whether the dataset was registered by this import (`--create`).
    pub created: bool,
    pub columns: Vec<Column>,
    pub rows: u64,
    pub files: usize,
    pub snapshot_id: i64,
}

/// Counts bytes as they are read, so progress can be shown without a second pass.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Ingest {
    /// Imports `path` into `name` for `by`, registering the dataset from the file's
    /// inferred schema when `create` is set and it does not exist yet. `progress` is called
    /// after each chunk. Audited, whether it worked or not.
    pub async fn import_file(
        &self,
        by: &Principal,
        name: &DatasetName,
        path: &Path,
        create: bool,
        progress: impl FnMut(ImportProgress) + Send,
    ) -> Result<ImportOutcome, IngestError> {
        let result = self
            .import_unaudited(by, name, path, create, progress)
            .await;
        let file = path.display().to_string();
        let event = match &result {
            Ok(outcome) => AuditEvent::by(by, Action::Import, Outcome::Ok).detail(json!({
                "rows": outcome.rows, "snapshot_id": outcome.snapshot_id, "file": file,
                "created": outcome.created,
            })),
            Err(err) => AuditEvent::by(by, Action::Import, Outcome::Failed)
                .detail(json!({"error": err.to_string(), "file": file})),
        };
        self.audit.record(event.dataset(name.to_string()));
        result
    }

    async fn import_unaudited(
        &self,
        by: &Principal,
        name: &DatasetName,
        path: &Path,
        create: bool,
        mut progress: impl FnMut(ImportProgress) + Send,
    ) -> Result<ImportOutcome, IngestError> {
        let format = Format::from_path(path).ok_or_else(|| IngestError::Invalid {
            field: "file".into(),
            message: format!(
                "{} has no known extension: use .csv, .ndjson (or .jsonl) or .parquet",
                path.display()
            ),
        })?;
        let metadata = std::fs::metadata(path)
            .map_err(|err| IngestError::Read(format!("cannot open {}: {err}", path.display())))?;
        let (dataset, created) = match self.catalog.dataset(name).await? {
            Some(dataset) => (dataset, false),
            None if create => {
                let columns = infer_columns(path, format)?;
                let new = NewDataset {
                    name: name.clone(),
                    description: format!(
                        "Imported from {}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ),
                    columns,
                    classification: Classification::General,
                    sharing: Sharing::Conditional,
                    resource_code: None,
                    update_cycle: None,
                    tags: vec!["imported".into()],
                    sort_key: vec![],
                    primary_key: vec![],
                    snapshot_retention_days: None,
                    row_retention: None,
                    region_column: None,
                    region_free: false,
                };
                (self.register_dataset(by, new).await?, true)
            }
            None => {
                return Err(IngestError::DatasetNotFound(format!(
                    "{name} (register it first, or pass --create to infer it from the file)"
                )));
            }
        };

        let columns: Arc<[Column]> = dataset.columns.clone().into();
        let report_limit = self.config.max_rejected_reported as usize;
        let consumed = Arc::new(AtomicU64::new(0));
        let (sender, mut receiver) =
            mpsc::channel::<Result<Decoded, IngestError>>(CHUNKS_IN_FLIGHT);
        let mut total = metadata.len();
        let decoder = {
            let path: PathBuf = path.to_path_buf();
            let consumed = consumed.clone();
            let columns = columns.clone();
            move || -> Result<(), IngestError> {
                let file = std::fs::File::open(&path).map_err(|err| {
                    IngestError::Read(format!("cannot open {}: {err}", path.display()))
                })?;
                let counted = CountingReader {
                    inner: file,
                    count: consumed.clone(),
                };
                let chunks: Box<dyn Iterator<Item = Result<Decoded, IngestError>>> = match format {
                    Format::Csv => Box::new(CsvDecoder::new(
                        BufReader::with_capacity(1 << 20, counted),
                        columns,
                        CHUNK_ROWS,
                        report_limit,
                    )?),
                    Format::NdJson | Format::JsonArray => Box::new(NdJsonDecoder::new(
                        BufReader::with_capacity(1 << 20, counted),
                        columns,
                        CHUNK_ROWS,
                        report_limit,
                    )),
                    Format::Parquet => {
                        let file = std::fs::File::open(&path).map_err(|err| {
                            IngestError::Read(format!("cannot open {}: {err}", path.display()))
                        })?;
                        Box::new(parquet_batches(file, columns, CHUNK_ROWS, report_limit)?)
                    }
                    Format::ArrowIpc => {
                        return Err(IngestError::Invalid {
                            field: "file".into(),
                            message: "imports read CSV, NDJSON or Parquet files".into(),
                        });
                    }
                };
                for chunk in chunks {
                    let stop = chunk.as_ref().map_or(true, |c| c.rows_rejected > 0);
                    // A closed channel means the importer gave up: stop reading.
                    if sender.blocking_send(chunk).is_err() || stop {
                        break;
                    }
                }
                Ok(())
            }
        };
        let decoding = tokio::task::spawn_blocking(decoder);

        let mut written = Vec::new();
        let result = async {
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0u64;
            let mut rows = 0u64;
            while let Some(chunk) = receiver.recv().await {
                let chunk = chunk?;
                if chunk.rows_rejected > 0 {
                    return Err(IngestError::Rejected(Box::new(PushOutcome {
                        rows_accepted: 0,
                        rows_rejected: chunk.rows_rejected,
                        snapshot_id: None,
                        rejected: chunk.rejected,
                        replayed: false,
                    })));
                }
                let chunk_rows = chunk.batch.num_rows() as u64;
                rows += chunk_rows;
                pending_rows += chunk_rows;
                pending.push(chunk.batch);
                if pending_rows >= self.config.file_rows {
                    written.push(
                        self.write_file(&dataset, std::mem::take(&mut pending))
                            .await?,
                    );
                    pending_rows = 0;
                }
                let done = if format == Format::Parquet {
                    total = total.max(rows);
                    rows
                } else {
                    consumed.load(Ordering::Relaxed)
                };
                progress(ImportProgress { done, total, rows });
            }
            if pending_rows > 0 {
                written.push(self.write_file(&dataset, pending).await?);
            }
            Ok(rows)
        }
        .await;
        drop(receiver);
        let decoded = decoding
            .await
            .map_err(|err| IngestError::Internal(format!("decoding task failed: {err}")))?;
        let outcome = match (result, decoded) {
            (Ok(0), Ok(())) => Err(IngestError::EmptyBody),
            (Ok(rows), Ok(())) => {
                let files = written.len();
                self.commit_append(&dataset, written, None)
                    .await
                    .map(|outcome| (rows, files, outcome))
            }
            (Err(err), _) | (Ok(_), Err(err)) => {
                for file in &written {
                    self.storage.delete(&file.path).await;
                }
                Err(err)
            }
        };
        let (rows, files, outcome) = match outcome {
            Ok(done) => done,
            Err(err) => {
                // A dataset this import registered must not outlive the failed import.
                if created {
                    self.catalog.drop_unused_dataset(dataset.id).await?;
                }
                return Err(err);
            }
        };
        match outcome {
            CommitOutcome::Committed(snapshot) => Ok(ImportOutcome {
                dataset: dataset.name.clone(),
                created,
                columns: dataset.columns.clone(),
                rows,
                files,
                snapshot_id: snapshot.id,
            }),
            CommitOutcome::Replayed(_) | CommitOutcome::Progressed => Err(IngestError::Internal(
                "an import commit with files was answered without a snapshot".into(),
            )),
        }
    }
}
