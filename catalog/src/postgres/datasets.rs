//! Departments, principals, datasets, snapshots, commits and the lifecycle's catalog steps
//! in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use super::*;
use crate::feeds::{FeedState, FeedWorkerReport};
use crate::lifecycle::{DatasetChange, ExpiredSnapshots, SnapshotSummary, validate_new_dataset};
use crate::model::{
    Commit, CommitOutcome, DataFile, Dataset, DatasetName, Department, IdempotencyRecord,
    NewDataset, NewPrincipal, Operation, Principal, SchemaVersion, Snapshot, StoredRejection,
    StreamOffset, StreamProgress,
};
use crate::store::DatasetStore;

fn department_from_row(row: &Row) -> Result<Department> {
    Ok(Department {
        code: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
    })
}

pub(super) const PRINCIPAL_COLUMNS: &str =
    "id, name, department, role, created_at, expires_at, revoked_at, rate_limit_per_second, region";

pub(super) fn principal_from_row(row: &Row) -> Result<Principal> {
    Ok(Principal {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        department: row.try_get(2)?,
        role: parse(row, 3)?,
        created_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        rate_limit_per_second: optional_unsigned::<i64, u32>(row, 7)?,
        region: row.try_get(8)?,
    })
}

pub(super) const DATASET_COLUMNS: &str = "d.id, d.department, d.name, d.description, d.classification, \
     d.sharing, d.resource_code, d.update_cycle, d.tags, d.schema_version, d.snapshot_id, \
     d.snapshot_seq, d.rows, d.bytes, d.files, d.created_at, d.updated_at, s.columns, d.sort_key, \
     d.snapshot_retention_days, d.last_gc_at, d.row_retention, d.primary_key, d.region_column, \
     d.region_free";

pub(super) const DATASET_FROM: &str = "datasets d JOIN schema_versions s \
     ON s.dataset_id = d.id AND s.version = d.schema_version";

pub(super) fn dataset_from_row(row: &Row) -> Result<Dataset> {
    let department: String = row.try_get(1)?;
    let table: String = row.try_get(2)?;
    let name = DatasetName::parse(&format!("{department}.{table}"))?;
    Ok(Dataset {
        id: row.try_get(0)?,
        name,
        owner: department,
        description: row.try_get(3)?,
        classification: parse(row, 4)?,
        sharing: parse(row, 5)?,
        resource_code: row.try_get(6)?,
        update_cycle: row.try_get(7)?,
        tags: json(row, 8)?,
        schema_version: row.try_get(9)?,
        snapshot_id: row.try_get(10)?,
        snapshot_seq: row.try_get(11)?,
        rows: row.try_get(12)?,
        bytes: row.try_get(13)?,
        files: row.try_get(14)?,
        created_at: row.try_get(15)?,
        updated_at: row.try_get(16)?,
        columns: json(row, 17)?,
        sort_key: json(row, 18)?,
        snapshot_retention_days: optional_unsigned::<i64, u32>(row, 19)?,
        last_gc_at: row.try_get(20)?,
        row_retention: optional_json(row, 21)?,
        primary_key: json(row, 22)?,
        region_column: row.try_get(23)?,
        region_free: row.try_get(24)?,
    })
}

const SNAPSHOT_COLUMNS: &str = "id, dataset_id, seq, parent_id, created_at, operation, \
     schema_version, added_rows, added_bytes, added_files, rows, bytes, files";

fn snapshot_from_row(row: &Row) -> Result<Snapshot> {
    Ok(Snapshot {
        id: row.try_get(0)?,
        dataset_id: row.try_get(1)?,
        seq: row.try_get(2)?,
        parent_id: row.try_get(3)?,
        created_at: row.try_get(4)?,
        operation: parse::<Operation>(row, 5)?,
        schema_version: row.try_get(6)?,
        added_rows: row.try_get(7)?,
        added_bytes: row.try_get(8)?,
        added_files: row.try_get(9)?,
        rows: row.try_get(10)?,
        bytes: row.try_get(11)?,
        files: row.try_get(12)?,
    })
}

fn file_from_row(row: &Row) -> Result<DataFile> {
    Ok(DataFile {
        path: row.try_get(0)?,
        rows: row.try_get(1)?,
        bytes: row.try_get(2)?,
        stats: json(row, 3)?,
    })
}

