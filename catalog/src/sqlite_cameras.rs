//! SQLite statements of the camera registry: registration, curated overrides, keepalives and
//! NOTIFY events with their status history, searches and statistics.
//!
//! Every write of a batch runs in one transaction; an item refused for its own reasons
//! (unknown camera, another department's channel) is reported and the others still apply.

use std::collections::HashMap;

use rusqlite::{
    Connection, OptionalExtension, Row, Transaction, TransactionBehavior, named_params,
};

use crate::camera::{
    CameraFeed, CameraOp, CameraQuery, CameraRecord, CameraSignal, CameraSources, CameraStats,
    CameraStreamCommit, CameraStreamOutcome, ChannelFields, ChannelReport, FieldError,
    ImportedHistory, Registered, SignalKind, StatsGroup, StatusEvent, Streams,
};
use crate::camera_status::{Event, LiveState, Liveness, Notified, Signal, Status, Transition};
use crate::error::{CatalogError, Result};
use crate::gb28181;
use crate::model::{RejectedRecord, StoredRejection};

/// The status at `:now` from the evidence columns; the same rule as
/// [`LiveState::status_at`] (a test holds the two together).
const STATUS_SQL: &str = "CASE WHEN notified IN ('OFF', 'VLOST', 'DEFECT') THEN 'offline' \
     WHEN last_seen_at IS NULL THEN 'unknown' \
     WHEN :now < last_seen_at + :timeout THEN 'online' ELSE 'offline' END";

/// The types statistics count as video channels: checkpoints, multi-lens devices and
/// cameras. NVRs, encoders and platforms are registered (their keepalives mark their
/// channels) but are not channels of the video network themselves.
const VIDEO_TYPES: &str = "(121, 122, 131, 132)";

const CAMERA_COLUMNS: &str = "c.id, c.parent_id, c.name, c.department, c.civil_code, c.address, \
     c.longitude, c.latitude, c.manufacturer, c.model, c.ptz_type, c.position_type, \
     c.room_type, c.use_type, c.supply_light_type, c.resolution, c.streams, c.tags, c.complete, \
     l.notified, l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since, \
     l.registered_at, c.updated_at";

/// A channel's record beside its liveness.
const CAMERAS_JOINED: &str = "cameras c JOIN camera_live l ON l.id = c.id";

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(index)?;
    text.map(super::parse_json).transpose()
}

fn live_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<LiveState> {
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

fn camera_from_row(row: &Row<'_>) -> rusqlite::Result<CameraRecord> {
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

/// The stored state of a channel a write needs.
struct Existing {
    department: Option<String>,
    reported: ChannelFields,
    curated: ChannelFields,
    deleted: bool,
    live: LiveState,
}

fn existing(tx: &Transaction<'_>, id: &str) -> Result<Option<Existing>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.department, c.reported, c.curated, l.deleted_at IS NOT NULL, l.notified, \
         l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since \
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
            })
        })
        .optional()?)
}

fn department_exists(tx: &Transaction<'_>, code: &str) -> Result<bool> {
    let mut stmt = tx.prepare_cached("SELECT 1 FROM departments WHERE code = ?1")?;
    Ok(stmt.exists([code])?)
}

fn not_yours(id: &str, owner: Option<&str>, acting_for: &str) -> FieldError {
    FieldError::forbidden(
        "id",
        format!(
            "channel {id} belongs to department {}; {acting_for} may change only its own \
             channels (an admin may change any)",
            owner.unwrap_or("(none)")
        ),
    )
}

/// Writes the shown values computed from both sources.
fn store_values(
    tx: &Transaction<'_>,
    id: &gb28181::DeviceId,
    reported: &ChannelFields,
    curated: &ChannelFields,
    at: i64,
) -> Result<()> {
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
    Ok(())
}

