//! What devices report about the world rather than about themselves: GB/T 28181 alarms
//! (报警, `Notify` with `CmdType` `Alarm`) and mobile positions (`MobilePosition`), as an API
//! batch item or a Kafka message carries them.
//!
//! Both are kept as history (`hub.camera_alarms`, `hub.camera_positions`) keyed by the
//! registered channel or device that sent them, so that they join with `hub.cameras` and
//! are seen by exactly those who see the camera. A report sent twice (a retried request, a
//! platform re-sending after a reconnect) is kept once: an alarm is known by its id, time,
//! method and type, a position by its id and time.

use serde::Deserialize;
use serde_json::Value;

use super::signal::report_time;
use super::{FieldError, coordinate_pair};
use crate::gb28181;

/// GB/T 28181 AlarmPriority: 1 一级警情 (most urgent) ... 4 四级警情.
pub fn alarm_priority_name(priority: u8) -> Option<&'static str> {
    Some(match priority {
        1 => "一级警情",
        2 => "二级警情",
        3 => "三级警情",
        4 => "四级警情",
        _ => return None,
    })
}

/// GB/T 28181 AlarmMethod.
pub fn alarm_method_name(method: u8) -> Option<&'static str> {
    Some(match method {
        1 => "电话报警",
        2 => "设备报警",
        3 => "短信报警",
        4 => "GPS报警",
        5 => "视频报警",
        6 => "设备故障报警",
        7 => "其他报警",
        _ => return None,
    })
}

/// The AlarmType names of a method: the standard defines types for device (2), video (5)
/// and device-fault (6) alarms only; 13 (image occlusion) is GB/T 28181-2022's.
fn alarm_types(method: u8) -> &'static [&'static str] {
    match method {
        2 => &[
            "视频丢失报警",
            "设备防拆报警",
            "存储设备磁盘满报警",
            "设备高温报警",
            "设备低温报警",
        ],
        5 => &[
            "人工视频报警",
            "运动目标检测报警",
            "遗留物检测报警",
            "物体移除检测报警",
            "绊线检测报警",
            "入侵检测报警",
            "逆行检测报警",
            "徘徊检测报警",
            "流量统计报警",
            "密度检测报警",
            "视频异常检测报警",
            "快速移动报警",
            "图像遮挡报警",
        ],
        6 => &["存储设备磁盘故障报警", "存储设备风扇故障报警"],
        _ => &[],
    }
}

/// The name of AlarmType `alarm_type` of `method`.
pub fn alarm_type_name(method: u8, alarm_type: u8) -> Option<&'static str> {
    let index = usize::from(alarm_type).checked_sub(1)?;
    alarm_types(method).get(index).copied()
}

const MAX_DESCRIPTION: usize = 1024;

/// How many rows one retention delete removes: a first purge of a long history runs as
/// many short transactions instead of one that holds the catalog's writer.
pub const PURGE_CHUNK: usize = 10_000;

/// One alarm: who raised it, when, how urgent, by what method and of what type.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraAlarm {
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    pub priority: u8,
    pub method: u8,
    pub alarm_type: Option<u8>,
    pub description: Option<String>,
    /// WGS-84, where the alarm happened (a GPS alarm's position).
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
}

/// One MobilePosition report of a mobile device (a patrol car, a body camera).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraPosition {
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    /// WGS-84.
    pub longitude: f64,
    pub latitude: f64,
    /// km/h.
    pub speed: Option<f64>,
    /// Degrees clockwise from north, 0 to 360.
    pub direction: Option<f64>,
    /// Metres.
    pub altitude: Option<f64>,
}

/// An alarm as kept: the order it was received in and when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlarm {
    pub seq: i64,
    pub received_at: i64,
    pub alarm: CameraAlarm,
}

/// A position as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPosition {
    pub seq: i64,
    pub received_at: i64,
    pub position: CameraPosition,
}

/// An alarm or a position.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraReport {
    Alarm(CameraAlarm),
    Position(CameraPosition),
}

