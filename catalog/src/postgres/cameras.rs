//! The camera registry in PostgreSQL: registration, curated overrides, keepalives and
//! NOTIFY events with their status history, Kafka feeds, searches and statistics.
//!
//! The rules are the SQLite store's (`sqlite/cameras.rs`), statement for statement; what
//! differs is concurrency. Several nodes take keepalives for the same channels, so every
//! read that decides a write locks the channel's liveness row (`FOR UPDATE`), and a batch
//! that meets another in a deadlock is run again from the start (PostgreSQL aborts one of
//! the two; nothing of it was committed).

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::camera_changes;
use super::*;
use crate::camera::alarms::{StoredAlarm, StoredPosition};
use crate::camera::changes::{ChangeKind, ChangePage, status_changed};
use crate::camera::rules::{self, EventStep, Existing};
use crate::camera::status::{Event, LiveState, Liveness, Notified, Signal, Status, Transition};
use crate::camera::tally::{self, ChannelPass, ChannelRow, GroupValue, Walks};
use crate::camera::{
    CameraFeed, CameraOp, CameraQuery, CameraRecord, CameraReport, CameraSignal, CameraSources,
    CameraStats, CameraStreamCommit, CameraStreamOutcome, ChannelFields, ChannelReport, FieldError,
    ImportedHistory, Registered, SignalKind, StatsGroup, StatusEvent, Streams,
};
use crate::gb28181;
use crate::store::CameraStore;

pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The department of a registered (not deleted) id: `None` if it is not registered,
/// `Some(None)` if it is registered without one.
pub(super) async fn owner(tx: &Tx<'_>, id: &str) -> Result<Option<Option<String>>> {
    let statement = tx
        .prepare_cached("SELECT department FROM camera_live WHERE id = $1 AND deleted_at IS NULL")
        .await?;
    tx.query_opt(&statement, &[&id])
        .await?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(Into::into)
}

/// The types statistics count as video channels (see the SQLite store).
pub(super) const VIDEO_TYPES: &str = "(121, 122, 131, 132)";

/// How often a batch that lost a deadlock is run again before the error is returned.
const DEADLOCK_RETRIES: usize = 5;

const CAMERA_COLUMNS: &str = "c.id, c.parent_id, c.name, c.department, c.civil_code, c.address, \
     c.longitude, c.latitude, c.manufacturer, c.model, c.ptz_type, c.position_type, \
     c.room_type, c.use_type, c.supply_light_type, c.resolution, c.streams, c.tags, c.complete, \
     l.notified, l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since, \
     l.registered_at, c.updated_at";

const CAMERAS_JOINED: &str = "cameras c JOIN camera_live l ON l.id = c.id";

/// The status at `$now` from the evidence columns; the same rule as
/// [`LiveState::status_at`] (the shared test suite holds the two together through searches).
fn status_sql(now: &str, timeout: &str) -> String {
    format!(
        "CASE WHEN l.notified IN ('OFF', 'VLOST', 'DEFECT') THEN 'offline' \
         WHEN l.last_seen_at IS NULL THEN 'unknown' \
         WHEN {now} < l.last_seen_at + {timeout} THEN 'online' ELSE 'offline' END"
    )
}

fn small(value: Option<u8>) -> Option<i32> {
    value.map(i32::from)
}

fn live_from_row(row: &Row, first: usize) -> Result<LiveState> {
    let notified: Option<String> = row.try_get(first)?;
    let recorded: Option<String> = row.try_get(first + 3)?;
    Ok(LiveState {
        notified: notified.as_deref().and_then(Notified::parse),
        notified_at: row.try_get(first + 1)?,
        last_seen_at: row.try_get(first + 2)?,
        recorded: recorded.as_deref().and_then(Status::parse),
        recorded_since: row.try_get(first + 4)?,
    })
}

