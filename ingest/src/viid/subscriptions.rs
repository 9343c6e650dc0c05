//! Upper platforms subscribing to the hub (`POST /VIID/Subscribes`) and the notifications
//! the hub sends them.
//!
//! A subscription follows the landing datasets' snapshot logs: its cursor per dataset is the
//! last snapshot sequence whose records were delivered, and each round reads the files that
//! appends added after it (compactions add no records, so their files are skipped; the files
//! they replaced stay readable for `retention.snapshot_days`). A record is delivered at least
//! once: a notification that fails is sent again, with backoff, until the receiver takes it
//! or the hub gives the subscription up (`dropped`, with the reason, visible to the
//! subscriber and in `/metrics`).

use std::collections::BTreeMap;

use arrow::json::writer::{JsonArray, WriterBuilder};
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use cityhub_catalog::viid::{SubscriptionStatus, ViidAccount, ViidSubscription};
use cityhub_catalog::{DataFile, DatasetName};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value, json};

use super::fields::{Check, FieldError, check_value, field_error, format_time};
use super::json::{Json, Object};
use super::kinds::ViidKind;
use super::{RecordStatus, StatusCode, ViidFailure, ViidReceiver, objects_in, parse_body};
use crate::IngestError;

/// Records one notification carries at most (whole files are taken, so it may hold a few
/// more).
pub const RECORDS_PER_NOTIFICATION: i64 = 1_000;

/// Longest pause between attempts of a failing delivery.
const MAX_BACKOFF_SECS: i64 = 300;

/// `SubscribeDetail` codes (GA/T 1400.4) the hub serves, and the records each names.
pub const SUBSCRIBE_DETAILS: &[(&str, ViidKind, &str)] = &[
    ("3", ViidKind::Ape, "采集设备目录"),
    ("11", ViidKind::Person, "自动采集的人员信息"),
    ("12", ViidKind::Face, "自动采集的人脸信息"),
    ("13", ViidKind::MotorVehicle, "自动采集的车辆信息"),
    ("14", ViidKind::NonMotorVehicle, "自动采集的非机动车辆信息"),
];

fn kind_of_detail(code: &str) -> Option<ViidKind> {
    SUBSCRIBE_DETAILS
        .iter()
        .find(|(known, _, _)| *known == code)
        .map(|(_, kind, _)| *kind)
}

/// One notification ready to send, and what sending it delivers.
#[derive(Debug, Clone)]
pub struct Notification {
    pub body: Value,
    pub records: u64,
    /// The cursors once it is delivered.
    pub cursors: BTreeMap<String, i64>,
}

