//! Daily roll-ups of the status history: per channel per Beijing-time day, how long it was
//! observed and online and how often its status changed (`hub.camera_daily`), and the same
//! added up per group of channels, so that weekly and monthly availability (完好率) read a
//! few thousand group-days instead of walking weeks of transitions.
//!
//! The roll-up is computed from the history alone (plus when each channel was registered
//! and deleted), so the figures reported for a day can be reproduced from
//! `hub.camera_status_events` at any time. Which days to compute is decided here too, the
//! same way for both catalog backends: every finished day not rolled up yet (a restart or a
//! stopped sweeper leaves gaps, filled on the next round), and every day a late signal
//! changed after it was rolled up.

use std::ops::RangeInclusive;

use crate::camera::status::Status;
use crate::camera::tally::{IdMap, id_key};

pub const DAY_MS: i64 = 86_400_000;

/// Beijing time (UTC+8, no daylight saving): the day the province's reports count by.
pub(crate) const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// At most this many days are rolled up in one transaction, so that a first run over a
/// long imported history does not hold the catalog's writer for minutes.
pub const DAYS_PER_TRANSACTION: i32 = 7;

/// The Beijing-time day an instant falls on, as days since 1970-01-01.
pub fn beijing_day(ms: i64) -> i32 {
    (ms + BEIJING_OFFSET_MS).div_euclid(DAY_MS) as i32
}

/// The instant a Beijing-time day starts (00:00 +08:00), Unix milliseconds.
pub fn day_start(day: i32) -> i64 {
    i64::from(day) * DAY_MS - BEIJING_OFFSET_MS
}

/// A day as a calendar date (`2026-12-04`).
pub fn day_date(day: i32) -> chrono::NaiveDate {
    chrono::NaiveDate::default() + chrono::Duration::days(i64::from(day))
}

/// The day a calendar date names.
pub fn date_day(date: chrono::NaiveDate) -> i32 {
    (date - chrono::NaiveDate::default()).num_days() as i32
}

/// The columns statistics group by, as a channel had them when its day was rolled up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DayGroup {
    pub region_code: String,
    pub industry: i64,
    pub type_code: i64,
    pub position_type: Option<i64>,
    pub department: Option<String>,
}

/// A video channel as the roll-up reads it from the liveness table.
#[derive(Debug, Clone, PartialEq)]
pub struct DayChannel {
    pub id: String,
    pub group: DayGroup,
    pub registered_at: i64,
    pub deleted_at: Option<i64>,
    /// The status of its last transition before the first day rolled up (unknown if none).
    pub status_at_start: Status,
}

/// One transition of the history, as the roll-up reads it (in time order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryRow {
    pub key: u128,
    pub at: i64,
    pub previous: Status,
    pub status: Status,
}

impl HistoryRow {
    /// A stored transition; `None` for an id that is not a 20-digit GB/T 28181 id (the
    /// registry stores none, statistics skip them the same way).
    pub fn new(camera_id: &str, at: i64, previous: Status, status: Status) -> Option<Self> {
        Some(Self {
            key: id_key(camera_id.as_bytes())?,
            at,
            previous,
            status,
        })
    }
}

/// One channel's figures for one day: a row of `hub.camera_daily`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDay {
    /// The channel's index in the slice given to [`roll_up`].
    pub channel: usize,
    pub day: i32,
    /// Milliseconds of the day the channel was registered (and not deleted).
    pub observed_ms: i64,
    pub online_ms: i64,
    /// Status changes during the day.
    pub transitions: i64,
    /// Observed for the whole day (false on the days it was registered or deleted).
    pub complete: bool,
}

impl ChannelDay {
    /// Observed but not online: offline, or registered and never heard of.
    pub fn offline_ms(&self) -> i64 {
        self.observed_ms - self.online_ms
    }
}

