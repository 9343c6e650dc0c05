//! `hub.cameras`, `hub.camera_status_events`, `hub.camera_daily`, `hub.camera_alarms` and
//! `hub.camera_positions`: the camera registry and its histories as SQL tables, so that
//! channels join with any department's data (violations per checkpoint, hotline cases near
//! offline cameras, alarms beside the cameras that raised them).
//!
//! Each is built from the catalog when a query names it; the status is computed at that
//! moment from the liveness evidence, like every other answer about cameras. A reader with
//! a region scope sees the rows of the channels inside it.

use std::sync::Arc;

use cityhub_catalog::Catalog;
use std::collections::HashSet;

use cityhub_catalog::camera::alarms::{
    CameraAlarm, CameraPosition, alarm_method_name, alarm_priority_name, alarm_type_name,
};
use cityhub_catalog::camera::daily::DailyRow;
use cityhub_catalog::camera::{
    CameraQuery, CameraRecord, CameraSettings, position_type_name, wgs84_to_gcj02,
};
use cityhub_catalog::region;
use cityhub_catalog::region::Scope;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::{DataFusionError, Result};

fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn owned_strings(values: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMillisecondArray>()
            .with_timezone("UTC"),
    )
}

fn external(err: cityhub_catalog::CatalogError) -> DataFusionError {
    DataFusionError::External(Box::new(err))
}

