//! GB/T 28181 alarms and mobile positions, on both catalog backends: kept once for
//! registered sources and their own department's callers, committed with a Kafka batch's
//! offset, read in the order received and deleted past retention.

use serde_json::json;

use super::{Backend, on_both_backends};
use crate::camera::alarms::{CameraAlarm, CameraPosition};
use crate::camera::status::{Event, Liveness};
use crate::camera::{
    CameraFeed, CameraOp, CameraReport, CameraSignal, CameraStreamCommit, ChannelReport, SignalKind,
};
use crate::model::{OffsetAdvance, RejectedRecord};
use crate::*;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const LIVENESS: Liveness = Liveness {
    interval_ms: MINUTE,
    missed: 3,
};
/// 2026-11-28 00:00 UTC.
const T0: i64 = 1_795_824_000_000;

const CAMERA: &str = "51102500001320000001";
const CAR: &str = "51102500001380000002";
const CHECKPOINT: &str = "51102800051210000003";
const GONE: &str = "51102500001320000004";
const NEVER_REGISTERED: &str = "51102500001320000099";

async fn city(backend: Backend) -> Option<(super::TestCatalog, Catalog)> {
    let (dir, catalog) = super::open(backend).await?;
    catalog
        .create_department("gongan", "公安局")
        .await
        .expect("catalog");
    catalog
        .create_department("jiaotong", "交通局")
        .await
        .expect("catalog");
    let reports = [
        json!({"id": CAMERA, "department": "gongan"}),
        json!({"id": CAR, "name": "巡逻车 1", "department": "gongan"}),
        json!({"id": CHECKPOINT, "department": "jiaotong"}),
        json!({"id": GONE, "department": "gongan"}),
    ]
    .into_iter()
    .map(|value| ChannelReport::from_json(value, None).expect("report"))
    .collect();
    catalog
        .register_cameras(reports, None, T0 - DAY)
        .await
        .expect("catalog");
    let deleted = catalog
        .camera_signals(
            vec![CameraSignal {
                id: GONE.into(),
                at: T0 - DAY + MINUTE,
                kind: SignalKind::Event(Event::Del, None),
            }],
            None,
            LIVENESS,
            T0,
        )
        .await
        .expect("catalog");
    assert!(deleted[0].is_ok(), "{deleted:?}");
    Some((dir, catalog))
}

fn camera_alarm(id: &str, at: i64, method: u8, alarm_type: Option<u8>) -> CameraAlarm {
    CameraAlarm {
        id: id.into(),
        at,
        priority: 2,
        method,
        alarm_type,
        description: Some("入侵".into()),
        longitude: Some(104.85),
        latitude: Some(29.77),
    }
}

fn alarm(id: &str, at: i64, method: u8, alarm_type: Option<u8>) -> CameraReport {
    CameraReport::Alarm(camera_alarm(id, at, method, alarm_type))
}

fn position(id: &str, at: i64, longitude: f64) -> CameraReport {
    CameraReport::Position(CameraPosition {
        id: id.into(),
        at,
        longitude,
        latitude: 29.58,
        speed: Some(40.0),
        direction: None,
        altitude: None,
    })
}

async fn kept_alarms(catalog: &Catalog) -> Vec<(String, i64, u8, Option<u8>)> {
    let alarms = catalog.camera_alarms(0, 100).await.expect("catalog");
    assert!(alarms.windows(2).all(|w| w[0].seq < w[1].seq));
    alarms
        .into_iter()
        .map(|s| (s.alarm.id, s.alarm.at, s.alarm.method, s.alarm.alarm_type))
        .collect()
}

async fn kept_positions(catalog: &Catalog) -> Vec<(String, i64, f64)> {
    catalog
        .camera_positions(0, 100)
        .await
        .expect("catalog")
        .into_iter()
        .map(|s| (s.position.id, s.position.at, s.position.longitude))
        .collect()
}

async fn reports_are_kept_once_for_registered_sources_of_the_callers_department(backend: Backend) {
    let Some((_dir, catalog)) = city(backend).await else {
        return;
    };
    let outcomes = catalog
        .record_camera_reports(
            vec![
                alarm(CAMERA, T0, 5, Some(6)),
                // The same alarm again (a retried request): kept once.
                alarm(CAMERA, T0, 5, Some(6)),
                // Same time, other type: another alarm.
                alarm(CAMERA, T0, 5, Some(2)),
                alarm(CAMERA, T0, 2, None),
                alarm(CAMERA, T0, 2, None),
                alarm(NEVER_REGISTERED, T0, 5, Some(6)),
                alarm(GONE, T0, 5, Some(6)),
                // Another department's checkpoint.
                alarm(CHECKPOINT, T0, 5, Some(6)),
                position(CAR, T0, 105.05),
                position(CAR, T0, 105.06),
                position(CAR, T0 + 10_000, 105.06),
            ],
            Some("gongan".into()),
            T0 + 1_000,
        )
        .await
        .expect("catalog");
    let answers: Vec<Result<bool, (String, bool)>> = outcomes
        .into_iter()
        .map(|o| o.map_err(|err| (err.field, err.forbidden)))
        .collect();
    assert_eq!(
        answers,
        vec![
            Ok(true),
            Ok(false),
            Ok(true),
            Ok(true),
            Ok(false),
            Err(("id".into(), false)),
            Err(("id".into(), false)),
            Err(("id".into(), true)),
            Ok(true),
            Ok(false),
            Ok(true),
        ]
    );
    assert_eq!(
        kept_alarms(&catalog).await,
        vec![
            (CAMERA.into(), T0, 5, Some(6)),
            (CAMERA.into(), T0, 5, Some(2)),
            (CAMERA.into(), T0, 2, None),
        ]
    );
    let first = &catalog.camera_alarms(0, 1).await.expect("catalog")[0];
    assert_eq!(first.received_at, T0 + 1_000);
    assert_eq!(first.alarm, camera_alarm(CAMERA, T0, 5, Some(6)));
    // The first position of a device and time stays; the re-sent one does not replace it.
    assert_eq!(
        kept_positions(&catalog).await,
        vec![(CAR.into(), T0, 105.05), (CAR.into(), T0 + 10_000, 105.06)]
    );
    // An admin acts for every department; paging goes on after the last seq.
    let admin = catalog
        .record_camera_reports(vec![alarm(CHECKPOINT, T0, 5, Some(6))], None, T0)
        .await
        .expect("catalog");
    assert_eq!(admin, vec![Ok(true)]);
    let after = catalog.camera_alarms(0, 100).await.expect("catalog")[2].seq;
    let rest = catalog.camera_alarms(after, 100).await.expect("catalog");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].alarm.id, CHECKPOINT);
}