fn camera_from_row(row: &Row) -> Result<CameraRecord> {
    let id: String = row.try_get(0)?;
    let device = gb28181::parse(&id).map_err(|err| {
        CatalogError::Storage(format!("stored camera id {id:?} is unreadable: {err}"))
    })?;
    Ok(CameraRecord {
        id: device,
        fields: ChannelFields {
            parent_id: row.try_get(1)?,
            name: row.try_get(2)?,
            department: row.try_get(3)?,
            civil_code: row.try_get(4)?,
            address: row.try_get(5)?,
            longitude: row.try_get(6)?,
            latitude: row.try_get(7)?,
            manufacturer: row.try_get(8)?,
            model: row.try_get(9)?,
            ptz_type: optional_unsigned::<i32, u8>(row, 10)?,
            position_type: optional_unsigned::<i32, u8>(row, 11)?,
            room_type: optional_unsigned::<i32, u8>(row, 12)?,
            use_type: optional_unsigned::<i32, u8>(row, 13)?,
            supply_light_type: optional_unsigned::<i32, u8>(row, 14)?,
            resolution: row.try_get(15)?,
            streams: optional_json::<Streams>(row, 16)?,
            tags: optional_json::<Vec<String>>(row, 17)?,
        },
        complete: row.try_get(18)?,
        live: live_from_row(row, 19)?,
        registered_at: row.try_get(24)?,
        updated_at: row.try_get(25)?,
    })
}

/// A channel's stored state, its liveness row locked until the transaction ends.
async fn existing(tx: &Tx<'_>, id: &str) -> Result<Option<Existing>> {
    let statement = tx
        .prepare_cached(
            "SELECT c.department, c.reported, c.curated, l.deleted_at IS NOT NULL, l.notified, \
             l.notified_at, l.last_seen_at, l.recorded_status, l.recorded_since, \
             l.registered_at FROM cameras c JOIN camera_live l ON l.id = c.id WHERE c.id = $1 \
             FOR UPDATE OF l",
        )
        .await?;
    tx.query_opt(&statement, &[&id])
        .await?
        .map(|row| {
            Ok(Existing {
                department: row.try_get(0)?,
                reported: json(&row, 1)?,
                curated: json(&row, 2)?,
                deleted: row.try_get(3)?,
                live: live_from_row(&row, 4)?,
                registered_at: row.try_get(9)?,
            })
        })
        .transpose()
}

async fn department_exists(tx: &Tx<'_>, code: &str) -> Result<bool> {
    let statement = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM departments WHERE code = $1)")
        .await?;
    Ok(tx.query_one(&statement, &[&code]).await?.try_get(0)?)
}

/// Writes the shown values computed from both sources, and answers them.
async fn store_values(
    tx: &Tx<'_>,
    id: &gb28181::DeviceId,
    reported: &ChannelFields,
    curated: &ChannelFields,
    at: i64,
) -> Result<ChannelFields> {
    let shown = curated.over(reported);
    let streams = shown
        .streams
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(serde_json::to_string)
        .transpose()?;
    let tags = shown.tags.as_ref().map(serde_json::to_string).transpose()?;
    let region_code = id.current_region_code;
    let (industry, type_code, network) = (
        i32::from(id.industry),
        i32::from(id.type_code),
        i32::from(id.network),
    );
    let complete = shown.is_complete();
    let statement = tx
        .prepare_cached(
            "INSERT INTO cameras (id, parent_id, name, department, civil_code, address, \
             longitude, latitude, manufacturer, model, ptz_type, position_type, room_type, \
             use_type, supply_light_type, resolution, streams, tags, region_code, industry, \
             type_code, network, complete, reported, curated, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) \
             ON CONFLICT (id) DO UPDATE SET parent_id = excluded.parent_id, \
             name = excluded.name, department = excluded.department, \
             civil_code = excluded.civil_code, address = excluded.address, \
             longitude = excluded.longitude, latitude = excluded.latitude, \
             manufacturer = excluded.manufacturer, model = excluded.model, \
             ptz_type = excluded.ptz_type, position_type = excluded.position_type, \
             room_type = excluded.room_type, use_type = excluded.use_type, \
             supply_light_type = excluded.supply_light_type, resolution = excluded.resolution, \
             streams = excluded.streams, tags = excluded.tags, complete = excluded.complete, \
             reported = excluded.reported, curated = excluded.curated, \
             updated_at = excluded.updated_at",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &id.id,
            &shown.parent_id,
            &shown.name,
            &shown.department,
            &shown.civil_code,
            &shown.address,
            &shown.longitude,
            &shown.latitude,
            &shown.manufacturer,
            &shown.model,
            &small(shown.ptz_type),
            &small(shown.position_type),
            &small(shown.room_type),
            &small(shown.use_type),
            &small(shown.supply_light_type),
            &shown.resolution,
            &streams,
            &tags,
            &region_code,
            &industry,
            &type_code,
            &network,
            &complete,
            &serde_json::to_string(reported)?,
            &serde_json::to_string(curated)?,
            &at,
        ],
    )
    .await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO camera_live (id, type_code, region_code, industry, position_type, \
             department, complete, registered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET position_type = excluded.position_type, \
             department = excluded.department, complete = excluded.complete, deleted_at = NULL",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &id.id,
            &type_code,
            &region_code,
            &industry,
            &small(shown.position_type),
            &shown.department,
            &complete,
            &at,
        ],
    )
    .await?;
    Ok(shown)
}

