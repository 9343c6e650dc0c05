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

pub mod fields;
pub mod kinds;

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use cityhub_catalog::{
    Action, AuditEvent, CatalogError, Dataset, DatasetName, NewDataset, Outcome,
};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::decode::{Format, decode_body};
use crate::{Ingest, IngestError};
use fields::{
    Check, FieldError, IMAGE_FORMATS, IMAGE_TYPES, check_fields, check_value, field_error,
};
pub use kinds::{IMAGES_DATASET, KINDS, ViidKind};

/// How far ahead of the hub's clock a capture time may be: cameras' clocks drift, but a
/// record from next week is a broken clock, and would sit outside every time window.
const CLOCK_SKEW_ALLOWED: Duration = Duration::minutes(10);

/// The most records one request may carry.
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// Images written at once.
const IMAGE_WRITES_IN_FLIGHT: usize = 32;

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
    row: Map<String, Value>,
    data: Option<Vec<u8>>,
    extension: &'static str,
}

/// One good record: its row and its images.
struct RecordIn {
    index: usize,
    row: Map<String, Value>,
    images: Vec<ImageIn>,
}

/// The receiver: checks records, stores images, commits rows.
#[derive(Clone)]
pub struct ViidReceiver {
    ingest: Ingest,
    settings: ViidSettings,
}

impl ViidReceiver {
    pub fn new(ingest: Ingest, settings: ViidSettings) -> Self {
        Self { ingest, settings }
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
        let stored = self.store(sender, kind, &good, now).await;
        match stored {
            Ok(()) => {
                metrics::counter!("cityhub_viid_records_total", &labels)
                    .increment(good.len() as u64);
                Ok(statuses)
            }
            Err(err) => {
                tracing::warn!(
                    account = %sender.account_id,
                    resource = kind.resource(),
                    records = good.len(),
                    error = %err,
                    "Could not store GA/T 1400 records; they were answered as not stored."
                );
                for record in &good {
                    let status = &mut statuses[record.index];
                    status.code = StatusCode::OtherError;
                    status.message = format!("not stored, send it again: {err}");
                }
                Ok(statuses)
            }
        }
    }

