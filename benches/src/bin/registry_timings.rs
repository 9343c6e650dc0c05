//! Timing of the camera registry's statements at city size (100,000 channels), for
//! tuning: registration, first and steady keepalives, keepalives in transactions of 1,000,
//! statistics and a full read. Not a pass/fail check; the figures that count are
//! `camera_bench`'s.
//!
//! `cargo run --release -p cityhub-benches --bin registry_timings`

use std::sync::Arc;
use std::time::Instant;

use cityhub_catalog::camera::status::Liveness;
use cityhub_catalog::camera::{CameraQuery, CameraSignal, ChannelReport, SignalKind, StatsGroup};
use cityhub_catalog::{Catalog, SqliteStore};
use serde_json::json;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const LIVENESS: Liveness = Liveness {
    interval_ms: MINUTE,
    missed: 3,
};
/// A fixed "now": 2026-11-28 00:00 UTC.
const T0: i64 = 1_795_824_000_000;

fn report(value: serde_json::Value) -> ChannelReport {
    ChannelReport::from_json(value, None).expect("valid report")
}

fn keepalive(id: &str, at: i64) -> CameraSignal {
    CameraSignal {
        id: id.into(),
        at,
        kind: SignalKind::Keepalive,
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("catalog.db"), 5_000).expect("open");
    let catalog: Catalog = Arc::new(store);
    catalog
        .create_department("gongan", "公安局")
        .await
        .expect("department");
    let reports: Vec<ChannelReport> = (1..=100_000u32)
        .map(|serial| {
            report(json!({"id": format!("51102500001320{serial:06}"), "name": "x",
                          "department": "gongan", "longitude": 104.8, "latitude": 29.7,
                          "ptz_type": 1, "position_type": 1 + serial % 10,
                          "manufacturer": "海康威视", "model": "DS-2CD3T47", "address": "四川省内江市资中县"}))
        })
        .collect();
    let started = Instant::now();
    catalog
        .register_cameras(reports, None, T0 - 2 * HOUR)
        .await
        .expect("register");
    println!("register 100k: {:?}", started.elapsed());
    let started = Instant::now();
    let signals: Vec<CameraSignal> = (1..=100_000u32)
        .map(|serial| keepalive(&format!("51102500001320{serial:06}"), T0 - HOUR))
        .collect();
    catalog
        .camera_signals(signals, None, LIVENESS, T0)
        .await
        .expect("keepalives");
    println!(
        "first keepalives 100k (transitions): {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let signals: Vec<CameraSignal> = (1..=100_000u32)
        .map(|serial| keepalive(&format!("51102500001320{serial:06}"), T0 - HOUR + MINUTE))
        .collect();
    catalog
        .camera_signals(signals, None, LIVENESS, T0)
        .await
        .expect("keepalives");
    println!(
        "steady keepalives 100k (fast path): {:?}",
        started.elapsed()
    );
    // In transactions of 1,000 random channels, as a platform's batches arrive.
    let started = Instant::now();
    for batch in 0..100u32 {
        let signals: Vec<CameraSignal> = (0..1_000u32)
            .map(|i| {
                let serial = (batch * 1_000 + i) * 7_919 % 100_000 + 1;
                keepalive(
                    &format!("51102500001320{serial:06}"),
                    T0 - HOUR + 2 * MINUTE,
                )
            })
            .collect();
        catalog
            .camera_signals(signals, None, LIVENESS, T0)
            .await
            .expect("keepalives");
    }
    println!("keepalives 100 x 1,000 random: {:?}", started.elapsed());
    for _ in 0..3 {
        let started = Instant::now();
        catalog
            .camera_stats(
                StatsGroup::Region,
                T0 - 24 * HOUR,
                T0 - HOUR + 2 * MINUTE,
                LIVENESS,
                None,
            )
            .await
            .expect("stats");
        println!("stats: {:?}", started.elapsed());
    }
    let started = Instant::now();
    catalog
        .search_cameras(
            CameraQuery {
                limit: usize::MAX,
                ..CameraQuery::default()
            },
            T0,
            LIVENESS,
        )
        .await
        .expect("all");
    println!("read all 100k: {:?}", started.elapsed());
}
