//! The camera registry's operations: registration (one or a batch), curated overrides,
//! keepalives and NOTIFY events, lookup, search and statistics, and the sweeper's round.
//! Each checks who may do it, applies it in the catalog and records what changed.
//!
//! Batches answer per item: each refused item is listed with its position, id, field and
//! reason, and the valid items are applied.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::changes::{ChangePage, Seen, change_json};
use super::daily::{self, DAY_MS, beijing_day, day_date, day_start};
use super::status::Status;
use super::{
    CameraQuery, CameraRecord, CameraScope, CameraSettings, CameraSources, CameraStats,
    ChannelFields, ChannelReport, FieldError, Registered, ReportKind, SignalKind, StatsGroup,
    StatsWindow, parse_signal, position_type_name, wgs84_to_gcj02,
};
use crate::access::require_role;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::clock::Clock;
use crate::error::{CatalogError, Result};
use crate::model::{Principal, Role};
use crate::region::Scope;
use crate::{Catalog, gb28181, region};

/// One item of a batch: its NDJSON line (for NDJSON bodies) and its JSON value, or why it
/// is not JSON.
pub type BatchItem = (Option<usize>, std::result::Result<Value, FieldError>);

/// A page of the change feed: the changes the caller may see, where to read on from (past
/// the changes it may not see too), and whether the page was full.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangesAnswer {
    pub changes: Vec<Value>,
    /// A string in JSON, like every cursor of the API.
    #[serde(serialize_with = "as_text")]
    pub next_cursor: i64,
    pub more: bool,
}

