//! GA/T 1400 视图库 records into the hub: a platform posts a list of vehicles, faces,
//! persons or collection devices; each record is checked on its own; the good ones land
//! in the account department's `viid_*` datasets, their images as objects in the object
//! store with one row each in `viid_images`; the answer says, record by record, what
//! happened (GA/T 1400.4 `ResponseStatusListObject`).
//!
//! Nothing is half-written: a record's row and its images' rows are committed in one
//! catalog transaction, after the images and the Parquet files are durable; if the
//! commit fails, the files and the images written for it are removed and every good
//! record is answered as not stored, so the sender sends it again.
//!
//! - [`fields`]: the kept fields, their checks and the code tables.
//! - [`kinds`]: the resources and the datasets they land in.
//! - `check`: a request's shape, then each record on its own.
//! - `images`: serving a stored image to who may see it, audited; image retention.
//! - `subscriptions`: upper platforms' subscriptions and the notifications they get.

mod check;
pub mod fields;
mod images;
mod json;
pub mod kinds;
mod subscriptions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use cityhub_catalog::{
    Action, AuditEvent, CatalogError, Dataset, DatasetName, NewDataset, Outcome,
};
use futures::StreamExt;
use object_store::{PutPayload, PutPayloadMut};
use serde_json::{Value, json};

use crate::decode::decode_json_objects;
use crate::{Ingest, IngestError};
use check::check_request;
use fields::Row;
use json::Json;
pub use kinds::{IMAGES_DATASET, KINDS, ViidKind};

/// How far ahead of the hub's clock a capture time may be: cameras' clocks drift, but a
/// record from next week is a broken clock, and would sit outside every time window.
const CLOCK_SKEW_ALLOWED: Duration = Duration::minutes(10);

/// The most records one request may carry.
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// Image packs written at once.
const IMAGE_WRITES_IN_FLIGHT: usize = 8;

/// At most this many records are committed together from requests that waited for the
/// same landing dataset (a request is never split: one larger than this commits alone).
const MAX_RECORDS_PER_COMMIT: usize = 10_000;

/// Commits under way at once per landing dataset (see [`Lane`]).
const COMMITS_IN_FLIGHT_PER_LANE: usize = 2;

/// GA/T 1400.4 `StatusCode`s the hub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Ok = 0,
    OtherError = 1,
    DeviceBusy = 2,
    InvalidOperation = 4,
    InvalidJsonFormat = 7,
    InvalidJsonContent = 8,
}

impl StatusCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStatus {
    /// The record's id as sent (empty when it had none).
    pub id: String,
    pub code: StatusCode,
    pub message: String,
}

/// A request refused as a whole, before any record was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRefused {
    pub code: StatusCode,
    pub message: String,
}

/// Why a request was not taken.
#[derive(Debug)]
pub enum ViidFailure {
    /// The body is not what the standard says (the sender must change it).
    Refused(RequestRefused),
    /// The hub could not store good records (the sender should send them again).
    Failed(IngestError),
}

impl From<IngestError> for ViidFailure {
    fn from(err: IngestError) -> Self {
        ViidFailure::Failed(err)
    }
}

impl From<CatalogError> for ViidFailure {
    fn from(err: CatalogError) -> Self {
        ViidFailure::Failed(err.into())
    }
}

fn refused(code: StatusCode, message: impl Into<String>) -> ViidFailure {
    ViidFailure::Refused(RequestRefused {
        code,
        message: message.into(),
    })
}

/// Who sent a request: a registered GA/T 1400 account.
#[derive(Debug, Clone)]
pub struct Sender {
    pub account_id: String,
    pub department: String,
}

/// The receiver's settings (`[viid]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ViidSettings {
    pub retention_days: u32,
    pub max_image_bytes: u64,
}