fn collect<T>(rows: Vec<Row>, read: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(read).collect()
}

async fn load_idempotency(
    client: &impl Cached,
    dataset_id: i64,
    key: &str,
) -> Result<Option<IdempotencyRecord>> {
    let row = client
        .row_opt(
            "SELECT key, request_hash, response, snapshot_id FROM idempotency_keys \
             WHERE dataset_id = $1 AND key = $2",
            &[&dataset_id, &key],
        )
        .await?;
    row.map(|row| {
        Ok(IdempotencyRecord {
            key: row.try_get(0)?,
            request_hash: row.try_get(1)?,
            response: row.try_get(2)?,
            snapshot_id: row.try_get(3)?,
        })
    })
    .transpose()
}

async fn department_exists(client: &impl GenericClient, code: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM departments WHERE code = $1)",
            &[&code],
        )
        .await?
        .try_get(0)?)
}

fn to_bigint(value: Option<u32>) -> Option<i64> {
    value.map(i64::from)
}

#[async_trait]
impl DatasetStore for PostgresStore {
    async fn create_department(&self, code: &str, name: &str) -> Result<Department> {
        let department = Department::new(code, name, now())?;
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO departments (code, name, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (code) DO NOTHING",
                &[&department.code, &department.name, &department.created_at],
            )
            .await?;
        if inserted == 0 {
            return Err(CatalogError::AlreadyExists {
                what: "department",
                name: department.code,
            });
        }
        Ok(department)
    }