fn as_text<S: serde::Serializer>(
    value: &i64,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// The camera registry of one hub process.
#[derive(Clone)]
pub struct CameraRegistry {
    catalog: Catalog,
    audit: AuditLog,
    settings: CameraSettings,
    /// Where "now" is read: the day that just ended decides which days are rolled up.
    clock: Clock,
}

/// The department a writer may act for (`None`: an admin, any department).
fn acting_for(by: &Principal, doing: &str) -> Result<Option<String>> {
    require_role(by, &[Role::Admin, Role::Producer], doing)?;
    Ok((by.role != Role::Admin).then(|| by.department.clone()))
}

/// A refused single item as a catalog error naming its field.
fn single_error(err: FieldError) -> CatalogError {
    if err.forbidden {
        CatalogError::Forbidden(format!("{}: {}", err.field, err.message))
    } else {
        CatalogError::invalid(err.field, err.message)
    }
}

pub(crate) fn time_text(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl CameraRegistry {
    pub fn new(catalog: Catalog, audit: AuditLog, settings: CameraSettings) -> Self {
        Self {
            catalog,
            audit,
            settings,
            clock: Clock::system(),
        }
    }

    /// The registry reading the time from `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The liveness rule and stream templates (`[cameras]`).
    pub fn settings(&self) -> &CameraSettings {
        &self.settings
    }

    /// A registered channel with its reported and curated values; one outside the
    /// caller's `scope` is not found.
    pub async fn camera(&self, id: &str, scope: Option<&Scope>) -> Result<Value> {
        gb28181::parse(id).map_err(|err| single_error(err.into()))?;
        let (record, CameraSources { reported, curated }) = self
            .catalog
            .camera(id)
            .await?
            .filter(|(record, _)| scope.is_none_or(|s| CameraScope::of(s).contains(record)))
            .ok_or_else(|| CatalogError::NotFound {
                what: "camera",
                name: id.to_string(),
            })?;
        let mut answer = camera_json(&record, &self.settings, self.now());
        answer["reported"] = json!(reported);
        answer["curated"] = json!(curated);
        Ok(answer)
    }

    /// Registers or updates one channel's reported values (`body` without or with the
    /// same `id`).
    pub async fn register(
        &self,
        by: &Principal,
        id: &str,
        body: Value,
    ) -> Result<(Registered, Value)> {
        let acting = acting_for(by, "registering a camera")?;
        let report = ChannelReport::from_json(body, Some(id)).map_err(single_error)?;
        let mut outcomes = self
            .catalog
            .register_cameras(vec![report], acting, self.now())
            .await?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| CatalogError::Storage("the registry answered no outcome".into()))?
            .map_err(single_error)?;
        self.audit.record(
            AuditEvent::by(by, Action::CameraRegister, Outcome::Ok)
                .detail(json!({"id": id, "outcome": outcome})),
        );
        Ok((outcome, self.camera(id, None).await?))
    }

    /// Replaces the operators' overrides of a channel (`{}` drops them all).
    pub async fn curate(&self, by: &Principal, id: &str, body: Value) -> Result<Value> {
        let acting = acting_for(by, "curating a camera")?;
        gb28181::parse(id).map_err(|err| single_error(err.into()))?;
        let Value::Object(object) = body else {
            return Err(CatalogError::invalid(
                "body",
                "the curated values are a JSON object",
            ));
        };
        let curated = ChannelFields::from_json(object).map_err(single_error)?;
        curated.validate().map_err(single_error)?;
        self.catalog
            .curate_camera(id.to_string(), curated.clone(), acting, self.now())
            .await?;
        self.audit.record(
            AuditEvent::by(by, Action::CameraCurate, Outcome::Ok)
                .detail(json!({"id": id, "curated": curated})),
        );
        self.camera(id, None).await
    }

    /// Registers many channels; refused items are listed, the others applied.
    pub async fn register_batch(&self, by: &Principal, items: Vec<BatchItem>) -> Result<Value> {
        let acting = acting_for(by, "registering cameras")?;
        let mut errors = Vec::new();
        let mut reports = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        let mut first_seen: std::collections::HashMap<String, usize> = Default::default();
        for (item, (line, value)) in items.into_iter().enumerate() {
            let id = id_of(&value);
            let report = value.and_then(|value| ChannelReport::from_json(value, None));
            match report {
                Ok(report) => {
                    if let Some(first) = first_seen.get(&report.id.id) {
                        let err = FieldError::new(
                            "id",
                            format!(
                                "duplicate of item {first} in this batch; send each channel once"
                            ),
                        );
                        errors.push(item_error(&err, item, line, id.as_deref()));
                        continue;
                    }
                    first_seen.insert(report.id.id.clone(), item);
                    positions.push((item, line, report.id.id.clone()));
                    reports.push(report);
                }
                Err(err) => errors.push(item_error(&err, item, line, id.as_deref())),
            }
        }
        let outcomes = self
            .catalog
            .register_cameras(reports, acting, self.now())
            .await?;
        let (mut created, mut updated, mut restored) = (0u64, 0u64, 0u64);
        for ((item, line, id), outcome) in positions.into_iter().zip(outcomes) {
            match outcome {
                Ok(Registered::Created) => created += 1,
                Ok(Registered::Updated) => updated += 1,
                Ok(Registered::Restored) => restored += 1,
                Err(err) => errors.push(item_error(&err, item, line, Some(&id))),
            }
        }
        errors.sort_by_key(|e| e["item"].as_u64());
        let accepted = created + updated + restored;
        metrics::counter!("cityhub_camera_registrations_total").increment(accepted);
        self.audit.record(
            AuditEvent::by(by, Action::CameraRegister, Outcome::Ok).detail(json!({
                "accepted": accepted,
                "rejected": errors.len(),
            })),
        );
        tracing::info!(
            accepted,
            rejected = errors.len(),
            by = %by.name,
            "Registered a batch of cameras."
        );
        Ok(json!({
            "accepted": accepted,
            "created": created,
            "updated": updated,
            "restored": restored,
            "rejected": errors.len(),
            "errors": errors,
        }))
    }

    /// Applies keepalives (`keepalive`; a device id marks its channels) or NOTIFY events;
    /// refused items are listed, the others applied in order.
    pub async fn signals(
        &self,
        by: &Principal,
        items: Vec<BatchItem>,
        keepalive: bool,
    ) -> Result<Value> {
        let doing = if keepalive {
            "sending keepalives"
        } else {
            "sending camera events"
        };
        let acting = acting_for(by, doing)?;
        let now = self.now();
        let mut errors = Vec::new();
        let mut signals = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (item, (line, value)) in items.into_iter().enumerate() {
            let id = id_of(&value);
            match value.and_then(|value| parse_signal(value, now, keepalive)) {
                Ok(signal) => {
                    positions.push((item, line, signal.id.clone()));
                    signals.push(signal);
                }
                Err(err) => errors.push(item_error(&err, item, line, id.as_deref())),
            }
        }
        let events: Vec<&'static str> = signals
            .iter()
            .map(|s| match &s.kind {
                SignalKind::Keepalive => "keepalive",
                SignalKind::Event(event, _) => event.as_str(),
            })
            .collect();
        let outcomes = self
            .catalog
            .camera_signals(signals, acting, self.settings.liveness, now)
            .await?;
        let mut accepted = 0u64;
        let mut marked = 0u64;
        for (((item, line, id), outcome), event) in positions.into_iter().zip(outcomes).zip(events)
        {
            match outcome {
                Ok(channels) => {
                    accepted += 1;
                    marked += channels as u64;
                    if !keepalive {
                        metrics::counter!("cityhub_camera_events_total", "event" => event)
                            .increment(1);
                    }
                }
                Err(err) => errors.push(item_error(&err, item, line, Some(&id))),
            }
        }
        if keepalive {
            metrics::counter!("cityhub_camera_keepalives_total").increment(accepted);
        }
        errors.sort_by_key(|e| e["item"].as_u64());
        Ok(json!({
            "accepted": accepted,
            "channels_marked": marked,
            "rejected": errors.len(),
            "errors": errors,
        }))
    }

    /// Alarms or positions of registered channels and devices: the valid items are kept
    /// (once each, however often sent), the others answered by field.
    pub async fn reports(
        &self,
        by: &Principal,
        items: Vec<BatchItem>,
        kind: ReportKind,
    ) -> Result<Value> {
        let acting = acting_for(by, kind.doing())?;
        let now = self.now();
        let mut errors = Vec::new();
        let mut reports = Vec::with_capacity(items.len());
        let mut origins = Vec::with_capacity(items.len());
        for (item, (line, value)) in items.into_iter().enumerate() {
            let id = id_of(&value);
            match value.and_then(|value| kind.parse(value, now)) {
                Ok(report) => {
                    origins.push((item, line, report.id().to_string()));
                    reports.push(report);
                }
                Err(err) => errors.push(item_error(&err, item, line, id.as_deref())),
            }
        }
        let outcomes = self
            .catalog
            .record_camera_reports(reports, acting, now)
            .await?;
        let (mut accepted, mut duplicates) = (0u64, 0u64);
        for ((item, line, id), outcome) in origins.into_iter().zip(outcomes) {
            match outcome {
                Ok(true) => accepted += 1,
                Ok(false) => duplicates += 1,
                Err(err) => errors.push(item_error(&err, item, line, Some(&id))),
            }
        }
        metrics::counter!("cityhub_camera_reports_total", "kind" => kind.name())
            .increment(accepted);
        errors.sort_by_key(|e| e["item"].as_u64());
        Ok(json!({
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": errors.len(),
            "errors": errors,
        }))
    }

    /// A page of the registry (`query.limit` channels) and the cursor of the next one.
    pub async fn search(&self, mut query: CameraQuery) -> Result<Value> {
        // A consumer of the change feed starts from the first page: the changes after this
        // cursor (read before the channels) are all it must apply over the listing.
        let change_cursor = match query.after {
            None => Some(self.catalog.camera_change_head().await?),
            Some(_) => None,
        };
        let limit = query.limit;
        // One more than asked tells whether there is a next page.
        query.limit = limit + 1;
        let now = self.now();
        let mut records = self
            .catalog
            .search_cameras(query, now, self.settings.liveness)
            .await?;
        let next_cursor = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.id.id.clone())
        } else {
            None
        };
        let cameras: Vec<Value> = records
            .iter()
            .map(|r| camera_json(r, &self.settings, now))
            .collect();
        let mut answer = json!({"cameras": cameras, "next_cursor": next_cursor});
        if let Some(cursor) = change_cursor {
            answer["change_cursor"] = json!(cursor.to_string());
        }
        Ok(answer)
    }

    /// The changes of the registry after `since` (a cursor from this feed, or the
    /// `change_cursor` of a listing's first page), at most `limit` read, of the channels
    /// inside `scope`: `{changes: [...], next_cursor, more}`. Sweeps first, so that channels
    /// whose keepalives stopped show as offline here as they do in the listing. A cursor
    /// before what retention kept is refused: the consumer must list the registry again.
    pub async fn changes(
        &self,
        scope: Option<&Scope>,
        since: i64,
        limit: usize,
    ) -> Result<ChangesAnswer> {
        let now = self.now();
        self.catalog
            .sweep_cameras(now, self.settings.liveness)
            .await?;
        let ChangePage {
            changes,
            purged_through,
            head,
        } = self.catalog.camera_changes(since, limit).await?;
        let why = if since > head {
            Some(format!(
                "cursor {since} is past the newest change ({head}): it is not from this hub's \
                 feed, or the catalog was restored from an older backup"
            ))
        } else if since < purged_through {
            Some(format!(
                "the changes after cursor {since} up to {purged_through} were deleted \
                 (cameras.change_retention_days = {})",
                self.settings.change_retention_days
            ))
        } else {
            None
        };
        if let Some(why) = why {
            metrics::counter!("cityhub_camera_change_resyncs_total").increment(1);
            return Err(CatalogError::ResyncRequired(format!(
                "{why}; list GET /api/v1/cameras again and follow the feed from the \
                 change_cursor of its first page"
            )));
        }
        let more = changes.len() >= limit;
        let next_cursor = changes.last().map_or(since, |c| c.seq);
        let scope = scope.map(CameraScope::of);
        let render = |record: &CameraRecord, status: Status, since: Option<i64>| {
            shown_json(record, &self.settings, status, since)
        };
        let shown: Vec<Value> = changes
            .iter()
            .filter_map(|stored| {
                let seen = scope
                    .as_ref()
                    .map_or(Seen::AsIs, |scope| scope.sees(&stored.change));
                change_json(stored, seen, self.settings.liveness, render)
            })
            .collect();
        Ok(ChangesAnswer {
            changes: shown,
            next_cursor,
            more,
        })
    }

    /// Online rate and availability per `group` over `window`, of the channels inside
    /// `scope` (all without one). Whole-day windows read the daily roll-ups (rolled up
    /// first, so that they never wait for the sweeper).
    pub async fn stats(
        &self,
        group: StatsGroup,
        group_text: &str,
        window: StatsWindow,
        scope: Option<Scope>,
    ) -> Result<Value> {
        let now = self.now();
        let liveness = self.settings.liveness;
        let (stats, window) = match window {
            StatsWindow::Hours(hours) => {
                let since = now - hours * 3_600_000;
                let stats = self
                    .catalog
                    .camera_stats(group, since, now, liveness, scope)
                    .await?;
                let window =
                    json!({"from": time_text(since), "to": time_text(now), "hours": hours});
                (stats, window)
            }
            window => {
                let days = self.whole_days(window, now)?;
                self.catalog
                    .roll_up_camera_days(now, liveness, self.settings.daily_retention_days)
                    .await?;
                let (first, last) = (*days.start(), *days.end());
                let stats = self
                    .catalog
                    .camera_daily_stats(group, days, now, liveness, scope)
                    .await?;
                let window = json!({
                    "from": time_text(day_start(first)),
                    "to": time_text(day_start(last + 1)),
                    "first_day": day_date(first).to_string(),
                    "last_day": day_date(last).to_string(),
                    "days": last - first + 1,
                });
                (stats, window)
            }
        };
        let (groups, overall) = stats;
        let groups: Vec<Value> = groups.iter().map(|g| stats_json(group, g)).collect();
        let mut overall = json!(overall);
        if let Some(object) = overall.as_object_mut() {
            object.remove("key");
        }
        Ok(json!({
            "group_by": group_text,
            "window": window,
            "groups": groups,
            "overall": overall,
        }))
    }

    /// The Beijing-time days a whole-day window covers at `now`: finished days, inside the
    /// roll-ups' retention.
    fn whole_days(&self, window: StatsWindow, now: i64) -> Result<std::ops::RangeInclusive<i32>> {
        let yesterday = beijing_day(now) - 1;
        let kept = self.settings.daily_retention_days as i32;
        let earliest = yesterday - kept + 1;
        // The field a day too early or too late is named by.
        let (first, last, first_field) = match window {
            StatsWindow::Hours(_) => unreachable!("hours are not whole days"),
            StatsWindow::LastDays(n) => (
                yesterday - i32::try_from(n).unwrap_or(i32::MAX) + 1,
                yesterday,
                "days",
            ),
            StatsWindow::Dates { from, to } => (
                daily::date_day(from),
                to.map_or(yesterday, daily::date_day),
                "from",
            ),
        };
        for (field, day) in [("from", first), ("to", last)] {
            if day > yesterday {
                return Err(CatalogError::invalid(
                    field,
                    format!(
                        "{} has not ended yet (Beijing time); the last whole day is {}",
                        day_date(day),
                        day_date(yesterday)
                    ),
                ));
            }
        }
        if first > last {
            return Err(CatalogError::invalid(
                "from",
                format!("{} is after to ({})", day_date(first), day_date(last)),
            ));
        }
        if first < earliest {
            return Err(CatalogError::invalid(
                first_field,
                format!(
                    "daily roll-ups are kept for {kept} days (cameras.daily_retention_days); \
                     the earliest day is {}",
                    day_date(earliest)
                ),
            ));
        }
        Ok(first..=last)
    }

    /// One round of the sweeper: appends keepalive timeouts to the history, sets the
    /// `cityhub_cameras{region,status}` gauges and rolls up the days that ended (or that
    /// late signals changed). Reads never depend on it (the status is computed when read,
    /// and whole-day statistics roll up first).
    pub async fn sweep(&self) -> Result<()> {
        let now = self.now();
        // The gauges need the counts, not availability: an empty window skips reading
        // the history (the sweep before the statistics is the point of the call).
        let (groups, _) = self
            .catalog
            .camera_stats(StatsGroup::Region, now, now, self.settings.liveness, None)
            .await?;
        for group in groups {
            let region = group.key.unwrap_or_default();
            metrics::gauge!("cityhub_cameras", "region" => region.clone(), "status" => "online")
                .set(group.online as f64);
            metrics::gauge!("cityhub_cameras", "region" => region.clone(), "status" => "offline")
                .set(group.offline as f64);
            metrics::gauge!("cityhub_cameras", "region" => region, "status" => "unknown")
                .set(group.unknown as f64);
        }
        let days = self
            .catalog
            .roll_up_camera_days(
                now,
                self.settings.liveness,
                self.settings.daily_retention_days,
            )
            .await?;
        metrics::counter!("cityhub_camera_days_rolled_up_total").increment(days.len() as u64);
        let (alarms, positions) = self
            .catalog
            .purge_camera_reports(
                now - i64::from(self.settings.alarm_retention_days) * DAY_MS,
                now - i64::from(self.settings.position_retention_days) * DAY_MS,
            )
            .await?;
        let changes = self
            .catalog
            .purge_camera_changes(now - i64::from(self.settings.change_retention_days) * DAY_MS)
            .await?;
        if changes > 0 {
            tracing::info!(
                changes,
                days = self.settings.change_retention_days,
                "Deleted the camera catalogue changes older than their retention; consumers \
                 behind them will be told to list the registry again."
            );
        }
        if alarms + positions > 0 {
            tracing::info!(
                alarms,
                positions,
                alarm_days = self.settings.alarm_retention_days,
                position_days = self.settings.position_retention_days,
                "Deleted the camera alarms and positions older than their retention."
            );
        }
        if let (Some(first), Some(last)) = (days.first(), days.last()) {
            tracing::info!(
                first = %day_date(*first),
                last = %day_date(*last),
                days = days.len(),
                "Rolled up the camera status history of the days that ended or changed."
            );
        }
        Ok(())
    }
}

