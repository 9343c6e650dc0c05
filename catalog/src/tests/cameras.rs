//! The camera registry, on both catalog backends: registration with per-item errors, curated overrides,
//! keepalives and NOTIFY events on a controlled clock, the status history, searches and
//! statistics.

use serde_json::json;

use super::{Backend, TestCatalog, on_both_backends};
use crate::camera::status::{Event, LiveState, Liveness, Notified, Status};
use crate::camera::{
    CameraQuery, CameraSignal, ChannelFields, ChannelReport, Registered, SignalKind, StatsGroup,
};
use crate::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const LIVENESS: Liveness = Liveness {
    interval_ms: MINUTE,
    missed: 3,
};
/// A fixed "now" for the tests' clock: 2026-11-28 00:00 UTC.
const T0: i64 = 1_795_824_000_000;

const NVR: &str = "51102500001180000001";
const CAM_A: &str = "51102500001320000001";
const CAM_B: &str = "51102500001320000002";
/// A 隆昌 camera still carrying the retired centre code 511028.
const CAM_LEGACY: &str = "51102800051310000003";
const CAM_WEIYUAN: &str = "51102400041320000004";

async fn store(backend: Backend) -> Option<(TestCatalog, Catalog)> {
    let (dir, catalog) = super::open(backend).await?;
    catalog
        .create_department("gongan", "公安局")
        .await
        .expect("department");
    catalog
        .create_department("jiaotong", "交通局")
        .await
        .expect("department");
    Some((dir, catalog))
}

fn report(value: serde_json::Value) -> ChannelReport {
    ChannelReport::from_json(value, None).expect("valid report")
}

fn signal(id: &str, at: i64, kind: SignalKind) -> CameraSignal {
    CameraSignal {
        id: id.into(),
        at,
        kind,
    }
}

fn keepalive(id: &str, at: i64) -> CameraSignal {
    signal(id, at, SignalKind::Keepalive)
}

fn event(id: &str, at: i64, event: Event) -> CameraSignal {
    signal(id, at, SignalKind::Event(event, None))
}

async fn register_city(catalog: &Catalog) {
    let reports = vec![
        report(json!({"id": NVR, "name": "资中 NVR 1", "department": "gongan"})),
        report(
            json!({"id": CAM_A, "parent_id": NVR, "name": "北街口", "department": "gongan",
                      "longitude": 104.85, "latitude": 29.77, "ptz_type": 1, "position_type": 4}),
        ),
        report(
            json!({"id": CAM_B, "parent_id": NVR, "name": "东街口", "department": "gongan",
                      "longitude": 104.86, "latitude": 29.78, "position_type": 4}),
        ),
        report(
            json!({"id": CAM_LEGACY, "name": "隆昌 卡口", "department": "jiaotong",
                      "longitude": 105.28, "latitude": 29.34, "ptz_type": 3, "position_type": 10}),
        ),
        report(json!({"id": CAM_WEIYUAN, "department": "jiaotong"})),
    ];
    let outcomes = catalog
        .register_cameras(reports, None, T0 - 2 * HOUR)
        .await
        .expect("register");
    assert!(
        outcomes.iter().all(|o| *o == Ok(Registered::Created)),
        "{outcomes:?}"
    );
}

async fn status_of(catalog: &Catalog, id: &str, now: i64) -> Status {
    let (record, _) = catalog.camera(id).await.expect("read").expect("registered");
    record.live.status_at(now, LIVENESS)
}

async fn history(catalog: &Catalog) -> Vec<(String, i64, Status, String)> {
    catalog
        .camera_status_events(0, 1_000)
        .await
        .expect("history")
        .into_iter()
        .map(|e| (e.camera_id, e.at, e.status, e.cause))
        .collect()
}