/// One image of a record, checked.
struct ImageIn {
    row: Row,
    data: Option<Vec<u8>>,
    /// The data's SHA-256 in hex, computed while checking (in parallel per request, not
    /// on the commit's path).
    sha256: Option<String>,
    extension: &'static str,
}

/// One good record: its row and its images.
struct RecordIn {
    index: usize,
    row: Row,
    images: Vec<ImageIn>,
}

/// The receiver: checks records, stores images, commits rows.
#[derive(Clone)]
pub struct ViidReceiver {
    ingest: Ingest,
    settings: ViidSettings,
    /// One lane per department's landing dataset of a kind.
    lanes: Arc<std::sync::Mutex<Lanes>>,
}

/// The lanes by department and kind.
type Lanes = HashMap<(String, ViidKind), Arc<Lane>>;

/// Where requests for one landing dataset wait for their records to be committed.
///
/// Requests that arrive while the lane's commits are under way are committed together by
/// the next: one pack per folder, one Parquet file per dataset and one catalog transaction
/// for all of them (group commit). The fixed cost of a commit is then shared, and the
/// files stay fewer.
///
/// A commit that starts while another is still under way also waits for the requests of
/// its lane that are being checked at that moment (see [`Lane::gather`]): with a few
/// busy senders, the requests otherwise reach the lane one at a time, and each would pay
/// a whole commit (two Parquet files, a pack, a catalog transaction, and later the
/// compaction of those files).
struct Lane {
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// A permit per commit under way: two, so that one batch is prepared and written
    /// while the other waits on its syncs and the catalog.
    committing: tokio::sync::Semaphore,
    /// Commits that hold a permit now (the semaphore's free permits would say as much,
    /// but releasing a permit wakes nobody: [`UnderWay`] counts and wakes together).
    under_way: AtomicUsize,
    /// Requests of this lane whose records are being checked now (see [`Checking`]).
    checks: std::sync::Mutex<Checks>,
    /// Woken when a check or a commit ends.
    changed: tokio::sync::Notify,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            waiting: std::sync::Mutex::default(),
            committing: tokio::sync::Semaphore::new(COMMITS_IN_FLIGHT_PER_LANE),
            under_way: AtomicUsize::new(0),
            checks: std::sync::Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }
}

/// The checks of a lane's requests under way, numbered in the order they started.
#[derive(Default)]
struct Checks {
    next: u64,
    unfinished: BTreeSet<u64>,
}

/// A request of a lane being checked, from before its check starts until its records
/// wait in the lane (or it turns out to have none): listed in [`Lane::checks`].
struct Checking {
    lane: Arc<Lane>,
    number: u64,
}

impl Checking {
    fn start(lane: &Arc<Lane>) -> Self {
        let mut checks = lane.checks();
        let number = checks.next;
        checks.next += 1;
        checks.unfinished.insert(number);
        Self {
            lane: lane.clone(),
            number,
        }
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.lane.checks().unfinished.remove(&self.number);
        self.lane.changed.notify_waiters();
    }
}

/// A commit holding one of its lane's permits: counted in [`Lane::under_way`].
struct UnderWay<'a>(&'a Lane);

