//! Daily roll-ups of the status history against the history itself, on random histories:
//! channels registered and deleted at random times, keepalives and NOTIFY events (some of
//! them late, landing in days already rolled up), roll-ups at random moments in between.
//! Every day's row must equal what a plain walk over `camera_status_events` gives, and
//! availability over whole days must equal the live statistic over the same window.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{Backend, on_both_backends};
use crate::camera::daily::{DailyRow, beijing_day, day_start};
use crate::camera::status::{Event, Liveness, Status};
use crate::camera::{CameraSignal, ChannelReport, SignalKind, StatsGroup};
use crate::*;

const HOUR: i64 = 3_600_000;
/// Keepalives an hour apart, offline after three missed: online spans of hours, so that
/// days hold a mix of online and offline time.
const LIVENESS: Liveness = Liveness {
    interval_ms: HOUR,
    missed: 3,
};
/// 2026-11-28 00:00 UTC; the histories cover the six Beijing days from its day on.
const T0: i64 = 1_795_824_000_000;
const DAYS: i32 = 6;

fn first_day() -> i32 {
    beijing_day(T0)
}

#[derive(Debug, Clone)]
enum Action {
    Register(usize),
    Signal {
        channel: usize,
        at: i64,
        kind: SignalKind,
    },
    RollUp,
}

/// A random history: what happens, in the order it reaches the hub (each with the moment
/// it arrives), and when each channel was registered and deleted.
#[derive(Debug)]
struct Script {
    registered: Vec<i64>,
    deleted: Vec<Option<i64>>,
    actions: Vec<(i64, Action)>,
    end: i64,
}

fn id(channel: usize) -> String {
    format!("511025000013200{:05}", channel + 1)
}

fn script(seed: u64) -> Script {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = day_start(first_day()) - 3 * HOUR;
    let end = day_start(first_day() + DAYS);
    let channels = rng.random_range(2..7);
    let mut registered = Vec::new();
    let mut deleted = Vec::new();
    let mut actions = Vec::new();
    for channel in 0..channels {
        let from = base + rng.random_range(0..4 * 24 * HOUR);
        let until = rng
            .random_bool(0.25)
            .then(|| rng.random_range(from + HOUR..end));
        registered.push(from);
        deleted.push(until);
        actions.push((from, Action::Register(channel)));
        for _ in 0..rng.random_range(0..60) {
            let arrives = rng.random_range(from..until.unwrap_or(end));
            // Some signals are late: they carry an earlier time than their arrival.
            let at = if rng.random_bool(0.15) {
                (arrives - rng.random_range(0..30 * HOUR)).max(from)
            } else {
                arrives
            };
            let kind = match rng.random_range(0..20) {
                0..12 => SignalKind::Keepalive,
                12..15 => SignalKind::Event(Event::On, None),
                15..17 => SignalKind::Event(Event::Off, None),
                17..18 => SignalKind::Event(Event::Vlost, None),
                _ => SignalKind::Event(Event::Defect, None),
            };
            actions.push((arrives, Action::Signal { channel, at, kind }));
        }
        if let Some(at) = until {
            let kind = SignalKind::Event(Event::Del, None);
            actions.push((at, Action::Signal { channel, at, kind }));
        }
    }
    for _ in 0..rng.random_range(0..3) {
        actions.push((rng.random_range(base..end), Action::RollUp));
    }
    // Registrations first among equal moments, so that no signal meets an unknown channel.
    actions.sort_by_key(|(at, action)| (*at, !matches!(action, Action::Register(_))));
    Script {
        registered,
        deleted,
        actions,
        end,
    }
}

/// Plays the script into the catalog, then rolls up at its end (midnight after the last
/// day).
async fn play(catalog: &Catalog, script: &Script) {
    for (arrives, action) in &script.actions {
        match action {
            Action::Register(channel) => {
                let report = ChannelReport::from_json(
                    json!({"id": id(*channel), "department": "gongan", "position_type": 4}),
                    None,
                )
                .expect("report");
                let outcome = catalog
                    .register_cameras(vec![report], None, *arrives)
                    .await
                    .expect("register");
                assert!(outcome[0].is_ok(), "{outcome:?}");
            }
            Action::Signal { channel, at, kind } => {
                let signal = CameraSignal {
                    id: id(*channel),
                    at: *at,
                    kind: kind.clone(),
                };
                let outcome = catalog
                    .camera_signals(vec![signal], None, LIVENESS, T0)
                    .await
                    .expect("signals");
                assert!(outcome[0].is_ok(), "{action:?}: {outcome:?}");
            }
            Action::RollUp => {
                catalog
                    .roll_up_camera_days(*arrives, LIVENESS, 400)
                    .await
                    .expect("roll up");
            }
        }
    }
    catalog
        .roll_up_camera_days(script.end, LIVENESS, 400)
        .await
        .expect("roll up");
}