/// Every registered channel inside `scope` (all without one).
async fn scoped_cameras(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<Vec<CameraRecord>> {
    catalog
        .search_cameras(
            CameraQuery {
                limit: usize::MAX,
                scope,
                ..CameraQuery::default()
            },
            now,
            settings.liveness,
        )
        .await
        .map_err(external)
}

/// Every registered channel with decoded id fields, region names, GCJ-02 coordinates,
/// stream URLs and the status now.
pub async fn cameras_batch(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<RecordBatch> {
    let records = scoped_cameras(catalog, settings, now, scope).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("parent_id", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("department", DataType::Utf8, true),
        Field::new("region_code", DataType::Utf8, false),
        Field::new("region_name", DataType::Utf8, false),
        Field::new("county_code", DataType::Utf8, false),
        Field::new("county_name", DataType::Utf8, true),
        Field::new("industry", DataType::UInt8, false),
        Field::new("industry_name", DataType::Utf8, false),
        Field::new("type_code", DataType::UInt16, false),
        Field::new("type_name", DataType::Utf8, false),
        Field::new("network", DataType::UInt8, false),
        Field::new("serial", DataType::UInt32, false),
        Field::new("civil_code", DataType::Utf8, true),
        Field::new("address", DataType::Utf8, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("latitude", DataType::Float64, true),
        Field::new("gcj02_longitude", DataType::Float64, true),
        Field::new("gcj02_latitude", DataType::Float64, true),
        Field::new("manufacturer", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, true),
        Field::new("ptz_type", DataType::UInt8, true),
        Field::new("position_type", DataType::UInt8, true),
        Field::new("position_type_name", DataType::Utf8, true),
        Field::new("room_type", DataType::UInt8, true),
        Field::new("use_type", DataType::UInt8, true),
        Field::new("supply_light_type", DataType::UInt8, true),
        Field::new("resolution", DataType::Utf8, true),
        Field::new("rtsp_url", DataType::Utf8, true),
        Field::new("rtmp_url", DataType::Utf8, true),
        Field::new("flv_url", DataType::Utf8, true),
        Field::new("hls_url", DataType::Utf8, true),
        Field::new("webrtc_url", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("status_since", utc_millis(), true),
        Field::new("last_keepalive_at", utc_millis(), true),
        Field::new("notified", DataType::Utf8, true),
        Field::new("complete", DataType::Boolean, false),
        Field::new("registered_at", utc_millis(), false),
        Field::new("updated_at", utc_millis(), false),
    ]));
    let r = &records;
    let fields = |f: fn(&CameraRecord) -> Option<&str>| strings(r.iter().map(f));
    let codes = |f: fn(&CameraRecord) -> Option<u8>| -> ArrayRef {
        Arc::new(r.iter().map(f).collect::<UInt8Array>())
    };
    let gcj: Vec<Option<(f64, f64)>> = r
        .iter()
        .map(|c| match (c.fields.longitude, c.fields.latitude) {
            (Some(lon), Some(lat)) => Some(wgs84_to_gcj02(lon, lat)),
            _ => None,
        })
        .collect();
    let streams: Vec<_> = r.iter().map(|c| settings.streams(c)).collect();
    let statuses: Vec<_> = r
        .iter()
        .map(|c| c.live.status_and_since(now, settings.liveness))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        strings(r.iter().map(|c| Some(c.id.id.as_str()))),
        fields(|c| c.fields.parent_id.as_deref()),
        fields(|c| c.fields.name.as_deref()),
        fields(|c| c.fields.department.as_deref()),
        strings(r.iter().map(|c| Some(c.id.region_code))),
        strings(r.iter().map(|c| Some(c.id.region_name))),
        strings(r.iter().map(|c| Some(c.id.current_region_code))),
        strings(
            r.iter()
                .map(|c| region::region(c.id.current_region_code).map(|r| r.name)),
        ),
        Arc::new(
            r.iter()
                .map(|c| Some(c.id.industry))
                .collect::<UInt8Array>(),
        ),
        strings(r.iter().map(|c| Some(c.id.industry_name))),
        Arc::new(
            r.iter()
                .map(|c| Some(c.id.type_code))
                .collect::<UInt16Array>(),
        ),
        strings(r.iter().map(|c| Some(c.id.type_name))),
        Arc::new(r.iter().map(|c| Some(c.id.network)).collect::<UInt8Array>()),
        Arc::new(r.iter().map(|c| Some(c.id.serial)).collect::<UInt32Array>()),
        fields(|c| c.fields.civil_code.as_deref()),
        fields(|c| c.fields.address.as_deref()),
        Arc::new(
            r.iter()
                .map(|c| c.fields.longitude)
                .collect::<Float64Array>(),
        ),
        Arc::new(
            r.iter()
                .map(|c| c.fields.latitude)
                .collect::<Float64Array>(),
        ),
        Arc::new(gcj.iter().map(|g| g.map(|g| g.0)).collect::<Float64Array>()),
        Arc::new(gcj.iter().map(|g| g.map(|g| g.1)).collect::<Float64Array>()),
        fields(|c| c.fields.manufacturer.as_deref()),
        fields(|c| c.fields.model.as_deref()),
        codes(|c| c.fields.ptz_type),
        codes(|c| c.fields.position_type),
        strings(
            r.iter()
                .map(|c| c.fields.position_type.and_then(position_type_name)),
        ),
        codes(|c| c.fields.room_type),
        codes(|c| c.fields.use_type),
        codes(|c| c.fields.supply_light_type),
        fields(|c| c.fields.resolution.as_deref()),
        strings(streams.iter().map(|s| s.rtsp.as_deref())),
        strings(streams.iter().map(|s| s.rtmp.as_deref())),
        strings(streams.iter().map(|s| s.flv.as_deref())),
        strings(streams.iter().map(|s| s.hls.as_deref())),
        strings(streams.iter().map(|s| s.webrtc.as_deref())),
        owned_strings(
            r.iter()
                .map(|c| c.fields.tags.as_ref().map(|t| t.join(","))),
        ),
        strings(statuses.iter().map(|(s, _)| Some(s.as_str()))),
        times(statuses.iter().map(|(_, since)| *since)),
        times(r.iter().map(|c| c.live.last_seen_at)),
        strings(r.iter().map(|c| c.live.notified.map(|n| n.as_str()))),
        Arc::new(r.iter().map(|c| Some(c.complete)).collect::<BooleanArray>()),
        times(r.iter().map(|c| Some(c.registered_at))),
        times(r.iter().map(|c| Some(c.updated_at))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The ids of the channels inside `scope` (`None`: no scope, every channel): a scoped
/// reader sees the history and roll-ups of those (a town's are known by their civil code,
/// which neither carries).
async fn scoped_ids(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<Option<HashSet<String>>> {
    let Some(scope) = scope else {
        return Ok(None);
    };
    let records = scoped_cameras(catalog, settings, now, Some(scope)).await?;
    Ok(Some(
        records.into_iter().map(|record| record.id.id).collect(),
    ))
}

/// How many rows one catalog read returns.
const PAGE: usize = 100_000;

/// Every row of a history kept in the catalog, page by page in `seq` order, that `keep`
/// keeps.
async fn every_page<T, Page>(
    page: impl Fn(i64) -> Page,
    seq: fn(&T) -> i64,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>>
where
    Page: std::future::Future<Output = std::result::Result<Vec<T>, cityhub_catalog::CatalogError>>,
{
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = page(after).await.map_err(external)?;
        let Some(last) = page.last() else { break };
        after = seq(last);
        rows.extend(page.into_iter().filter(|row| keep(row)));
    }
    Ok(rows)
}

/// The county of an id: its region code as it is today (a retired code is its successor's).
fn county_of(id: &str) -> Option<String> {
    cityhub_catalog::gb28181::parse(id)
        .ok()
        .map(|id| id.current_region_code.to_string())
}

/// The status history: every transition with its time, previous and new status and cause.
pub async fn status_events_batch(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<RecordBatch> {
    let inside = scoped_ids(catalog, settings, now, scope).await?;
    let events = every_page(
        |after| catalog.camera_status_events(after, PAGE),
        |e| e.seq,
        |e| inside.as_ref().is_none_or(|ids| ids.contains(&e.camera_id)),
    )
    .await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("camera_id", DataType::Utf8, false),
        Field::new("county_code", DataType::Utf8, true),
        Field::new("at", utc_millis(), false),
        Field::new("previous", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(events.iter().map(|e| Some(e.seq)).collect::<Int64Array>()),
        strings(events.iter().map(|e| Some(e.camera_id.as_str()))),
        owned_strings(events.iter().map(|e| county_of(&e.camera_id))),
        times(events.iter().map(|e| Some(e.at))),
        strings(events.iter().map(|e| Some(e.previous.as_str()))),
        strings(events.iter().map(|e| Some(e.status.as_str()))),
        strings(events.iter().map(|e| Some(e.cause.as_str()))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The daily roll-ups (rolled up first): per channel per Beijing-time day, seconds
/// observed, online and offline, status changes, and whether the whole day was observed.
pub async fn daily_batch(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<RecordBatch> {
    catalog
        .roll_up_camera_days(now, settings.liveness, settings.daily_retention_days)
        .await
        .map_err(external)?;
    let inside = scoped_ids(catalog, settings, now, scope).await?;
    let mut rows: Vec<DailyRow> = Vec::new();
    let mut after = (i32::MIN, String::new());
    loop {
        let page = catalog
            .camera_daily_rows(after.clone(), 100_000)
            .await
            .map_err(external)?;
        let Some(last) = page.last() else { break };
        after = (last.day, last.camera_id.clone());
        rows.extend(
            page.into_iter()
                .filter(|r| inside.as_ref().is_none_or(|ids| ids.contains(&r.camera_id))),
        );
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("camera_id", DataType::Utf8, false),
        Field::new("county_code", DataType::Utf8, false),
        Field::new("industry", DataType::UInt8, false),
        Field::new("type_code", DataType::UInt16, false),
        Field::new("position_type", DataType::UInt8, true),
        Field::new("department", DataType::Utf8, true),
        Field::new("observed_seconds", DataType::Float64, false),
        Field::new("online_seconds", DataType::Float64, false),
        Field::new("offline_seconds", DataType::Float64, false),
        Field::new("transitions", DataType::Int64, false),
        Field::new("complete", DataType::Boolean, false),
    ]));
    let seconds = |ms: fn(&DailyRow) -> i64| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| Some(ms(r) as f64 / 1000.0))
                .collect::<Float64Array>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| Some(r.day)).collect::<Date32Array>()),
        strings(rows.iter().map(|r| Some(r.camera_id.as_str()))),
        strings(rows.iter().map(|r| Some(r.group.region_code.as_str()))),
        Arc::new(
            rows.iter()
                .map(|r| u8::try_from(r.group.industry).ok())
                .collect::<UInt8Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| u16::try_from(r.group.type_code).ok())
                .collect::<UInt16Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.group.position_type.and_then(|p| u8::try_from(p).ok()))
                .collect::<UInt8Array>(),
        ),
        strings(rows.iter().map(|r| r.group.department.as_deref())),
        seconds(|r| r.observed_ms),
        seconds(|r| r.online_ms),
        seconds(|r| r.observed_ms - r.online_ms),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.transitions))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.complete))
                .collect::<BooleanArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The GB/T 28181 alarms of the channels and devices inside `scope`, with the code tables'
