//! Camera statistics in two passes over SQLite: the status history's transitions in the
//! window, then every channel; combined into online rate and availability per group.

use std::collections::HashMap;

use rusqlite::{Connection, named_params};

use super::cameras::VIDEO_TYPES;
use crate::camera::status::{LiveState, Liveness, Notified, Status};
use crate::camera::{CameraStats, StatsGroup, StatusEvent};
use crate::error::Result;

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
    scope: Option<&crate::camera::CameraScope>,
) -> Result<ChannelPass> {
    let mut pass = ChannelPass {
        groups: Vec::new(),
        recent: Vec::new(),
    };
    let column = group.column();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, {column}, notified, last_seen_at, complete, registered_at, recorded_status, \
         recorded_since FROM camera_live WHERE deleted_at IS NULL AND type_code IN {VIDEO_TYPES}{}",
        scope
            .map(|scope| format!(" AND {}", scope.sql("")))
            .unwrap_or_default()
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

/// Evaluates the registry's status SQL on given evidence (for the test that holds it to
/// the Rust rule).
#[cfg(test)]
pub fn status_in_sql(conn: &Connection, live: &LiveState, now: i64, liveness: Liveness) -> Status {
    use super::cameras::STATUS_SQL;
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