/// `(day, camera id, observed, online, transitions, complete)` of every channel day, walked
/// from the stored history segment by segment.
async fn from_history(
    catalog: &Catalog,
    script: &Script,
) -> Vec<(i32, String, i64, i64, i64, bool)> {
    let history = catalog
        .camera_status_events(0, 1_000_000)
        .await
        .expect("history");
    let mut rows = Vec::new();
    for day in first_day() - 1..first_day() + DAYS {
        let (start, end) = (day_start(day), day_start(day + 1));
        for (channel, registered) in script.registered.iter().enumerate() {
            let id = id(channel);
            let from = start.max(*registered);
            let to = end.min(script.deleted[channel].unwrap_or(i64::MAX));
            if from >= to {
                continue;
            }
            let mine: Vec<_> = history.iter().filter(|e| e.camera_id == id).collect();
            // The status at an instant: the last transition at or before it.
            let status_at = |t: i64| {
                mine.iter()
                    .rfind(|e| e.at <= t)
                    .map_or(Status::Unknown, |e| e.status)
            };
            let mut cuts: Vec<i64> = mine
                .iter()
                .map(|e| e.at)
                .filter(|at| *at > from && *at < to)
                .collect();
            cuts.push(from);
            cuts.push(to);
            cuts.sort_unstable();
            cuts.dedup();
            let online: i64 = cuts
                .windows(2)
                .filter(|w| status_at(w[0]) == Status::Online)
                .map(|w| w[1] - w[0])
                .sum();
            let transitions = mine.iter().filter(|e| e.at >= start && e.at < end).count();
            let complete = from == start && to == end;
            rows.push((day, id, to - from, online, transitions as i64, complete));
        }
    }
    rows.sort();
    rows
}

async fn rolled_up(catalog: &Catalog) -> Vec<(i32, String, i64, i64, i64, bool)> {
    let rows: Vec<DailyRow> = catalog
        .camera_daily_rows((i32::MIN, String::new()), 1_000_000)
        .await
        .expect("rows");
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.group.region_code, "511025");
            assert_eq!(r.group.position_type, Some(4));
            assert_eq!(r.group.department.as_deref(), Some("gongan"));
            (
                r.day,
                r.camera_id,
                r.observed_ms,
                r.online_ms,
                r.transitions,
                r.complete,
            )
        })
        .collect()
}

/// A fresh catalog with the department the channels belong to.
async fn open_with_gongan(backend: Backend) -> Option<(super::TestCatalog, Catalog)> {
    let (dir, catalog) = super::open(backend).await?;
    catalog
        .create_department("gongan", "公安局")
        .await
        .expect("department");
    Some((dir, catalog))
}