/// Registers or updates one channel's reported values inside `tx` (`at`: the values' time;
/// `recorded_at`: the hub's, for the change feed).
async fn register_one(
    tx: &Tx<'_>,
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
        && !department_exists(tx, department).await?
    {
        return Ok(Err(FieldError::new(
            "department",
            format!("{department} is not a department of this hub (GET /api/v1/departments)"),
        )));
    }
    let before = existing(tx, &id.id).await?;
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
    let shown = store_values(tx, &id, &fields, &curated, at).await?;
    let change = Existing::values_change(
        before.as_ref(),
        outcome.into(),
        id,
        shown,
        (at, recorded_at),
    );
    camera_changes::append(tx, &change).await?;
    Ok(Ok(outcome))
}

async fn write_live(
    tx: &Tx<'_>,
    id: &str,
    live: &LiveState,
    transitions: &[Transition],
) -> Result<()> {
    let statement = tx
        .prepare_cached(
            "UPDATE camera_live SET notified = $2, notified_at = $3, last_seen_at = $4, \
             recorded_status = $5, recorded_since = $6 WHERE id = $1",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &id,
            &live.notified.map(Notified::as_str),
            &live.notified_at,
            &live.last_seen_at,
            &live.recorded.map(Status::as_str),
            &live.recorded_since,
        ],
    )
    .await?;
    if transitions.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO camera_status_events (camera_id, at, previous, status, cause) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for t in transitions {
        tx.execute(
            &statement,
            &[&id, &t.at, &t.from.as_str(), &t.to.as_str(), &t.cause],
        )
        .await?;
    }
    Ok(())
}

/// Applies one signal to one stored channel (its evidence and history), and tells the
/// change feed at `received_at` when what the channel shows changed (a deletion is told
/// as one by its caller).
async fn apply_signal(
    tx: &Tx<'_>,
    id: &str,
    before: LiveState,
    signal: Signal,
    at: (i64, i64),
    liveness: Liveness,
) -> Result<()> {
    let (at, received_at) = at;
    let mut live = before;
    let transitions = live.apply(signal, at, liveness);
    write_live(tx, id, &live, &transitions).await?;
    if signal != Signal::Deleted && status_changed(&before, &live, transitions.len()) {
        let cause = transitions
            .last()
            .map(|t| t.cause)
            .or(live.notified.map(Notified::as_str));
        camera_changes::append_status(tx, id, received_at, &live, cause).await?;
    }
    Ok(())
}