    /// Writes the images, then the rows, then commits both datasets together; removes
    /// what it wrote if the commit does not happen.
    async fn store(
        &self,
        sender: &Sender,
        kind: ViidKind,
        good: &[RecordIn],
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let records = self.landing(&sender.department, kind.dataset()).await?;
        let mut image_rows = Vec::new();
        let mut image_writes = Vec::new();
        for record in good {
            for image in &record.images {
                let mut row = image.row.clone();
                if let Some(data) = &image.data {
                    let captured: DateTime<Utc> = row
                        .get("captured_at")
                        .and_then(Value::as_str)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(now);
                    let region = row
                        .get("region_code")
                        .and_then(Value::as_str)
                        .unwrap_or("000000")
                        .to_string();
                    let key = format!(
                        "viid/{}/{}/{region}/{}/{}.{}",
                        sender.department,
                        kind.label(),
                        captured
                            .with_timezone(&fields::beijing())
                            .format("%Y-%m-%d"),
                        uuid::Uuid::now_v7(),
                        image.extension
                    );
                    row.insert("object_key".into(), Value::String(key.clone()));
                    row.insert("bytes".into(), Value::from(data.len() as u64));
                    row.insert(
                        "sha256".into(),
                        Value::String(hex::encode(Sha256::digest(data))),
                    );
                    image_writes.push((key, Bytes::from(data.clone())));
                }
                image_rows.push(row);
            }
        }
        let written_images: Vec<String> = image_writes.iter().map(|(k, _)| k.clone()).collect();
        let result = self
            .store_rows(
                &records,
                kind,
                &sender.department,
                good,
                image_rows,
                image_writes,
            )
            .await;
        if result.is_err() {
            for key in &written_images {
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
        good: &[RecordIn],
        image_rows: Vec<Map<String, Value>>,
        image_writes: Vec<(String, Bytes)>,
    ) -> Result<(), IngestError> {
        let image_bytes: u64 = image_writes.iter().map(|(_, b)| b.len() as u64).sum();
        let image_count = image_writes.len() as u64;
        let storage = self.ingest.storage.clone();
        let mut writes = futures::stream::iter(image_writes.into_iter().map(|(key, bytes)| {
            let storage = storage.clone();
            async move { storage.put_new(&key, bytes).await }
        }))
        .buffer_unordered(IMAGE_WRITES_IN_FLIGHT);
        while let Some(written) = writes.next().await {
            written?;
        }
        drop(writes);

        let record_file = self
            .ingest
            .write_file(
                records,
                vec![rows_batch(records, good.iter().map(|r| &r.row)).await?],
            )
            .await?;
        if image_rows.is_empty() {
            let outcome = self
                .ingest
                .commit_append(records, vec![record_file], None)
                .await?;
            if !matches!(outcome, cityhub_catalog::CommitOutcome::Committed(_)) {
                return Err(IngestError::Internal(
                    "a GA/T 1400 commit was answered without a snapshot".into(),
                ));
            }
        } else {
            let images = self.landing(department, IMAGES_DATASET).await?;
            let image_file = match rows_batch(&images, image_rows.iter()).await {
                Ok(batch) => self.ingest.write_file(&images, vec![batch]).await,
                Err(err) => Err(err),
            };
            let image_file = match image_file {
                Ok(file) => file,
                Err(err) => {
                    self.ingest.storage.delete(&record_file.path).await;
                    return Err(err);
                }
            };
            self.ingest
                .commit_appends_together(vec![
                    (records, vec![record_file]),
                    (&images, vec![image_file]),
                ])
                .await?;
            metrics::counter!("cityhub_viid_images_total").increment(image_count);
            metrics::counter!("cityhub_viid_image_bytes_total").increment(image_bytes);
        }
        tracing::debug!(
            dataset = %records.name,
            resource = kind.resource(),
            records = good.len(),
            images = image_count,
            "Committed GA/T 1400 records."
        );
        Ok(())
    }
}

/// The column of `viid_images` that names each image.
pub const IMAGE_COLUMN: &str = "object_key";

impl ViidReceiver {
    /// The image stored under `key`, with its media type, for `principal` at `now`: only
    /// to who may see it unmasked ([`cityhub_catalog::access::may_see_image`]). Every
    /// image served, and every refusal, is recorded in the audit log (PIPL art. 26: images
    /// of public-security cameras are for public-security purposes). An image whose
    /// dataset the principal may not even see is answered as not found.
    pub async fn image(
        &self,
        principal: &cityhub_catalog::Principal,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(Bytes, &'static str), IngestError> {
        let not_found = || IngestError::DatasetNotFound(format!("image {key}"));
        let Some(owner) = image_owner(key) else {
            return Err(not_found());
        };
        let dataset = self
            .ingest
            .catalog
            .dataset(&owner.dataset)
            .await?
            .ok_or_else(not_found)?;
        let grants = self
            .ingest
            .catalog
            .grants_held_by(Some(&principal.department))
            .await?;
        let how = cityhub_catalog::access::access(principal, &dataset, &grants, now);
        let event = |outcome, detail: Value| {
            AuditEvent::by(principal, Action::ImageRead, outcome)
                .dataset(owner.dataset.to_string())
                .detail(detail)
        };
        if how == cityhub_catalog::Access::Hidden {
            self.ingest.audit.record(event(
                Outcome::Refused,
                json!({"key": key, "why": "hidden"}),
            ));
            return Err(not_found());
        }
        if !cityhub_catalog::access::may_see_image(principal, &how, IMAGE_COLUMN, &owner.region) {
            self.ingest.audit.record(event(
                Outcome::Refused,
                json!({"key": key, "access": how.label()}),
            ));
            return Err(IngestError::Forbidden(format!(
                "images of {} are served only to who may see {IMAGE_COLUMN} unmasked (its \
                 owner {}, or a department whose grant unmasks it) and, for region-scoped \
                 tokens, only images of their region; apply for a grant with unmasked: \
                 [\"{IMAGE_COLUMN}\"]",
                owner.dataset, dataset.owner
            )));
        }
        let bytes = match self.ingest.storage.get(key).await {
            Ok(bytes) => bytes,
            Err(err) => {
                // Past retention, or never written: not found either way.
                tracing::debug!(key, error = %err, "An image asked for is not in the object store.");
                return Err(not_found());
            }
        };
        self.ingest.audit.record(event(
            Outcome::Ok,
            json!({"key": key, "bytes": bytes.len(), "access": how.label()}),
        ));
        metrics::counter!("cityhub_viid_images_served_total").increment(1);
        Ok((bytes, content_type(key)))
    }
}

/// The rows as one Arrow batch of `dataset`'s schema. The rows were checked already, so
/// a row the decoder refuses is the hub's mistake, not the sender's.
async fn rows_batch<'a>(
    dataset: &Dataset,
    rows: impl Iterator<Item = &'a Map<String, Value>>,
) -> Result<arrow::record_batch::RecordBatch, IngestError> {
    let mut ndjson = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut ndjson, row)
            .map_err(|err| IngestError::Internal(format!("encoding a row failed: {err}")))?;
        ndjson.push(b'\n');
    }
    let columns: Arc<[_]> = dataset.columns.clone().into();
    let decoded = tokio::task::spawn_blocking(move || {
        decode_body(Format::NdJson, Bytes::from(ndjson), columns, 5)
    })
    .await
    .map_err(|err| IngestError::Internal(format!("decoding task failed: {err}")))??;
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

/// Parses and checks a request body: every record's status in order (good ones `Ok`),
/// and the good records.
fn check_request(
    kind: ViidKind,
    body: &[u8],
    sender: &Sender,
    now: DateTime<Utc>,
    settings: ViidSettings,
) -> Result<(Vec<RecordStatus>, Vec<RecordIn>), ViidFailure> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        refused(
            StatusCode::InvalidJsonFormat,
            format!("the body is not JSON: {err}"),
        )
    })?;
    let list_name = format!("{}ListObject", kind.object_name());
    let object_name = format!("{}Object", kind.object_name());
    let shape = || {
        refused(
            StatusCode::InvalidJsonContent,
            format!("expected {{\"{list_name}\": {{\"{object_name}\": [...]}}}}"),
        )
    };
    let objects = value
        .get(&list_name)
        .and_then(|list| list.get(&object_name))
        .and_then(Value::as_array)
        .ok_or_else(shape)?;
    if objects.is_empty() {
        return Err(refused(
            StatusCode::InvalidJsonContent,
            format!("{list_name}.{object_name} is empty; send at least one record"),
        ));
    }
    if objects.len() > MAX_RECORDS_PER_REQUEST {
        return Err(refused(
            StatusCode::InvalidJsonContent,
            format!(
                "{} records in one request; send at most {MAX_RECORDS_PER_REQUEST} at a time",
                objects.len()
            ),
        ));
    }
    let mut statuses = Vec::with_capacity(objects.len());
    let mut good = Vec::new();
    let mut seen = HashSet::new();
    let context = Context {
        kind,
        sender,
        now,
        settings,
        received_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    for (index, object) in objects.iter().enumerate() {
        let id = object
            .get(kind.id_field())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let checked = match object.as_object() {
            None => Err(field_error(object_name.clone(), "must be a JSON object")),
            Some(_) if !id.is_empty() && !seen.insert(id.clone()) => Err(field_error(
                kind.id_field(),
                format!("{id} appears twice in this request; send each record once"),
            )),
            Some(object) => check_record(&context, object),
        };
        match checked {
            Ok((row, images)) => {
                statuses.push(RecordStatus {
                    id,
                    code: StatusCode::Ok,
                    message: "OK".into(),
                });
                good.push(RecordIn { index, row, images });
            }
            Err(err) => statuses.push(RecordStatus {
                id,
                code: StatusCode::InvalidJsonContent,
                message: err.to_string(),
            }),
        }
    }
    Ok((statuses, good))
}