/// A channel as answers show it: its values, the decoded id, derived coordinates and
/// streams, and the live status at `now`.
pub fn camera_json(record: &CameraRecord, settings: &CameraSettings, now: i64) -> Value {
    let (status, since) = record.live.status_and_since(now, settings.liveness);
    let mut answer = shown_json(record, settings, status, since);
    answer["last_keepalive_at"] = json!(record.live.last_seen_at.and_then(time_text));
    answer
}

/// A channel as answers show it with a given status, without its last keepalive: what a
/// change of the feed carries (keepalives that change no status are not changes).
fn shown_json(
    record: &CameraRecord,
    settings: &CameraSettings,
    status: Status,
    since: Option<i64>,
) -> Value {
    let mut object = match serde_json::to_value(&record.fields) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let id = &record.id;
    let county = region::region(id.current_region_code);
    object.insert("id".into(), json!(id.id));
    let decoded = json!({
        "region_code": id.region_code,
        "region_name": id.region_name,
        "county_code": id.current_region_code,
        "county_name": county.map(|r| r.name),
        "industry": id.industry,
        "industry_name": id.industry_name,
        "type": id.type_code,
        "type_name": id.type_name,
        "network": id.network,
        "network_name": id.network_name,
        "serial": id.serial,
        "status": status.as_str(),
        "status_since": since.and_then(time_text),
        "notified": record.live.notified.map(|n| n.as_str()),
        "complete": record.complete,
        "registered_at": time_text(record.registered_at),
        "updated_at": time_text(record.updated_at),
    });
    if let Value::Object(decoded) = decoded {
        object.extend(decoded);
    }
    if let (Some(lon), Some(lat)) = (record.fields.longitude, record.fields.latitude) {
        let (gcj_lon, gcj_lat) = wgs84_to_gcj02(lon, lat);
        object.insert(
            "gcj02".into(),
            json!({"longitude": gcj_lon, "latitude": gcj_lat}),
        );
    }
    if let Some(position) = record.fields.position_type {
        object.insert(
            "position_type_name".into(),
            json!(position_type_name(position)),
        );
    }
    let streams = settings.streams(record);
    if !streams.is_empty() {
        object.insert("streams".into(), json!(streams));
    }
    Value::Object(object)
}