/// A keepalive for one stored channel. The common case (online, still within its timeout)
/// is one UPDATE that cannot change the status; anything else goes through the state
/// machine on the locked row.
async fn keepalive_one(tx: &Tx<'_>, id: &str, at: (i64, i64), liveness: Liveness) -> Result<()> {
    let statement = tx
        .prepare_cached(
            "UPDATE camera_live SET last_seen_at = greatest(last_seen_at, $2) \
             WHERE id = $1 AND recorded_status = 'online' \
             AND (notified IS NULL OR notified NOT IN ('OFF', 'VLOST', 'DEFECT')) \
             AND $2 < last_seen_at + $3",
        )
        .await?;
    let refreshed = tx
        .execute(&statement, &[&id, &at.0, &liveness.timeout_ms()])
        .await?;
    if refreshed == 1 {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "SELECT notified, notified_at, last_seen_at, recorded_status, recorded_since \
             FROM camera_live WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let live = tx.query_opt(&statement, &[&id]).await?;
    match live {
        Some(row) => {
            let live = live_from_row(&row, 0)?;
            apply_signal(tx, id, live, Signal::Keepalive, at, liveness).await
        }
        None => Ok(()),
    }
}

/// Applies one signal received by the hub at `received_at`.
async fn signal_one(
    tx: &Tx<'_>,
    signal: CameraSignal,
    acting_for: Option<&str>,
    liveness: Liveness,
    received_at: i64,
) -> Result<Result<usize, FieldError>> {
    let CameraSignal { id, at, kind } = signal;
    let at = (at, received_at);
    match kind {
        SignalKind::Keepalive => keepalive_signal(tx, &id, at, acting_for, liveness).await,
        SignalKind::Event(event, fields) => {
            event_signal(tx, &id, at, event, fields, acting_for, liveness).await
        }
    }
}

/// A keepalive marks the id and the channels registered directly under it (see the SQLite
/// store for why a platform's keepalive does not reach further).
async fn keepalive_signal(
    tx: &Tx<'_>,
    id: &str,
    at: (i64, i64),
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let owner = owner(tx, id).await?;
    let mut marked = 0;
    if let Some(department) = &owner {
        if let Some(acting) = acting_for
            && department.as_deref() != Some(acting)
        {
            return Ok(Err(rules::not_yours(id, department.as_deref(), acting)));
        }
        keepalive_one(tx, id, at, liveness).await?;
        marked += 1;
    }
    let statement = tx
        .prepare_cached(
            "SELECT c.id, c.department FROM cameras c JOIN camera_live l ON l.id = c.id \
             WHERE c.parent_id = $1 AND l.deleted_at IS NULL ORDER BY c.id",
        )
        .await?;
    // Channels of other departments are not the caller's to mark and are left alone.
    for row in tx.query(&statement, &[&id]).await? {
        let child: String = row.try_get(0)?;
        let department: Option<String> = row.try_get(1)?;
        if acting_for.is_none_or(|acting| department.as_deref() == Some(acting)) {
            keepalive_one(tx, &child, at, liveness).await?;
            marked += 1;
        }
    }
    if marked == 0 && owner.is_none() {
        return Ok(Err(rules::unknown_camera(id)));
    }
    Ok(Ok(marked))
}

/// A catalog NOTIFY event for one channel.
async fn event_signal(
    tx: &Tx<'_>,
    id: &str,
    at: (i64, i64),
    event: Event,
    fields: Option<Box<ChannelFields>>,
    acting_for: Option<&str>,
    liveness: Liveness,
) -> Result<Result<usize, FieldError>> {
    let stored = existing(tx, id).await?;
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
            Ok(register_one(tx, report, acting_for, at.0, at.1)
                .await?
                .map(|_| 1))
        }
        (EventStep::Delete, Some(old)) => {
            apply_signal(tx, id, old.live, Signal::Deleted, at, liveness).await?;
            tx.execute(
                "UPDATE camera_live SET deleted_at = $2 WHERE id = $1",
                &[&id, &at.0],
            )
            .await?;
            camera_changes::append_deleted(tx, id, at.1).await?;
            Ok(Ok(1))
        }
        (EventStep::Notify(notified), Some(old)) => {
            apply_signal(tx, id, old.live, Signal::Notify(notified), at, liveness).await?;
            Ok(Ok(1))
        }
        (EventStep::Delete | EventStep::Notify(_), None) => Ok(Err(rules::unknown_camera(id))),
    }
}

async fn keep_dead_letter(
    tx: &Tx<'_>,
    feed: CameraFeed,
    record: &crate::model::RejectedRecord,
) -> Result<()> {
    tx.execute(
        "INSERT INTO camera_rejected_records (feed, topic, partition, \"offset\", key, payload, \
         error, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &feed.dataset(),
            &record.topic,
            &record.partition,
            &record.offset,
            &record.key,
            &record.payload,
            &record.error,
            &now(),
        ],
    )
    .await?;
    Ok(())
}