impl CameraReport {
    pub fn id(&self) -> &str {
        match self {
            CameraReport::Alarm(alarm) => &alarm.id,
            CameraReport::Position(position) => &position.id,
        }
    }
}

/// Which kind of report a batch or a feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Alarm,
    Position,
}

impl ReportKind {
    /// What a caller refused the role is told it may not do.
    pub fn doing(self) -> &'static str {
        match self {
            ReportKind::Alarm => "sending camera alarms",
            ReportKind::Position => "sending camera positions",
        }
    }

    /// `alarm` or `position`, as metrics label them.
    pub fn name(self) -> &'static str {
        match self {
            ReportKind::Alarm => "alarm",
            ReportKind::Position => "position",
        }
    }

    pub fn parse(self, value: Value, now: i64) -> Result<CameraReport, FieldError> {
        match self {
            ReportKind::Alarm => parse_alarm(value, now).map(CameraReport::Alarm),
            ReportKind::Position => parse_position(value, now).map(CameraReport::Position),
        }
    }
}

/// An alarm as sent: every field is read as JSON first so that a wrong type names its
/// field, then checked against the code tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmItem {
    id: Option<Value>,
    at: Option<Value>,
    priority: Option<u8>,
    method: Option<u8>,
    #[serde(rename = "type")]
    alarm_type: Option<u8>,
    description: Option<String>,
    longitude: Option<f64>,
    latitude: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionItem {
    id: Option<Value>,
    at: Option<Value>,
    longitude: Option<f64>,
    latitude: Option<f64>,
    speed: Option<f64>,
    direction: Option<f64>,
    altitude: Option<f64>,
}

/// Reads `value` as `T`, naming the field at fault (an unknown one, or one of the wrong type).
fn fields<T: serde::de::DeserializeOwned>(value: Value, allowed: &str) -> Result<T, FieldError> {
    if !value.is_object() {
        return Err(FieldError::new("item", "each item is a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = match err.path().to_string().as_str() {
            "." => "item".to_string(),
            "" => "\"\"".to_string(),
            path => path.to_string(),
        };
        let message = err.into_inner().to_string();
        if message.starts_with("unknown field") {
            FieldError::new(field, format!("unknown field; an item has {allowed}"))
        } else {
            FieldError::new(field, message)
        }
    })
}

/// The 20-digit id of the reporting channel or device.
fn reporter_id(value: Option<Value>) -> Result<String, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::new("id", "missing")),
        Some(Value::String(id)) => {
            gb28181::parse(&id)?;
            Ok(id)
        }
        Some(other) => Err(FieldError::new(
            "id",
            format!("{other} is not a string; write the 20 digits in quotes"),
        )),
    }
}

fn required<T>(value: Option<T>, field: &str, what: &str) -> Result<T, FieldError> {
    value.ok_or_else(|| FieldError::new(field, format!("missing; {what}")))
}

