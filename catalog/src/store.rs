//! The store traits: everything the hub asks of its metadata database, one trait per
//! domain, and [`CatalogStore`], all of them together.
//!
//! SQLite implements them for the embedded default (`sqlite/`, one file per domain);
//! PostgreSQL will implement the same traits for multi-node deployments, so nothing above
//! these traits may assume a particular database. Every method is a transaction of its own.

use async_trait::async_trait;

use crate::audit::{AuditEntry, AuditEvent, AuditFilter};
use crate::camera::alarms::{StoredAlarm, StoredPosition};
use crate::camera::status::Liveness;
use crate::camera::{
    CameraFeed, CameraQuery, CameraRecord, CameraReport, CameraSignal, CameraSources, CameraStats,
    CameraStreamCommit, CameraStreamOutcome, ChannelFields, ChannelReport, FieldError,
    ImportedHistory, Registered, StatsGroup, StatusEvent,
};
use crate::endpoint::{Endpoint, EndpointSpec, Saved};
use crate::error::Result;
use crate::lifecycle::{DatasetChange, ExpiredSnapshots, SnapshotSummary};
use crate::model::{
    Commit, CommitOutcome, DataFile, Dataset, DatasetName, Department, IdempotencyRecord,
    NewDataset, NewPrincipal, Principal, SchemaVersion, Snapshot, StoredRejection, StreamOffset,
};
use crate::sharing::{Decision, Grant, NewShareRequest, ShareRequest, ShareStatus};
use crate::viid::{ViidAccount, ViidSubscription};
use chrono::{DateTime, Utc};