/// Runs a whole camera batch (`$body`, with the transaction as `$tx`) in one transaction,
/// again from the start when PostgreSQL chose it as a deadlock's victim (two nodes marking
/// the same channels in different orders); any other error is returned at once and
/// nothing of the batch is kept. (A macro, not a function taking a closure: an async
/// closure borrowing the transaction cannot yet be proven `Send` for `async_trait`.)
macro_rules! camera_batch {
    ($store:expr, |$tx:ident| $body:block) => {{
        let mut attempt = 0;
        loop {
            let mut client = $store.client().await?;
            let transaction = client.transaction().await?;
            let outcome: Result<_> = {
                let $tx = &transaction;
                async { $body }.await
            };
            let outcome = match outcome {
                Ok(value) => transaction
                    .commit()
                    .await
                    .map(|()| value)
                    .map_err(CatalogError::from),
                Err(err) => Err(err),
            };
            match outcome {
                Err(err) if attempt < DEADLOCK_RETRIES && is_retryable(&err) => {
                    attempt += 1;
                    tracing::info!(
                        attempt,
                        "A camera batch lost a deadlock to another node's and runs again."
                    );
                }
                outcome => break outcome,
            }
        }
    }};
}

#[async_trait]
impl CameraStore for PostgresStore {
    async fn register_cameras(
        &self,
        reports: Vec<ChannelReport>,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<Vec<Result<Registered, FieldError>>> {
        camera_batch!(self, |tx| {
            let mut outcomes = Vec::with_capacity(reports.len());
            for report in &reports {
                outcomes
                    .push(register_one(tx, report.clone(), acting_for.as_deref(), at, at).await?);
            }
            Ok(outcomes)
        })
    }

    async fn curate_camera(
        &self,
        id: String,
        curated: ChannelFields,
        acting_for: Option<String>,
        at: i64,
    ) -> Result<()> {
        camera_batch!(self, |tx| {
            let old = existing(tx, &id)
                .await?
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
                && !department_exists(tx, department).await?
            {
                return Err(CatalogError::invalid(
                    "department",
                    format!("{department} is not a department of this hub"),
                ));
            }
            if old.curated == curated {
                return Ok(());
            }
            let device =
                gb28181::parse(&id).map_err(|err| CatalogError::invalid("id", err.to_string()))?;
            let shown = store_values(tx, &device, &old.reported, &curated, at).await?;
            let change =
                Existing::values_change(Some(&old), ChangeKind::Curated, device, shown, (at, at));
            camera_changes::append(tx, &change).await
        })
    }

    async fn camera_signals(
        &self,
        signals: Vec<CameraSignal>,
        acting_for: Option<String>,
        liveness: Liveness,
        received_at: i64,
    ) -> Result<Vec<Result<usize, FieldError>>> {
        camera_batch!(self, |tx| {
            let mut outcomes = Vec::with_capacity(signals.len());
            for signal in &signals {
                outcomes.push(
                    signal_one(
                        tx,
                        signal.clone(),
                        acting_for.as_deref(),
                        liveness,
                        received_at,
                    )
                    .await?,
                );
            }
            Ok(outcomes)
        })
    }

    async fn record_camera_reports(
        &self,
        reports: Vec<CameraReport>,
        acting_for: Option<String>,
        received_at: i64,
    ) -> Result<Vec<Result<bool, FieldError>>> {
        camera_batch!(self, |tx| {
            let mut outcomes = Vec::with_capacity(reports.len());
            for report in &reports {
                outcomes.push(
                    super::camera_alarms::record_one(
                        tx,
                        report,
                        acting_for.as_deref(),
                        received_at,
                    )
                    .await?,
                );
            }
            Ok(outcomes)
        })
    }

    async fn camera_alarms(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredAlarm>> {
        self.alarms_after(after_seq, limit).await
    }

    async fn camera_positions(&self, after_seq: i64, limit: usize) -> Result<Vec<StoredPosition>> {
        self.positions_after(after_seq, limit).await
    }

    async fn purge_camera_reports(
        &self,
        alarms_before: i64,
        positions_before: i64,
    ) -> Result<(u64, u64)> {
        self.purge_reports(alarms_before, positions_before).await
    }

    async fn camera_changes(&self, after_seq: i64, limit: usize) -> Result<ChangePage> {
        self.changes_after(after_seq, limit).await
    }

    async fn camera_change_head(&self) -> Result<i64> {
        self.change_head().await
    }

    async fn purge_camera_changes(&self, before: i64) -> Result<u64> {
        self.purge_changes(before).await
    }

    async fn camera_stream_offsets(&self, feed: CameraFeed) -> Result<Vec<(String, i32, i64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT topic, partition, next_offset FROM camera_stream_offsets WHERE feed = $1 \
                 ORDER BY topic, partition",
                &[&feed.dataset()],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    async fn commit_camera_stream(
        &self,
        commit: CameraStreamCommit,
    ) -> Result<CameraStreamOutcome> {
        camera_batch!(self, |tx| {
            let feed = commit.feed;
            let advance = &commit.offset;
            // Locks the partition's offset row (when there is one): of two nodes that both
            // believe they own the partition, the second sees the first's offset.
            let actual: Option<i64> = tx
                .query_opt(
                    "SELECT next_offset FROM camera_stream_offsets WHERE feed = $1 \
                     AND topic = $2 AND partition = $3 FOR UPDATE",
                    &[&feed.dataset(), &advance.topic, &advance.partition],
                )
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            advance.check_stored(actual)?;
            let mut outcome = CameraStreamOutcome::default();
            for (origin, op) in &commit.items {
                let result = match op {
                    CameraOp::Register(report) => {
                        register_one(tx, (**report).clone(), None, commit.at, commit.at)
                            .await?
                            .map(|_| 1)
                    }
                    CameraOp::Signal(signal) => {
                        signal_one(tx, signal.clone(), None, commit.liveness, commit.at).await?
                    }
                    CameraOp::Report(report) => {
                        super::camera_alarms::record_one(tx, report, None, commit.at)
                            .await?
                            .map(|_| 1)
                    }
                };
                match result {
                    Ok(_) => outcome.applied += 1,
                    Err(err) => {
                        let mut origin = origin.clone();
                        origin.error = err.to_string();
                        keep_dead_letter(tx, feed, &origin).await?;
                        outcome.rejected += 1;
                    }
                }
            }
            for record in &commit.rejected {
                keep_dead_letter(tx, feed, record).await?;
                outcome.rejected += 1;
            }
            // A first commit of a partition inserts its row; a racing first commit from
            // another node meets the key and fails, and its batch is retried from Kafka.
            let inserted = tx
                .execute(
                    "INSERT INTO camera_stream_offsets (feed, topic, partition, next_offset, \
                     updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (feed, topic, partition) \
                     DO UPDATE SET next_offset = excluded.next_offset, \
                     updated_at = excluded.updated_at \
                     WHERE camera_stream_offsets.next_offset IS NOT DISTINCT FROM $6",
                    &[
                        &feed.dataset(),
                        &advance.topic,
                        &advance.partition,
                        &advance.next,
                        &now(),
                        &actual,
                    ],
                )
                .await?;
            if inserted != 1 {
                // Another node inserted the partition's first offset meanwhile.
                let stored: Option<i64> = tx
                    .query_opt(
                        "SELECT next_offset FROM camera_stream_offsets WHERE feed = $1 \
                         AND topic = $2 AND partition = $3",
                        &[&feed.dataset(), &advance.topic, &advance.partition],
                    )
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
                advance.check_stored(stored)?;
            }
            Ok(outcome)
        })
    }

    async fn camera_rejected_records(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, feed, topic, partition, \"offset\", key, payload, error, at \
                 FROM camera_rejected_records WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after_id, &(limit as i64)],
            )
            .await?;
        rows.iter().map(rejection_from_row).collect()
    }

    async fn import_camera_history(&self, histories: Vec<ImportedHistory>, at: i64) -> Result<()> {
        camera_batch!(self, |tx| {
            for history in &histories {
                let id = &history.id;
                let old = existing(tx, id)
                    .await?
                    .filter(|old| !old.deleted)
                    .ok_or_else(|| CatalogError::NotFound {
                        what: "camera",
                        name: id.clone(),
                    })?;
                history.check_continues(old.live.recorded, old.live.recorded_since)?;
                write_live(tx, id, &history.live, &history.transitions).await?;
                if status_changed(&old.live, &history.live, history.transitions.len()) {
                    let cause = history.transitions.last().map(|t| t.cause);
                    camera_changes::append_status(tx, id, at, &history.live, cause).await?;
                }
            }
            Ok(())
        })
    }

    async fn sweep_cameras(&self, now: i64, liveness: Liveness) -> Result<usize> {
        camera_batch!(self, |tx| {
            // Locked as read: a sweep on another node at the same moment waits, then finds
            // these channels no longer recorded online and skips them.
            let due = tx
                .query(
                    "SELECT id, notified, notified_at, last_seen_at, recorded_status, \
                     recorded_since FROM camera_live WHERE recorded_status = 'online' \
                     AND last_seen_at <= $1 AND deleted_at IS NULL ORDER BY id FOR UPDATE",
                    &[&(now - liveness.timeout_ms())],
                )
                .await?;
            let mut swept = 0;
            for row in &due {
                let id: String = row.try_get(0)?;
                let mut live = live_from_row(row, 1)?;
                if let Some(transition) = live.catch_up(now, liveness) {
                    write_live(tx, &id, &live, &[transition]).await?;
                    camera_changes::append_status(tx, &id, now, &live, Some("keepalive_timeout"))
                        .await?;
                    swept += 1;
                }
            }
            Ok(swept)
        })
    }

    async fn camera(&self, id: &str) -> Result<Option<(CameraRecord, CameraSources)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {CAMERA_COLUMNS}, c.reported, c.curated FROM {CAMERAS_JOINED} \
                     WHERE c.id = $1 AND l.deleted_at IS NULL"
                ),
                &[&id],
            )
            .await?;
        row.map(|row| {
            let record = camera_from_row(&row)?;
            let sources = CameraSources {
                reported: json(&row, 26)?,
                curated: json(&row, 27)?,
            };
            Ok((record, sources))
        })
        .transpose()
    }

    async fn search_cameras(
        &self,
        query: CameraQuery,
        now: i64,
        liveness: Liveness,
    ) -> Result<Vec<CameraRecord>> {
        let mut conditions = vec!["l.deleted_at IS NULL".to_string()];
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut bind = |value: Box<dyn ToSql + Sync + Send>| {
            values.push(value);
            format!("${}", values.len())
        };
        if let Some(region) = &query.region {
            let prefix = CameraQuery::region_prefix(region);
            let high = format!("{prefix}\u{7f}");
            conditions.push(format!(
                "c.region_code >= {} AND c.region_code < {}",
                bind(Box::new(prefix)),
                bind(Box::new(high))
            ));
        }
        if let Some(scope) = &query.scope {
            conditions.push(crate::camera::CameraScope::of(scope).sql("c."));
        }
        if let Some(status) = query.status {
            let (now, timeout) = (bind(Box::new(now)), bind(Box::new(liveness.timeout_ms())));
            conditions.push(format!(
                "({}) = {}",
                status_sql(&now, &timeout),
                bind(Box::new(status.as_str()))
            ));
        }
        if let Some(industry) = query.industry {
            conditions.push(format!(
                "c.industry = {}",
                bind(Box::new(i32::from(industry)))
            ));
        }
        if let Some(type_code) = query.type_code {
            conditions.push(format!(
                "c.type_code = {}",
                bind(Box::new(i32::from(type_code)))
            ));
        }
        if let Some(department) = &query.department {
            conditions.push(format!(
                "c.department = {}",
                bind(Box::new(department.clone()))
            ));
        }
        if let Some([min_lon, min_lat, max_lon, max_lat]) = query.bbox {
            conditions.push(format!(
                "c.longitude BETWEEN {} AND {} AND c.latitude BETWEEN {} AND {}",
                bind(Box::new(min_lon)),
                bind(Box::new(max_lon)),
                bind(Box::new(min_lat)),
                bind(Box::new(max_lat))
            ));
        }
        if let Some(after) = &query.after {
            conditions.push(format!("c.id > {}", bind(Box::new(after.clone()))));
        }
        let limit = bind(Box::new(query.limit.min(i64::MAX as usize) as i64));
        let sql = format!(
            "SELECT {CAMERA_COLUMNS} FROM {CAMERAS_JOINED} WHERE {} ORDER BY c.id LIMIT {limit}",
            conditions.join(" AND ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = self.client().await?.query(&sql, &params).await?;
        rows.iter().map(camera_from_row).collect()
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
            self.channel_pass(group, since, now, liveness, scope.as_ref()),
            self.transition_pass(since, now),
        );
        Ok(tally::combine(channels?, &walks?, now))
    }

    async fn roll_up_camera_days(
        &self,
        now: i64,
        liveness: Liveness,
        retention_days: u32,
    ) -> Result<Vec<i32>> {
        self.roll_up_days(now, liveness, retention_days).await
    }

    async fn camera_daily_stats(
        &self,
        group: StatsGroup,
        days: std::ops::RangeInclusive<i32>,
        now: i64,
        liveness: Liveness,
        scope: Option<crate::region::Scope>,
    ) -> Result<(Vec<CameraStats>, CameraStats)> {
        self.daily_stats(group, days, now, liveness, scope).await
    }

    async fn camera_daily_rows(
        &self,
        after: (i32, String),
        limit: usize,
    ) -> Result<Vec<crate::camera::daily::DailyRow>> {
        self.daily_rows(after, limit).await
    }

    async fn camera_status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, camera_id, at, previous, status, cause FROM camera_status_events \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let previous: String = row.try_get(3)?;
                let status: String = row.try_get(4)?;
                Ok(StatusEvent {
                    seq: row.try_get(0)?,
                    camera_id: row.try_get(1)?,
                    at: row.try_get(2)?,
                    previous: Status::parse(&previous).unwrap_or(Status::Unknown),
                    status: Status::parse(&status).unwrap_or(Status::Unknown),
                    cause: row.try_get(5)?,
                })
            })
            .collect()
    }
}

