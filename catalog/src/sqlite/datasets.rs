//! Departments, principals, datasets, snapshots and commits in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::*;
use crate::feeds::{FeedState, FeedWorkerReport};
use crate::store::DatasetStore;

fn department_from_row(row: &Row<'_>) -> rusqlite::Result<Department> {
    Ok(Department {
        code: row.get(0)?,
        name: row.get(1)?,
        created_at: parse_time(row.get(2)?)?,
    })
}

pub(crate) const PRINCIPAL_COLUMNS: &str =
    "id, name, department, role, created_at, expires_at, revoked_at, rate_limit_per_second, region";

pub(crate) fn principal_from_row(row: &Row<'_>) -> rusqlite::Result<Principal> {
    Ok(Principal {
        id: row.get(0)?,
        name: row.get(1)?,
        department: row.get(2)?,
        role: parse_text(row.get(3)?)?,
        created_at: parse_time(row.get(4)?)?,
        expires_at: parse_optional_time(row.get(5)?)?,
        revoked_at: parse_optional_time(row.get(6)?)?,
        rate_limit_per_second: row.get(7)?,
        region: row.get(8)?,
    })
}

pub(super) const DATASET_COLUMNS: &str = "d.id, d.department, d.name, d.description, d.classification, \
     d.sharing, d.resource_code, d.update_cycle, d.tags, d.schema_version, d.snapshot_id, \
     d.snapshot_seq, d.rows, d.bytes, d.files, d.created_at, d.updated_at, s.columns, d.sort_key, \
     d.snapshot_retention_days, d.last_gc_at, d.row_retention, d.primary_key, d.region_column, \
     d.region_free";

pub(super) const DATASET_FROM: &str = "datasets d JOIN schema_versions s \
     ON s.dataset_id = d.id AND s.version = d.schema_version";

pub(super) fn dataset_from_row(row: &Row<'_>) -> rusqlite::Result<Dataset> {
    let department: String = row.get(1)?;
    let table: String = row.get(2)?;
    let name = DatasetName::parse(&format!("{department}.{table}")).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(err))
    })?;
    Ok(Dataset {
        id: row.get(0)?,
        name,
        owner: department,
        description: row.get(3)?,
        classification: parse_text(row.get(4)?)?,
        sharing: parse_text(row.get(5)?)?,
        resource_code: row.get(6)?,
        update_cycle: row.get(7)?,
        tags: parse_json(row.get(8)?)?,
        schema_version: row.get(9)?,
        snapshot_id: row.get(10)?,
        snapshot_seq: row.get(11)?,
        rows: row.get(12)?,
        bytes: row.get(13)?,
        files: row.get(14)?,
        created_at: parse_time(row.get(15)?)?,
        updated_at: parse_time(row.get(16)?)?,
        columns: parse_json(row.get(17)?)?,
        sort_key: parse_json(row.get(18)?)?,
        snapshot_retention_days: row.get(19)?,
        last_gc_at: parse_optional_time(row.get(20)?)?,
        row_retention: row
            .get::<_, Option<String>>(21)?
            .map(parse_json)
            .transpose()?,
        primary_key: parse_json(row.get(22)?)?,
        region_column: row.get(23)?,
        region_free: row.get(24)?,
    })
}

const SNAPSHOT_COLUMNS: &str = "id, dataset_id, seq, parent_id, created_at, operation, \
     schema_version, added_rows, added_bytes, added_files, rows, bytes, files";

fn snapshot_from_row(row: &Row<'_>) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        id: row.get(0)?,
        dataset_id: row.get(1)?,
        seq: row.get(2)?,
        parent_id: row.get(3)?,
        created_at: parse_time(row.get(4)?)?,
        operation: parse_text::<Operation>(row.get(5)?)?,
        schema_version: row.get(6)?,
        added_rows: row.get(7)?,
        added_bytes: row.get(8)?,
        added_files: row.get(9)?,
        rows: row.get(10)?,
        bytes: row.get(11)?,
        files: row.get(12)?,
    })
}

fn idempotency_from_row(row: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        key: row.get(0)?,
        request_hash: row.get(1)?,
        response: row.get(2)?,
        snapshot_id: row.get(3)?,
    })
}

fn load_idempotency(
    conn: &Connection,
    dataset_id: i64,
    key: &str,
) -> rusqlite::Result<Option<IdempotencyRecord>> {
    conn.query_row(
        "SELECT key, request_hash, response, snapshot_id FROM idempotency_keys \
         WHERE dataset_id = ?1 AND key = ?2",
        params![dataset_id, key],
        idempotency_from_row,
    )
    .optional()
}