struct Context<'a> {
    kind: ViidKind,
    sender: &'a Sender,
    now: DateTime<Utc>,
    settings: ViidSettings,
    received_at: String,
}

/// Checks one record: its id, capture time, kept fields and images.
fn check_record(
    context: &Context<'_>,
    object: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<ImageIn>), FieldError> {
    let kind = context.kind;
    let id_field = kind.id_field();
    let id = check_value(
        id_field,
        Check::Digits(kind.id_length()),
        object.get(id_field).unwrap_or(&Value::Null),
    )?;
    if id.is_null() {
        return Err(field_error(
            id_field,
            "is missing; every record needs its id",
        ));
    }
    let mut row = Map::new();
    row.insert(kinds::snake(id_field), id.clone());
    let captured_at = capture_time(context, object)?;
    if let Some(at) = &captured_at {
        row.insert("captured_at".into(), Value::String(at.clone()));
    }
    row.extend(check_fields(object, &kind.fields(), "")?);
    let device = match kind {
        ViidKind::Ape => id.as_str().unwrap_or_default().to_string(),
        _ => match row.get("device_id").and_then(Value::as_str) {
            Some(device) => device.to_string(),
            None => {
                return Err(field_error(
                    "DeviceID",
                    "is missing; say which device made it",
                ));
            }
        },
    };
    row.insert("region_code".into(), Value::String(device[..6].to_string()));
    row.insert(
        "platform_id".into(),
        Value::String(context.sender.account_id.clone()),
    );
    row.insert(
        "received_at".into(),
        Value::String(context.received_at.clone()),
    );
    let images = match kind {
        ViidKind::Ape => Vec::new(),
        _ => check_images(context, object, &row, captured_at.as_deref())?,
    };
    if kind != ViidKind::Ape {
        row.insert("image_count".into(), Value::from(images.len()));
    }
    Ok((row, images))
}

