//! SQLite statements of the camera registry: registration, curated overrides, keepalives and
//! NOTIFY events with their status history, searches and statistics.
//!
//! Every write of a batch runs in one transaction; an item refused for its own reasons
//! (unknown camera, another department's channel) is reported and the others still apply.

use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, named_params,
};

use crate::camera::alarms::{PURGE_CHUNK, StoredAlarm, StoredPosition};
use crate::camera::changes::{ChangeKind, ChangePage, status_changed};
use crate::camera::rules::{self, EventStep, Existing};
use crate::camera::status::{Event, LiveState, Liveness, Notified, Signal, Status, Transition};
use crate::camera::{
    CameraFeed, CameraQuery, CameraRecord, CameraReport, CameraSignal, CameraSources, CameraStats,
    CameraStreamCommit, CameraStreamOutcome, ChannelFields, ChannelReport, FieldError,
    ImportedHistory, Registered, SignalKind, StatsGroup, StatusEvent, Streams,
};
use crate::error::{CatalogError, Result};
use crate::gb28181;
use crate::model::StoredRejection;
use crate::store::CameraStore;

use super::SqliteStore;
use super::camera_alarms::{alarms, oldest_report, positions, purge_chunk, record_reports};
use super::camera_changes;
use super::camera_daily::{daily_rows, daily_time, roll_up_days};
use super::camera_feeds::{commit_stream, rejected_records, stream_offsets};
use super::camera_search::{camera, search};
use super::camera_stats::{channel_pass, status_events, transition_pass};
use crate::camera::daily::DailyRow;
use crate::camera::tally::combine;
use async_trait::async_trait;

/// The status at `:now` from the evidence columns; the same rule as
/// [`LiveState::status_at`] (a test holds the two together).
pub(crate) const STATUS_SQL: &str = "CASE WHEN notified IN ('OFF', 'VLOST', 'DEFECT') THEN 'offline' \
     WHEN last_seen_at IS NULL THEN 'unknown' \
     WHEN :now < last_seen_at + :timeout THEN 'online' ELSE 'offline' END";

/// The types statistics count as video channels: checkpoints, multi-lens devices and
/// cameras. NVRs, encoders and platforms are registered (their keepalives mark their
/// channels) but are not channels of the video network themselves.
pub(crate) const VIDEO_TYPES: &str = "(121, 122, 131, 132)";

pub(crate) const CAMERA_COLUMNS: &str = "c.id, c.parent_id, c.name, c.department, c.civil_code, c.address, \
     c.longitude, c.latitude, c.manufacturer, c.model, c.ptz_type, c.position_type, \
     c.room_type, c.use_type, c.supply_light_type, c.resolution, c.streams, c.tags, c.complete, \
     l.notified, l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since, \
     l.registered_at, c.updated_at";

/// A channel's record beside its liveness.
pub(crate) const CAMERAS_JOINED: &str = "cameras c JOIN camera_live l ON l.id = c.id";

pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(index)?;
    text.map(super::parse_json).transpose()
}

pub(crate) fn live_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<LiveState> {
    let notified: Option<String> = row.get(first)?;
    let recorded: Option<String> = row.get(first + 3)?;
    Ok(LiveState {
        notified: notified.as_deref().and_then(Notified::parse),
        notified_at: row.get(first + 1)?,
        last_seen_at: row.get(first + 2)?,
        recorded: recorded.as_deref().and_then(Status::parse),
        recorded_since: row.get(first + 4)?,
    })
}

pub(crate) fn camera_from_row(row: &Row<'_>) -> rusqlite::Result<CameraRecord> {
    let id: String = row.get(0)?;
    let device = gb28181::parse(&id).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(FieldError::from(err)),
        )
    })?;
    Ok(CameraRecord {
        id: device,
        fields: ChannelFields {
            parent_id: row.get(1)?,
            name: row.get(2)?,
            department: row.get(3)?,
            civil_code: row.get(4)?,
            address: row.get(5)?,
            longitude: row.get(6)?,
            latitude: row.get(7)?,
            manufacturer: row.get(8)?,
            model: row.get(9)?,
            ptz_type: row.get(10)?,
            position_type: row.get(11)?,
            room_type: row.get(12)?,
            use_type: row.get(13)?,
            supply_light_type: row.get(14)?,
            resolution: row.get(15)?,
            streams: json_column::<Streams>(row, 16)?,
            tags: json_column::<Vec<String>>(row, 17)?,
        },
        complete: row.get(18)?,
        live: live_from_row(row, 19)?,
        registered_at: row.get(24)?,
        updated_at: row.get(25)?,
    })
}