    async fn list_departments(&self) -> Result<Vec<Department>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT code, name, created_at FROM departments ORDER BY code",
                &[],
            )
            .await?;
        collect(rows, department_from_row)
    }

    async fn department(&self, code: &str) -> Result<Option<Department>> {
        self.client()
            .await?
            .query_opt(
                "SELECT code, name, created_at FROM departments WHERE code = $1",
                &[&code],
            )
            .await?
            .as_ref()
            .map(department_from_row)
            .transpose()
    }

    async fn create_principal(&self, new: NewPrincipal, token_hash: &str) -> Result<Principal> {
        let client = self.client().await?;
        if !department_exists(&**client, &new.department).await? {
            return Err(CatalogError::NotFound {
                what: "department",
                name: new.department,
            });
        }
        let created_at = now();
        let row = client
            .query_one(
                "INSERT INTO principals (name, department, role, token_hash, created_at, \
                 expires_at, rate_limit_per_second, region) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &new.name,
                    &new.department,
                    &new.role.as_str(),
                    &token_hash,
                    &created_at,
                    &new.expires_at,
                    &to_bigint(new.rate_limit_per_second),
                    &new.region,
                ],
            )
            .await?;
        Ok(Principal {
            id: row.try_get(0)?,
            name: new.name,
            department: new.department,
            role: new.role,
            created_at,
            expires_at: new.expires_at,
            revoked_at: None,
            rate_limit_per_second: new.rate_limit_per_second,
            region: new.region,
        })
    }

    async fn principal_by_token_hash(&self, token_hash: &str) -> Result<Option<Principal>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE token_hash = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&token_hash])
            .await?
            .as_ref()
            .map(principal_from_row)
            .transpose()
    }

    async fn create_dataset(&self, new: NewDataset) -> Result<Dataset> {
        validate_new_dataset(&new)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !department_exists(&*tx, new.name.department()).await? {
            return Err(CatalogError::NotFound {
                what: "department",
                name: new.name.department().to_string(),
            });
        }
        let taken = || CatalogError::AlreadyExists {
            what: "dataset",
            name: new.name.to_string(),
        };
        let created = now();
        let inserted = tx
            .query_one(
                "INSERT INTO datasets (department, name, description, classification, sharing, \
                 resource_code, update_cycle, tags, schema_version, created_at, updated_at, \
                 sort_key, snapshot_retention_days, row_retention, primary_key, region_column, \
                 region_free) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9, $10, $11, $12, $13, $14, $15) \
                 RETURNING id",
                &[
                    &new.name.department(),
                    &new.name.table(),
                    &new.description,
                    &new.classification.as_str(),
                    &new.sharing.as_str(),
                    &new.resource_code,
                    &new.update_cycle,
                    &serde_json::to_string(&new.tags)?,
                    &created,
                    &serde_json::to_string(&new.sort_key)?,
                    &to_bigint(new.snapshot_retention_days),
                    &new.row_retention
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()?,
                    &serde_json::to_string(&new.primary_key)?,
                    &new.region_column,
                    &new.region_free,
                ],
            )
            .await
            .map_err(|err| {
                if is_unique_violation(&err) {
                    taken()
                } else {
                    err.into()
                }
            })?;
        let id: i64 = inserted.try_get(0)?;
        tx.execute(
            "INSERT INTO schema_versions (dataset_id, version, columns, created_at) \
             VALUES ($1, 1, $2, $3)",
            &[&id, &serde_json::to_string(&new.columns)?, &created],
        )
        .await?;
        let dataset = tx
            .query_one(
                &format!("SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.id = $1"),
                &[&id],
            )
            .await?;
        let dataset = dataset_from_row(&dataset)?;
        self.notify_change(&tx, "dataset created").await?;
        tx.commit().await?;
        Ok(dataset)
    }

    async fn dataset(&self, name: &DatasetName) -> Result<Option<Dataset>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} \
                 WHERE d.department = $1 AND d.name = $2"
            ))
            .await?;
        client
            .query_opt(&statement, &[&name.department(), &name.table()])
            .await?
            .as_ref()
            .map(dataset_from_row)
            .transpose()
    }

    async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} ORDER BY d.department, d.name"
                ),
                &[],
            )
            .await?;
        collect(rows, dataset_from_row)
    }

    async fn schema_versions(&self, dataset_id: i64) -> Result<Vec<SchemaVersion>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT version, columns, created_at FROM schema_versions \
                 WHERE dataset_id = $1 ORDER BY version",
                &[&dataset_id],
            )
            .await?;
        collect(rows, |row| {
            Ok(SchemaVersion {
                version: row.try_get(0)?,
                columns: json(row, 1)?,
                created_at: row.try_get(2)?,
            })
        })
    }

    async fn drop_unused_dataset(&self, dataset_id: i64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let snapshot = tx
            .query_opt(
                "SELECT snapshot_id FROM datasets WHERE id = $1 FOR UPDATE",
                &[&dataset_id],
            )
            .await?;
        let Some(snapshot) = snapshot else {
            return Ok(false);
        };
        if snapshot.try_get::<_, Option<i64>>(0)?.is_some() {
            return Err(CatalogError::invalid(
                "dataset",
                "the dataset has committed data and cannot be dropped this way",
            ));
        }
        for table in ["idempotency_keys", "schema_versions"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE dataset_id = $1"),
                &[&dataset_id],
            )
            .await?;
        }
        tx.execute("DELETE FROM datasets WHERE id = $1", &[&dataset_id])
            .await?;
        self.notify_change(&tx, "dataset dropped").await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn snapshots(&self, dataset_id: i64) -> Result<Vec<Snapshot>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 \
                     ORDER BY seq DESC"
                ),
                &[&dataset_id],
            )
            .await?;
        collect(rows, snapshot_from_row)
    }

    async fn snapshot_as_of(
        &self,
        dataset_id: i64,
        at: DateTime<Utc>,
    ) -> Result<(Option<Snapshot>, Option<Snapshot>)> {
        let mut client = self.client().await?;
        // One repeatable-read transaction: the two lookups see the same log.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let current = tx
            .query_opt(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 \
                     AND created_at <= $2 ORDER BY created_at DESC, seq DESC LIMIT 1"
                ),
                &[&dataset_id, &at],
            )
            .await?
            .as_ref()
            .map(snapshot_from_row)
            .transpose()?;
        if current.is_some() {
            return Ok((current, None));
        }
        let oldest = tx
            .query_opt(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 \
                     ORDER BY seq LIMIT 1"
                ),
                &[&dataset_id],
            )
            .await?
            .as_ref()
            .map(snapshot_from_row)
            .transpose()?;
        tx.commit().await?;
        Ok((None, oldest))
    }

    async fn snapshot_summary(&self, dataset_id: i64) -> Result<SnapshotSummary> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*), min(created_at), \
                 max(CASE WHEN operation = 'compact' THEN created_at END) \
                 FROM snapshots WHERE dataset_id = $1",
                &[&dataset_id],
            )
            .await?;
        Ok(SnapshotSummary {
            snapshots: row.try_get::<_, i64>(0)? as usize,
            oldest_at: row.try_get(1)?,
            last_compaction_at: row.try_get(2)?,
        })
    }

    async fn change_dataset(&self, dataset_id: i64, change: DatasetChange) -> Result<Dataset> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = change_in(&tx, dataset_id, change).await?;
        self.notify_change(&tx, "dataset changed").await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn expire_snapshots(
        &self,
        dataset_id: i64,
        replaced_before: DateTime<Utc>,
        dry_run: bool,
        at: DateTime<Utc>,
    ) -> Result<ExpiredSnapshots> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialised with commits to the same dataset by its row lock.
        tx.execute(
            "SELECT 1 FROM datasets WHERE id = $1 FOR UPDATE",
            &[&dataset_id],
        )
        .await?;
        let expired = expired_in(&tx, dataset_id, replaced_before).await?;
        if dry_run {
            return Ok(expired);
        }
        if let Some(&newest_expired) = expired.snapshots.last() {
            // The oldest kept snapshot's parent is gone; every older one goes too.
            tx.execute(
                "UPDATE snapshots SET parent_id = NULL WHERE dataset_id = $1 AND parent_id = $2",
                &[&dataset_id, &newest_expired],
            )
            .await?;
            tx.execute(
                "DELETE FROM snapshots WHERE dataset_id = $1 AND id <= $2",
                &[&dataset_id, &newest_expired],
            )
            .await?;
            let paths: Vec<&str> = expired.files.iter().map(|f| f.path.as_str()).collect();
            tx.execute(
                "DELETE FROM files WHERE dataset_id = $1 AND path = ANY($2)",
                &[&dataset_id, &paths],
            )
            .await?;
        }
        tx.execute(
            "UPDATE datasets SET last_gc_at = $1 WHERE id = $2",
            &[&at, &dataset_id],
        )
        .await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn file_paths(&self, dataset_id: i64) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT path FROM files WHERE dataset_id = $1",
                &[&dataset_id],
            )
            .await?;
        collect(rows, |row| Ok(row.try_get(0)?))
    }

    async fn snapshot(&self, dataset_id: i64, snapshot_id: i64) -> Result<Option<Snapshot>> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 AND id = $2"
                ),
                &[&dataset_id, &snapshot_id],
            )
            .await?
            .as_ref()
            .map(snapshot_from_row)
            .transpose()
    }

    async fn snapshot_files(
        &self,
        dataset_id: i64,
        snapshot_id: Option<i64>,
    ) -> Result<Vec<DataFile>> {
        let client = self.client().await?;
        // One statement resolves the snapshot to its sequence number and lists its files,
        // so the list belongs to exactly that snapshot even while other nodes commit.
        let statement = client
            .prepare_cached(
                "WITH target AS ( \
                   SELECT seq FROM snapshots WHERE $2::bigint IS NOT NULL AND id = $2 \
                     AND dataset_id = $1 \
                   UNION ALL \
                   SELECT snapshot_seq FROM datasets WHERE $2::bigint IS NULL AND id = $1) \
                 SELECT t.seq, f.path, f.rows, f.bytes, f.stats FROM target t \
                 LEFT JOIN files f ON f.dataset_id = $1 AND f.added_seq <= t.seq \
                   AND (f.removed_seq IS NULL OR f.removed_seq > t.seq) \
                 ORDER BY f.added_seq, f.path",
            )
            .await?;
        let rows = client
            .query(&statement, &[&dataset_id, &snapshot_id])
            .await?;
        if rows.is_empty() {
            return Err(CatalogError::NotFound {
                what: "snapshot",
                name: format!("{snapshot_id:?} of dataset {dataset_id}"),
            });
        }
        let mut files = Vec::with_capacity(rows.len());
        for row in &rows {
            let path: Option<String> = row.try_get(1)?;
            let Some(path) = path else {
                continue; // the snapshot exists and has no files
            };
            files.push(DataFile {
                path,
                rows: row.try_get(2)?,
                bytes: row.try_get(3)?,
                stats: json(row, 4)?,
            });
        }
        Ok(files)
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = commit_in(&tx, commit).await?;
        if let CommitOutcome::Committed(snapshot) = &outcome {
            let what = format!(
                "dataset {} at snapshot {}",
                snapshot.dataset_id, snapshot.id
            );
            self.notify_change(&tx, &what).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn commit_together(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>> {
        crate::model::check_together(&commits)?;
        // Rows are locked in dataset order, so two nodes committing to the same datasets
        // together wait for each other instead of deadlocking.
        let mut commits = commits;
        let order: Vec<i64> = commits.iter().map(|c| c.dataset_id).collect();
        commits.sort_by_key(|c| c.dataset_id);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut outcomes = Vec::with_capacity(commits.len());
        for commit in commits {
            let dataset_id = commit.dataset_id;
            let outcome = commit_in(&tx, commit).await?;
            if let CommitOutcome::Committed(snapshot) = &outcome {
                let what = format!("dataset {} at snapshot {}", dataset_id, snapshot.id);
                self.notify_change(&tx, &what).await?;
            }
            outcomes.push((dataset_id, outcome));
        }
        tx.commit().await?;
        // Answered in the order asked.
        Ok(order
            .iter()
            .filter_map(|id| {
                let at = outcomes
                    .iter()
                    .position(|(dataset_id, _)| dataset_id == id)?;
                Some(outcomes.swap_remove(at).1)
            })
            .collect())
    }

    async fn idempotency_record(
        &self,
        dataset_id: i64,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        load_idempotency(&*self.client().await?, dataset_id, key).await
    }

    async fn stream_offsets(&self, dataset_id: i64) -> Result<Vec<StreamOffset>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT topic, partition, next_offset, snapshot_id, updated_at \
                 FROM stream_offsets WHERE dataset_id = $1 ORDER BY topic, partition",
                &[&dataset_id],
            )
            .await?;
        collect(rows, |row| {
            Ok(StreamOffset {
                topic: row.try_get(0)?,
                partition: row.try_get(1)?,
                next_offset: row.try_get(2)?,
                snapshot_id: row.try_get(3)?,
                updated_at: row.try_get(4)?,
            })
        })
    }

    async fn rejected_records(
        &self,
        dataset_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT r.id, d.department || '.' || d.name, r.topic, r.partition, r.\"offset\", \
                 r.key, r.payload, r.error, r.at FROM rejected_records r \
                 JOIN datasets d ON d.id = r.dataset_id \
                 WHERE r.dataset_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3",
                &[&dataset_id, &after_id, &(limit as i64)],
            )
            .await?;
        collect(rows, rejection_from_row)
    }

    async fn take_job_lease(
        &self,
        job: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        // One statement: of two nodes racing for an expired lease, the row lock lets one
        // in first and the other then finds the lease held.
        let taken = self
            .client()
            .await?
            .execute(
                "INSERT INTO job_leases (job, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= $4",
                &[&job, &holder, &until, &now],
            )
            .await?;
        Ok(taken == 1)
    }

    fn change_notices(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.notices.subscribe())
    }

    async fn replace_feed_reports(
        &self,
        node: &str,
        reports: Vec<FeedWorkerReport>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM feed_workers WHERE node = $1", &[&node])
            .await?;
        tx.execute(
            "DELETE FROM feed_workers WHERE reported_at < $1",
            &[&(now - crate::feeds::FORGET_AFTER)],
        )
        .await?;
        for report in &reports {
            let partitions = serde_json::to_string(&report.partitions)?;
            tx.execute(
                "INSERT INTO feed_workers (worker, node, dataset, topic, group_id, state, \
                 state_since, broker_unreachable_since, last_error, last_error_at, partitions, \
                 reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (worker) DO UPDATE SET node = excluded.node, \
                 dataset = excluded.dataset, topic = excluded.topic, \
                 group_id = excluded.group_id, state = excluded.state, \
                 state_since = excluded.state_since, \
                 broker_unreachable_since = excluded.broker_unreachable_since, \
                 last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
                 partitions = excluded.partitions, reported_at = excluded.reported_at",
                &[
                    &report.worker,
                    &node,
                    &report.dataset,
                    &report.topic,
                    &report.group_id,
                    &report.state.as_str(),
                    &report.state_since,
                    &report.broker_unreachable_since,
                    &report.last_error,
                    &report.last_error_at,
                    &partitions,
                    &report.reported_at,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn feed_reports(&self) -> Result<Vec<FeedWorkerReport>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {} FROM feed_workers ORDER BY worker",
                    crate::feeds::COLUMNS
                ),
                &[],
            )
            .await?;
        collect(rows, |row| {
            let state: String = row.try_get(5)?;
            let partitions: String = row.try_get(10)?;
            let report = FeedWorkerReport {
                worker: row.try_get(0)?,
                node: row.try_get(1)?,
                dataset: row.try_get(2)?,
                topic: row.try_get(3)?,
                group_id: row.try_get(4)?,
                state: FeedState::Stopped,
                state_since: row.try_get(6)?,
                broker_unreachable_since: row.try_get(7)?,
                last_error: row.try_get(8)?,
                last_error_at: row.try_get(9)?,
                partitions: Vec::new(),
                reported_at: row.try_get(11)?,
            };
            crate::feeds::read_stored_report(report, &state, &partitions)
        })
    }

    async fn current_snapshots(&self) -> Result<Vec<(i64, Option<i64>)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT id, snapshot_id FROM datasets", &[])
            .await?;
        collect(rows, |row| Ok((row.try_get(0)?, row.try_get(1)?)))
    }
}