/// Reads one alarm `{id, priority, method, type?, at, description?, longitude?, latitude?}`.
pub fn parse_alarm(value: Value, now: i64) -> Result<CameraAlarm, FieldError> {
    let item: AlarmItem = fields(
        value,
        "id, priority, method, type, at, description, longitude, latitude",
    )?;
    let id = reporter_id(item.id)?;
    let at = report_time(
        &required(
            item.at.filter(|at| !at.is_null()),
            "at",
            "the alarm's time (AlarmTime), RFC 3339 or Unix ms",
        )?,
        now,
    )?;
    let priority = required(item.priority, "priority", "AlarmPriority 1 to 4")?;
    if alarm_priority_name(priority).is_none() {
        return Err(FieldError::new(
            "priority",
            format!("{priority} is not a GB/T 28181 AlarmPriority (1 一级警情 ... 4 四级警情)"),
        ));
    }
    let method = required(item.method, "method", "AlarmMethod 1 to 7")?;
    if alarm_method_name(method).is_none() {
        return Err(FieldError::new(
            "method",
            format!(
                "{method} is not a GB/T 28181 AlarmMethod (1 phone, 2 device, 3 SMS, 4 GPS, \
                 5 video, 6 device fault, 7 other)"
            ),
        ));
    }
    if let Some(alarm_type) = item.alarm_type
        && alarm_type_name(method, alarm_type).is_none()
    {
        let types = alarm_types(method);
        let message = if types.is_empty() {
            format!(
                "AlarmType is defined only for methods 2, 5 and 6, not for method {method}; \
                 leave it out"
            )
        } else {
            format!(
                "{alarm_type} is not an AlarmType of method {method} ({}): use 1 to {}",
                alarm_method_name(method).unwrap_or_default(),
                types.len()
            )
        };
        return Err(FieldError::new("type", message));
    }
    if let Some(description) = &item.description
        && description.chars().count() > MAX_DESCRIPTION
    {
        return Err(FieldError::new(
            "description",
            format!("longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    let (longitude, latitude) = match coordinate_pair(item.longitude, item.latitude)? {
        Some((longitude, latitude)) => (Some(longitude), Some(latitude)),
        None => (None, None),
    };
    Ok(CameraAlarm {
        id,
        at,
        priority,
        method,
        alarm_type: item.alarm_type,
        description: item.description.filter(|d| !d.is_empty()),
        longitude,
        latitude,
    })
}

/// Reads one position `{id, at, longitude, latitude, speed?, direction?, altitude?}`.
pub fn parse_position(value: Value, now: i64) -> Result<CameraPosition, FieldError> {
    let item: PositionItem = fields(
        value,
        "id, at, longitude, latitude, speed, direction, altitude",
    )?;
    let id = reporter_id(item.id)?;
    let at = report_time(
        &required(
            item.at.filter(|at| !at.is_null()),
            "at",
            "the position's time (Time), RFC 3339 or Unix ms",
        )?,
        now,
    )?;
    let longitude = required(item.longitude, "longitude", "WGS-84 degrees")?;
    let latitude = required(item.latitude, "latitude", "WGS-84 degrees")?;
    coordinate_pair(Some(longitude), Some(latitude))?;
    // NaN is in no range: every check below refuses it too.
    let speed = item.speed;
    if let Some(speed) = speed
        && !(0.0..=1_000.0).contains(&speed)
    {
        return Err(FieldError::new(
            "speed",
            format!("{speed} km/h is outside 0..1000"),
        ));
    }
    let direction = item.direction;
    if let Some(direction) = direction
        && !(0.0..=360.0).contains(&direction)
    {
        return Err(FieldError::new(
            "direction",
            format!("{direction} is outside 0..360 (degrees clockwise from north)"),
        ));
    }
    let altitude = item.altitude;
    if let Some(altitude) = altitude
        && !(-1_000.0..=10_000.0).contains(&altitude)
    {
        return Err(FieldError::new(
            "altitude",
            format!("{altitude} m is outside -1000..10000"),
        ));
    }
    Ok(CameraPosition {
        id,
        at,
        longitude,
        latitude,
        speed,
        direction,
        altitude,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CAMERA: &str = "51102500001320000017";
    /// 2026-11-28T08:00:00+08:00.
    const NOW: i64 = 1_795_824_000_000;

    fn alarm_error(value: Value) -> (String, String) {
        let err = parse_alarm(value, NOW).expect_err("refused");
        (err.field, err.message)
    }

    fn position_error(value: Value) -> (String, String) {
        let err = parse_position(value, NOW).expect_err("refused");
        (err.field, err.message)
    }

    #[test]
    fn an_alarm_reads_its_fields_and_the_standards_local_time() {
        let alarm = parse_alarm(
            json!({"id": CAMERA, "priority": 1, "method": 5, "type": 6,
                   "at": "2026-11-28T07:59:00", "description": "周界入侵",
                   "longitude": 104.85, "latitude": 29.77}),
            NOW,
        )
        .expect("valid");
        assert_eq!(alarm.at, NOW - 60_000, "GB/T 28181 times are Beijing time");
        assert_eq!(
            (alarm.priority, alarm.method, alarm.alarm_type),
            (1, 5, Some(6))
        );
        assert_eq!(alarm_type_name(5, 6), Some("入侵检测报警"));
        assert_eq!(alarm.description.as_deref(), Some("周界入侵"));
        let plain = parse_alarm(
            json!({"id": CAMERA, "priority": 4, "method": 2, "at": NOW}),
            NOW,
        )
        .expect("valid");
        assert_eq!((plain.alarm_type, plain.longitude), (None, None));
    }

    #[test]
    fn a_bad_alarm_names_its_field() {
        let base = || json!({"id": CAMERA, "priority": 2, "method": 5, "type": 2, "at": NOW});
        let with = |key: &str, value: Value| {
            let mut item = base();
            item[key] = value;
            item
        };
        let without = |key: &str| {
            let mut item = base();
            item.as_object_mut().expect("object").remove(key);
            item
        };
        assert_eq!(alarm_error(without("id")).0, "id");
        assert_eq!(alarm_error(with("id", json!("123"))).0, "id");
        assert_eq!(alarm_error(with("id", json!(5_110_250_000_i64))).0, "id");
        assert_eq!(alarm_error(without("at")).0, "at");
        assert_eq!(alarm_error(with("at", json!("yesterday"))).0, "at");
        assert_eq!(alarm_error(with("at", json!(NOW + 3_600_000))).0, "at");
        assert_eq!(alarm_error(without("priority")).0, "priority");
        assert_eq!(alarm_error(with("priority", json!(5))).0, "priority");
        assert_eq!(alarm_error(with("priority", json!("high"))).0, "priority");
        assert_eq!(alarm_error(with("method", json!(0))).0, "method");
        assert_eq!(alarm_error(with("type", json!(14))).0, "type");
        let (field, message) = alarm_error(json!(
            {"id": CAMERA, "priority": 2, "method": 1, "type": 1, "at": NOW}));
        assert_eq!(field, "type");
        assert!(message.contains("only for methods 2, 5 and 6"), "{message}");
        assert_eq!(alarm_error(with("longitude", json!(104.8))).0, "latitude");
        let mut far = with("longitude", json!(200.0));
        far["latitude"] = json!(29.0);
        assert_eq!(alarm_error(far).0, "longitude");
        assert_eq!(
            alarm_error(with("description", json!("长".repeat(1025)))).0,
            "description"
        );
        let (field, message) = alarm_error(with("level", json!(1)));
        assert_eq!(field, "level");
        assert!(message.contains("an item has id, priority"), "{message}");
        assert_eq!(alarm_error(json!([1, 2])).0, "item");
    }

    #[test]
    fn a_position_reads_its_fields_and_refuses_what_no_device_reports() {
        let position = parse_position(
            json!({"id": CAMERA, "at": "2026-11-28T08:00:00+08:00", "longitude": 105.05,
                   "latitude": 29.58, "speed": 42.5, "direction": 270.0, "altitude": 352.0}),
            NOW,
        )
        .expect("valid");
        assert_eq!(position.at, NOW);
        assert_eq!(
            (position.speed, position.direction, position.altitude),
            (Some(42.5), Some(270.0), Some(352.0))
        );
        let base = || json!({"id": CAMERA, "at": NOW, "longitude": 105.05, "latitude": 29.58});
        let with = |key: &str, value: Value| {
            let mut item = base();
            item[key] = value;
            item
        };
        assert!(parse_position(base(), NOW).is_ok());
        let mut no_latitude = base();
        no_latitude
            .as_object_mut()
            .expect("object")
            .remove("latitude");
        assert_eq!(position_error(no_latitude).0, "latitude");
        assert_eq!(position_error(with("latitude", json!(91.0))).0, "latitude");
        assert_eq!(position_error(with("speed", json!(-3.0))).0, "speed");
        assert_eq!(
            position_error(with("direction", json!(361.0))).0,
            "direction"
        );
        assert_eq!(position_error(with("altitude", json!(1e9))).0, "altitude");
        assert_eq!(position_error(with("speed", json!("fast"))).0, "speed");
        assert_eq!(position_error(with("heading", json!(1))).0, "heading");
    }
}