fn existing(tx: &Transaction<'_>, id: &str) -> Result<Option<Existing>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.department, c.reported, c.curated, l.deleted_at IS NOT NULL, l.notified, \
         l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since, l.registered_at \
         FROM cameras c JOIN camera_live l ON l.id = c.id WHERE c.id = ?1",
    )?;
    Ok(stmt
        .query_row([id], |row| {
            Ok(Existing {
                department: row.get(0)?,
                reported: super::parse_json(row.get(1)?)?,
                curated: super::parse_json(row.get(2)?)?,
                deleted: row.get(3)?,
                live: live_from_row(row, 4)?,
                registered_at: row.get(9)?,
            })
        })
        .optional()?)
}

fn department_exists(tx: &Transaction<'_>, code: &str) -> Result<bool> {
    let mut stmt = tx.prepare_cached("SELECT 1 FROM departments WHERE code = ?1")?;
    Ok(stmt.exists([code])?)
}

/// Writes the shown values computed from both sources, and answers them.
fn store_values(
    tx: &Transaction<'_>,
    id: &gb28181::DeviceId,
    reported: &ChannelFields,
    curated: &ChannelFields,
    at: i64,
) -> Result<ChannelFields> {
    let shown = curated.over(reported);
    let mut stmt = tx.prepare_cached(
        "INSERT INTO cameras (id, parent_id, name, department, civil_code, address, longitude, \
         latitude, manufacturer, model, ptz_type, position_type, room_type, use_type, \
         supply_light_type, resolution, streams, tags, region_code, industry, type_code, \
         network, complete, reported, curated, updated_at) \
         VALUES (:id, :parent_id, :name, :department, :civil_code, :address, :longitude, \
         :latitude, :manufacturer, :model, :ptz_type, :position_type, :room_type, :use_type, \
         :supply_light_type, :resolution, :streams, :tags, :region_code, :industry, :type_code, \
         :network, :complete, :reported, :curated, :at) \
         ON CONFLICT (id) DO UPDATE SET parent_id = excluded.parent_id, name = excluded.name, \
         department = excluded.department, civil_code = excluded.civil_code, \
         address = excluded.address, longitude = excluded.longitude, \
         latitude = excluded.latitude, manufacturer = excluded.manufacturer, \
         model = excluded.model, ptz_type = excluded.ptz_type, \
         position_type = excluded.position_type, room_type = excluded.room_type, \
         use_type = excluded.use_type, supply_light_type = excluded.supply_light_type, \
         resolution = excluded.resolution, streams = excluded.streams, tags = excluded.tags, \
         complete = excluded.complete, reported = excluded.reported, \
         curated = excluded.curated, updated_at = excluded.updated_at",
    )?;
    let streams = shown
        .streams
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(serde_json::to_string)
        .transpose()?;
    let tags = shown.tags.as_ref().map(serde_json::to_string).transpose()?;
    stmt.execute(named_params! {
        ":id": id.id,
        ":parent_id": shown.parent_id,
        ":name": shown.name,
        ":department": shown.department,
        ":civil_code": shown.civil_code,
        ":address": shown.address,
        ":longitude": shown.longitude,
        ":latitude": shown.latitude,
        ":manufacturer": shown.manufacturer,
        ":model": shown.model,
        ":ptz_type": shown.ptz_type,
        ":position_type": shown.position_type,
        ":room_type": shown.room_type,
        ":use_type": shown.use_type,
        ":supply_light_type": shown.supply_light_type,
        ":resolution": shown.resolution,
        ":streams": streams,
        ":tags": tags,
        ":region_code": id.current_region_code,
        ":industry": id.industry,
        ":type_code": id.type_code,
        ":network": id.network,
        ":complete": shown.is_complete(),
        ":reported": serde_json::to_string(reported)?,
        ":curated": serde_json::to_string(curated)?,
        ":at": at,
    })?;
    tx.prepare_cached(
        "INSERT INTO camera_live (id, type_code, region_code, industry, position_type, \
         department, complete, registered_at) VALUES (:id, :type_code, :region_code, :industry, \
         :position_type, :department, :complete, :at) \
         ON CONFLICT (id) DO UPDATE SET position_type = excluded.position_type, \
         department = excluded.department, complete = excluded.complete, deleted_at = NULL",
    )?
    .execute(named_params! {
        ":id": id.id,
        ":type_code": id.type_code,
        ":region_code": id.current_region_code,
        ":industry": id.industry,
        ":position_type": shown.position_type,
        ":department": shown.department,
        ":complete": shown.is_complete(),
        ":at": at,
    })?;
    Ok(shown)
}