/// Refuses a stream commit whose expected offsets are not the stored ones.
async fn check_offsets(tx: &impl Cached, dataset_id: i64, stream: &StreamProgress) -> Result<()> {
    for advance in &stream.offsets {
        let actual: Option<i64> = tx
            .row_opt(
                "SELECT next_offset FROM stream_offsets WHERE dataset_id = $1 AND topic = $2 \
                 AND partition = $3",
                &[&dataset_id, &advance.topic, &advance.partition],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        advance.check_stored(actual)?;
    }
    Ok(())
}

async fn write_progress(
    tx: &impl Cached,
    dataset_id: i64,
    stream: &StreamProgress,
    snapshot_id: Option<i64>,
) -> Result<()> {
    let at = now();
    for advance in &stream.offsets {
        tx.exec(
            "INSERT INTO stream_offsets (dataset_id, topic, partition, next_offset, snapshot_id, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dataset_id, topic, partition) \
             DO UPDATE SET next_offset = excluded.next_offset, \
             snapshot_id = coalesce(excluded.snapshot_id, stream_offsets.snapshot_id), \
             updated_at = excluded.updated_at",
            &[
                &dataset_id,
                &advance.topic,
                &advance.partition,
                &advance.next,
                &snapshot_id,
                &at,
            ],
        )
        .await?;
    }
    for record in &stream.rejected {
        tx.exec(
            "INSERT INTO rejected_records (dataset_id, topic, partition, \"offset\", key, \
             payload, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &dataset_id,
                &record.topic,
                &record.partition,
                &record.offset,
                &record.key,
                &record.payload,
                &record.error,
                &at,
            ],
        )
        .await?;
    }
    Ok(())
}