async fn registration_reports_each_refused_item_and_keeps_the_rest(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    let outcomes = catalog
        .register_cameras(
            vec![
                report(json!({"id": CAM_A, "name": "北街口 (new name)"})),
                report(json!({"id": "51102500001320000099", "department": "nosuch"})),
                report(json!({"id": CAM_LEGACY, "name": "not yours"})),
                report(json!({"id": "51102500001320000098", "department": "jiaotong"})),
                report(json!({"id": "51102500001320000097"})),
            ],
            Some("gongan".into()),
            T0,
        )
        .await
        .expect("register");
    assert_eq!(outcomes[0], Ok(Registered::Updated));
    assert_eq!(
        outcomes[1].as_ref().expect_err("unknown department").field,
        "department"
    );
    let not_yours = outcomes[2].as_ref().expect_err("jiaotong's channel");
    assert!(
        not_yours.message.contains("belongs to department jiaotong"),
        "{not_yours}"
    );
    assert_eq!(
        outcomes[3].as_ref().expect_err("other department").field,
        "department"
    );
    assert_eq!(outcomes[4], Ok(Registered::Created));
    let (record, _) = catalog
        .camera("51102500001320000097")
        .await
        .expect("read")
        .expect("created");
    assert_eq!(
        record.fields.department.as_deref(),
        Some("gongan"),
        "defaults to the caller's"
    );
    assert!(
        catalog
            .camera("51102500001320000099")
            .await
            .expect("read")
            .is_none()
    );
    // The re-report replaced the reported values.
    let (record, _) = catalog.camera(CAM_A).await.expect("read").expect("there");
    assert_eq!(record.fields.name.as_deref(), Some("北街口 (new name)"));
    assert_eq!(
        record.fields.longitude, None,
        "a report replaces the whole reported record"
    );
}

async fn curated_values_survive_re_reports_and_win(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    let curated = ChannelFields {
        name: Some("资中县 北街与东街交叉口 (核实)".into()),
        longitude: Some(104.851),
        latitude: Some(29.771),
        ..ChannelFields::default()
    };
    catalog
        .curate_camera(CAM_A.into(), curated.clone(), Some("gongan".into()), T0)
        .await
        .expect("curate");
    let refused = catalog
        .curate_camera(
            CAM_LEGACY.into(),
            curated.clone(),
            Some("gongan".into()),
            T0,
        )
        .await
        .expect_err("not gongan's");
    assert!(
        refused
            .to_string()
            .contains("belongs to department jiaotong"),
        "{refused}"
    );
    let missing = catalog
        .curate_camera("51102500001320000055".into(), curated, None, T0)
        .await
        .expect_err("unknown");
    assert!(matches!(missing, CatalogError::NotFound { .. }));
    // The platform re-reports its own values: the curated ones still show.
    catalog
        .register_cameras(
            vec![report(
                json!({"id": CAM_A, "parent_id": NVR, "name": "IPC-0001",
                              "department": "gongan", "longitude": 104.0, "latitude": 29.0,
                              "ptz_type": 2}),
            )],
            None,
            T0 + MINUTE,
        )
        .await
        .expect("re-report");
    let (record, sources) = catalog.camera(CAM_A).await.expect("read").expect("there");
    assert_eq!(
        record.fields.name.as_deref(),
        Some("资中县 北街与东街交叉口 (核实)")
    );
    assert_eq!(record.fields.longitude, Some(104.851));
    assert_eq!(
        record.fields.ptz_type,
        Some(2),
        "not curated: the report shows"
    );
    assert_eq!(sources.reported.name.as_deref(), Some("IPC-0001"));
    assert_eq!(sources.curated.latitude, Some(29.771));
    assert!(record.complete);
}