/// Registers or updates one channel's reported values inside `tx`.
fn register_one(
    tx: &Transaction<'_>,
    report: ChannelReport,
    acting_for: Option<&str>,
    at: i64,
) -> Result<Result<Registered, FieldError>> {
    let ChannelReport { id, mut fields } = report;
    if let Some(acting) = acting_for {
        match fields.department.as_deref() {
            None => fields.department = Some(acting.to_string()),
            Some(named) if named != acting => {
                return Ok(Err(FieldError::forbidden(
                    "department",
                    format!(
                        "{acting} registers its own channels; {named}'s are registered by {named}"
                    ),
                )));
            }
            Some(_) => {}
        }
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
    let outcome = match &before {
        None => Registered::Created,
        Some(old) => {
            if let Some(acting) = acting_for
                && old.department.as_deref() != Some(acting)
                && !old.deleted
            {
                return Ok(Err(not_yours(&id.id, old.department.as_deref(), acting)));
            }
            if old.deleted {
                Registered::Restored
            } else {
                Registered::Updated
            }
        }
    };
    let curated = before
        .as_ref()
        .map(|old| old.curated.clone())
        .unwrap_or_default();
    store_values(tx, &id, &fields, &curated, at)?;
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
        register_one(tx, report, acting_for.as_deref(), at)
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
    if let Some(acting) = acting_for.as_deref() {
        if old.department.as_deref() != Some(acting) {
            let err = not_yours(&id, old.department.as_deref(), acting);
            return Err(CatalogError::invalid(err.field, err.message));
        }
        if let Some(named) = curated.department.as_deref()
            && named != acting
        {
            return Err(CatalogError::invalid(
                "department",
                format!("only an admin may hand a channel to another department ({named})"),
            ));
        }
    }
    if let Some(department) = &curated.department
        && !department_exists(&tx, department)?
    {
        return Err(CatalogError::invalid(
            "department",
            format!("{department} is not a department of this hub"),
        ));
    }
    let device = gb28181::parse(&id).map_err(|err| CatalogError::invalid("id", err.to_string()))?;
    store_values(&tx, &device, &old.reported, &curated, at)?;
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

/// Applies one signal to one stored channel (its evidence and history).
fn apply_signal(
    tx: &Transaction<'_>,
    id: &str,
    mut live: LiveState,
    signal: Signal,
    at: i64,
    liveness: Liveness,
) -> Result<()> {
    let transitions = live.apply(signal, at, liveness);
    write_live(tx, id, &live, &transitions)
}

/// A keepalive for one stored channel. The common case (online, still within its timeout)
/// is one UPDATE that cannot change the status; anything else goes through the state machine.
fn keepalive_one(tx: &Transaction<'_>, id: &str, at: i64, liveness: Liveness) -> Result<()> {
    let refreshed = tx
        .prepare_cached(
            "UPDATE camera_live SET last_seen_at = max(last_seen_at, :at) \
             WHERE id = :id AND recorded_status = 'online' AND notified IS NOT 'OFF' \
             AND notified IS NOT 'VLOST' AND notified IS NOT 'DEFECT' \
             AND :at < last_seen_at + :timeout",
        )?
        .execute(named_params! {":id": id, ":at": at, ":timeout": liveness.timeout_ms()})?;
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
fn owner(tx: &Transaction<'_>, id: &str) -> Result<Option<Option<String>>> {
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
         WHERE c.parent_id = ?1 AND l.deleted_at IS NULL",
    )?;
    let rows = stmt.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn unknown_camera(id: &str) -> FieldError {
    FieldError::new(
        "id",
        format!(
            "{id} is not a registered channel or device; register it first (PUT /api/v1/cameras/{id})"
        ),
    )
}

fn signal_one(
    tx: &Transaction<'_>,
    signal: CameraSignal,
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let CameraSignal { id, at, kind } = signal;
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
    at: i64,
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let owner = owner(tx, id)?;
    let mut marked = 0;
    if let Some(department) = &owner {
        if let Some(acting) = acting_for
            && department.as_deref() != Some(acting)
        {
            return Ok(Err(not_yours(id, department.as_deref(), acting)));
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
        return Ok(Err(unknown_camera(id)));
    }
    Ok(Ok(marked))
}

/// A catalog NOTIFY event for one channel.
fn event_signal(
    tx: &Transaction<'_>,
    id: &str,
    at: i64,
    event: Event,
    fields: Option<Box<ChannelFields>>,
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let stored = existing(tx, id)?;
    let registered = stored.as_ref().filter(|old| !old.deleted);
    if let (Some(acting), Some(old)) = (acting_for, registered)
        && old.department.as_deref() != Some(acting)
    {
        return Ok(Err(not_yours(id, old.department.as_deref(), acting)));
    }
    let register = |fields: ChannelFields| -> Result<Result<usize, FieldError>> {
        let device = match gb28181::parse(id) {
            Ok(device) => device,
            Err(err) => return Ok(Err(err.into())),
        };
        let report = ChannelReport { id: device, fields };
        Ok(register_one(tx, report, acting_for, at)?.map(|_| 1))
    };
    match (event, registered, fields) {
        (Event::Add | Event::Update, _, Some(fields)) => register(*fields),
        // ADD of a channel deleted earlier brings it back with its known values.
        (Event::Add, None, None) => match stored {
            Some(old) => {
                if let Some(acting) = acting_for
                    && old.department.as_deref() != Some(acting)
                {
                    return Ok(Err(not_yours(id, old.department.as_deref(), acting)));
                }
                register(old.reported)
            }
            None => Ok(Err(FieldError::new(
                "channel",
                format!(
                    "{id} is not registered; an ADD of a new channel carries its fields \
                     (\"channel\": {{\"name\": ...}})"
                ),
            ))),
        },
        (Event::Add, Some(_), None) => Ok(Ok(0)),
        (Event::Update, Some(_), None) => Ok(Err(FieldError::new(
            "channel",
            "UPDATE carries the channel's new fields (\"channel\": {...})",
        ))),
        (_, None, _) => Ok(Err(unknown_camera(id))),
        (Event::Del, Some(old), _) => {
            apply_signal(tx, id, old.live, Signal::Deleted, at, liveness)?;
            tx.prepare_cached("UPDATE camera_live SET deleted_at = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![id, at])?;
            Ok(Ok(1))
        }
        (event, Some(old), _) => match event.notified() {
            Some(notified) => {
                apply_signal(tx, id, old.live, Signal::Notify(notified), at, liveness)?;
                Ok(Ok(1))
            }
            None => Ok(Err(FieldError::new("event", "not a status event"))),
        },
    }
}

/// Applies keepalives and NOTIFY events in order, in one transaction. Each item answers how
/// many channels it marked, or why it was refused.
pub fn signals(
    conn: &mut Connection,
    signals: Vec<CameraSignal>,
    acting_for: Option<String>,
    liveness: Liveness,
) -> Result<Vec<Result<usize, FieldError>>> {
    each_in_one_transaction(conn, signals, |tx, signal| {
        signal_one(tx, signal, acting_for.as_deref(), liveness)
    })
}

/// Brings in whole histories (see [`ImportedHistory`]), checking that each continues the
/// channel's recorded history and ends where its evidence says.
pub fn import_history(conn: &mut Connection, histories: Vec<ImportedHistory>) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for history in histories {
        let id = history.id;
        let old = existing(&tx, &id)?
            .filter(|old| !old.deleted)
            .ok_or_else(|| CatalogError::NotFound {
                what: "camera",
                name: id.clone(),
            })?;
        let mut status = old.live.recorded.unwrap_or(Status::Unknown);
        let mut since = old.live.recorded_since.unwrap_or(i64::MIN);
        for transition in &history.transitions {
            if transition.from != status
                || transition.at < since
                || transition.from == transition.to
            {
                return Err(CatalogError::invalid(
                    "transitions",
                    format!(
                        "{id}: {:?} at {} does not continue the history ({status:?} since {since})",
                        transition.to, transition.at
                    ),
                ));
            }
            status = transition.to;
            since = transition.at;
        }
        if history.live.recorded.unwrap_or(Status::Unknown) != status {
            return Err(CatalogError::invalid(
                "live",
                format!("{id}: the evidence's recorded status is not the history's last"),
            ));
        }
        write_live(&tx, &id, &history.live, &history.transitions)?;
    }
    tx.commit()?;
    Ok(())
}

/// The stored next offsets of a camera feed: (topic, partition, next offset).
pub fn stream_offsets(conn: &Connection, feed: CameraFeed) -> Result<Vec<(String, i32, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic, partition, next_offset FROM camera_stream_offsets WHERE feed = ?1 \
         ORDER BY topic, partition",
    )?;
    let rows = stmt.query_map([feed.dataset()], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn keep_dead_letter(tx: &Transaction<'_>, feed: CameraFeed, record: &RejectedRecord) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO camera_rejected_records (feed, topic, partition, \"offset\", key, payload, \
         error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        feed.dataset(),
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.payload,
        record.error,
        super::time_text(super::now()),
    ])?;
    Ok(())
}

/// Applies a Kafka batch to the registry with its offset, in one transaction.
pub fn commit_stream(
    conn: &mut Connection,
    commit: CameraStreamCommit,
) -> Result<CameraStreamOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let feed = commit.feed;
    let advance = &commit.offset;
    let actual: Option<i64> = tx
        .prepare_cached(
            "SELECT next_offset FROM camera_stream_offsets WHERE feed = ?1 AND topic = ?2 \
             AND partition = ?3",
        )?
        .query_row(
            rusqlite::params![feed.dataset(), advance.topic, advance.partition],
            |row| row.get(0),
        )
        .optional()?;
    advance.check_stored(actual)?;
    let mut outcome = CameraStreamOutcome::default();
    for (mut origin, op) in commit.items {
        let result = match op {
            CameraOp::Register(report) => register_one(&tx, *report, None, commit.at)?.map(|_| 1),
            CameraOp::Signal(signal) => signal_one(&tx, signal, None, commit.liveness)?,
        };
        match result {
            Ok(_) => outcome.applied += 1,
            Err(err) => {
                origin.error = err.to_string();
                keep_dead_letter(&tx, feed, &origin)?;
                outcome.rejected += 1;
            }
        }
    }
    for record in &commit.rejected {
        keep_dead_letter(&tx, feed, record)?;
        outcome.rejected += 1;
    }
    tx.prepare_cached(
        "INSERT INTO camera_stream_offsets (feed, topic, partition, next_offset, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (feed, topic, partition) DO UPDATE SET \
         next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![
        feed.dataset(),
        advance.topic,
        advance.partition,
        advance.next,
        super::time_text(super::now()),
    ])?;
    tx.commit()?;
    Ok(outcome)
}

/// Dead letters of the camera feeds after `after_id`, oldest first.
pub fn rejected_records(
    conn: &Connection,
    after_id: i64,
    limit: usize,
) -> Result<Vec<StoredRejection>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, feed, topic, partition, \"offset\", key, payload, error, at \
         FROM camera_rejected_records WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after_id, limit as i64], |row| {
        Ok(StoredRejection {
            id: row.get(0)?,
            dataset: row.get(1)?,
            record: RejectedRecord {
                topic: row.get(2)?,
                partition: row.get(3)?,
                offset: row.get(4)?,
                key: row.get(5)?,
                payload: row.get(6)?,
                error: row.get(7)?,
            },
            at: super::parse_time(row.get(8)?)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            swept += 1;
        }
    }
    tx.commit()?;
    Ok(swept)
}