/// The commit transaction. It first locks the dataset's row, so commits to one dataset
/// from every node run one after the other; then, as in SQLite, the idempotency check
/// comes before the parent check, so a retry of an already committed push is answered
/// from the record even if other commits have happened since.
async fn commit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    commit: Commit,
) -> Result<CommitOutcome> {
    let current = tx
        .row_opt(
            "SELECT snapshot_id, snapshot_seq, rows, bytes, files, schema_version \
             FROM datasets WHERE id = $1 FOR UPDATE",
            &[&commit.dataset_id],
        )
        .await?;
    let Some(current) = current else {
        return Err(CatalogError::NotFound {
            what: "dataset",
            name: commit.dataset_id.to_string(),
        });
    };
    let current_id: Option<i64> = current.try_get(0)?;
    let current_seq: i64 = current.try_get(1)?;
    let (rows, bytes, files): (i64, i64, i64) = (
        current.try_get(2)?,
        current.try_get(3)?,
        current.try_get(4)?,
    );
    let schema_version: i64 = current.try_get(5)?;
    if let Some(record) = &commit.idempotency
        && let Some(existing) = load_idempotency(tx, commit.dataset_id, &record.key).await?
    {
        if existing.request_hash != record.request_hash {
            return Err(CatalogError::IdempotencyMismatch { key: existing.key });
        }
        return Ok(CommitOutcome::Replayed(existing));
    }
    if let Some(stream) = &commit.stream {
        check_offsets(tx, commit.dataset_id, stream).await?;
        if commit.added.is_empty() && commit.removed.is_empty() {
            // Only progress (e.g. a batch of nothing but bad messages): no new snapshot.
            write_progress(tx, commit.dataset_id, stream, None).await?;
            return Ok(CommitOutcome::Progressed);
        }
    }
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

    // One statement marks every removed file and answers which it found live; the
    // transaction is rolled back (by dropping it) if any was not.
    let removed = if commit.removed.is_empty() {
        Vec::new()
    } else {
        tx.rows(
            "UPDATE files SET removed_seq = $1 WHERE dataset_id = $2 AND path = ANY($3) \
             AND removed_seq IS NULL RETURNING path, rows, bytes",
            &[&seq, &commit.dataset_id, &commit.removed],
        )
        .await?
    };
    let mut removed_rows = 0;
    let mut removed_bytes = 0;
    let mut found = std::collections::HashSet::with_capacity(removed.len());
    for row in &removed {
        found.insert(row.try_get::<_, String>(0)?);
        removed_rows += row.try_get::<_, i64>(1)?;
        removed_bytes += row.try_get::<_, i64>(2)?;
    }
    let gone: Vec<String> = commit
        .removed
        .iter()
        .filter(|path| !found.contains(*path))
        .cloned()
        .collect();
    if !gone.is_empty() {
        return Err(CatalogError::FilesGone {
            dataset_id: commit.dataset_id,
            paths: gone,
        });
    }
    let created_at = now();
    let total_rows = rows + added_rows - removed_rows;
    let total_bytes = bytes + added_bytes - removed_bytes;
    let total_files = files + added_files - commit.removed.len() as i64;
    let snapshot_id: i64 = tx
        .rows(
            "INSERT INTO snapshots (dataset_id, seq, parent_id, created_at, operation, \
             schema_version, added_rows, added_bytes, added_files, rows, bytes, files) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            &[
                &commit.dataset_id,
                &seq,
                &current_id,
                &created_at,
                &commit.operation.as_str(),
                &schema_version,
                &added_rows,
                &added_bytes,
                &added_files,
                &total_rows,
                &total_bytes,
                &total_files,
            ],
        )
        .await?
        .first()
        .ok_or_else(|| CatalogError::Storage("a snapshot insert returned no id".into()))?
        .try_get(0)?;
    if !commit.added.is_empty() {
        // One statement for every added file: a compaction can add thousands.
        let paths: Vec<&str> = commit.added.iter().map(|f| f.path.as_str()).collect();
        let file_rows: Vec<i64> = commit.added.iter().map(|f| f.rows).collect();
        let file_bytes: Vec<i64> = commit.added.iter().map(|f| f.bytes).collect();
        let stats = commit
            .added
            .iter()
            .map(|f| serde_json::to_string(&f.stats))
            .collect::<serde_json::Result<Vec<_>>>()?;
        tx.exec(
            "INSERT INTO files (dataset_id, path, rows, bytes, stats, added_seq) \
             SELECT $1, path, rows, bytes, stats, $2 \
             FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[]) \
               AS added(path, rows, bytes, stats)",
            &[
                &commit.dataset_id,
                &seq,
                &paths,
                &file_rows,
                &file_bytes,
                &stats,
            ],
        )
        .await
        .map_err(|err| match err {
            CatalogError::Storage(message) => CatalogError::Storage(format!(
                "recording the commit's files failed (a path already in the catalog?): {message}"
            )),
            other => other,
        })?;
    }
    tx.exec(
        "UPDATE datasets SET snapshot_id = $1, snapshot_seq = $2, rows = $3, bytes = $4, \
         files = $5, updated_at = $6 WHERE id = $7",
        &[
            &snapshot_id,
            &seq,
            &total_rows,
            &total_bytes,
            &total_files,
            &created_at,
            &commit.dataset_id,
        ],
    )
    .await?;
    if let Some(stream) = &commit.stream {
        write_progress(tx, commit.dataset_id, stream, Some(snapshot_id)).await?;
    }
    if let Some(record) = &commit.idempotency {
        tx.exec(
            "INSERT INTO idempotency_keys (dataset_id, key, request_hash, response, \
             snapshot_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &commit.dataset_id,
                &record.key,
                &record.request_hash,
                &record.response,
                &snapshot_id,
                &created_at,
            ],
        )
        .await?;
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