impl<'a> UnderWay<'a> {
    fn start(lane: &'a Lane) -> Self {
        lane.under_way.fetch_add(1, Ordering::SeqCst);
        Self(lane)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.under_way.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// One request's checked records waiting in a lane, and where to tell it the outcome.
struct Waiting {
    good: Vec<RecordIn>,
    now: DateTime<Utc>,
    outcome: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Lane {
    /// The requests the next commit takes: the oldest first, up to
    /// [`MAX_RECORDS_PER_COMMIT`] records (at least one request).
    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut records = 0;
        let count = waiting
            .iter()
            .take_while(|w| {
                records += w.good.len();
                records <= MAX_RECORDS_PER_COMMIT
            })
            .count()
            .max(1)
            .min(waiting.len());
        waiting.drain(..count).collect()
    }

    fn checks(&self) -> std::sync::MutexGuard<'_, Checks> {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Before a commit takes its batch: while another commit of the lane is under way
    /// (the syncs and the catalog are busy with it anyway), waits for the requests whose
    /// checks were under way when it started to join the batch (not for checks started
    /// later: with many senders there always are some, and the commits would end up one
    /// after the other). Never waits when it is the only commit under way, when nothing
    /// waits, or once a full commit's records wait: no fixed delay, and an idle lane
    /// commits a request at once.
    async fn gather(&self) {
        let horizon = self.checks().next;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so that a change in between wakes it.
            changed.as_mut().enable();
            let earlier_check_under_way = self
                .checks()
                .unfinished
                .first()
                .is_some_and(|&number| number < horizon);
            let only_this_commit = self.under_way.load(Ordering::SeqCst) <= 1;
            if only_this_commit || !earlier_check_under_way {
                return;
            }
            {
                let waiting = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let records: usize = waiting.iter().map(|w| w.good.len()).sum();
                if waiting.is_empty() || records >= MAX_RECORDS_PER_COMMIT {
                    return;
                }
            }
            changed.await;
        }
    }
}

impl ViidReceiver {
    pub fn new(ingest: Ingest, settings: ViidSettings) -> Self {
        Self {
            ingest,
            settings,
            lanes: Arc::default(),
        }
    }

    pub fn settings(&self) -> ViidSettings {
        self.settings
    }