/// The record's capture time from the first of its kind's time fields present, checked
/// against the clock and the retention.
fn capture_time(
    context: &Context<'_>,
    object: &Map<String, Value>,
) -> Result<Option<String>, FieldError> {
    let names = context.kind.time_fields();
    if names.is_empty() {
        return Ok(None);
    }
    for name in names {
        let checked = check_value(name, Check::Time, object.get(*name).unwrap_or(&Value::Null))?;
        if let Value::String(text) = checked {
            check_time_window(name, &text, context)?;
            return Ok(Some(text));
        }
    }
    Err(field_error(
        names.join(" or "),
        "is missing; every record needs the time it was captured",
    ))
}

fn check_time_window(name: &str, rfc3339: &str, context: &Context<'_>) -> Result<(), FieldError> {
    let at = DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| field_error(name, err.to_string()))?;
    if at > context.now + CLOCK_SKEW_ALLOWED {
        return Err(field_error(
            name,
            format!(
                "{} is in the future (the hub's clock says {}); check the device's clock",
                fields::format_time(at),
                fields::format_time(context.now)
            ),
        ));
    }
    let retention = Duration::days(i64::from(context.settings.retention_days));
    if at < context.now - retention {
        return Err(field_error(
            name,
            format!(
                "{} is older than the {} days records are kept; it would be deleted at once",
                fields::format_time(at),
                context.settings.retention_days
            ),
        ));
    }
    Ok(())
}

/// Checks `SubImageList.SubImageInfoObject[]`: each image's fields, and its data
/// (base64 `Data`) or reference (`StoragePath`).
fn check_images(
    context: &Context<'_>,
    object: &Map<String, Value>,
    record: &Map<String, Value>,
    captured_at: Option<&str>,
) -> Result<Vec<ImageIn>, FieldError> {
    let Some(list) = object.get("SubImageList") else {
        return Ok(Vec::new());
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    let items = list
        .get("SubImageInfoObject")
        .and_then(Value::as_array)
        .ok_or_else(|| field_error("SubImageList", "expected {\"SubImageInfoObject\": [...]}"))?;
    let parent_id = record
        .get(&kinds::snake(context.kind.id_field()))
        .cloned()
        .unwrap_or(Value::Null);
    let mut images = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let prefix = format!("SubImageList.SubImageInfoObject[{index}].");
        let item = item
            .as_object()
            .ok_or_else(|| field_error(prefix.trim_end_matches('.'), "must be a JSON object"))?;
        let image_fields = [
            fields::field("ImageID", "image_id", Check::Digits(41), ""),
            fields::field("DeviceID", "device_id", Check::Digits(20), ""),
            fields::field("Type", "type", Check::Code(IMAGE_TYPES), ""),
            fields::field("Width", "width", Check::Int(0, 100_000), ""),
            fields::field("Height", "height", Check::Int(0, 100_000), ""),
            fields::field("StoragePath", "storage_path", Check::Text(1024), ""),
        ];
        let mut row = check_fields(item, &image_fields, &prefix)?;
        let format = match item.get("FileFormat").and_then(Value::as_str) {
            None | Some("") => "Jpeg",
            Some(text) => IMAGE_FORMATS
                .iter()
                .copied()
                .find(|known| known.eq_ignore_ascii_case(text))
                .ok_or_else(|| {
                    field_error(
                        format!("{prefix}FileFormat"),
                        format!("{text:?} is not one of {}", IMAGE_FORMATS.join(", ")),
                    )
                })?,
        };
        row.insert("file_format".into(), Value::String(format.into()));
        let shot = check_value(
            &format!("{prefix}ShotTime"),
            Check::Time,
            item.get("ShotTime").unwrap_or(&Value::Null),
        )?;
        let captured = match (shot, captured_at) {
            (Value::String(text), _) => text,
            (_, Some(parent)) => parent.to_string(),
            (_, None) => context.received_at.clone(),
        };
        row.insert("captured_at".into(), Value::String(captured));
        if row.get("device_id").is_none_or(Value::is_null) {
            row.insert(
                "device_id".into(),
                record.get("device_id").cloned().unwrap_or(Value::Null),
            );
        }
        row.insert(
            "parent_kind".into(),
            Value::String(context.kind.label().into()),
        );
        row.insert("parent_id".into(), parent_id.clone());
        for column in ["region_code", "platform_id", "received_at"] {
            row.insert(
                column.into(),
                record.get(column).cloned().unwrap_or(Value::Null),
            );
        }
        let data = match item.get("Data") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.is_empty() => None,
            Some(Value::String(text)) => Some(decode_image(
                &format!("{prefix}Data"),
                text,
                context.settings.max_image_bytes,
            )?),
            Some(other) => {
                return Err(field_error(
                    format!("{prefix}Data"),
                    format!("must be base64 text, not {}", kind_of(other)),
                ));
            }
        };
        if data.is_none() && row.get("storage_path").is_none_or(Value::is_null) {
            return Err(field_error(
                format!("{prefix}Data"),
                "is missing: send the image as base64 Data or its StoragePath",
            ));
        }
        images.push(ImageIn {
            row,
            data,
            extension: extension(format),
        });
    }
    Ok(images)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes base64 image data (a `data:` URL prefix and line breaks are tolerated), no