/// Changes a dataset's columns, retention, region and/or sort key in one transaction (see
/// [`crate::store::DatasetStore::change_dataset`]).
async fn change_in(
    tx: &deadpool_postgres::Transaction<'_>,
    dataset_id: i64,
    change: DatasetChange,
) -> Result<Dataset> {
    // Locks the dataset row first, so the checks below see the schema that is current.
    let by_id = format!("SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.id = $1");
    let current = tx
        .query_opt(&format!("{by_id} FOR UPDATE OF d"), &[&dataset_id])
        .await?
        .ok_or_else(|| CatalogError::NotFound {
            what: "dataset",
            name: dataset_id.to_string(),
        })?;
    let current = dataset_from_row(&current)?;
    let settings = change.resolve(&current)?;
    if let Some(columns) = &settings.new_columns {
        let version = current.schema_version + 1;
        let at = now();
        tx.execute(
            "INSERT INTO schema_versions (dataset_id, version, columns, created_at) \
             VALUES ($1, $2, $3, $4)",
            &[&dataset_id, &version, &serde_json::to_string(columns)?, &at],
        )
        .await?;
        tx.execute(
            "UPDATE datasets SET schema_version = $1, updated_at = $2 WHERE id = $3",
            &[&version, &at, &dataset_id],
        )
        .await?;
    }
    if let Some(retention) = &settings.row_retention {
        tx.execute(
            "UPDATE datasets SET row_retention = $1 WHERE id = $2",
            &[&serde_json::to_string(retention)?, &dataset_id],
        )
        .await?;
    }
    tx.execute(
        "UPDATE datasets SET region_column = $1, region_free = $2, sort_key = $3 WHERE id = $4",
        &[
            &settings.region_column,
            &settings.region_free,
            &serde_json::to_string(&settings.sort_key)?,
            &dataset_id,
        ],
    )
    .await?;
    let changed = tx.query_one(&by_id, &[&dataset_id]).await?;
    dataset_from_row(&changed)
}