async fn keepalives_events_and_the_clock_drive_status_and_history(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    assert_eq!(status_of(&catalog, CAM_A, T0).await, Status::Unknown);
    // The NVR's keepalive marks itself and both of its channels.
    let outcomes = catalog
        .camera_signals(vec![keepalive(NVR, T0)], None, LIVENESS, T0)
        .await
        .expect("keepalive");
    assert_eq!(outcomes, vec![Ok(3)]);
    assert_eq!(
        status_of(&catalog, CAM_B, T0 + MINUTE).await,
        Status::Online
    );
    // VLOST takes one channel offline although its device lives on.
    let outcomes = catalog
        .camera_signals(
            vec![
                event(CAM_B, T0 + MINUTE, Event::Vlost),
                keepalive(NVR, T0 + 2 * MINUTE),
                keepalive("51102500001320000077", T0),
                event(CAM_WEIYUAN, T0, Event::On),
            ],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("signals");
    assert_eq!(outcomes[0], Ok(1));
    assert_eq!(outcomes[1], Ok(3));
    assert!(
        outcomes[2]
            .as_ref()
            .expect_err("unknown")
            .message
            .contains("register it first")
    );
    assert_eq!(outcomes[3], Ok(1));
    assert_eq!(
        status_of(&catalog, CAM_B, T0 + 3 * MINUTE).await,
        Status::Offline
    );
    assert_eq!(
        status_of(&catalog, CAM_A, T0 + 3 * MINUTE).await,
        Status::Online
    );
    // Nothing is written after minute 2; at minute 5 the channels are offline when read.
    assert_eq!(
        status_of(&catalog, CAM_A, T0 + 5 * MINUTE).await,
        Status::Offline
    );
    let (record, _) = catalog.camera(CAM_A).await.expect("read").expect("there");
    assert_eq!(
        record.live.status_and_since(T0 + 50 * MINUTE, LIVENESS),
        (Status::Offline, Some(T0 + 5 * MINUTE))
    );
    // The sweeper appends the timeouts at their true time, once.
    assert_eq!(
        catalog
            .sweep_cameras(T0 + 50 * MINUTE, LIVENESS)
            .await
            .expect("sweep"),
        3
    );
    assert_eq!(
        catalog
            .sweep_cameras(T0 + 51 * MINUTE, LIVENESS)
            .await
            .expect("sweep"),
        0
    );
    let lines = history(&catalog).await;
    let of = |id: &str| -> Vec<(i64, Status, String)> {
        lines
            .iter()
            .filter(|l| l.0 == id)
            .map(|l| (l.1 - T0, l.2, l.3.clone()))
            .collect()
    };
    assert_eq!(
        of(CAM_A),
        vec![
            (0, Status::Online, "keepalive".into()),
            (5 * MINUTE, Status::Offline, "keepalive_timeout".into())
        ]
    );
    assert_eq!(
        of(CAM_B),
        vec![
            (0, Status::Online, "keepalive".into()),
            (MINUTE, Status::Offline, "VLOST".into())
        ]
    );
    assert_eq!(of(CAM_WEIYUAN).len(), 2, "ON, then its timeout");
}

async fn events_refuse_unknown_cameras_and_other_departments(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    let outcomes = catalog
        .camera_signals(
            vec![
                event("51102500001320000066", T0, Event::On),
                event(CAM_LEGACY, T0, Event::Off),
                event(CAM_A, T0, Event::Update),
                event("51102500001320000066", T0, Event::Add),
                signal(
                    "51102500001320000066",
                    T0,
                    SignalKind::Event(
                        Event::Add,
                        Some(Box::new(ChannelFields {
                            name: Some("新增".into()),
                            ..ChannelFields::default()
                        })),
                    ),
                ),
                event(CAM_A, T0, Event::Del),
                event(CAM_A, T0 + MINUTE, Event::On),
                keepalive(CAM_LEGACY, T0),
            ],
            Some("gongan".into()),
            LIVENESS,
            T0,
        )
        .await
        .expect("signals");
    assert!(
        outcomes[0]
            .as_ref()
            .expect_err("unknown")
            .message
            .contains("not a registered")
    );
    assert!(
        outcomes[1]
            .as_ref()
            .expect_err("jiaotong's")
            .message
            .contains("belongs to")
    );
    assert_eq!(
        outcomes[2].as_ref().expect_err("no fields").field,
        "channel"
    );
    assert_eq!(
        outcomes[3].as_ref().expect_err("no fields").field,
        "channel"
    );
    assert_eq!(outcomes[4], Ok(1), "ADD with fields registers");
    assert_eq!(outcomes[5], Ok(1), "DEL");
    assert!(outcomes[6].is_err(), "a deleted channel takes no events");
    assert!(
        outcomes[7]
            .as_ref()
            .expect_err("jiaotong's")
            .message
            .contains("belongs to")
    );
    assert!(
        catalog.camera(CAM_A).await.expect("read").is_none(),
        "deleted"
    );
    let (added, _) = catalog
        .camera("51102500001320000066")
        .await
        .expect("read")
        .expect("added");
    assert_eq!(added.fields.department.as_deref(), Some("gongan"));
    // ADD brings a deleted channel back with its known values.
    let outcomes = catalog
        .camera_signals(
            vec![event(CAM_A, T0 + 2 * MINUTE, Event::Add)],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("add");
    assert_eq!(outcomes, vec![Ok(1)]);
    let (restored, _) = catalog
        .camera(CAM_A)
        .await
        .expect("read")
        .expect("restored");
    assert_eq!(restored.fields.name.as_deref(), Some("北街口"));
    assert_eq!(
        restored.live.status_at(T0 + 2 * MINUTE, LIVENESS),
        Status::Unknown
    );
}

async fn searches_filter_by_region_status_kind_and_box_with_a_cursor(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    catalog
        .camera_signals(
            vec![keepalive(CAM_A, T0), keepalive(CAM_LEGACY, T0)],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("keepalive");
    let ids = |records: Vec<camera::CameraRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.id.id).collect()
    };
    let search = |query: CameraQuery| {
        let catalog = catalog.clone();
        async move {
            catalog
                .search_cameras(
                    CameraQuery {
                        limit: 100,
                        ..query
                    },
                    T0 + MINUTE,
                    LIVENESS,
                )
                .await
                .expect("search")
        }
    };
    assert_eq!(ids(search(CameraQuery::default()).await).len(), 5);
    // 511000 is all of 内江; 511083 (隆昌市) includes the retired 511028 code.
    let city = search(CameraQuery {
        region: Some("511000".into()),
        ..CameraQuery::default()
    })
    .await;
    assert_eq!(city.len(), 5);
    assert_eq!(
        ids(search(CameraQuery {
            region: Some("511083".into()),
            ..CameraQuery::default()
        })
        .await),
        vec![CAM_LEGACY]
    );
    assert_eq!(
        ids(search(CameraQuery {
            status: Some(Status::Online),
            ..CameraQuery::default()
        })
        .await),
        vec![CAM_A, CAM_LEGACY]
    );
    assert_eq!(
        ids(search(CameraQuery {
            industry: Some(5),
            ..CameraQuery::default()
        })
        .await),
        vec![CAM_LEGACY]
    );
    assert_eq!(
        ids(search(CameraQuery {
            type_code: Some(118),
            ..CameraQuery::default()
        })
        .await),
        vec![NVR]
    );
    assert_eq!(
        ids(search(CameraQuery {
            bbox: Some([104.8, 29.7, 104.855, 29.8]),
            ..CameraQuery::default()
        })
        .await),
        vec![CAM_A]
    );
    // Pages of two, following the cursor, cover every channel once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = catalog
            .search_cameras(
                CameraQuery {
                    limit: 2,
                    after: after.clone(),
                    ..CameraQuery::default()
                },
                T0,
                LIVENESS,
            )
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id.id.clone());
        seen.extend(ids(page));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 5);
}