async fn check(backend: Backend, seed: u64) {
    let Some((_dir, catalog)) = open_with_gongan(backend).await else {
        return;
    };
    let script = script(seed);
    play(&catalog, &script).await;
    let expected = from_history(&catalog, &script).await;
    assert_eq!(
        rolled_up(&catalog).await,
        expected,
        "seed {seed}: {script:?}"
    );
    // Nothing is missing or stale any more: the next round computes nothing.
    let again = catalog
        .roll_up_camera_days(script.end + HOUR, LIVENESS, 400)
        .await
        .expect("roll up");
    assert_eq!(again, Vec::<i32>::new(), "seed {seed}");
    // Over whole days, availability from the roll-ups is the live statistic's over the same
    // window (which leaves deleted channels out: compared only without deletions).
    if script.deleted.iter().all(Option::is_none) {
        let last = first_day() + DAYS - 1;
        for from in first_day() - 1..=last {
            let (_, live) = catalog
                .camera_stats(
                    StatsGroup::Region,
                    day_start(from),
                    script.end,
                    LIVENESS,
                    None,
                )
                .await
                .expect("stats");
            let (_, daily) = catalog
                .camera_daily_stats(StatsGroup::Region, from..=last, script.end, LIVENESS, None)
                .await
                .expect("daily stats");
            assert_eq!(daily, live, "seed {seed}, from day {from}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random histories on SQLite.
    #[test]
    fn sqlite_daily_rows_equal_the_history_walked(seed in any::<u64>()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(check(Backend::Sqlite, seed));
    }
}

/// A few fixed random histories on both backends (PostgreSQL's schema per history is slower
/// to make than SQLite's file).
async fn daily_rows_equal_the_history_walked(backend: Backend) {
    for seed in [1, 7, 2026] {
        check(backend, seed).await;
    }
}

/// A late keepalive for a day already rolled up makes that day stale: the next round
/// recomputes it and the days after it, and its figures change.
async fn a_late_signal_recomputes_the_days_it_changed(backend: Backend) {
    let Some((_dir, catalog)) = open_with_gongan(backend).await else {
        return;
    };
    let day = first_day();
    let start = day_start(day);
    let report = ChannelReport::from_json(json!({"id": id(0), "department": "gongan"}), None)
        .expect("report");
    catalog
        .register_cameras(vec![report], None, start - HOUR)
        .await
        .expect("register");
    let keepalive = |at: i64| CameraSignal {
        id: id(0),
        at,
        kind: SignalKind::Keepalive,
    };
    catalog
        .camera_signals(vec![keepalive(start + HOUR)], None, LIVENESS, T0)
        .await
        .expect("keepalive");
    let now = day_start(day + 3) + HOUR;
    let done = catalog
        .roll_up_camera_days(now, LIVENESS, 400)
        .await
        .expect("roll up");
    assert_eq!(done, vec![day - 1, day, day + 1, day + 2]);
    let online = |rows: &[DailyRow], day: i32| {
        rows.iter()
            .find(|r| r.day == day)
            .map(|r| r.online_ms)
            .expect("a row for the day")
    };
    let rows = catalog
        .camera_daily_rows((i32::MIN, String::new()), 100)
        .await
        .expect("rows");
    assert_eq!(online(&rows, day), 3 * HOUR, "online 01:00-04:00");
    // A platform delivers a keepalive of day + 1, 10:00, two days late.
    catalog
        .camera_signals(
            vec![keepalive(day_start(day + 1) + 10 * HOUR)],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("late keepalive");
    let done = catalog
        .roll_up_camera_days(now + HOUR, LIVENESS, 400)
        .await
        .expect("roll up");
    assert_eq!(done, vec![day + 1, day + 2], "from the changed day on");
    let rows = catalog
        .camera_daily_rows((i32::MIN, String::new()), 100)
        .await
        .expect("rows");
    assert_eq!(online(&rows, day), 3 * HOUR, "the day before is unchanged");
    assert_eq!(online(&rows, day + 1), 3 * HOUR, "online 10:00-13:00");
    // Retention: with two days kept, older rows are gone and never recomputed.
    catalog
        .roll_up_camera_days(now + 2 * HOUR, LIVENESS, 2)
        .await
        .expect("roll up");
    let rows = catalog
        .camera_daily_rows((i32::MIN, String::new()), 100)
        .await
        .expect("rows");
    let days: Vec<i32> = rows.iter().map(|r| r.day).collect();
    assert_eq!(days, vec![day + 1, day + 2]);
}

/// Whole-day statistics of a county read the daily group totals, a town's (known by civil
/// code, which the totals do not carry) its channels' rows; both count only their channels.
async fn whole_day_statistics_keep_to_the_scope(backend: Backend) {
    let Some((_dir, catalog)) = open_with_gongan(backend).await else {
        return;
    };
    let day = first_day();
    let start = day_start(day);
    let reports = [
        json!({"id": "51102500001320000001", "civil_code": "511025100", "department": "gongan"}),
        json!({"id": "51102500001320000002", "department": "gongan"}),
        json!({"id": "51102400001320000003", "department": "gongan"}),
    ]
    .into_iter()
    .map(|r| ChannelReport::from_json(r, None).expect("report"))
    .collect();
    catalog
        .register_cameras(reports, None, start - HOUR)
        .await
        .expect("register");
    let signals = [
        ("51102500001320000001", 1),
        ("51102500001320000002", 5),
        ("51102400001320000003", 10),
    ]
    .map(|(id, hour)| CameraSignal {
        id: id.into(),
        at: start + hour * HOUR,
        kind: SignalKind::Keepalive,
    });
    catalog
        .camera_signals(signals.to_vec(), None, LIVENESS, T0)
        .await
        .expect("keepalives");
    let now = day_start(day + 1) + HOUR;
    catalog
        .roll_up_camera_days(now, LIVENESS, 400)
        .await
        .expect("roll up");
    for (scope, total, online_hours, channels) in [
        (None, 3, 9.0, 3.0),
        (Some("511025"), 2, 6.0, 2.0),
        (Some("511025100"), 1, 3.0, 1.0),
    ] {
        let scope = scope.map(|code| crate::region::Scope::of(code).expect("scope"));
        let (groups, overall) = catalog
            .camera_daily_stats(StatsGroup::Region, day..=day, now, LIVENESS, scope)
            .await
            .expect("daily stats");
        assert_eq!(overall.total, total, "{groups:?}");
        assert_eq!(overall.availability, online_hours / (24.0 * channels));
    }
}

on_both_backends!(
    daily_rows_equal_the_history_walked,
    a_late_signal_recomputes_the_days_it_changed,
    whole_day_statistics_keep_to_the_scope,
);