/// Registers or updates one channel's reported values inside `tx` (`at`: the values' time;
/// `recorded_at`: the hub's, for the change feed).
pub(crate) fn register_one(
    tx: &Transaction<'_>,
    report: ChannelReport,
    acting_for: Option<&str>,
    at: i64,
    recorded_at: i64,
) -> Result<Result<Registered, FieldError>> {
    let ChannelReport { id, mut fields } = report;
    if let Err(refused) = rules::claim_department(&mut fields, acting_for) {
        return Ok(Err(refused));
    }
    if let Some(department) = &fields.department
        && !department_exists(tx, department)?
    {
        return Ok(Err(FieldError::new(
            "department",
            format!("{department} is not a department of this hub (GET /api/v1/departments)"),
        )));
    }
    let before = existing(tx, &id.id)?;
    let outcome =
        match rules::registration(&id.id, before.as_ref().map(Existing::rules), acting_for) {
            Ok(outcome) => outcome,
            Err(refused) => return Ok(Err(refused)),
        };
    if before
        .as_ref()
        .is_some_and(|old| old.reported_already(&fields))
    {
        return Ok(Ok(outcome));
    }
    let curated = before
        .as_ref()
        .map(|old| old.curated.clone())
        .unwrap_or_default();
    let shown = store_values(tx, &id, &fields, &curated, at)?;
    let change = Existing::values_change(
        before.as_ref(),
        outcome.into(),
        id,
        shown,
        (at, recorded_at),
    );
    camera_changes::append(tx, &change)?;
    Ok(Ok(outcome))
}