    /// Creates the landing datasets of `department` that do not exist yet (another node
    /// creating one at the same time is fine). Recorded in the audit log as the hub's.
    pub async fn ensure_datasets(&self, department: &str) -> Result<(), IngestError> {
        let mut wanted: Vec<NewDataset> = KINDS
            .iter()
            .map(|kind| kind.new_dataset(department, self.settings.retention_days))
            .collect();
        wanted.push(kinds::images_dataset(
            department,
            self.settings.retention_days,
        ));
        for new in wanted {
            if self.ingest.catalog.dataset(&new.name).await?.is_some() {
                continue;
            }
            let name = new.name.to_string();
            match self.ingest.catalog.create_dataset(new).await {
                Ok(_) => {
                    self.ingest.audit.record(
                        AuditEvent::by_hub(Action::DatasetCreate, Outcome::Ok)
                            .dataset(name.clone())
                            .detail(json!({"for": "GA/T 1400 receiver"})),
                    );
                    tracing::info!(dataset = %name, "Created a GA/T 1400 landing dataset.");
                }
                Err(CatalogError::AlreadyExists { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    async fn landing(&self, department: &str, table: &str) -> Result<Dataset, IngestError> {
        let name = DatasetName::parse(&format!("{department}.{table}"))?;
        if let Some(dataset) = self.ingest.catalog.dataset(&name).await? {
            return Ok(dataset);
        }
        self.ensure_datasets(department).await?;
        self.ingest
            .catalog
            .dataset(&name)
            .await?
            .ok_or_else(|| IngestError::DatasetNotFound(name.to_string()))
    }

    /// Receives one `POST /VIID/{resource}` body from `sender` at `now`: checks every
    /// record, commits the good ones with their images, and answers each record's status
    /// in the order sent. Audited.
    pub async fn receive(
        &self,
        sender: &Sender,
        kind: ViidKind,
        body: Bytes,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordStatus>, ViidFailure> {
        let _busy = self.ingest.foreground_write();
        let result = self.receive_unaudited(sender, kind, body, now).await;
        let event = match &result {
            Ok(statuses) => {
                let stored = statuses.iter().filter(|s| s.code == StatusCode::Ok).count();
                AuditEvent::by_hub(Action::ViidReceive, Outcome::Ok).detail(json!({
                    "account": sender.account_id,
                    "resource": kind.resource(),
                    "records_stored": stored,
                    "records_refused": statuses.len() - stored,
                }))
            }
            Err(failure) => {
                let (outcome, message) = match failure {
                    ViidFailure::Refused(r) => (Outcome::Refused, r.message.clone()),
                    ViidFailure::Failed(err) => (Outcome::Failed, err.to_string()),
                };
                AuditEvent::by_hub(Action::ViidReceive, outcome).detail(json!({
                    "account": sender.account_id,
                    "resource": kind.resource(),
                    "error": message,
                }))
            }
        };
        let mut event = event.dataset(format!("{}.{}", sender.department, kind.dataset()));
        event.department = Some(sender.department.clone());
        event.principal = Some(format!("viid:{}", sender.account_id));
        self.ingest.audit.record(event);
        result
    }

    async fn receive_unaudited(
        &self,
        sender: &Sender,
        kind: ViidKind,
        body: Bytes,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordStatus>, ViidFailure> {
        let settings = self.settings;
        let sender_for_check = sender.clone();
        let checking = Checking::start(&self.lane(&sender.department, kind));
        let checked = tokio::task::spawn_blocking(move || {
            check_request(kind, &body, &sender_for_check, now, settings)
        })
        .await
        .map_err(|err| IngestError::Internal(format!("checking task failed: {err}")))??;
        let (mut statuses, good) = checked;
        let labels = [("resource", kind.resource())];
        let refused_count = statuses.iter().filter(|s| s.code != StatusCode::Ok).count();
        metrics::counter!("cityhub_viid_records_refused_total", &labels)
            .increment(refused_count as u64);
        if good.is_empty() {
            return Ok(statuses);
        }
        let indices: Vec<usize> = good.iter().map(|record| record.index).collect();
        let stored = self.commit_in_lane(sender, kind, checking, good, now).await;
        match stored {
            Ok(()) => {
                metrics::counter!("cityhub_viid_records_total", &labels)
                    .increment(indices.len() as u64);
                Ok(statuses)
            }
            Err(err) => {
                tracing::warn!(
                    account = %sender.account_id,
                    resource = kind.resource(),
                    records = indices.len(),
                    error = %err,
                    "Could not store GA/T 1400 records; they were answered as not stored."
                );
                for index in indices {
                    let status = &mut statuses[index];
                    status.code = StatusCode::OtherError;
                    status.message = format!("not stored, send it again: {err}");
                }
                Ok(statuses)
            }
        }
    }

    /// The lane of `department`'s landing dataset of `kind`.
    fn lane(&self, department: &str, kind: ViidKind) -> Arc<Lane> {
        self.lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((department.to_string(), kind))
            .or_default()
            .clone()
    }

    /// Queues `good` (the records `checking` checked) in its lane and waits until a
    /// commit has taken it (with whatever else was waiting). The commit runs as its own
    /// task: a request whose client goes away must not cancel a commit that carries other
    /// requests' records.
    async fn commit_in_lane(
        &self,
        sender: &Sender,
        kind: ViidKind,
        checking: Checking,
        good: Vec<RecordIn>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let lane = checking.lane.clone();
        let department = sender.department.clone();
        let (outcome, answer) = tokio::sync::oneshot::channel();
        lane.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Waiting { good, now, outcome });
        // Queued: a commit gathering requests need not wait for this one any more.
        drop(checking);
        let receiver = self.clone();
        // Every request queued spawns one turn; a turn that finds its request already
        // taken by an earlier turn ends at once.
        tokio::spawn(async move {
            let Ok(turn) = lane.committing.acquire().await else {
                return;
            };
            let under_way = UnderWay::start(&lane);
            lane.gather().await;
            let mut batch = lane.take_batch();
            let Some(now) = batch.first().map(|first| first.now) else {
                return;
            };
            let records: Vec<RecordIn> = batch
                .iter_mut()
                .flat_map(|w| std::mem::take(&mut w.good))
                .collect();
            metrics::histogram!("cityhub_viid_requests_per_commit").record(batch.len() as f64);
            let result = receiver
                .store(&department, kind, records, now)
                .await
                .map_err(|err| err.to_string());
            drop(under_way);
            drop(turn);
            for waiting in batch {
                let _ = waiting.outcome.send(result.clone());
            }
        });
        answer
            .await
            .unwrap_or_else(|_| Err("the commit ended without an answer".into()))
    }

    /// Receives `POST /VIID/SubscribeNotifications` from a lower platform the hub
    /// subscribed to: each notification's record lists (`MotorVehicleObjectList`,
    /// `FaceObjectList`, ...) are received as if posted to their resources. Answers one
    /// status per notification (`Id`: its `NotificationID`): OK when every record of it
    /// was stored, else what was refused.
    pub async fn receive_notifications(
        &self,
        sender: &Sender,
        body: Bytes,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordStatus>, ViidFailure> {
        let value = parse_body(&body)?;
        let notifications = objects_in(&value, "SubscribeNotification")?;
        let mut statuses = Vec::with_capacity(notifications.len());
        for notification in notifications {
            let id = notification
                .get("NotificationID")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            let mut received = 0;
            let mut problems = Vec::new();
            for kind in KINDS.into_iter().chain([ViidKind::Image]) {
                let list_name = format!("{}ObjectList", kind.object_name());
                let Some(list) = notification.get(&list_name) else {
                    continue;
                };
                let object_name = format!("{}Object", kind.object_name());
                let records = list.get(&object_name).unwrap_or(&Json::Null);
                let body =
                    json!({format!("{}ListObject", kind.object_name()): {object_name: records}});
                match self
                    .receive(sender, kind, Bytes::from(body.to_string()), now)
                    .await
                {
                    Ok(answers) => {
                        for answer in answers {
                            received += 1;
                            if answer.code != StatusCode::Ok {
                                problems
                                    .push(format!("{list_name} {}: {}", answer.id, answer.message));
                            }
                        }
                    }
                    Err(ViidFailure::Refused(refusal)) => {
                        problems.push(format!("{list_name}: {}", refusal.message));
                    }
                    Err(ViidFailure::Failed(err)) => return Err(ViidFailure::Failed(err)),
                }
            }
            let status = if received == 0 && problems.is_empty() {
                RecordStatus {
                    id,
                    code: StatusCode::InvalidJsonContent,
                    message: "holds no record list the hub receives (MotorVehicleObjectList, \
                              NonMotorVehicleObjectList, FaceObjectList, PersonObjectList, \
                              APEObjectList, ImageObjectList)"
                        .into(),
                }
            } else if problems.is_empty() {
                RecordStatus {
                    id,
                    code: StatusCode::Ok,
                    message: format!("OK: {received} records"),
                }
            } else {
                let code = if problems.iter().any(|p| p.contains("send it again")) {
                    StatusCode::OtherError
                } else {
                    StatusCode::InvalidJsonContent
                };
                RecordStatus {
                    id,
                    code,
                    message: format!(
                        "{} of {received} records not stored; {}",
                        problems.len(),
                        problems.join("; ")
                    ),
                }
            };
            statuses.push(status);
        }
        Ok(statuses)
    }

    /// Writes the images and the rows of `good` (the records of one or more requests),
    /// then commits both datasets together; removes what it wrote if the commit does not
    /// happen.
    ///
    /// The images of one commit are written as packs, one object per capture day, kind
    /// and region, each image a byte range of its pack with its own key
    /// (`{pack}/{offset}-{length}.{ext}`). One object per image would cost one synced file
    /// each, and a disk syncs a few thousand files a second: a city's checkpoints send
    /// more images than that at their peaks (the same reason image stores such as
    /// Haystack pack small files).
    async fn store(
        &self,
        department: &str,
        kind: ViidKind,
        good: Vec<RecordIn>,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let records = self.landing(department, kind.dataset()).await?;
        let mut image_rows = Vec::new();
        let mut record_rows = Vec::with_capacity(good.len());
        // Each pack's name and images (chunks written one after the other), by its folder.
        let mut packs: BTreeMap<String, (String, PutPayloadMut)> = BTreeMap::new();
        for record in good {
            record_rows.push(record.row);
            for image in record.images {
                let mut row = image.row;
                if let Some(data) = image.data {
                    let captured: DateTime<Utc> = row
                        .text("captured_at")
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(now);
                    let region = row.text("region_code").unwrap_or("000000").to_string();
                    // By capture day first, so that retention deletes whole days.
                    let folder = format!(
                        "viid/{department}/{}/{}/{region}",
                        captured
                            .with_timezone(&fields::beijing())
                            .format("%Y-%m-%d"),
                        kind.label(),
                    );
                    let (pack, images) = packs.entry(folder).or_insert_with_key(|folder| {
                        (
                            format!("{folder}/{}.pack", uuid::Uuid::now_v7()),
                            PutPayloadMut::new(),
                        )
                    });
                    let (offset, size) = (images.content_length(), data.len());
                    images.push(Bytes::from(data));
                    row.insert(
                        "object_key",
                        Value::String(format!("{pack}/{offset}-{size}.{}", image.extension)),
                    );
                    row.insert("bytes", Value::from(size as u64));
                    row.insert("sha256", image.sha256.map_or(Value::Null, Value::String));
                }
                image_rows.push(row);
            }
        }
        let image_writes: Vec<(String, PutPayload)> = packs
            .into_values()
            .map(|(pack, images)| (pack, images.freeze()))
            .collect();
        let written: Vec<String> = image_writes.iter().map(|(k, _)| k.clone()).collect();
        let result = self
            .store_rows(
                &records,
                kind,
                department,
                record_rows,
                image_rows,
                image_writes,
            )
            .await;
        if result.is_err() {
            for key in &written {
                self.ingest.storage.delete(key).await;
            }
        }
        result
    }

    async fn store_rows(
        &self,
        records: &Dataset,
        kind: ViidKind,
        department: &str,
        record_rows: Vec<Row>,
        image_rows: Vec<Row>,
        image_writes: Vec<(String, PutPayload)>,
    ) -> Result<(), IngestError> {
        let record_count = record_rows.len();
        let image_bytes: u64 = image_writes
            .iter()
            .map(|(_, pack)| pack.content_length() as u64)
            .sum();
        let image_count = image_rows
            .iter()
            .filter(|row| row.get("object_key").is_some_and(|key| !key.is_null()))
            .count() as u64;
        let storage = self.ingest.storage.clone();
        let write_packs = async {
            let mut writes = futures::stream::iter(image_writes.into_iter().map(|(key, bytes)| {
                let storage = storage.clone();
                async move { storage.put_new(&key, bytes).await }
            }))
            .buffer_unordered(IMAGE_WRITES_IN_FLIGHT);
            while let Some(written) = writes.next().await {
                written?;
            }
            Ok::<(), IngestError>(())
        };
        // Images sent on their own are the rows; records' images go beside their rows.
        let (rows, image_rows) = if kind == ViidKind::Image {
            (image_rows, Vec::new())
        } else {
            (record_rows, image_rows)
        };
        let images = if image_rows.is_empty() {
            None
        } else {
            Some(self.landing(department, IMAGES_DATASET).await?)
        };
        let write_records = async {
            let batch = rows_batch(records, rows)?;
            self.ingest.write_file(records, vec![batch]).await
        };
        let write_image_rows = async {
            let Some(images) = &images else {
                return Ok(None);
            };
            let batch = rows_batch(images, image_rows)?;
            self.ingest.write_file(images, vec![batch]).await.map(Some)
        };
        // The packs and both files are written at once: each waits on its own syncs.
        let (packs, record_file, image_file) =
            tokio::join!(write_packs, write_records, write_image_rows);
        let (record_file, image_file) = match (packs, record_file, image_file) {
            (Ok(()), Ok(record_file), Ok(image_file)) => (record_file, image_file),
            (packs, record_file, image_file) => {
                // The caller removes the packs; the files written are removed here.
                let mut failure = packs.err();
                match record_file {
                    Ok(file) => self.ingest.storage.delete(&file.path).await,
                    Err(err) => failure = failure.or(Some(err)),
                }
                match image_file {
                    Ok(Some(file)) => self.ingest.storage.delete(&file.path).await,
                    Ok(None) => {}
                    Err(err) => failure = failure.or(Some(err)),
                }
                return Err(failure.unwrap_or_else(|| {
                    IngestError::Internal("a GA/T 1400 write failed without a reason".into())
                }));
            }
        };
        match (images, image_file) {
            (Some(images), Some(image_file)) => {
                self.ingest
                    .commit_appends_together(vec![
                        (records, vec![record_file]),
                        (&images, vec![image_file]),
                    ])
                    .await?;
            }
            _ => {
                let outcome = self
                    .ingest
                    .commit_append(records, vec![record_file], None)
                    .await?;
                if !matches!(outcome, cityhub_catalog::CommitOutcome::Committed(_)) {
                    return Err(IngestError::Internal(
                        "a GA/T 1400 commit was answered without a snapshot".into(),
                    ));
                }
            }
        }
        metrics::counter!("cityhub_viid_images_total").increment(image_count);
        metrics::counter!("cityhub_viid_image_bytes_total").increment(image_bytes);
        tracing::debug!(
            dataset = %records.name,
            resource = kind.resource(),
            records = record_count,
            images = image_count,
            "Committed GA/T 1400 records."
        );
        Ok(())
    }
}

/// A request body as JSON (borrowing its strings), or the standard's refusal
/// (StatusCode 7).
fn parse_body(body: &[u8]) -> Result<Json<'_>, ViidFailure> {
    Json::parse(body).map_err(|err| {
        refused(
            StatusCode::InvalidJsonFormat,
            format!("the body is not JSON: {err}"),
        )
    })
}

/// The objects of a `{"{name}ListObject": {"{name}Object": [...]}}` body, at least one.
fn objects_in<'b, 'a>(value: &'b Json<'a>, name: &str) -> Result<&'b [Json<'a>], ViidFailure> {
    let (list, object) = (format!("{name}ListObject"), format!("{name}Object"));
    match value
        .get(&list)
        .and_then(|l| l.get(&object))
        .and_then(Json::as_array)
    {
        Some(objects) if !objects.is_empty() => Ok(objects),
        _ => Err(refused(
            StatusCode::InvalidJsonContent,
            format!("expected {{\"{list}\": {{\"{object}\": [...]}}}} with at least one object"),
        )),
    }
}

/// The rows as one Arrow batch of `dataset`'s schema. The rows were checked already, so
/// a row the decoder refuses is the hub's mistake, not the sender's.
fn rows_batch(
    dataset: &Dataset,
    rows: Vec<Row>,
) -> Result<arrow::record_batch::RecordBatch, IngestError> {
    let decoded = decode_json_objects(
        rows.into_iter().map(Row::into_cells),
        dataset.columns.clone().into(),
        5,
    )?;
    if let Some(first) = decoded.rejected.first() {
        return Err(IngestError::Internal(format!(
            "a checked GA/T 1400 row did not fit {}: {} ({})",
            dataset.name,
            first.error,
            first.column.as_deref().unwrap_or("")
        )));
    }
    Ok(decoded.batch)
}

pub use images::{IMAGE_COLUMN, ImageOwner, content_type, image_owner};
pub use subscriptions::{Notification, RECORDS_PER_NOTIFICATION, SUBSCRIBE_DETAILS};

#[cfg(test)]
mod tests;