pub fn camera(conn: &Connection, id: &str) -> Result<Option<(CameraRecord, CameraSources)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CAMERA_COLUMNS}, c.reported, c.curated FROM {CAMERAS_JOINED} \
         WHERE c.id = ?1 AND l.deleted_at IS NULL"
    ))?;
    Ok(stmt
        .query_row([id], |row| {
            let record = camera_from_row(row)?;
            let sources = CameraSources {
                reported: super::parse_json(row.get(26)?)?,
                curated: super::parse_json(row.get(27)?)?,
            };
            Ok((record, sources))
        })
        .optional()?)
}

pub fn search(
    conn: &Connection,
    query: &CameraQuery,
    now: i64,
    liveness: Liveness,
) -> Result<Vec<CameraRecord>> {
    let mut conditions = vec!["l.deleted_at IS NULL".to_string()];
    let mut values: Vec<(&str, rusqlite::types::Value)> = Vec::new();
    if let Some(region) = &query.region {
        conditions.push("c.region_code >= :region_low AND c.region_code < :region_high".into());
        let prefix = CameraQuery::region_prefix(region);
        values.push((":region_low", prefix.clone().into()));
        values.push((":region_high", format!("{prefix}\u{7f}").into()));
    }
    if let Some(status) = query.status {
        conditions.push(format!("({STATUS_SQL}) = :status"));
        values.push((":status", status.as_str().to_string().into()));
    }
    if let Some(industry) = query.industry {
        conditions.push("c.industry = :industry".into());
        values.push((":industry", i64::from(industry).into()));
    }
    if let Some(type_code) = query.type_code {
        conditions.push("c.type_code = :type_code".into());
        values.push((":type_code", i64::from(type_code).into()));
    }
    if let Some(department) = &query.department {
        conditions.push("c.department = :department".into());
        values.push((":department", department.clone().into()));
    }
    if let Some([min_lon, min_lat, max_lon, max_lat]) = query.bbox {
        conditions.push(
            "c.longitude BETWEEN :min_lon AND :max_lon AND c.latitude BETWEEN :min_lat AND :max_lat"
                .into(),
        );
        values.push((":min_lon", min_lon.into()));
        values.push((":min_lat", min_lat.into()));
        values.push((":max_lon", max_lon.into()));
        values.push((":max_lat", max_lat.into()));
    }
    if let Some(after) = &query.after {
        conditions.push("c.id > :after".into());
        values.push((":after", after.clone().into()));
    }
    let sql = format!(
        "SELECT {CAMERA_COLUMNS} FROM {CAMERAS_JOINED} WHERE {} ORDER BY c.id LIMIT :limit",
        conditions.join(" AND ")
    );
    values.push((":limit", (query.limit.min(i64::MAX as usize) as i64).into()));
    if query.status.is_some() {
        values.push((":now", now.into()));
        values.push((":timeout", liveness.timeout_ms().into()));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<(&str, &dyn rusqlite::ToSql)> = values
        .iter()
        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
        .collect();
    let rows = stmt.query_map(params.as_slice(), camera_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A channel's walk through its transitions in the statistics window.
pub struct Walk {
    first_at: i64,
    /// The status before the first transition in the window.
    before: Status,
    /// Online milliseconds between the first and the last transition.
    online_between: i64,
    last_at: i64,
    last: Status,
}

fn status_of(value: rusqlite::types::ValueRef<'_>) -> Status {
    value
        .as_str()
        .ok()
        .and_then(Status::parse)
        .unwrap_or(Status::Unknown)
}

/// A 20-digit id as a number: no allocation per row for the hundreds of thousands of rows
/// a statistic reads, and a key that hashes in a multiplication.
fn id_key(value: rusqlite::types::ValueRef<'_>) -> Option<u128> {
    let bytes = value.as_bytes().ok()?;
    if bytes.len() != 20 {
        return None;
    }
    bytes.iter().try_fold(0u128, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u128::from(b - b'0'))
    })
}

/// Hashes the numeric ids of [`id_key`]: they are unique and well spread in their low
/// digits (the serial), so mixing them with one multiplication is enough.
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 =
            ((n as u64) ^ ((n >> 64) as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The window's transitions, walked per channel in time order (their index gives that
/// order; no sorting).
pub fn transition_pass(conn: &Connection, since: i64, now: i64) -> Result<Walks> {
    let mut walks: Walks = IdMap::default();
    let mut stmt = conn.prepare_cached(
        "SELECT camera_id, at, previous, status FROM camera_status_events \
         WHERE at >= :since AND at < :now ORDER BY at, seq",
    )?;
    let mut rows = stmt.query(named_params! {":since": since, ":now": now})?;
    while let Some(row) = rows.next()? {
        let Some(key) = id_key(row.get_ref(0)?) else {
            continue;
        };
        let at: i64 = row.get(1)?;
        let previous = status_of(row.get_ref(2)?);
        let status = status_of(row.get_ref(3)?);
        walks
            .entry(key)
            .and_modify(|walk| {
                if walk.last == Status::Online {
                    walk.online_between += at - walk.last_at;
                }
                walk.last_at = at;
                walk.last = status;
            })
            .or_insert(Walk {
                first_at: at,
                before: previous,
                online_between: 0,
                last_at: at,
                last: status,
            });
    }
    Ok(walks)
}

/// Per channel transitions in the statistics window.
pub type Walks = IdMap<Walk>;

/// One group's figures while they are being added up.
pub struct GroupTally {
    value: GroupValue,
    stats: CameraStats,
    online_ms: i64,
    observed_ms: i64,
}

/// What the pass over every channel found: the groups' counts, and the channels whose last
/// transition is inside the window (their online time comes from their walk).
pub struct ChannelPass {
    groups: Vec<GroupTally>,
    /// (id, group, observed from)
    recent: Vec<(u128, usize, i64)>,
}

/// Every video channel's narrow liveness row: group, status now, completeness, and the
/// online time of the channels whose status held throughout the window.
pub fn channel_pass(
    conn: &Connection,
    group: StatsGroup,
    since: i64,
    now: i64,
    liveness: Liveness,
) -> Result<ChannelPass> {
    let mut pass = ChannelPass {
        groups: Vec::new(),
        recent: Vec::new(),
    };
    let column = group.column();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, {column}, notified, last_seen_at, complete, registered_at, recorded_status, \
         recorded_since FROM camera_live WHERE deleted_at IS NULL AND type_code IN {VIDEO_TYPES}"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key_value = row.get_ref(1)?;
        let index = match pass.groups.iter().position(|g| g.value.matches(key_value)) {
            Some(index) => index,
            None => {
                pass.groups.push(GroupTally {
                    value: GroupValue::of(key_value),
                    stats: empty_stats(key_text(key_value)),
                    online_ms: 0,
                    observed_ms: 0,
                });
                pass.groups.len() - 1
            }
        };
        let entry = &mut pass.groups[index];
        let live = LiveState {
            notified: row.get_ref(2)?.as_str().ok().and_then(Notified::parse),
            last_seen_at: row.get_ref(3)?.as_i64_or_null().unwrap_or(None),
            ..LiveState::default()
        };
        entry.stats.total += 1;
        match live.status_at(now, liveness) {
            Status::Online => entry.stats.online += 1,
            Status::Offline => entry.stats.offline += 1,
            Status::Unknown => entry.stats.unknown += 1,
        }
        if row.get_ref(4)?.as_i64().unwrap_or(0) != 0 {
            entry.stats.complete += 1;
        }
        let registered_at = row.get_ref(5)?.as_i64().unwrap_or(i64::MAX);
        if registered_at >= now {
            continue;
        }
        let from = registered_at.max(since);
        entry.observed_ms += now - from;
        // The last transition is at `recorded_since`: a channel recorded since before the
        // window held its recorded status throughout it.
        let recent = row
            .get_ref(7)?
            .as_i64_or_null()
            .unwrap_or(None)
            .is_some_and(|at| at >= since);
        if recent && let Some(key) = id_key(row.get_ref(0)?) {
            pass.recent.push((key, index, from));
        } else if status_of(row.get_ref(6)?) == Status::Online {
            entry.online_ms += now - from;
        }
    }
    Ok(pass)
}

/// Counts, online rate, completeness and availability over `[since, now)` per group and
/// over all video channels, from the two passes (which may run at once, on two
/// connections). The history must hold every transition up to `now` (sweep first).
pub fn combine(pass: ChannelPass, walks: &Walks, now: i64) -> (Vec<CameraStats>, CameraStats) {
    let ChannelPass { mut groups, recent } = pass;
    for (key, index, from) in recent {
        let online = match walks.get(&key) {
            Some(walk) => {
                let first = walk.first_at.max(from);
                let last = walk.last_at.max(from);
                let before = if walk.before == Status::Online {
                    first - from
                } else {
                    0
                };
                let after = if walk.last == Status::Online {
                    now - last
                } else {
                    0
                };
                before + walk.online_between + after
            }
            // Recorded since inside the window without a transition in it: a channel that
            // was deleted while offline (no transition) and registered again; it was not
            // online since.
            None => 0,
        };
        groups[index].online_ms += online.clamp(0, now - from);
    }
    groups.sort_by(|a, b| a.stats.key.cmp(&b.stats.key));
    let mut overall = empty_stats(None);
    let (mut online_ms, mut observed_ms) = (0i64, 0i64);
    for group in &mut groups {
        group.stats.availability = ratio(group.online_ms as u64, group.observed_ms as u64);
        online_ms += group.online_ms;
        observed_ms += group.observed_ms;
        overall.total += group.stats.total;
        overall.online += group.stats.online;
        overall.offline += group.stats.offline;
        overall.unknown += group.stats.unknown;
        overall.complete += group.stats.complete;
    }
    overall.availability = ratio(online_ms as u64, observed_ms as u64);
    let mut groups: Vec<CameraStats> = groups.into_iter().map(|g| g.stats).collect();
    for entry in groups.iter_mut().chain(std::iter::once(&mut overall)) {
        entry.online_rate = ratio(entry.online, entry.total);
        entry.completeness = ratio(entry.complete, entry.total);
    }
    (groups, overall)
}

fn empty_stats(key: Option<String>) -> CameraStats {
    CameraStats {
        key,
        total: 0,
        online: 0,
        offline: 0,
        unknown: 0,
        online_rate: 0.0,
        availability: 0.0,
        complete: 0,
        completeness: 0.0,
    }
}

/// A group column's value as the text statistics show (`511025`, `5`, `gongan`).
fn key_text(value: rusqlite::types::ValueRef<'_>) -> Option<String> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(n) => Some(n.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// A group column's value, compared without allocating.
#[derive(PartialEq)]
pub enum GroupValue {
    Null,
    Integer(i64),
    Text(Vec<u8>),
}

impl GroupValue {
    fn of(value: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Integer(n) => GroupValue::Integer(n),
            ValueRef::Text(t) | ValueRef::Blob(t) => GroupValue::Text(t.to_vec()),
            ValueRef::Null | ValueRef::Real(_) => GroupValue::Null,
        }
    }

    fn matches(&self, value: rusqlite::types::ValueRef<'_>) -> bool {
        use rusqlite::types::ValueRef;
        match (self, value) {
            (GroupValue::Null, ValueRef::Null) => true,
            (GroupValue::Integer(a), ValueRef::Integer(b)) => *a == b,
            (GroupValue::Text(a), ValueRef::Text(b)) => a.as_slice() == b,
            _ => false,
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn status_events(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, camera_id, at, previous, status, cause FROM camera_status_events \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after_seq, limit as i64], |row| {
        let previous: String = row.get(3)?;
        let status: String = row.get(4)?;
        Ok(StatusEvent {
            seq: row.get(0)?,
            camera_id: row.get(1)?,
            at: row.get(2)?,
            previous: Status::parse(&previous).unwrap_or(Status::Unknown),
            status: Status::parse(&status).unwrap_or(Status::Unknown),
            cause: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Evaluates [`STATUS_SQL`] on given evidence (for the test that holds it to the Rust rule).
#[cfg(test)]
pub fn status_in_sql(conn: &Connection, live: &LiveState, now: i64, liveness: Liveness) -> Status {
    let sql = format!(
        "SELECT {STATUS_SQL} FROM (SELECT :notified AS notified, :last_seen_at AS last_seen_at)"
    );
    let text: String = conn
        .query_row(
            &sql,
            named_params! {
                ":notified": live.notified.map(Notified::as_str),
                ":last_seen_at": live.last_seen_at,
                ":now": now,
                ":timeout": liveness.timeout_ms(),
            },
            |row| row.get(0),
        )
        .expect("status SQL runs");
    Status::parse(&text).expect("a status")
}