/// Rolls up `days` from the history: `history` holds every transition inside them, in time
/// order, and each channel carries its status as the first day starts.
pub fn roll_up(
    channels: &[DayChannel],
    history: &[HistoryRow],
    days: RangeInclusive<i32>,
) -> Vec<ChannelDay> {
    let mut by_channel: IdMap<Vec<&HistoryRow>> = IdMap::default();
    for row in history {
        by_channel.entry(row.key).or_default().push(row);
    }
    let mut rows = Vec::new();
    for (index, channel) in channels.iter().enumerate() {
        let transitions: &[&HistoryRow] = id_key(channel.id.as_bytes())
            .and_then(|key| by_channel.get(&key))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut status = channel.status_at_start;
        let mut next = 0;
        for day in days.clone() {
            let (start, end) = (day_start(day), day_start(day + 1));
            let from = channel.registered_at.max(start);
            let to = channel.deleted_at.unwrap_or(i64::MAX).min(end);
            let mut online_ms = 0;
            let mut changes = 0;
            let mut since = start;
            while let Some(transition) = transitions.get(next).filter(|t| t.at < end) {
                if status == Status::Online {
                    online_ms += overlap(since, transition.at, from, to);
                }
                status = transition.status;
                since = transition.at.max(start);
                changes += 1;
                next += 1;
            }
            if status == Status::Online {
                online_ms += overlap(since, end, from, to);
            }
            if from < to {
                rows.push(ChannelDay {
                    channel: index,
                    day,
                    observed_ms: to - from,
                    online_ms,
                    transitions: changes,
                    complete: from == start && to == end,
                });
            }
        }
    }
    rows
}

/// The length of `[a, b)` inside `[from, to)`.
fn overlap(a: i64, b: i64, from: i64, to: i64) -> i64 {
    (b.min(to) - a.max(from)).max(0)
}

/// A stored row of `hub.camera_daily`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyRow {
    pub camera_id: String,
    pub day: i32,
    pub group: DayGroup,
    pub observed_ms: i64,
    pub online_ms: i64,
    pub transitions: i64,
    pub complete: bool,
}

/// One group's figures for one day: the roll-up added up per [`DayGroup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDay {
    pub day: i32,
    pub group: DayGroup,
    pub channels: i64,
    pub observed_ms: i64,
    pub online_ms: i64,
}

/// Adds the channel days up per day and group.
pub fn group_days(channels: &[DayChannel], rows: &[ChannelDay]) -> Vec<GroupDay> {
    let mut totals: std::collections::HashMap<(i32, &DayGroup), GroupDay> = Default::default();
    for row in rows {
        let group = &channels[row.channel].group;
        let total = totals.entry((row.day, group)).or_insert_with(|| GroupDay {
            day: row.day,
            group: group.clone(),
            channels: 0,
            observed_ms: 0,
            online_ms: 0,
        });
        total.channels += 1;
        total.observed_ms += row.observed_ms;
        total.online_ms += row.online_ms;
    }
    let mut totals: Vec<GroupDay> = totals.into_values().collect();
    totals.sort_by(|a, b| (a.day, &a.group.region_code).cmp(&(b.day, &b.group.region_code)));
    totals
}

/// Where whole-day statistics of `scope` read their time, and the condition on it: the
/// group totals (a county or the city), or for a town (known by civil code, which the
/// totals do not carry) its channels' rows.
pub fn totals_source(scope: Option<&crate::camera::CameraScope>) -> (&'static str, String) {
    use crate::camera::CameraScope;
    match scope {
        None => ("camera_daily_groups", String::new()),
        Some(scope @ CameraScope::Region(_)) => {
            ("camera_daily_groups", format!(" AND {}", scope.sql("")))
        }
        Some(scope @ CameraScope::CivilCode(_)) => (
            "camera_daily",
            format!(" AND {}", scope.sql_by_id("camera_id")),
        ),
    }
}