/// Departments, principals and their tokens, datasets, schema versions, snapshots and
/// their files, commits with idempotency keys and stream offsets, dead letters.
#[async_trait]
pub trait DatasetStore: Send + Sync + 'static {
    /// Creates a department; `AlreadyExists` if the code is taken.
    async fn create_department(&self, code: &str, name: &str) -> Result<Department>;

    async fn list_departments(&self) -> Result<Vec<Department>>;

    async fn department(&self, code: &str) -> Result<Option<Department>>;

    /// Creates a principal that authenticates with the token whose hash is given.
    async fn create_principal(&self, new: NewPrincipal, token_hash: &str) -> Result<Principal>;

    /// The principal holding a token, if any, whether or not it is expired or revoked.
    async fn principal_by_token_hash(&self, token_hash: &str) -> Result<Option<Principal>>;

    /// Registers a dataset with schema version 1 and no snapshot.
    async fn create_dataset(&self, new: NewDataset) -> Result<Dataset>;

    async fn dataset(&self, name: &DatasetName) -> Result<Option<Dataset>>;

    async fn list_datasets(&self) -> Result<Vec<Dataset>>;

    async fn schema_versions(&self, dataset_id: i64) -> Result<Vec<SchemaVersion>>;

    /// Removes a dataset that has never had a commit (an import that created it and then
    /// failed); refuses, with `Invalid`, once it has data. Returns whether it was removed.
    async fn drop_unused_dataset(&self, dataset_id: i64) -> Result<bool>;

    /// The snapshot log, newest first.
    async fn snapshots(&self, dataset_id: i64) -> Result<Vec<Snapshot>>;

    /// The snapshot that was current at `at` (the newest committed at or before it), or,
    /// when there is none, the oldest kept snapshot (to say what is readable).
    async fn snapshot_as_of(
        &self,
        dataset_id: i64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Option<Snapshot>, Option<Snapshot>)>;

    /// How many snapshots are kept, the oldest one's time and the last compaction's, without
    /// reading the log.
    async fn snapshot_summary(&self, dataset_id: i64) -> Result<SnapshotSummary>;

    /// One snapshot of a dataset by id.
    async fn snapshot(&self, dataset_id: i64, snapshot_id: i64) -> Result<Option<Snapshot>>;

    /// Changes a dataset's columns (a new schema version, if they differ; refused with
    /// `SchemaChange` unless old files can be read under them, see
    /// [`crate::model::check_evolution`]) and/or its sort key, in one transaction.
    async fn change_dataset(&self, dataset_id: i64, change: DatasetChange) -> Result<Dataset>;

    /// Garbage collection's catalog step, in one transaction: forgets the snapshots that
    /// were replaced before `replaced_before` (never the current one) and the files only
    /// they named, and records `at` as the dataset's last collection. A dry run changes
    /// nothing and answers what it would forget. The objects are the caller's to delete,
    /// after this commits (a crash in between leaves orphans, never a dangling file).
    async fn expire_snapshots(
        &self,
        dataset_id: i64,
        replaced_before: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<ExpiredSnapshots>;

    /// Every file path the catalog knows for a dataset (live or kept for time travel).
    async fn file_paths(&self, dataset_id: i64) -> Result<Vec<String>>;

    /// The files of a snapshot (the current one when `snapshot_id` is `None`).
    async fn snapshot_files(
        &self,
        dataset_id: i64,
        snapshot_id: Option<i64>,
    ) -> Result<Vec<DataFile>>;

    /// Commits one snapshot atomically: new snapshot, added and removed files, idempotency key.
    /// Fails with `Conflict` when the dataset's current snapshot is not `expected_parent`
    /// (except for a compaction, which rebases onto any newer snapshot: it only removes
    /// files it read, so appends that landed meanwhile are kept), with `FilesGone` when a
    /// file to remove is no longer live, and answers `Replayed` when the idempotency key was already used for the same request.
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome>;

    /// Commits appends to several datasets in one transaction: every one of them or none
    /// (a GA/T 1400 object's row and its images' rows). Each is checked like [`Self::commit`]
    /// (`Conflict` when a dataset moved on); none may carry an idempotency key or stream
    /// progress, and no dataset may appear twice ([`crate::model::check_together`]).
    async fn commit_together(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>>;

    /// The stored answer of an earlier push with this idempotency key.
    async fn idempotency_record(
        &self,
        dataset_id: i64,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>>;

    /// The stored next offsets of a dataset's stream partitions.
    async fn stream_offsets(&self, dataset_id: i64) -> Result<Vec<StreamOffset>>;

    /// Dead letters of a dataset after `after_id`, oldest first.
    async fn rejected_records(
        &self,
        dataset_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>>;

    /// Every dataset's current snapshot id (`None` before its first commit): what the
    /// endpoint cache polls to see commits made by other processes.
    async fn current_snapshots(&self) -> Result<Vec<(i64, Option<i64>)>>;

    /// A counter that moves when any process on this catalog commits data, changes a
    /// dataset's schema, decides a share request, revokes a grant or saves an endpoint,
    /// when the database can tell (PostgreSQL's LISTEN/NOTIFY, as the change commits); `None`
    /// when it cannot (SQLite), and readers poll instead.
    fn change_notices(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Takes or renews the lease on a cluster-wide job for `holder` until `until`; answers
    /// whether `holder` holds it now. Another holder's lease is taken over only once it
    /// has expired (at `now`), so of several nodes one runs the job at a time.
    async fn take_job_lease(
        &self,
        job: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;

    /// Replaces `node`'s Kafka worker reports with `reports` (a worker no longer configured
    /// disappears), and forgets any node's reports older than [`crate::feeds::FORGET_AFTER`]
    /// before `now`.
    async fn replace_feed_reports(
        &self,
        node: &str,
        reports: Vec<crate::feeds::FeedWorkerReport>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;

    /// Every node's Kafka worker reports, by worker.
    async fn feed_reports(&self) -> Result<Vec<crate::feeds::FeedWorkerReport>>;
}

/// Principals' lifecycle, share requests and their decisions, grants.
#[async_trait]
pub trait SharingStore: Send + Sync + 'static {
    /// Every principal, newest first (tokens are never returned, only their metadata).
    async fn list_principals(&self) -> Result<Vec<Principal>>;

    /// Revokes a principal's token at once; `WrongState` if it already is.
    async fn revoke_principal(&self, id: i64) -> Result<Principal>;

    /// Files a share request; `answer_due_at` is computed by the caller from its settings.
    async fn create_share_request(&self, new: NewShareRequest) -> Result<ShareRequest>;

    async fn share_request(&self, id: i64) -> Result<Option<ShareRequest>>;

    /// Requests made by or addressed to `department` (all when `None`), newest first.
    async fn list_share_requests(
        &self,
        department: Option<&str>,
        status: Option<ShareStatus>,
    ) -> Result<Vec<ShareRequest>>;

    /// Approves (creating the grant) or rejects a pending request in one transaction;
    /// `WrongState` if it was already decided.
    async fn decide_share_request(
        &self,
        decision: Decision,
    ) -> Result<(ShareRequest, Option<Grant>)>;

    /// Grants held by `department` (all when `None`), including lapsed ones.
    async fn grants_held_by(&self, department: Option<&str>) -> Result<Vec<Grant>>;

    /// Grants given on datasets owned by `owner`.
    async fn grants_given_by(&self, owner: &str) -> Result<Vec<Grant>>;

    async fn grant(&self, id: i64) -> Result<Option<Grant>>;

    /// Revokes a grant at once; `WrongState` if it already is.
    async fn revoke_grant(&self, id: i64, by: i64, reason: &str) -> Result<Grant>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends entries to the audit log, all in one transaction.
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()>;

    async fn audit_entries(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>>;

    /// Deletes entries older than `cutoff` and records the purge (as `purge`, with the
    /// count) in the same transaction. Returns how many were deleted.
    async fn purge_audit(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        purge: AuditEvent,
    ) -> Result<u64>;
}

/// The camera registry: channel records, liveness, status history, Kafka feeds.
#[async_trait]
pub trait CameraStore: Send + Sync + 'static {
    /// Registers or updates channels' reported values in one transaction. `acting_for` is
    /// the caller's department when it may only touch its own channels (`None`: an admin).
    /// Times are Unix milliseconds.
    async fn register_cameras(
        &self,
        reports: Vec<ChannelReport>,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<Vec<Result<Registered, FieldError>>>;

    /// Replaces a channel's curated overrides.
    async fn curate_camera(
        &self,
        id: String,
        curated: ChannelFields,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<()>;

    /// Applies keepalives and NOTIFY events in order, in one transaction; each item answers
    /// how many channels it marked or why it was refused.
    async fn camera_signals(
        &self,
        signals: Vec<CameraSignal>,
        acting_for: Option<String>,
        liveness: Liveness,
        received_at: i64,
    ) -> Result<Vec<Result<usize, FieldError>>>;

    /// Appends alarms and positions of registered channels and devices, in one
    /// transaction; each item answers whether it is new (`false`: the same report was kept
    /// before, and is not kept twice) or why it was refused.
    async fn record_camera_reports(
        &self,
        reports: Vec<CameraReport>,
        acting_for: Option<String>,
        received_at: i64,
    ) -> Result<Vec<Result<bool, FieldError>>>;

    /// The alarms after `after_seq`, in the order they were received.
    async fn camera_alarms(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredAlarm>>;

    /// The positions after `after_seq`, in the order they were received.
    async fn camera_positions(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredPosition>>;

    /// Deletes the alarms that happened before `alarms_before` and the positions reported
    /// for before `positions_before` (Unix ms); returns how many of each.
    async fn purge_camera_reports(
        &self,
        alarms_before: i64,
        positions_before: i64,
    ) -> Result<(u64, u64)>;

    /// The catalogue changes after `after_seq`, at most `limit`, in feed order, and the last
    /// place retention deleted.
    async fn camera_changes(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<crate::camera::changes::ChangePage>;

    /// The cursor of the newest change (what a consumer listing the registry now follows
    /// the feed from).
    async fn camera_change_head(&self) -> Result<i64>;

    /// Deletes the changes recorded before `before` (Unix ms) from the head of the feed
    /// (a change goes once it and every one before it are older); returns how many.
    async fn purge_camera_changes(&self, before: i64) -> Result<u64>;

    /// The stored next offsets of a camera feed: (topic, partition, next offset).
    async fn camera_stream_offsets(&self, feed: CameraFeed) -> Result<Vec<(String, i32, i64)>>;

    /// Applies a Kafka batch to the registry, keeps its dead letters (undecodable messages
    /// and ones the registry refuses) and advances the offset, in one transaction;
    /// `OffsetConflict` if the stored offset is not the expected one.
    async fn commit_camera_stream(&self, commit: CameraStreamCommit)
    -> Result<CameraStreamOutcome>;

    /// Dead letters of the camera feeds after `after_id` (their `dataset` is the feed's).
    async fn camera_rejected_records(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>>;

    /// Brings in whole status histories with their final evidence, in one transaction;
    /// each must continue the channel's recorded history.
    async fn import_camera_history(&self, histories: Vec<ImportedHistory>, at: i64) -> Result<()>;

    /// Appends the offline transitions of channels whose keepalives stopped before `now`.
    async fn sweep_cameras(&self, now: i64, liveness: Liveness) -> Result<usize>;

    /// A registered (not deleted) channel with both sources of its values.
    async fn camera(&self, id: &str) -> Result<Option<(CameraRecord, CameraSources)>>;

    async fn search_cameras(
        &self,
        query: CameraQuery,
        now: i64,
        liveness: Liveness,
    ) -> Result<Vec<CameraRecord>>;

    /// Statistics per group and over all channels; availability over `[since, now)`.
    /// Sweeps first, so that the history holds every transition up to `now`.
    async fn camera_stats(
        &self,
        group: StatsGroup,
        since: i64,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<CameraStats>, CameraStats)>;

    /// The status history after `after_seq`, oldest first.
    async fn camera_status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>>;

    /// Sweeps to `now`, then rolls up every finished Beijing-time day (through yesterday,
    /// keeping `retention_days`) that is missing or that a transition appended since the
    /// last roll-up falls in. Returns the days computed, in order.
    async fn roll_up_camera_days(
        &self,
        now: i64,
        liveness: Liveness,
        retention_days: u32,
    ) -> Result<Vec<i32>>;

    /// Statistics per group and over all channels, with availability over the whole
    /// Beijing-time `days` from their roll-ups (roll up first) and the counts at `now`.
    async fn camera_daily_stats(
        &self,
        group: StatsGroup,
        days: std::ops::RangeInclusive<i32>,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<CameraStats>, CameraStats)>;

    /// Rows of the daily roll-ups after `(day, camera id)`, in that order.
    async fn camera_daily_rows(
        &self,
        after: (i32, String),
        limit: usize,
    ) -> Result<Vec<crate::camera::daily::DailyRow>>;
}

/// Dashboard endpoint definitions, versioned per name.
#[async_trait]
pub trait EndpointStore: Send + Sync + 'static {
    /// Saves an endpoint definition as its next version (or answers `Unchanged` when it
    /// equals the current one). `acting_for` is the caller's department when it may only
    /// change its own department's endpoints (`None`: an admin).
    async fn save_endpoint(
        &self,
        name: &str,
        owner: &str,
        spec: EndpointSpec,
        created_by: Option<i64>,
        acting_for: Option<String>,
    ) -> Result<(Endpoint, Saved)>;

    /// The current version of an endpoint.
    async fn endpoint(&self, name: &str) -> Result<Option<Endpoint>>;

    /// Every version of an endpoint, newest first.
    async fn endpoint_history(&self, name: &str) -> Result<Vec<Endpoint>>;

    /// The current version of every endpoint, by name.
    async fn list_endpoints(&self) -> Result<Vec<Endpoint>>;
}

/// GA/T 1400 accounts and their registrations.
#[async_trait]
pub trait ViidStore: Send + Sync + 'static {
    /// Creates an account; `AlreadyExists` if the id is taken, `NotFound` if the
    /// department is unknown.
    async fn create_viid_account(
        &self,
        id: &str,
        department: &str,
        ha1: &str,
    ) -> Result<ViidAccount>;

    async fn viid_account(&self, id: &str) -> Result<Option<ViidAccount>>;

    /// Every account, by id.
    async fn viid_accounts(&self) -> Result<Vec<ViidAccount>>;

    /// Records a registration at `at`, or with `None` an unregistration.
    async fn set_viid_registration(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()>;

    /// Records a keepalive at `at` of a registered account; false when it is not registered.
    async fn viid_keepalive(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Saves a subscription whole (a new one, a renewal, a cancellation, delivery progress).
    /// `Invalid` when its id belongs to another account's subscription.
    async fn save_viid_subscription(&self, subscription: &ViidSubscription) -> Result<()>;

    /// The subscriptions of `account`, or of every account, by id.
    async fn viid_subscriptions(&self, account: Option<&str>) -> Result<Vec<ViidSubscription>>;

    /// The files appends and upserts added to a dataset after snapshot sequence `after`,
    /// with the sequence that added each, in order; files since removed by a compaction
    /// included, as long as the catalog keeps them.
    async fn appended_files(&self, dataset_id: i64, after: i64) -> Result<Vec<(i64, DataFile)>>;
}

/// The whole catalog: every domain's store, implemented for anything that implements all
/// of them.
pub trait CatalogStore:
    DatasetStore + SharingStore + AuditStore + CameraStore + EndpointStore + ViidStore
{
}

impl<T> CatalogStore for T where
    T: DatasetStore + SharingStore + AuditStore + CameraStore + EndpointStore + ViidStore
{
}