async fn stats_count_rates_completeness_and_availability_from_the_history(backend: Backend) {
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    // Over the two hours before T0: CAM_A online the whole time (keepalive every minute),
    // CAM_B online the first hour only (its keepalives stop; timeout after 3 minutes).
    let mut signals = Vec::new();
    let start = T0 - 2 * HOUR;
    for minute in 0..120 {
        signals.push(keepalive(CAM_A, start + minute * MINUTE));
        if minute < 60 {
            signals.push(keepalive(CAM_B, start + minute * MINUTE));
        }
    }
    catalog
        .camera_signals(signals, None, LIVENESS, T0)
        .await
        .expect("signals");
    let (stats, overall) = catalog
        .camera_stats(StatsGroup::Region, start, T0, LIVENESS, None)
        .await
        .expect("stats");
    assert_eq!(
        overall.total, 4,
        "video channels only: the NVR is not counted"
    );
    assert_eq!(
        overall.online, 1,
        "CAM_A; CAM_LEGACY and CAM_WEIYUAN never heard of"
    );
    let zizhong = stats
        .iter()
        .find(|s| s.key.as_deref() == Some("511025"))
        .expect("资中 group");
    assert_eq!(
        (
            zizhong.total,
            zizhong.online,
            zizhong.offline,
            zizhong.unknown
        ),
        (2, 1, 1, 0)
    );
    assert!((zizhong.online_rate - 0.5).abs() < 1e-9);
    assert_eq!(
        zizhong.complete, 1,
        "only CAM_A has name, position, type and owner"
    );
    // A online from start to T0 (120 min); B from start to its last keepalive at minute 59
    // plus the 3-minute timeout. Observed: 2 channels × 120 min (the NVR is not a channel).
    let expected = (120.0 + 62.0) / (2.0 * 120.0);
    assert!(
        (zizhong.availability - expected).abs() < 1e-9,
        "{}",
        zizhong.availability
    );
    let longchang = stats
        .iter()
        .find(|s| s.key.as_deref() == Some("511083"))
        .expect("隆昌 group, from the retired code");
    assert_eq!(longchang.total, 1);
    let (by_position, _) = catalog
        .camera_stats(StatsGroup::PositionType, start, T0, LIVENESS, None)
        .await
        .expect("stats");
    let squares = by_position
        .iter()
        .find(|s| s.key.as_deref() == Some("4"))
        .expect("central squares");
    assert_eq!(squares.total, 2);
}