#[async_trait]
impl DatasetStore for SqliteStore {
    async fn create_department(&self, code: &str, name: &str) -> Result<Department> {
        let department = Department::new(code, name, now())?;
        let row = department.clone();
        self.write(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO departments (code, name, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (code) DO NOTHING",
                params![row.code, row.name, time_text(row.created_at)],
            )?;
            if inserted == 0 {
                return Err(CatalogError::AlreadyExists {
                    what: "department",
                    name: row.code,
                });
            }
            Ok(())
        })
        .await?;
        Ok(department)
    }

    async fn list_departments(&self) -> Result<Vec<Department>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT code, name, created_at FROM departments ORDER BY code")?;
            let rows = stmt.query_map([], department_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn department(&self, code: &str) -> Result<Option<Department>> {
        let code = code.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT code, name, created_at FROM departments WHERE code = ?1",
                    [code],
                    department_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn create_principal(&self, new: NewPrincipal, token_hash: &str) -> Result<Principal> {
        let token_hash = token_hash.to_string();
        self.write(move |conn| {
            let exists: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM departments WHERE code = ?1)",
                [&new.department],
                |row| row.get(0),
            )?;
            if !exists {
                return Err(CatalogError::NotFound {
                    what: "department",
                    name: new.department,
                });
            }
            let created_at = now();
            conn.execute(
                "INSERT INTO principals (name, department, role, token_hash, created_at, \
                 expires_at, rate_limit_per_second, region) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.department,
                    new.role.as_str(),
                    token_hash,
                    time_text(created_at),
                    new.expires_at.map(time_text),
                    new.rate_limit_per_second,
                    new.region
                ],
            )?;
            Ok(Principal {
                id: conn.last_insert_rowid(),
                name: new.name,
                department: new.department,
                role: new.role,
                created_at,
                expires_at: new.expires_at,
                revoked_at: None,
                rate_limit_per_second: new.rate_limit_per_second,
                region: new.region,
            })
        })
        .await
    }

    async fn principal_by_token_hash(&self, token_hash: &str) -> Result<Option<Principal>> {
        let token_hash = token_hash.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE token_hash = ?1"
            ))?;
            Ok(stmt
                .query_row([token_hash], principal_from_row)
                .optional()?)
        })
        .await
    }

    async fn create_dataset(&self, new: NewDataset) -> Result<Dataset> {
        validate_new_dataset(&new)?;
        let name = new.name.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let department_exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM departments WHERE code = ?1)",
                [new.name.department()],
                |row| row.get(0),
            )?;
            if !department_exists {
                return Err(CatalogError::NotFound {
                    what: "department",
                    name: new.name.department().to_string(),
                });
            }
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM datasets WHERE department = ?1 AND name = ?2)",
                params![new.name.department(), new.name.table()],
                |row| row.get(0),
            )?;
            if taken {
                return Err(CatalogError::AlreadyExists {
                    what: "dataset",
                    name: new.name.to_string(),
                });
            }
            let created = time_text(now());
            tx.execute(
                "INSERT INTO datasets (department, name, description, classification, sharing, \
                 resource_code, update_cycle, tags, schema_version, created_at, updated_at, \
                 sort_key, snapshot_retention_days, row_retention, primary_key, region_column, \
                 region_free) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    new.name.department(),
                    new.name.table(),
                    new.description,
                    new.classification.as_str(),
                    new.sharing.as_str(),
                    new.resource_code,
                    new.update_cycle,
                    serde_json::to_string(&new.tags)?,
                    created,
                    serde_json::to_string(&new.sort_key)?,
                    new.snapshot_retention_days,
                    new.row_retention
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()?,
                    serde_json::to_string(&new.primary_key)?,
                    new.region_column,
                    new.region_free
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO schema_versions (dataset_id, version, columns, created_at) \
                 VALUES (?1, 1, ?2, ?3)",
                params![id, serde_json::to_string(&new.columns)?, created],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.dataset(&name).await?.ok_or_else(|| {
            CatalogError::Storage("a dataset vanished right after it was created".into())
        })
    }

    async fn dataset(&self, name: &DatasetName) -> Result<Option<Dataset>> {
        let name = name.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} \
                 WHERE d.department = ?1 AND d.name = ?2"
            ))?;
            Ok(stmt
                .query_row(params![name.department(), name.table()], dataset_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} ORDER BY d.department, d.name"
            ))?;
            let rows = stmt.query_map([], dataset_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn schema_versions(&self, dataset_id: i64) -> Result<Vec<SchemaVersion>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT version, columns, created_at FROM schema_versions \
                 WHERE dataset_id = ?1 ORDER BY version",
            )?;
            let rows = stmt.query_map([dataset_id], |row| {
                Ok(SchemaVersion {
                    version: row.get(0)?,
                    columns: parse_json(row.get(1)?)?,
                    created_at: parse_time(row.get(2)?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn drop_unused_dataset(&self, dataset_id: i64) -> Result<bool> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let snapshot: Option<Option<i64>> = tx
                .query_row(
                    "SELECT snapshot_id FROM datasets WHERE id = ?1",
                    [dataset_id],
                    |row| row.get(0),
                )
                .optional()?;
            match snapshot {
                None => Ok(false),
                Some(Some(_)) => Err(CatalogError::invalid(
                    "dataset",
                    "the dataset has committed data and cannot be dropped this way",
                )),
                Some(None) => {
                    tx.execute(
                        "DELETE FROM idempotency_keys WHERE dataset_id = ?1",
                        [dataset_id],
                    )?;
                    tx.execute(
                        "DELETE FROM schema_versions WHERE dataset_id = ?1",
                        [dataset_id],
                    )?;
                    tx.execute("DELETE FROM datasets WHERE id = ?1", [dataset_id])?;
                    tx.commit()?;
                    Ok(true)
                }
            }
        })
        .await
    }

    async fn snapshots(&self, dataset_id: i64) -> Result<Vec<Snapshot>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = ?1 ORDER BY seq DESC"
            ))?;
            let rows = stmt.query_map([dataset_id], snapshot_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn snapshot_as_of(
        &self,
        dataset_id: i64,
        at: DateTime<Utc>,
    ) -> Result<(Option<Snapshot>, Option<Snapshot>)> {
        // Times are stored as fixed-width RFC 3339 UTC text, so text order is time order.
        let at = time_text(at);
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            // `snapshots_by_time` finds it without walking the log back from the newest.
            let current = tx
                .prepare_cached(&format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = ?1 \
                     AND created_at <= ?2 ORDER BY created_at DESC, seq DESC LIMIT 1"
                ))?
                .query_row(params![dataset_id, at], snapshot_from_row)
                .optional()?;
            if current.is_some() {
                return Ok((current, None));
            }
            let oldest = tx
                .prepare_cached(&format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = ?1 \
                     ORDER BY seq LIMIT 1"
                ))?
                .query_row([dataset_id], snapshot_from_row)
                .optional()?;
            Ok((current, oldest))
        })
        .await
    }

    async fn snapshot_summary(&self, dataset_id: i64) -> Result<SnapshotSummary> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT count(*), min(created_at), \
                     max(CASE WHEN operation = 'compact' THEN created_at END) \
                     FROM snapshots WHERE dataset_id = ?1",
                )?
                .query_row([dataset_id], |row| {
                    Ok(SnapshotSummary {
                        snapshots: row.get::<_, i64>(0)? as usize,
                        oldest_at: parse_optional_time(row.get(1)?)?,
                        last_compaction_at: parse_optional_time(row.get(2)?)?,
                    })
                })?)
        })
        .await
    }

    async fn change_dataset(&self, dataset_id: i64, change: DatasetChange) -> Result<Dataset> {
        self.write(move |conn| lifecycle::change(conn, dataset_id, change))
            .await
    }

    async fn expire_snapshots(
        &self,
        dataset_id: i64,
        replaced_before: DateTime<Utc>,
        dry_run: bool,
        at: DateTime<Utc>,
    ) -> Result<ExpiredSnapshots> {
        self.write(move |conn| lifecycle::expire(conn, dataset_id, replaced_before, dry_run, at))
            .await
    }

    async fn file_paths(&self, dataset_id: i64) -> Result<Vec<String>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT path FROM files WHERE dataset_id = ?1")?;
            let rows = stmt.query_map([dataset_id], |row| row.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn snapshot(&self, dataset_id: i64, snapshot_id: i64) -> Result<Option<Snapshot>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = ?1 AND id = ?2"
                ))?
                .query_row(params![dataset_id, snapshot_id], snapshot_from_row)
                .optional()?)
        })
        .await
    }

    async fn snapshot_files(
        &self,
        dataset_id: i64,
        snapshot_id: Option<i64>,
    ) -> Result<Vec<DataFile>> {
        self.read(move |conn| {
            // Resolve the snapshot to its sequence number inside one read transaction, so
            // the file list belongs to exactly that snapshot even while writers commit.
            let tx = conn.unchecked_transaction()?;
            let seq: Option<i64> = match snapshot_id {
                Some(id) => tx
                    .query_row(
                        "SELECT seq FROM snapshots WHERE id = ?1 AND dataset_id = ?2",
                        params![id, dataset_id],
                        |row| row.get(0),
                    )
                    .optional()?,
                None => tx
                    .query_row(
                        "SELECT snapshot_seq FROM datasets WHERE id = ?1",
                        [dataset_id],
                        |row| row.get(0),
                    )
                    .optional()?,
            };
            let Some(seq) = seq else {
                return Err(CatalogError::NotFound {
                    what: "snapshot",
                    name: format!("{snapshot_id:?} of dataset {dataset_id}"),
                });
            };
            let mut stmt = tx.prepare_cached(
                "SELECT path, rows, bytes, stats FROM files WHERE dataset_id = ?1 \
                 AND added_seq <= ?2 AND (removed_seq IS NULL OR removed_seq > ?2) \
                 ORDER BY added_seq, path",
            )?;
            let rows = stmt.query_map(params![dataset_id, seq], |row| {
                Ok(DataFile {
                    path: row.get(0)?,
                    rows: row.get(1)?,
                    bytes: row.get(2)?,
                    stats: parse_json(row.get(3)?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        self.write(move |conn| commit_in(conn, commit)).await
    }

    async fn commit_together(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>> {
        crate::model::check_together(&commits)?;
        self.write(move |conn| commit_together_in(conn, commits))
            .await
    }

    async fn idempotency_record(
        &self,
        dataset_id: i64,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let key = key.to_string();
        self.read(move |conn| Ok(load_idempotency(conn, dataset_id, &key)?))
            .await
    }

    async fn stream_offsets(&self, dataset_id: i64) -> Result<Vec<StreamOffset>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT topic, partition, next_offset, snapshot_id, updated_at \
                 FROM stream_offsets WHERE dataset_id = ?1 ORDER BY topic, partition",
            )?;
            let rows = stmt.query_map([dataset_id], |row| {
                Ok(StreamOffset {
                    topic: row.get(0)?,
                    partition: row.get(1)?,
                    next_offset: row.get(2)?,
                    snapshot_id: row.get(3)?,
                    updated_at: parse_time(row.get(4)?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn rejected_records(
        &self,
        dataset_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.id, d.department || '.' || d.name, r.topic, r.partition, r.\"offset\", \
                 r.key, r.payload, r.error, r.at FROM rejected_records r \
                 JOIN datasets d ON d.id = r.dataset_id \
                 WHERE r.dataset_id = ?1 AND r.id > ?2 ORDER BY r.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![dataset_id, after_id, limit as i64], |row| {
                rejection_from_row(row)
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn take_job_lease(
        &self,
        job: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let (job, holder) = (job.to_string(), holder.to_string());
        self.write(move |conn| {
            // Times are fixed-width RFC 3339 UTC text: text order is time order.
            let taken = conn.execute(
                "INSERT INTO job_leases (job, holder, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= ?4",
                params![job, holder, time_text(until), time_text(now)],
            )?;
            Ok(taken == 1)
        })
        .await
    }

    async fn current_snapshots(&self) -> Result<Vec<(i64, Option<i64>)>> {
        self.read(endpoints::current_snapshots).await
    }

    async fn replace_feed_reports(
        &self,
        node: &str,
        reports: Vec<FeedWorkerReport>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let node = node.to_string();
        let mut rows = Vec::with_capacity(reports.len());
        for report in reports {
            let partitions = serde_json::to_string(&report.partitions)?;
            rows.push((report, partitions));
        }
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM feed_workers WHERE node = ?1", params![node])?;
            tx.execute(
                "DELETE FROM feed_workers WHERE reported_at < ?1",
                params![time_text(now - crate::feeds::FORGET_AFTER)],
            )?;
            for (report, partitions) in rows {
                // Upsert, not insert: two processes misconfigured onto one address and data
                // folder report under one node name, and the last word should win rather
                // than fail every round.
                tx.execute(
                    "INSERT OR REPLACE INTO feed_workers (worker, node, dataset, topic, \
                     group_id, state, state_since, broker_unreachable_since, last_error, \
                     last_error_at, partitions, reported_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        report.worker,
                        node,
                        report.dataset,
                        report.topic,
                        report.group_id,
                        report.state.as_str(),
                        time_text(report.state_since),
                        report.broker_unreachable_since.map(time_text),
                        report.last_error,
                        report.last_error_at.map(time_text),
                        partitions,
                        time_text(report.reported_at),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn feed_reports(&self) -> Result<Vec<FeedWorkerReport>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {} FROM feed_workers ORDER BY worker",
                crate::feeds::COLUMNS
            ))?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(10)?,
                    FeedWorkerReport {
                        worker: row.get(0)?,
                        node: row.get(1)?,
                        dataset: row.get(2)?,
                        topic: row.get(3)?,
                        group_id: row.get(4)?,
                        state: FeedState::Stopped,
                        state_since: parse_time(row.get(6)?)?,
                        broker_unreachable_since: parse_optional_time(row.get(7)?)?,
                        last_error: row.get(8)?,
                        last_error_at: parse_optional_time(row.get(9)?)?,
                        partitions: Vec::new(),
                        reported_at: parse_time(row.get(11)?)?,
                    },
                ))
            })?;
            let mut reports = Vec::new();
            for row in rows {
                let (state, partitions, report) = row?;
                reports.push(crate::feeds::read_stored_report(
                    report,
                    &state,
                    &partitions,
                )?);
            }
            Ok(reports)
        })
        .await
    }
}

/// Refuses a stream commit whose expected offsets are not the stored ones.
fn check_offsets(conn: &Connection, dataset_id: i64, stream: &StreamProgress) -> Result<()> {
    let mut select = conn.prepare_cached(
        "SELECT next_offset FROM stream_offsets WHERE dataset_id = ?1 AND topic = ?2 \
         AND partition = ?3",
    )?;
    for advance in &stream.offsets {
        let actual: Option<i64> = select
            .query_row(
                params![dataset_id, advance.topic, advance.partition],
                |row| row.get(0),
            )
            .optional()?;
        advance.check_stored(actual)?;
    }
    Ok(())
}

fn write_progress(
    conn: &Connection,
    dataset_id: i64,
    stream: &StreamProgress,
    snapshot_id: Option<i64>,
) -> Result<()> {
    let at = time_text(now());
    let mut upsert = conn.prepare_cached(
        "INSERT INTO stream_offsets (dataset_id, topic, partition, next_offset, snapshot_id, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (dataset_id, topic, partition) \
         DO UPDATE SET next_offset = excluded.next_offset, \
         snapshot_id = coalesce(excluded.snapshot_id, stream_offsets.snapshot_id), \
         updated_at = excluded.updated_at",
    )?;
    for advance in &stream.offsets {
        upsert.execute(params![
            dataset_id,
            advance.topic,
            advance.partition,
            advance.next,
            snapshot_id,
            at
        ])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO rejected_records (dataset_id, topic, partition, \"offset\", key, payload, \
         error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for record in &stream.rejected {
        insert.execute(params![
            dataset_id,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.payload,
            record.error,
            at
        ])?;
    }
    Ok(())
}

/// The commit transaction. Order matters: the idempotency check comes before the parent
/// check, so a retry of an already committed push is answered from the record even if
/// other commits have happened since.
fn commit_in(conn: &mut Connection, commit: Commit) -> Result<CommitOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcome = commit_in_tx(&tx, commit)?;
    tx.commit()?;
    Ok(outcome)
}

/// Several commits in one transaction: all of them or none (see
/// [`DatasetStore::commit_together`]).
fn commit_together_in(conn: &mut Connection, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(commits.len());
    for commit in commits {
        outcomes.push(commit_in_tx(&tx, commit)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// The body of a commit, inside the caller's transaction.
fn commit_in_tx(tx: &rusqlite::Transaction<'_>, commit: Commit) -> Result<CommitOutcome> {
    if let Some(record) = &commit.idempotency
        && let Some(existing) = load_idempotency(tx, commit.dataset_id, &record.key)?
    {
        if existing.request_hash != record.request_hash {
            return Err(CatalogError::IdempotencyMismatch { key: existing.key });
        }
        return Ok(CommitOutcome::Replayed(existing));
    }
    if let Some(stream) = &commit.stream {
        check_offsets(tx, commit.dataset_id, stream)?;
        if commit.added.is_empty() && commit.removed.is_empty() {
            // Only progress (e.g. a batch of nothing but bad messages): no new snapshot.
            write_progress(tx, commit.dataset_id, stream, None)?;
            return Ok(CommitOutcome::Progressed);
        }
    }
    let current = tx
        .query_row(
            "SELECT snapshot_id, snapshot_seq, rows, bytes, files, schema_version \
             FROM datasets WHERE id = ?1",
            [commit.dataset_id],
            |row| {
                Ok((
                    row.get::<_, Option<i64>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((current_id, current_seq, rows, bytes, files, schema_version)) = current else {
        return Err(CatalogError::NotFound {
            what: "dataset",
            name: commit.dataset_id.to_string(),
        });
    };
    // A compaction or a delete only removes files it read (and adds their rewrites):
    // appends that committed since it read the dataset commute with it, so it rebases onto
    // them here. What does not commute (another commit removed one of its files) is caught
    // below.
    let rebases = matches!(commit.operation, Operation::Compact | Operation::Delete);
    if current_id != commit.expected_parent && !rebases {
        return Err(CatalogError::Conflict {
            dataset_id: commit.dataset_id,
            expected: commit.expected_parent,
            actual: current_id,
        });
    }
    let seq = current_seq + 1;
    let added_rows: i64 = commit.added.iter().map(|f| f.rows).sum();
    let added_bytes: i64 = commit.added.iter().map(|f| f.bytes).sum();
    let added_files = commit.added.len() as i64;

    let mut removed_rows = 0;
    let mut removed_bytes = 0;
    let mut gone = Vec::new();
    {
        let mut remove = tx.prepare_cached(
            "UPDATE files SET removed_seq = ?1 WHERE dataset_id = ?2 AND path = ?3 \
             AND removed_seq IS NULL RETURNING rows, bytes",
        )?;
        for path in &commit.removed {
            let removed = remove
                .query_row(params![seq, commit.dataset_id, path], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()?;
            match removed {
                Some((r, b)) => {
                    removed_rows += r;
                    removed_bytes += b;
                }
                None => gone.push(path.clone()),
            }
        }
    }
    if !gone.is_empty() {
        // Dropping the transaction rolls back the removals made above.
        return Err(CatalogError::FilesGone {
            dataset_id: commit.dataset_id,
            paths: gone,
        });
    }
    let created_at = now();
    let total_rows = rows + added_rows - removed_rows;
    let total_bytes = bytes + added_bytes - removed_bytes;
    let total_files = files + added_files - commit.removed.len() as i64;
    tx.execute(
        "INSERT INTO snapshots (dataset_id, seq, parent_id, created_at, operation, \
         schema_version, added_rows, added_bytes, added_files, rows, bytes, files) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            commit.dataset_id,
            seq,
            current_id,
            time_text(created_at),
            commit.operation.as_str(),
            schema_version,
            added_rows,
            added_bytes,
            added_files,
            total_rows,
            total_bytes,
            total_files
        ],
    )?;
    let snapshot_id = tx.last_insert_rowid();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO files (dataset_id, path, rows, bytes, stats, added_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for file in &commit.added {
            insert.execute(params![
                commit.dataset_id,
                file.path,
                file.rows,
                file.bytes,
                serde_json::to_string(&file.stats)?,
                seq
            ])?;
        }
    }
    tx.execute(
        "UPDATE datasets SET snapshot_id = ?1, snapshot_seq = ?2, rows = ?3, bytes = ?4, \
         files = ?5, updated_at = ?6 WHERE id = ?7",
        params![
            snapshot_id,
            seq,
            total_rows,
            total_bytes,
            total_files,
            time_text(created_at),
            commit.dataset_id
        ],
    )?;
    if let Some(stream) = &commit.stream {
        write_progress(tx, commit.dataset_id, stream, Some(snapshot_id))?;
    }
    if let Some(record) = &commit.idempotency {
        tx.execute(
            "INSERT INTO idempotency_keys (dataset_id, key, request_hash, response, \
             snapshot_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                commit.dataset_id,
                record.key,
                record.request_hash,
                record.response,
                snapshot_id,
                time_text(created_at)
            ],
        )?;
    }
    Ok(CommitOutcome::Committed(Snapshot {
        id: snapshot_id,
        dataset_id: commit.dataset_id,
        seq,
        parent_id: current_id,
        created_at,
        operation: commit.operation,
        schema_version,
        added_rows,
        added_bytes,
        added_files,
        rows: total_rows,
        bytes: total_bytes,
        files: total_files,
    }))
}