fn item_error(err: &FieldError, item: usize, line: Option<usize>, id: Option<&str>) -> Value {
    let mut value = json!({
        "item": item,
        "field": err.field,
        "message": err.message,
    });
    if let Some(line) = line {
        value["line"] = json!(line);
    }
    if let Some(id) = id {
        value["id"] = json!(id);
    }
    value
}

fn id_of(value: &Result<Value, FieldError>) -> Option<String> {
    value
        .as_ref()
        .ok()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn group_name(group: StatsGroup, key: Option<&str>) -> Option<String> {
    let key = key?;
    match group {
        StatsGroup::Region => region::region(key).map(|r| r.name.to_string()),
        StatsGroup::Industry => key
            .parse()
            .ok()
            .map(|code| gb28181::industry_name(code).to_string()),
        StatsGroup::PositionType => key
            .parse()
            .ok()
            .and_then(position_type_name)
            .map(str::to_string),
        StatsGroup::Type => key
            .parse()
            .ok()
            .and_then(gb28181::type_name)
            .map(str::to_string),
        StatsGroup::Department => None,
    }
}

fn stats_json(group: StatsGroup, stats: &CameraStats) -> Value {
    let mut value = json!(stats);
    value["name"] = json!(group_name(group, stats.key.as_deref()));
    value
}