/// The SQL rule that searches and statistics use agrees with the state machine's rule.
#[test]
fn status_sql_agrees_with_the_state_machine() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
    let mut rng = StdRng::seed_from_u64(7);
    let notified = [
        None,
        Some(Notified::On),
        Some(Notified::Off),
        Some(Notified::Vlost),
        Some(Notified::Defect),
    ];
    for _ in 0..2_000 {
        let live = LiveState {
            notified: notified[rng.random_range(0..notified.len())],
            last_seen_at: rng
                .random_bool(0.8)
                .then(|| rng.random_range(0..10 * MINUTE)),
            ..LiveState::default()
        };
        let now = rng.random_range(0..15 * MINUTE);
        assert_eq!(
            crate::sqlite::camera_stats::status_in_sql(&conn, &live, now, LIVENESS),
            live.status_at(now, LIVENESS),
            "{live:?} at {now}"
        );
    }
}

async fn imported_histories_must_continue_the_recorded_one(backend: Backend) {
    use crate::camera::ImportedHistory;
    use crate::camera::status::Transition;
    let Some((_dir, catalog)) = store(backend).await else {
        return;
    };
    register_city(&catalog).await;
    let online = |at| Transition {
        at,
        from: Status::Unknown,
        to: Status::Online,
        cause: "keepalive",
    };
    let offline = |at| Transition {
        at,
        from: Status::Online,
        to: Status::Offline,
        cause: "VLOST",
    };
    let live = LiveState {
        notified: Some(Notified::Vlost),
        notified_at: Some(T0 - HOUR),
        last_seen_at: Some(T0),
        recorded: Some(Status::Offline),
        recorded_since: Some(T0 - HOUR),
    };
    let broken = catalog
        .import_camera_history(
            vec![ImportedHistory {
                id: CAM_A.into(),
                transitions: vec![offline(T0 - HOUR)],
                live,
            }],
            T0,
        )
        .await
        .expect_err("starts from online, but CAM_A is unknown");
    assert!(broken.to_string().contains("does not continue"), "{broken}");
    let mismatched = catalog
        .import_camera_history(
            vec![ImportedHistory {
                id: CAM_A.into(),
                transitions: vec![online(T0 - 2 * HOUR)],
                live,
            }],
            T0,
        )
        .await
        .expect_err("evidence says offline, history ends online");
    assert!(mismatched.to_string().contains("live"), "{mismatched}");
    assert!(
        history(&catalog).await.is_empty(),
        "nothing of a refused import is kept"
    );
    catalog
        .import_camera_history(
            vec![ImportedHistory {
                id: CAM_A.into(),
                transitions: vec![online(T0 - 2 * HOUR), offline(T0 - HOUR)],
                live,
            }],
            T0,
        )
        .await
        .expect("import");
    assert_eq!(history(&catalog).await.len(), 2);
    assert_eq!(status_of(&catalog, CAM_A, T0).await, Status::Offline);
    // Going on from there through the state machine: ON brings it back.
    catalog
        .camera_signals(
            vec![event(CAM_A, T0 + MINUTE, Event::On)],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("on");
    assert_eq!(
        status_of(&catalog, CAM_A, T0 + MINUTE).await,
        Status::Online
    );
}

on_both_backends!(
    registration_reports_each_refused_item_and_keeps_the_rest,
    curated_values_survive_re_reports_and_win,
    keepalives_events_and_the_clock_drive_status_and_history,
    events_refuse_unknown_cameras_and_other_departments,
    searches_filter_by_region_status_kind_and_box_with_a_cursor,
    stats_count_rates_completeness_and_availability_from_the_history,
    imported_histories_must_continue_the_recorded_one,
);