/// larger than `max_bytes`.
fn decode_image(path: &str, text: &str, max_bytes: u64) -> Result<Vec<u8>, FieldError> {
    let text = match text.strip_prefix("data:") {
        Some(url) => url.split_once(',').map(|(_, data)| data).unwrap_or(url),
        None => text,
    };
    // Base64 takes 4 characters for 3 bytes: refuse before decoding what cannot fit.
    if (text.len() as u64) / 4 * 3 > max_bytes + 3 {
        return Err(field_error(
            path,
            format!("the image is larger than {max_bytes} bytes (viid.max_image_bytes)"),
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        engine.decode(compact)
    } else {
        engine.decode(text)
    };
    let data = decoded.map_err(|err| field_error(path, format!("is not valid base64: {err}")))?;
    if data.is_empty() {
        return Err(field_error(path, "is empty"));
    }
    if data.len() as u64 > max_bytes {
        return Err(field_error(
            path,
            format!("the image is larger than {max_bytes} bytes (viid.max_image_bytes)"),
        ));
    }
    Ok(data)
}

fn extension(format: &str) -> &'static str {
    match format {
        "Jpeg" => "jpg",
        "Png" => "png",
        "Bmp" => "bmp",
        "Gif" => "gif",
        "Tiff" => "tif",
        _ => "bin",
    }
}

/// The media type of an image by its key's extension, for serving it.
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("bmp") => "image/bmp",
        Some("gif") => "image/gif",
        Some("tif") => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// Whose an image is, read from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOwner {
    /// The images dataset that names it (`{department}.viid_images`): who may see it.
    pub dataset: DatasetName,
    /// Where its device stands (GB/T 2260): which region-scoped readers may see it.
    pub region: String,
}

/// The owner of an image key (`viid/{department}/{kind}/{region}/{date}/{uuid}.{ext}`),
/// if it is one the receiver writes.
pub fn image_owner(key: &str) -> Option<ImageOwner> {
    let parts: Vec<&str> = key.split('/').collect();
    let [root, department, kind, region, date, file] = parts[..] else {
        return None;
    };
    let well_formed = root == "viid"
        && KINDS.iter().any(|k| k.label() == kind)
        && region.len() == 6
        && region.bytes().all(|b| b.is_ascii_digit())
        && date.len() == 10
        && file.split_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                && !ext.is_empty()
        });
    if !well_formed {
        return None;
    }
    Some(ImageOwner {
        dataset: DatasetName::parse(&format!("{department}.{IMAGES_DATASET}")).ok()?,
        region: region.to_string(),
    })
}

#[cfg(test)]
mod tests;