/// What the catalog knows when it decides which days to roll up.
#[derive(Debug, Clone, Default)]
pub struct RollUpState {
    /// The earliest registration of any channel.
    pub first_registered_at: Option<i64>,
    /// Days rolled up already, inside the kept range, in order.
    pub rolled: Vec<i32>,
    /// The earliest transition appended since the last roll-up (a late signal's time).
    pub earliest_new_transition: Option<i64>,
}

/// The days to (re)compute at `now`, keeping `retention_days`: from the first day missing
/// or changed by a transition appended since, through yesterday; `None` if all are done.
pub fn days_to_roll_up(
    state: &RollUpState,
    now: i64,
    retention_days: u32,
) -> Option<RangeInclusive<i32>> {
    let last = beijing_day(now) - 1;
    let kept_from = last - retention_days as i32 + 1;
    let first = beijing_day(state.first_registered_at?).max(kept_from);
    if first > last {
        return None;
    }
    // The first day of the kept range that is not rolled up (`rolled` is in order).
    let mut missing = first;
    for &day in state.rolled.iter().filter(|d| (first..=last).contains(*d)) {
        if day != missing {
            break;
        }
        missing += 1;
    }
    let changed = state
        .earliest_new_transition
        .map(|at| beijing_day(at).max(first));
    let from = [Some(missing), changed].into_iter().flatten().min()?;
    (from <= last).then_some(from..=last)
}

