//! Adding up camera statistics from two passes, whatever database they were read from:
//! the status history's transitions in the window (walked per channel), then every
//! channel's narrow liveness row; combined into online rate and availability per group.

use std::collections::HashMap;

use crate::camera::CameraStats;
use crate::camera::status::{LiveState, Liveness, Notified, Status};

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

/// Per channel transitions in the statistics window.
pub type Walks = IdMap<Walk>;

/// Adds one transition to its channel's walk; transitions come in time order.
pub fn walk(walks: &mut Walks, key: u128, at: i64, previous: Status, status: Status) {
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

/// A 20-digit id as a number: no allocation per row for the hundreds of thousands of rows
/// a statistic reads, and a key that hashes in a multiplication.
pub fn id_key(bytes: &[u8]) -> Option<u128> {
    if bytes.len() != 20 {
        return None;
    }
    bytes.iter().try_fold(0u128, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u128::from(b - b'0'))
    })
}

/// A status as stored; anything unreadable counts as unknown.
pub fn status_of(text: Option<&str>) -> Status {
    text.and_then(Status::parse).unwrap_or(Status::Unknown)
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

/// A group column's value, compared without allocating.
#[derive(Clone, PartialEq)]
pub enum GroupValue {
    Null,
    Integer(i64),
    Text(Vec<u8>),
}

impl GroupValue {
    /// The value as statistics show it (`511025`, `5`, `gongan`).
    fn shown(&self) -> Option<String> {
        match self {
            GroupValue::Null => None,
            GroupValue::Integer(n) => Some(n.to_string()),
            GroupValue::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        }
    }
}

/// One group's figures while they are being added up.
struct GroupTally {
    value: GroupValue,
    stats: CameraStats,
    online_ms: i64,
    observed_ms: i64,
}

/// One video channel's liveness row, as the channel pass reads it.
pub struct ChannelRow {
    /// The 20-digit id as a number ([`id_key`]); `None` for an id that is not one.
    pub key: Option<u128>,
    pub notified: Option<Notified>,
    pub last_seen_at: Option<i64>,
    pub complete: bool,
    pub registered_at: i64,
    pub recorded: Status,
    pub recorded_since: Option<i64>,
}

/// What the pass over every channel found: the groups' counts, and the channels whose last
/// transition is inside the window (their online time comes from their walk).
#[derive(Default)]
pub struct ChannelPass {
    groups: Vec<GroupTally>,
    /// (id, group, observed from)
    recent: Vec<(u128, usize, i64)>,
}

impl ChannelPass {
    /// The index of a channel's group; `matches` compares a known group's value with the
    /// channel's, `value` makes the value of a group seen for the first time.
    pub fn group(
        &mut self,
        matches: impl Fn(&GroupValue) -> bool,
        value: impl FnOnce() -> GroupValue,
    ) -> usize {
        match self.groups.iter().position(|g| matches(&g.value)) {
            Some(index) => index,
            None => {
                let value = value();
                self.groups.push(GroupTally {
                    stats: empty_stats(value.shown()),
                    value,
                    online_ms: 0,
                    observed_ms: 0,
                });
                self.groups.len() - 1
            }
        }
    }

    /// Adds time counted elsewhere (the daily roll-ups) to a group's availability.
    pub fn add_time(&mut self, group: usize, online_ms: i64, observed_ms: i64) {
        let entry = &mut self.groups[group];
        entry.online_ms += online_ms;
        entry.observed_ms += observed_ms;
    }

    /// Counts one channel in its group: status now, completeness, and the online time of a
    /// channel whose status held throughout the window.
    pub fn add(&mut self, group: usize, row: ChannelRow, since: i64, now: i64, liveness: Liveness) {
        let entry = &mut self.groups[group];
        let live = LiveState {
            notified: row.notified,
            last_seen_at: row.last_seen_at,
            ..LiveState::default()
        };
        entry.stats.total += 1;
        match live.status_at(now, liveness) {
            Status::Online => entry.stats.online += 1,
            Status::Offline => entry.stats.offline += 1,
            Status::Unknown => entry.stats.unknown += 1,
        }
        if row.complete {
            entry.stats.complete += 1;
        }
        if row.registered_at >= now {
            return;
        }
        let from = row.registered_at.max(since);
        entry.observed_ms += now - from;
        // The last transition is at `recorded_since`: a channel recorded since before the
        // window held its recorded status throughout it.
        let recent = row.recorded_since.is_some_and(|at| at >= since);
        if recent && let Some(key) = row.key {
            self.recent.push((key, group, from));
        } else if row.recorded == Status::Online {
            entry.online_ms += now - from;
        }
    }
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

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