/// Applies `apply` to every item in one transaction: an item's own refusal is its outcome,
/// a storage error rolls the whole batch back.
fn each_in_one_transaction<T, O>(
    conn: &mut Connection,
    items: Vec<T>,
    mut apply: impl FnMut(&Transaction<'_>, T) -> Result<Result<O, FieldError>>,
) -> Result<Vec<Result<O, FieldError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        outcomes.push(apply(&tx, item)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

pub fn register(
    conn: &mut Connection,
    reports: Vec<ChannelReport>,
    acting_for: Option<String>,
    at: i64,
) -> Result<Vec<Result<Registered, FieldError>>> {
    each_in_one_transaction(conn, reports, |tx, report| {
        register_one(tx, report, acting_for.as_deref(), at, at)
    })
}

/// Replaces a channel's curated overrides (an empty set removes them all).
pub fn curate(
    conn: &mut Connection,
    id: String,
    curated: ChannelFields,
    acting_for: Option<String>,
    at: i64,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let old = existing(&tx, &id)?
        .filter(|old| !old.deleted)
        .ok_or_else(|| CatalogError::NotFound {
            what: "camera",
            name: id.clone(),
        })?;
    rules::check_curation(
        &id,
        old.department.as_deref(),
        &curated,
        acting_for.as_deref(),
    )?;
    if let Some(department) = &curated.department
        && !department_exists(&tx, department)?
    {
        return Err(CatalogError::invalid(
            "department",
            format!("{department} is not a department of this hub"),
        ));
    }
    if old.curated == curated {
        return Ok(());
    }
    let device = gb28181::parse(&id).map_err(|err| CatalogError::invalid("id", err.to_string()))?;
    let shown = store_values(&tx, &device, &old.reported, &curated, at)?;
    let change = Existing::values_change(Some(&old), ChangeKind::Curated, device, shown, (at, at));
    camera_changes::append(&tx, &change)?;
    tx.commit()?;
    Ok(())
}

fn write_live(
    tx: &Transaction<'_>,
    id: &str,
    live: &LiveState,
    transitions: &[Transition],
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE camera_live SET notified = ?2, notified_at = ?3, last_seen_at = ?4, \
         recorded_status = ?5, recorded_since = ?6 WHERE id = ?1",
    )?;
    stmt.execute(rusqlite::params![
        id,
        live.notified.map(Notified::as_str),
        live.notified_at,
        live.last_seen_at,
        live.recorded.map(Status::as_str),
        live.recorded_since,
    ])?;
    append_transitions(tx, id, transitions)
}

fn append_transitions(tx: &Transaction<'_>, id: &str, transitions: &[Transition]) -> Result<()> {
    if transitions.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO camera_status_events (camera_id, at, previous, status, cause) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for t in transitions {
        stmt.execute(rusqlite::params![
            id,
            t.at,
            t.from.as_str(),
            t.to.as_str(),
            t.cause
        ])?;
    }
    Ok(())
}

/// Applies one signal to one stored channel (its evidence and history), and tells the
/// change feed at `received_at` when what the channel shows changed (a deletion is told
/// as one by its caller).
fn apply_signal(
    tx: &Transaction<'_>,
    id: &str,
    before: LiveState,
    signal: Signal,
    at: (i64, i64),
    liveness: Liveness,
) -> Result<()> {
    let (at, received_at) = at;
    let mut live = before;
    let transitions = live.apply(signal, at, liveness);
    write_live(tx, id, &live, &transitions)?;
    if signal != Signal::Deleted && status_changed(&before, &live, transitions.len()) {
        let cause = transitions
            .last()
            .map(|t| t.cause)
            .or(live.notified.map(Notified::as_str));
        camera_changes::append_status(tx, id, received_at, &live, cause)?;
    }
    Ok(())
}

/// A keepalive for one stored channel. The common case (online, still within its timeout)
/// is one UPDATE that cannot change the status; anything else goes through the state machine.
fn keepalive_one(tx: &Transaction<'_>, id: &str, at: (i64, i64), liveness: Liveness) -> Result<()> {
    let (signal_at, _) = at;
    let refreshed = tx
        .prepare_cached(
            "UPDATE camera_live SET last_seen_at = max(last_seen_at, :at) \
             WHERE id = :id AND recorded_status = 'online' AND notified IS NOT 'OFF' \
             AND notified IS NOT 'VLOST' AND notified IS NOT 'DEFECT' \
             AND :at < last_seen_at + :timeout",
        )?
        .execute(named_params! {":id": id, ":at": signal_at, ":timeout": liveness.timeout_ms()})?;
    if refreshed == 1 {
        return Ok(());
    }
    let live = tx
        .prepare_cached(
            "SELECT notified, notified_at, last_seen_at, recorded_status, recorded_since \
             FROM camera_live WHERE id = ?1",
        )?
        .query_row([id], |row| live_from_row(row, 0))
        .optional()?;
    match live {
        Some(live) => apply_signal(tx, id, live, Signal::Keepalive, at, liveness),
        None => Ok(()),
    }
}

/// Who owns a registered, not deleted channel (`None`: no such channel).
pub(crate) fn owner(tx: &Transaction<'_>, id: &str) -> Result<Option<Option<String>>> {
    Ok(tx
        .prepare_cached("SELECT department FROM camera_live WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([id], |row| row.get(0))
        .optional()?)
}

/// The channels directly under `id`: a device's keepalive speaks for its own channels.
/// (A platform's keepalive does not: channels behind a cascaded platform report their
/// status with NOTIFY, or through their own device's keepalives.)
fn children(tx: &Transaction<'_>, id: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.id, c.department FROM cameras c JOIN camera_live l ON l.id = c.id \
         WHERE c.parent_id = ?1 AND l.deleted_at IS NULL ORDER BY c.id",
    )?;
    let rows = stmt.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Applies one signal received by the hub at `received_at`.
pub(crate) fn signal_one(
    tx: &Transaction<'_>,
    signal: CameraSignal,
    acting_for: Option<&str>,
    liveness: Liveness,
    received_at: i64,
) -> Result<Result<usize, FieldError>> {
    let CameraSignal { id, at, kind } = signal;
    let at = (at, received_at);
    match kind {
        SignalKind::Keepalive => keepalive_signal(tx, &id, at, acting_for, liveness),
        SignalKind::Event(event, fields) => {
            event_signal(tx, &id, at, event, fields, acting_for, liveness)
        }
    }
}

/// A keepalive marks the id and the channels registered under it. The hot path: a few
/// narrow-row statements, no record read.
fn keepalive_signal(
    tx: &Transaction<'_>,
    id: &str,
    at: (i64, i64),
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let owner = owner(tx, id)?;
    let mut marked = 0;
    if let Some(department) = &owner {
        if let Some(acting) = acting_for
            && department.as_deref() != Some(acting)
        {
            return Ok(Err(rules::not_yours(id, department.as_deref(), acting)));
        }
        keepalive_one(tx, id, at, liveness)?;
        marked += 1;
    }
    // Channels of other departments are not the caller's to mark and are left alone.
    for (child, department) in children(tx, id)? {
        if acting_for.is_none_or(|acting| department.as_deref() == Some(acting)) {
            keepalive_one(tx, &child, at, liveness)?;
            marked += 1;
        }
    }
    if marked == 0 && owner.is_none() {
        return Ok(Err(rules::unknown_camera(id)));
    }
    Ok(Ok(marked))
}

/// A catalog NOTIFY event for one channel.
fn event_signal(
    tx: &Transaction<'_>,
    id: &str,
    at: (i64, i64),
    event: Event,
    fields: Option<Box<ChannelFields>>,
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let stored = existing(tx, id)?;
    let step = rules::plan_event(
        id,
        event,
        stored.as_ref().map(Existing::rules),
        fields,
        acting_for,
    );
    match (step, stored) {
        (EventStep::Answer(answer), _) => Ok(answer),
        (EventStep::Register(fields), _) => {
            let device = match gb28181::parse(id) {
                Ok(device) => device,
                Err(err) => return Ok(Err(err.into())),
            };
            let report = ChannelReport {
                id: device,
                fields: *fields,
            };
            Ok(register_one(tx, report, acting_for, at.0, at.1)?.map(|_| 1))
        }
        (EventStep::Delete, Some(old)) => {
            apply_signal(tx, id, old.live, Signal::Deleted, at, liveness)?;
            tx.prepare_cached("UPDATE camera_live SET deleted_at = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![id, at.0])?;
            camera_changes::append_deleted(tx, id, at.1)?;
            Ok(Ok(1))
        }
        (EventStep::Notify(notified), Some(old)) => {
            apply_signal(tx, id, old.live, Signal::Notify(notified), at, liveness)?;
            Ok(Ok(1))
        }
        (EventStep::Delete | EventStep::Notify(_), None) => Ok(Err(rules::unknown_camera(id))),
    }
}

/// Applies keepalives and NOTIFY events in order, in one transaction. Each item answers how
/// many channels it marked, or why it was refused.
pub fn signals(
    conn: &mut Connection,
    signals: Vec<CameraSignal>,
    acting_for: Option<String>,
    liveness: Liveness,
    received_at: i64,
) -> Result<Vec<Result<usize, FieldError>>> {
    each_in_one_transaction(conn, signals, |tx, signal| {
        signal_one(tx, signal, acting_for.as_deref(), liveness, received_at)
    })
}

/// Brings in whole histories (see [`ImportedHistory`]), checking that each continues the
/// channel's recorded history and ends where its evidence says.
pub fn import_history(
    conn: &mut Connection,
    histories: Vec<ImportedHistory>,
    at: i64,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for history in &histories {
        let id = &history.id;
        let old = existing(&tx, id)?
            .filter(|old| !old.deleted)
            .ok_or_else(|| CatalogError::NotFound {
                what: "camera",
                name: id.clone(),
            })?;
        history.check_continues(old.live.recorded, old.live.recorded_since)?;
        write_live(&tx, id, &history.live, &history.transitions)?;
        if status_changed(&old.live, &history.live, history.transitions.len()) {
            let cause = history.transitions.last().map(|t| t.cause);
            camera_changes::append_status(&tx, id, at, &history.live, cause)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Appends the "went offline" transitions of channels whose keepalives stopped before `now`.
pub fn sweep(conn: &mut Connection, now: i64, liveness: Liveness) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due: Vec<(String, LiveState)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, notified, notified_at, last_seen_at, recorded_status, recorded_since \
             FROM camera_live WHERE recorded_status = 'online' AND last_seen_at <= :cutoff \
             AND deleted_at IS NULL",
        )?;
        let rows = stmt.query_map(
            named_params! {":cutoff": now - liveness.timeout_ms()},
            |row| Ok((row.get(0)?, live_from_row(row, 1)?)),
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut swept = 0;
    for (id, mut live) in due {
        if let Some(transition) = live.catch_up(now, liveness) {
            write_live(&tx, &id, &live, &[transition])?;
            camera_changes::append_status(&tx, &id, now, &live, Some("keepalive_timeout"))?;
            swept += 1;
        }
    }
    tx.commit()?;
    Ok(swept)
}

#[async_trait]
impl CameraStore for SqliteStore {
    async fn register_cameras(
        &self,
        reports: Vec<ChannelReport>,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<Vec<Result<Registered, FieldError>>> {
        self.write(move |conn| register(conn, reports, acting_for, at))
            .await
    }

    async fn curate_camera(
        &self,
        id: String,
        curated: ChannelFields,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<()> {
        self.write(move |conn| curate(conn, id, curated, acting_for, at))
            .await
    }

    async fn camera_signals(
        &self,
        signals: Vec<CameraSignal>,
        acting_for: Option<String>,
        liveness: Liveness,
        received_at: i64,
    ) -> Result<Vec<Result<usize, FieldError>>> {
        self.write(move |conn| {
            super::cameras::signals(conn, signals, acting_for, liveness, received_at)
        })
        .await
    }

    async fn record_camera_reports(
        &self,
        reports: Vec<CameraReport>,
        acting_for: Option<String>,
        received_at: i64,
    ) -> Result<Vec<Result<bool, FieldError>>> {
        self.write(move |conn| record_reports(conn, reports, acting_for, received_at))
            .await
    }

    async fn camera_alarms(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredAlarm>> {
        self.read(move |conn| alarms(conn, after_seq, limit)).await
    }

    async fn camera_positions(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredPosition>> {
        self.read(move |conn| positions(conn, after_seq, limit))
            .await
    }

    async fn purge_camera_reports(
        &self,
        alarms_before: i64,
        positions_before: i64,
    ) -> Result<(u64, u64)> {
        let mut deleted = [0u64; 2];
        for (index, before) in [alarms_before, positions_before].into_iter().enumerate() {
            let positions = index == 1;
            // The sweeper asks every round and most rounds have nothing past retention: a
            // look at the oldest time on a reader spares them the writer.
            let oldest = self
                .read(move |conn| oldest_report(conn, positions))
                .await?;
            if oldest.is_none_or(|at| at >= before) {
                continue;
            }
            loop {
                let chunk = self
                    .write(move |conn| purge_chunk(conn, positions, before, PURGE_CHUNK))
                    .await?;
                deleted[index] += chunk;
                if chunk < PURGE_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok((deleted[0], deleted[1]))
    }

    async fn camera_changes(&self, after_seq: i64, limit: usize) -> Result<ChangePage> {
        self.read(move |conn| camera_changes::changes(conn, after_seq, limit))
            .await
    }

    async fn camera_change_head(&self) -> Result<i64> {
        self.read(camera_changes::head).await
    }

    async fn purge_camera_changes(&self, before: i64) -> Result<u64> {
        // As for alarms: most sweeper rounds have nothing to delete, and see so on a reader.
        let oldest = self.read(camera_changes::oldest).await?;
        if oldest.is_none_or(|at| at >= before) {
            return Ok(0);
        }
        let mut deleted = 0;
        loop {
            let chunk = self
                .write(move |conn| camera_changes::purge_chunk(conn, before, PURGE_CHUNK))
                .await?;
            deleted += chunk;
            // A short chunk stopped at a younger change (or the end).
            if chunk < PURGE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }

    async fn camera_stream_offsets(&self, feed: CameraFeed) -> Result<Vec<(String, i32, i64)>> {
        self.read(move |conn| stream_offsets(conn, feed)).await
    }

    async fn commit_camera_stream(
        &self,
        commit: CameraStreamCommit,
    ) -> Result<CameraStreamOutcome> {
        self.write(move |conn| commit_stream(conn, commit)).await
    }

    async fn camera_rejected_records(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>> {
        self.read(move |conn| rejected_records(conn, after_id, limit))
            .await
    }

    async fn import_camera_history(&self, histories: Vec<ImportedHistory>, at: i64) -> Result<()> {
        self.write(move |conn| import_history(conn, histories, at))
            .await
    }

    async fn sweep_cameras(&self, now: i64, liveness: Liveness) -> Result<usize> {
        self.write(move |conn| sweep(conn, now, liveness)).await
    }

    async fn camera(&self, id: &str) -> Result<Option<(CameraRecord, CameraSources)>> {
        let id = id.to_string();
        self.read(move |conn| camera(conn, &id)).await
    }

    async fn search_cameras(
        &self,
        query: CameraQuery,
        now: i64,
        liveness: Liveness,
    ) -> Result<Vec<CameraRecord>> {
        self.read(move |conn| search(conn, &query, now, liveness))
            .await
    }

    async fn camera_stats(
        &self,
        group: StatsGroup,
        since: i64,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<CameraStats>, CameraStats)> {
        self.sweep_cameras(now, liveness).await?;
        let scope = scope.as_ref().map(crate::camera::CameraScope::of);
        // The two passes read different tables: run them at once on two connections.
        let (channels, walks) = tokio::join!(
            self.read(move |conn| channel_pass(conn, group, since, now, liveness, scope.as_ref())),
            self.read(move |conn| transition_pass(conn, since, now)),
        );
        Ok(combine(channels?, &walks?, now))
    }

    async fn camera_status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>> {
        self.read(move |conn| status_events(conn, after_seq, limit))
            .await
    }

    async fn roll_up_camera_days(
        &self,
        now: i64,
        liveness: Liveness,
        retention_days: u32,
    ) -> Result<Vec<i32>> {
        self.write(move |conn| roll_up_days(conn, now, liveness, retention_days))
            .await
    }

    async fn camera_daily_stats(
        &self,
        group: StatsGroup,
        days: std::ops::RangeInclusive<i32>,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<CameraStats>, CameraStats)> {
        let scope = scope.as_ref().map(crate::camera::CameraScope::of);
        let totals_scope = scope.clone();
        // The counts are the channels' now (their window is empty); the time comes from the
        // roll-ups. The two read different tables: at once, on two connections.
        let (pass, totals) = tokio::join!(
            self.read(move |conn| channel_pass(conn, group, now, now, liveness, scope.as_ref())),
            self.read(move |conn| daily_time(conn, group, &days, totals_scope.as_ref())),
        );
        let mut pass = pass?;
        for (value, online_ms, observed_ms) in totals? {
            let index = pass.group(|known| *known == value, || value.clone());
            pass.add_time(index, online_ms, observed_ms);
        }
        Ok(combine(pass, &Default::default(), now))
    }

    async fn camera_daily_rows(&self, after: (i32, String), limit: usize) -> Result<Vec<DailyRow>> {
        self.read(move |conn| daily_rows(conn, (after.0, &after.1), limit))
            .await
    }
}