impl ViidReceiver {
    /// `POST /VIID/Subscribes` from `account`: each `SubscribeObject` subscribes
    /// (`OperateType` 0) or cancels (1); one status per object.
    pub async fn subscribe(
        &self,
        account: &ViidAccount,
        body: Bytes,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordStatus>, ViidFailure> {
        let value = parse_body(&body)?;
        let objects = objects_in(&value, "Subscribe")?;
        let mine: BTreeMap<String, ViidSubscription> = self
            .ingest
            .catalog
            .viid_subscriptions(Some(&account.id))
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut statuses = Vec::with_capacity(objects.len());
        for object in objects {
            let id = object
                .get("SubscribeID")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            let outcome = match object.as_object() {
                None => Err(field_error("SubscribeObject", "must be a JSON object")),
                Some(object) => self.apply_subscription(account, object, &mine, now).await,
            };
            statuses.push(match outcome {
                Ok(message) => RecordStatus {
                    id,
                    code: StatusCode::Ok,
                    message,
                },
                Err(err) => RecordStatus {
                    id,
                    code: StatusCode::InvalidJsonContent,
                    message: err.to_string(),
                },
            });
        }
        Ok(statuses)
    }

    async fn apply_subscription(
        &self,
        account: &ViidAccount,
        object: &Object<'_>,
        mine: &BTreeMap<String, ViidSubscription>,
        now: DateTime<Utc>,
    ) -> Result<String, FieldError> {
        let text = |name: &str, max: usize| -> Result<Option<String>, FieldError> {
            match check_value(
                name,
                Check::Text(max),
                object.get(name).unwrap_or(&Json::Null),
            )? {
                Value::String(text) => Ok(Some(text)),
                _ => Ok(None),
            }
        };
        let id =
            text("SubscribeID", 64)?.ok_or_else(|| field_error("SubscribeID", "is missing"))?;
        let cancel = match object.get("OperateType") {
            None | Some(Json::Null) => false,
            Some(value) => {
                match check_value(
                    "OperateType",
                    Check::Code(&[("0", "订阅"), ("1", "取消订阅")]),
                    value,
                )? {
                    Value::String(code) => code == "1",
                    _ => false,
                }
            }
        };
        if cancel {
            let Some(existing) = mine.get(&id) else {
                return Err(field_error(
                    "SubscribeID",
                    format!("{id} is not one of your subscriptions"),
                ));
            };
            let mut cancelled = existing.clone();
            cancelled.status = SubscriptionStatus::Cancelled;
            self.save(&cancelled).await?;
            return Ok("cancelled".into());
        }
        let details: Vec<String> = text("SubscribeDetail", 64)?
            .unwrap_or_default()
            .split(',')
            .map(|code| code.trim().to_string())
            .filter(|code| !code.is_empty())
            .collect();
        if details.is_empty() {
            return Err(field_error("SubscribeDetail", "is missing"));
        }
        if let Some(unknown) = details.iter().find(|code| kind_of_detail(code).is_none()) {
            let offered: Vec<String> = SUBSCRIBE_DETAILS
                .iter()
                .map(|(code, _, name)| format!("{code} {name}"))
                .collect();
            return Err(field_error(
                "SubscribeDetail",
                format!(
                    "{unknown:?} is not served by the hub; it serves {}",
                    offered.join(", ")
                ),
            ));
        }
        let devices: Vec<String> = text("ResourceURI", 20_000)?
            .unwrap_or_default()
            .split(',')
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .collect();
        if let Some(bad) = devices
            .iter()
            .find(|id| id.len() != 20 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(field_error(
                "ResourceURI",
                format!(
                    "{bad:?} is not a 20-digit device id; send device ids separated by commas, or nothing for every device"
                ),
            ));
        }
        let receive_addr = text("ReceiveAddr", 1024)?.ok_or_else(|| {
            field_error("ReceiveAddr", "is missing: where should notifications go?")
        })?;
        if !(receive_addr.starts_with("http://") || receive_addr.starts_with("https://")) {
            return Err(field_error(
                "ReceiveAddr",
                format!("{receive_addr:?} is not an http:// or https:// URL"),
            ));
        }
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, FieldError> {
            match check_value(name, Check::Time, object.get(name).unwrap_or(&Json::Null))? {
                Value::String(text) => Ok(DateTime::parse_from_rfc3339(&text)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))),
                _ => Ok(None),
            }
        };
        let begin_at = time("BeginTime")?.unwrap_or(now);
        let end_at = time("EndTime")?;
        if end_at.is_some_and(|end| end <= begin_at.max(now)) {
            return Err(field_error(
                "EndTime",
                "is already past, or before BeginTime",
            ));
        }
        // Records from now on: the cursors start at each dataset's current snapshot.
        let mut cursors = BTreeMap::new();
        for code in &details {
            let Some(kind) = kind_of_detail(code) else {
                continue;
            };
            let name = format!("{}.{}", account.department, kind.dataset());
            let seq = match DatasetName::parse(&name) {
                Ok(parsed) => self
                    .ingest
                    .catalog
                    .dataset(&parsed)
                    .await
                    .map_err(|err| field_error("SubscribeDetail", err.to_string()))?
                    .map(|d| d.snapshot_seq)
                    .unwrap_or(0),
                Err(_) => 0,
            };
            cursors.insert(name, seq);
        }
        let subscription = ViidSubscription {
            id: id.clone(),
            account_id: account.id.clone(),
            department: account.department.clone(),
            title: text("Title", 256)?.unwrap_or_default(),
            details,
            devices,
            receive_addr,
            begin_at,
            end_at,
            status: SubscriptionStatus::Active,
            reason: None,
            cursors,
            attempts: 0,
            next_attempt_at: begin_at,
            delivered: 0,
            created_at: now,
        };
        self.save(&subscription).await?;
        tracing::info!(
            subscription = %id,
            account = %account.id,
            details = ?subscription.details,
            "An upper platform subscribed to GA/T 1400 records."
        );
        Ok(if mine.contains_key(&id) {
            "renewed".into()
        } else {
            "subscribed".into()
        })
    }

    async fn save(&self, subscription: &ViidSubscription) -> Result<(), FieldError> {
        self.ingest
            .catalog
            .save_viid_subscription(subscription)
            .await
            .map_err(|err| field_error("SubscribeID", err.to_string()))
    }

    /// The subscriptions of `account` as `GET /VIID/Subscribes` answers them.
    pub async fn subscription_list(&self, account: &ViidAccount) -> Result<Value, IngestError> {
        let objects: Vec<Value> = self
            .ingest
            .catalog
            .viid_subscriptions(Some(&account.id))
            .await?
            .into_iter()
            .map(|s| {
                json!({
                    "SubscribeID": s.id,
                    "Title": s.title,
                    "SubscribeDetail": s.details.join(","),
                    "ResourceURI": s.devices.join(","),
                    "ReceiveAddr": s.receive_addr,
                    "BeginTime": format_time(s.begin_at),
                    "EndTime": s.end_at.map(format_time),
                    "SubscribeStatus": s.status.code(),
                    "Reason": s.reason,
                    "Delivered": s.delivered,
                })
            })
            .collect();
        Ok(json!({"SubscribeListObject": {"SubscribeObject": objects}}))
    }

    /// The notification `subscription` is due at `now`: the records of its datasets after
    /// its cursors, or `None` when there are none. An end time passed expires it; records
    /// the hub no longer keeps drop it (both saved).
    pub async fn next_notification(
        &self,
        subscription: &mut ViidSubscription,
        server_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Notification>, IngestError> {
        if subscription.end_at.is_some_and(|end| end <= now) {
            subscription.status = SubscriptionStatus::Expired;
            self.ingest
                .catalog
                .save_viid_subscription(subscription)
                .await?;
            return Ok(None);
        }
        let mut cursors = subscription.cursors.clone();
        let mut lists = Vec::new();
        let mut ids = Vec::new();
        let mut records = 0_i64;
        for code in &subscription.details {
            let Some(kind) = kind_of_detail(code) else {
                continue;
            };
            let name = format!("{}.{}", subscription.department, kind.dataset());
            let Some(dataset) = self
                .ingest
                .catalog
                .dataset(&DatasetName::parse(&name)?)
                .await?
            else {
                continue;
            };
            let after = cursors.get(&name).copied().unwrap_or(0);
            if dataset.snapshot_seq <= after {
                continue;
            }
            let mut objects = Vec::new();
            for (seq, file) in self
                .ingest
                .catalog
                .appended_files(dataset.id, after)
                .await?
            {
                if records >= RECORDS_PER_NOTIFICATION {
                    break;
                }
                let rows = match self.read_rows(&file).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        subscription.status = SubscriptionStatus::Dropped;
                        subscription.reason = Some(format!(
                            "fell behind: records of {name} it had not received are no longer \
                             kept ({err}); subscribe again"
                        ));
                        self.ingest
                            .catalog
                            .save_viid_subscription(subscription)
                            .await?;
                        return Ok(None);
                    }
                };
                for row in rows {
                    let device = row
                        .get("device_id")
                        .or_else(|| row.get("ape_id"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !subscription.devices.is_empty()
                        && !subscription.devices.iter().any(|d| d == device)
                    {
                        continue;
                    }
                    let object = record_object(kind, &row);
                    if let Some(id) = object.get(kind.id_field()).and_then(Value::as_str) {
                        ids.push(id.to_string());
                    }
                    objects.push(Value::Object(object));
                    records += 1;
                }
                cursors.insert(name.clone(), seq);
            }
            if !objects.is_empty() {
                let object_name = format!("{}Object", kind.object_name());
                lists.push((
                    format!("{}ObjectList", kind.object_name()),
                    json!({ object_name: objects }),
                ));
            }
        }
        if cursors == subscription.cursors {
            return Ok(None);
        }
        let mut notification = Map::new();
        notification.insert(
            "NotificationID".into(),
            json!(format!(
                "{server_id}{}{:05}",
                format_time(now),
                subscription.delivered % 100_000
            )),
        );
        notification.insert("SubscribeID".into(), json!(subscription.id));
        notification.insert("Title".into(), json!(subscription.title));
        notification.insert("TriggerTime".into(), json!(format_time(now)));
        notification.insert("InfoIDs".into(), json!(ids.join(",")));
        for (list, value) in lists {
            notification.insert(list, value);
        }
        Ok(Some(Notification {
            body: json!({"SubscribeNotificationListObject": {
                "SubscribeNotificationObject": [Value::Object(notification)]
            }}),
            records: records as u64,
            cursors,
        }))
    }

    /// Records how sending `notification` went: delivered, or failed with `error` (tried
    /// again after a backoff doubling from one second up to five minutes; dropped after
    /// `max_attempts` failures in a row).
    pub async fn notification_sent(
        &self,
        subscription: &mut ViidSubscription,
        notification: Option<&Notification>,
        error: Option<String>,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        match (notification, error) {
            (Some(sent), None) => {
                subscription.cursors = sent.cursors.clone();
                subscription.delivered += sent.records;
                subscription.attempts = 0;
                subscription.reason = None;
                metrics::counter!("cityhub_viid_notified_records_total").increment(sent.records);
            }
            (_, Some(error)) => {
                subscription.attempts += 1;
                metrics::counter!("cityhub_viid_notification_failures_total").increment(1);
                if subscription.attempts >= max_attempts {
                    subscription.status = SubscriptionStatus::Dropped;
                    subscription.reason = Some(format!(
                        "{} deliveries in a row failed, the last: {error}; subscribe again",
                        subscription.attempts
                    ));
                    tracing::warn!(
                        subscription = %subscription.id,
                        receive_addr = %subscription.receive_addr,
                        error = %error,
                        "Gave up a GA/T 1400 subscription whose receiver kept failing."
                    );
                } else {
                    let pause =
                        (1_i64 << (subscription.attempts - 1).min(16)).min(MAX_BACKOFF_SECS);
                    subscription.next_attempt_at = now + Duration::seconds(pause);
                    subscription.reason = Some(error);
                }
            }
            (None, None) => return Ok(()),
        }
        self.ingest
            .catalog
            .save_viid_subscription(subscription)
            .await?;
        Ok(())
    }

    /// The rows of one landing file, as JSON objects by column.
    async fn read_rows(&self, file: &DataFile) -> Result<Vec<Map<String, Value>>, IngestError> {
        let bytes = self.ingest.storage.get(&file.path).await?;
        tokio::task::spawn_blocking(move || {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|builder| builder.build())
                .map_err(|err| IngestError::Internal(format!("reading a landing file: {err}")))?;
            let mut out = Vec::new();
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(false)
                .build::<_, JsonArray>(&mut out);
            for batch in reader {
                let batch = batch.map_err(|err| {
                    IngestError::Internal(format!("reading a landing file: {err}"))
                })?;
                writer
                    .write(&batch)
                    .map_err(|err| IngestError::Internal(format!("encoding rows: {err}")))?;
            }
            writer
                .finish()
                .map_err(|err| IngestError::Internal(format!("encoding rows: {err}")))?;
            drop(writer);
            if out.is_empty() {
                return Ok(Vec::new());
            }
            serde_json::from_slice(&out)
                .map_err(|err| IngestError::Internal(format!("encoding rows: {err}")))
        })
        .await
        .map_err(|err| IngestError::Internal(format!("reading task failed: {err}")))?
    }
}

/// A landing row as the GA/T 1400 object it came from (the kept fields).
fn record_object(kind: ViidKind, row: &Map<String, Value>) -> Map<String, Value> {
    let mut object = Map::new();
    let time = |value: &Value| -> Option<Value> {
        let text = value.as_str()?;
        let at = DateTime::parse_from_rfc3339(text).ok().or_else(|| {
            DateTime::parse_from_str(&format!("{text}+00:00"), "%Y-%m-%dT%H:%M:%S%.f%:z").ok()
        })?;
        Some(Value::String(format_time(at.with_timezone(&Utc))))
    };
    if let Some(id) = row.get(kind.id_column()) {
        object.insert(kind.id_field().into(), id.clone());
    }
    if let (Some(field), Some(at)) = (kind.time_fields().first(), row.get("captured_at"))
        && let Some(at) = time(at)
    {
        object.insert((*field).into(), at);
    }
    for field in kind.fields() {
        let Some(value) = row.get(field.column) else {
            continue;
        };
        let value = match field.check {
            Check::Time => time(value),
            _ => Some(value.clone()),
        };
        if let Some(value) = value {
            object.insert(field.json.into(), value);
        }
    }
    object
}