/// The index of the group whose value (as text, `NULL` for none) is `value`.
pub(super) fn text_group(pass: &mut ChannelPass, value: Option<&str>) -> usize {
    pass.group(
        |known| match (known, value) {
            (GroupValue::Null, None) => true,
            (GroupValue::Text(known), Some(value)) => known.as_slice() == value.as_bytes(),
            _ => false,
        },
        || match value {
            Some(value) => GroupValue::Text(value.as_bytes().to_vec()),
            None => GroupValue::Null,
        },
    )
}

impl PostgresStore {
    /// The window's transitions, walked per channel in time order.
    async fn transition_pass(&self, since: i64, now: i64) -> Result<Walks> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT camera_id, at, previous, status FROM camera_status_events \
                 WHERE at >= $1 AND at < $2 ORDER BY at, seq",
                &[&since, &now],
            )
            .await?;
        let mut walks = Walks::default();
        for row in &rows {
            let id: &str = row.try_get(0)?;
            let Some(key) = tally::id_key(id.as_bytes()) else {
                continue;
            };
            let previous: &str = row.try_get(2)?;
            let status: &str = row.try_get(3)?;
            tally::walk(
                &mut walks,
                key,
                row.try_get(1)?,
                tally::status_of(Some(previous)),
                tally::status_of(Some(status)),
            );
        }
        Ok(walks)
    }

    /// Every video channel's narrow liveness row, grouped by the group column as text.
    pub(super) async fn channel_pass(
        &self,
        group: StatsGroup,
        since: i64,
        now: i64,
        liveness: Liveness,
        scope: Option<&crate::camera::CameraScope>,
    ) -> Result<ChannelPass> {
        let column = group.column();
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT id, {column}::text, notified, last_seen_at, complete, registered_at, \
                     recorded_status, recorded_since FROM camera_live \
                     WHERE deleted_at IS NULL AND type_code IN {VIDEO_TYPES}{}",
                    scope
                        .map(|scope| format!(" AND {}", scope.sql("")))
                        .unwrap_or_default()
                ),
                &[],
            )
            .await?;
        let mut pass = ChannelPass::default();
        for row in &rows {
            let index = text_group(&mut pass, row.try_get(1)?);
            let id: &str = row.try_get(0)?;
            let notified: Option<&str> = row.try_get(2)?;
            let recorded: Option<&str> = row.try_get(6)?;
            let channel = ChannelRow {
                key: tally::id_key(id.as_bytes()),
                notified: notified.and_then(Notified::parse),
                last_seen_at: row.try_get(3)?,
                complete: row.try_get(4)?,
                registered_at: row.try_get(5)?,
                recorded: tally::status_of(recorded),
                recorded_since: row.try_get(7)?,
            };
            pass.add(index, channel, since, now, liveness);
        }
        Ok(pass)
    }
}