/// names beside the numbers.
pub async fn alarms_batch(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<RecordBatch> {
    let inside = scoped_ids(catalog, settings, now, scope).await?;
    let alarms = every_page(
        |after| catalog.camera_alarms(after, PAGE),
        |a| a.seq,
        |a| inside.as_ref().is_none_or(|ids| ids.contains(&a.alarm.id)),
    )
    .await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("camera_id", DataType::Utf8, false),
        Field::new("county_code", DataType::Utf8, true),
        Field::new("at", utc_millis(), false),
        Field::new("priority", DataType::UInt8, false),
        Field::new("priority_name", DataType::Utf8, false),
        Field::new("method", DataType::UInt8, false),
        Field::new("method_name", DataType::Utf8, false),
        Field::new("alarm_type", DataType::UInt8, true),
        Field::new("alarm_type_name", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("latitude", DataType::Float64, true),
        Field::new("received_at", utc_millis(), false),
    ]));
    let a: Vec<&CameraAlarm> = alarms.iter().map(|stored| &stored.alarm).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(alarms.iter().map(|s| Some(s.seq)).collect::<Int64Array>()),
        strings(a.iter().map(|a| Some(a.id.as_str()))),
        owned_strings(a.iter().map(|a| county_of(&a.id))),
        times(a.iter().map(|a| Some(a.at))),
        Arc::new(a.iter().map(|a| Some(a.priority)).collect::<UInt8Array>()),
        strings(a.iter().map(|a| alarm_priority_name(a.priority))),
        Arc::new(a.iter().map(|a| Some(a.method)).collect::<UInt8Array>()),
        strings(a.iter().map(|a| alarm_method_name(a.method))),
        Arc::new(a.iter().map(|a| a.alarm_type).collect::<UInt8Array>()),
        strings(
            a.iter()
                .map(|a| a.alarm_type.and_then(|t| alarm_type_name(a.method, t))),
        ),
        strings(a.iter().map(|a| a.description.as_deref())),
        Arc::new(a.iter().map(|a| a.longitude).collect::<Float64Array>()),
        Arc::new(a.iter().map(|a| a.latitude).collect::<Float64Array>()),
        times(alarms.iter().map(|s| Some(s.received_at))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The MobilePosition reports of the devices inside `scope`, in WGS-84 and GCJ-02 (for
/// web maps, as `hub.cameras`).
pub async fn positions_batch(
    catalog: &Catalog,
    settings: &CameraSettings,
    now: i64,
    scope: Option<Scope>,
) -> Result<RecordBatch> {
    let inside = scoped_ids(catalog, settings, now, scope).await?;
    let positions = every_page(
        |after| catalog.camera_positions(after, PAGE),
        |p| p.seq,
        |p| {
            inside
                .as_ref()
                .is_none_or(|ids| ids.contains(&p.position.id))
        },
    )
    .await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("camera_id", DataType::Utf8, false),
        Field::new("county_code", DataType::Utf8, true),
        Field::new("at", utc_millis(), false),
        Field::new("longitude", DataType::Float64, false),
        Field::new("latitude", DataType::Float64, false),
        Field::new("gcj02_longitude", DataType::Float64, false),
        Field::new("gcj02_latitude", DataType::Float64, false),
        Field::new("speed", DataType::Float64, true),
        Field::new("direction", DataType::Float64, true),
        Field::new("altitude", DataType::Float64, true),
        Field::new("received_at", utc_millis(), false),
    ]));
    let p: Vec<&CameraPosition> = positions.iter().map(|stored| &stored.position).collect();
    let gcj: Vec<(f64, f64)> = p
        .iter()
        .map(|p| wgs84_to_gcj02(p.longitude, p.latitude))
        .collect();
    let numbers = |f: fn(&CameraPosition) -> Option<f64>| -> ArrayRef {
        Arc::new(p.iter().map(|p| f(p)).collect::<Float64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            positions
                .iter()
                .map(|s| Some(s.seq))
                .collect::<Int64Array>(),
        ),
        strings(p.iter().map(|p| Some(p.id.as_str()))),
        owned_strings(p.iter().map(|p| county_of(&p.id))),
        times(p.iter().map(|p| Some(p.at))),
        numbers(|p| Some(p.longitude)),
        numbers(|p| Some(p.latitude)),
        Arc::new(gcj.iter().map(|g| Some(g.0)).collect::<Float64Array>()),
        Arc::new(gcj.iter().map(|g| Some(g.1)).collect::<Float64Array>()),
        numbers(|p| p.speed),
        numbers(|p| p.direction),
        numbers(|p| p.altitude),
        times(positions.iter().map(|s| Some(s.received_at))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