/// The snapshots of a dataset that were replaced before `replaced_before` (their successor
/// was committed before it) and are not current, oldest first, with the files that only
/// they name (see the SQLite store's `expired_in` for the reasoning).
async fn expired_in(
    tx: &deadpool_postgres::Transaction<'_>,
    dataset_id: i64,
    replaced_before: DateTime<Utc>,
) -> Result<ExpiredSnapshots> {
    let newest = tx
        .query_opt(
            "SELECT s.seq FROM snapshots s JOIN snapshots next \
             ON next.dataset_id = s.dataset_id AND next.seq = s.seq + 1 \
             WHERE s.dataset_id = $1 AND next.created_at < $2 ORDER BY s.seq DESC LIMIT 1",
            &[&dataset_id, &replaced_before],
        )
        .await?;
    let Some(newest) = newest else {
        return Ok(ExpiredSnapshots::default());
    };
    let newest_seq: i64 = newest.try_get(0)?;
    let snapshots = tx
        .query(
            "SELECT id FROM snapshots WHERE dataset_id = $1 AND seq <= $2 ORDER BY seq",
            &[&dataset_id, &newest_seq],
        )
        .await?;
    let snapshots = collect(snapshots, |row| Ok(row.try_get(0)?))?;
    let files = tx
        .query(
            "SELECT path, rows, bytes, stats FROM files WHERE dataset_id = $1 \
             AND removed_seq IS NOT NULL AND removed_seq <= $2 ORDER BY removed_seq, path",
            &[&dataset_id, &(newest_seq + 1)],
        )
        .await?;
    let files = collect(files, file_from_row)?;
    Ok(ExpiredSnapshots { snapshots, files })
}