/// `days` cut into runs of at most [`DAYS_PER_TRANSACTION`].
pub fn chunks(days: RangeInclusive<i32>) -> impl Iterator<Item = RangeInclusive<i32>> {
    let (first, last) = (*days.start(), *days.end());
    (first..=last)
        .step_by(DAYS_PER_TRANSACTION as usize)
        .map(move |start| start..=(start + DAYS_PER_TRANSACTION - 1).min(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn channel(
        id: &str,
        registered_at: i64,
        deleted_at: Option<i64>,
        status_at_start: Status,
    ) -> DayChannel {
        DayChannel {
            id: id.to_string(),
            group: DayGroup {
                region_code: "511025".into(),
                industry: 0,
                type_code: 132,
                position_type: None,
                department: None,
            },
            registered_at,
            deleted_at,
            status_at_start,
        }
    }

    const A: &str = "51102500001320000001";
    const B: &str = "51102500001320000002";

    #[test]
    fn beijing_days_start_at_midnight_plus_eight() {
        // 2026-12-04T00:00:00+08:00 is 2026-12-03T16:00:00Z.
        let midnight = chrono::DateTime::parse_from_rfc3339("2026-12-04T00:00:00+08:00")
            .expect("a time")
            .timestamp_millis();
        let day = beijing_day(midnight);
        assert_eq!(day_start(day), midnight);
        assert_eq!(beijing_day(midnight - 1), day - 1);
        assert_eq!(day_date(day).to_string(), "2026-12-04");
        assert_eq!(date_day(day_date(day)), day);
        assert_eq!(beijing_day(-1), 0, "1970-01-01 07:59 in Beijing");
        assert_eq!(
            beijing_day(-8 * 3_600_000 - 1),
            -1,
            "1969-12-31 23:59 in Beijing"
        );
    }

    #[test]
    fn a_day_counts_online_time_observed_time_and_changes() {
        let day = 20_000;
        let start = day_start(day);
        let channels = [
            // Registered at 06:00 of the day, online 08:00-20:00 with a blip at 12:00.
            channel(A, start + 6 * HOUR, None, Status::Unknown),
            // Registered days before; online since before the day, nothing changed.
            channel(B, start - 50 * HOUR, None, Status::Online),
        ];
        let at = |h: i64| start + h * HOUR;
        let history = [
            HistoryRow::new(A, at(8), Status::Unknown, Status::Online).expect("a 20-digit id"),
            HistoryRow::new(A, at(12), Status::Online, Status::Offline).expect("a 20-digit id"),
            HistoryRow::new(A, at(13), Status::Offline, Status::Online).expect("a 20-digit id"),
            HistoryRow::new(A, at(20), Status::Online, Status::Offline).expect("a 20-digit id"),
        ];
        let rows = roll_up(&channels, &history, day..=day + 1);
        assert_eq!(
            rows,
            vec![
                ChannelDay {
                    channel: 0,
                    day,
                    observed_ms: 18 * HOUR,
                    online_ms: 11 * HOUR,
                    transitions: 4,
                    complete: false,
                },
                ChannelDay {
                    channel: 0,
                    day: day + 1,
                    observed_ms: 24 * HOUR,
                    online_ms: 0,
                    transitions: 0,
                    complete: true,
                },
                ChannelDay {
                    channel: 1,
                    day,
                    observed_ms: 24 * HOUR,
                    online_ms: 24 * HOUR,
                    transitions: 0,
                    complete: true,
                },
                ChannelDay {
                    channel: 1,
                    day: day + 1,
                    observed_ms: 24 * HOUR,
                    online_ms: 24 * HOUR,
                    transitions: 0,
                    complete: true,
                },
            ]
        );
        assert_eq!(rows[0].offline_ms(), 7 * HOUR);
        let groups = group_days(&channels, &rows);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (
                groups[0].channels,
                groups[0].observed_ms,
                groups[0].online_ms
            ),
            (2, 42 * HOUR, 35 * HOUR)
        );
    }

    #[test]
    fn a_deleted_channel_is_observed_until_its_deletion() {
        let day = 20_000;
        let start = day_start(day);
        let channels = [channel(
            A,
            start - HOUR,
            Some(start + 10 * HOUR),
            Status::Online,
        )];
        let history = [
            HistoryRow::new(A, start + 10 * HOUR, Status::Online, Status::Offline)
                .expect("a 20-digit id"),
        ];
        let rows = roll_up(&channels, &history, day..=day + 1);
        assert_eq!(rows.len(), 1, "nothing the day after its deletion");
        assert_eq!(
            (rows[0].observed_ms, rows[0].online_ms),
            (10 * HOUR, 10 * HOUR)
        );
    }

    #[test]
    fn the_days_to_roll_up_are_the_first_gap_or_change_through_yesterday() {
        let now = day_start(100) + 5 * HOUR;
        let state = |rolled: Vec<i32>, changed: Option<i64>| RollUpState {
            first_registered_at: Some(day_start(90) + HOUR),
            rolled,
            earliest_new_transition: changed,
        };
        assert_eq!(
            days_to_roll_up(&state(vec![], None), now, 400),
            Some(90..=99)
        );
        assert_eq!(
            days_to_roll_up(&state((90..=99).collect(), None), now, 400),
            None
        );
        assert_eq!(
            days_to_roll_up(&state((90..=98).collect(), None), now, 400),
            Some(99..=99)
        );
        // A gap in the middle (a day lost to a failed transaction) is filled from there.
        assert_eq!(
            days_to_roll_up(&state(vec![90, 91, 93, 94], None), now, 400),
            Some(92..=99)
        );
        // A late signal for day 95 makes 95 onwards stale; one for today changes nothing.
        assert_eq!(
            days_to_roll_up(
                &state((90..=99).collect(), Some(day_start(95) + 1)),
                now,
                400
            ),
            Some(95..=99)
        );
        assert_eq!(
            days_to_roll_up(&state((90..=99).collect(), Some(now - 1)), now, 400),
            None
        );
        // Retention: nothing older than the kept days is recomputed.
        assert_eq!(days_to_roll_up(&state(vec![], None), now, 3), Some(97..=99));
        assert_eq!(
            days_to_roll_up(&state((97..=99).collect(), Some(day_start(80))), now, 3),
            Some(97..=99)
        );
        assert_eq!(
            days_to_roll_up(&RollUpState::default(), now, 400),
            None,
            "no channel, nothing to roll up"
        );
        assert_eq!(
            chunks(1..=16).collect::<Vec<_>>(),
            vec![1..=7, 8..=14, 15..=16]
        );
    }
}