async fn a_kafka_batch_of_reports_commits_with_its_offset_once(backend: Backend) {
    let Some((_dir, catalog)) = city(backend).await else {
        return;
    };
    let origin = |offset: i64| RejectedRecord {
        topic: "gb28181.alarms".into(),
        partition: 0,
        offset,
        key: None,
        payload: format!("message {offset}").into_bytes(),
        error: String::new(),
    };
    let commit = |expected: Option<i64>| CameraStreamCommit {
        feed: CameraFeed::Alarms,
        items: vec![
            (origin(0), CameraOp::Report(alarm(CAMERA, T0, 5, Some(6)))),
            (
                origin(1),
                CameraOp::Report(alarm(NEVER_REGISTERED, T0, 5, Some(6))),
            ),
            (origin(2), CameraOp::Report(alarm(CAMERA, T0, 5, Some(6)))),
        ],
        rejected: vec![RejectedRecord {
            error: "priority: missing".into(),
            ..origin(3)
        }],
        offset: OffsetAdvance {
            topic: "gb28181.alarms".into(),
            partition: 0,
            expected,
            next: 4,
        },
        liveness: LIVENESS,
        at: T0 + 5_000,
    };
    let outcome = catalog
        .commit_camera_stream(commit(None))
        .await
        .expect("catalog");
    assert_eq!((outcome.applied, outcome.rejected), (2, 2));
    assert_eq!(
        kept_alarms(&catalog).await,
        vec![(CAMERA.into(), T0, 5, Some(6))]
    );
    assert_eq!(
        catalog.camera_alarms(0, 1).await.expect("catalog")[0].received_at,
        T0 + 5_000
    );
    let letters = catalog
        .camera_rejected_records(0, 10)
        .await
        .expect("catalog");
    assert_eq!(letters.len(), 2);
    assert!(
        letters[0].record.error.contains("not a registered channel"),
        "{letters:?}"
    );
    // A worker that replays the batch from the old offset is refused, and nothing of it
    // is kept twice.
    let err = catalog
        .commit_camera_stream(commit(None))
        .await
        .expect_err("refused");
    assert!(matches!(err, CatalogError::OffsetConflict { .. }), "{err}");
    assert_eq!(kept_alarms(&catalog).await.len(), 1);
    assert_eq!(
        catalog
            .camera_rejected_records(0, 10)
            .await
            .expect("catalog")
            .len(),
        2
    );
    assert_eq!(
        catalog
            .camera_stream_offsets(CameraFeed::Alarms)
            .await
            .expect("catalog"),
        vec![("gb28181.alarms".to_string(), 0, 4)]
    );
}

async fn retention_deletes_what_happened_before_the_cut(backend: Backend) {
    let Some((_dir, catalog)) = city(backend).await else {
        return;
    };
    let reports = (0..25)
        .map(|i| alarm(CAMERA, T0 - i * DAY, 5, Some(6)))
        .chain((0..25).map(|i| position(CAR, T0 - i * DAY, 105.0)))
        .collect();
    catalog
        .record_camera_reports(reports, None, T0)
        .await
        .expect("catalog");
    // Alarms before T0 - 10 days (14 of them: 11..=24 days old) and positions before T0 - 2
    // days (22 of them).
    let deleted = catalog
        .purge_camera_reports(T0 - 10 * DAY, T0 - 2 * DAY)
        .await
        .expect("catalog");
    assert_eq!(deleted, (14, 22));
    let alarms = kept_alarms(&catalog).await;
    assert_eq!(alarms.len(), 11);
    assert!(alarms.iter().all(|a| a.1 >= T0 - 10 * DAY));
    let positions = kept_positions(&catalog).await;
    assert_eq!(positions.len(), 3);
    assert!(positions.iter().all(|p| p.1 >= T0 - 2 * DAY));
    assert_eq!(
        catalog
            .purge_camera_reports(T0 - 10 * DAY, T0 - 2 * DAY)
            .await
            .expect("catalog"),
        (0, 0)
    );
}

on_both_backends!(
    reports_are_kept_once_for_registered_sources_of_the_callers_department,
    a_kafka_batch_of_reports_commits_with_its_offset_once,
    retention_deletes_what_happened_before_the_cut,
);
