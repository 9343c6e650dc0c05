//! Camera channels of the city's GB/T 28181 video network: the record a platform reports,
//! the curated overrides the hub's operators keep beside it, validation of both, and the
//! derived values answers carry (GCJ-02 coordinates for web maps, stream URLs from a
//! media-server template, record completeness).
//!
//! Layout: this file holds the channel record and its fields; [`status`] the live-status
//! state machine; [`registry`] the operations front doors call; [`signal`] keepalives and NOTIFY events as messages carry them; [`geo`]
//! the GCJ-02 transform; [`streams`] stream URLs and media-server templates. Ids are
//! [`crate::gb28181`].
//!
//! Reported and curated values are stored apart so that a platform re-reporting a channel
//! never erases what an operator corrected; the curated value wins wherever it is set.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::camera::status::{Event, LiveState, Liveness, Status};
use crate::gb28181::{self, DeviceId};

pub mod alarms;
pub mod changes;
pub mod daily;
pub mod geo;
pub mod registry;
pub mod rules;
pub mod signal;
pub mod status;
pub mod streams;
pub mod tally;

pub use alarms::{CameraAlarm, CameraPosition, CameraReport, ReportKind};
pub use geo::wgs84_to_gcj02;
pub use registry::CameraRegistry;
pub use signal::{CameraSignal, SignalKind, parse_signal};
pub use streams::{StreamTemplates, Streams};

/// The descriptive fields of a channel (everything but its id). Every field is optional: a
/// platform reports what it knows, an operator curates what it corrects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub civil_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// WGS-84, as GB/T 28181 reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptz_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_light_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<Streams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A rejected channel record: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// The item is well-formed but not the caller's to change (another department's).
    pub forbidden: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            forbidden: false,
        }
    }

    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            forbidden: true,
            ..Self::new(field, message)
        }
    }
}

impl From<gb28181::IdError> for FieldError {
    fn from(err: gb28181::IdError) -> Self {
        FieldError::new("id", err.to_string())
    }
}

/// A WGS-84 position given as two optional fields: both or neither, each in range.
pub(crate) fn coordinate_pair(
    longitude: Option<f64>,
    latitude: Option<f64>,
) -> Result<Option<(f64, f64)>, FieldError> {
    match (longitude, latitude) {
        (Some(lon), _) if !(-180.0..=180.0).contains(&lon) => Err(FieldError::new(
            "longitude",
            format!("{lon} is outside -180..180 (WGS-84 degrees)"),
        )),
        (_, Some(lat)) if !(-90.0..=90.0).contains(&lat) => Err(FieldError::new(
            "latitude",
            format!("{lat} is outside -90..90 (WGS-84 degrees)"),
        )),
        (Some(_), None) => Err(FieldError::new(
            "latitude",
            "missing: give longitude and latitude together",
        )),
        (None, Some(_)) => Err(FieldError::new(
            "longitude",
            "missing: give longitude and latitude together",
        )),
        (Some(lon), Some(lat)) => Ok(Some((lon, lat))),
        (None, None) => Ok(None),
    }
}

/// Code-table ranges of the channel attributes (`shared/domain/gb28181.md`).
const CODE_FIELDS: &[(&str, &[u8], &str)] = &[
    (
        "ptz_type",
        &[1, 2, 3, 4, 5, 6, 7],
        "1 dome ... 7 multi-lens split",
    ),
    (
        "position_type",
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "1 inter-provincial checkpoint ... 10 traffic artery",
    ),
    ("room_type", &[1, 2], "1 outdoor, 2 indoor"),
    (
        "use_type",
        &[1, 2, 3],
        "1 public order, 2 traffic, 3 key area",
    ),
    (
        "supply_light_type",
        &[1, 2, 3, 4, 9],
        "1 none, 2 infrared, 3 white light, 4 laser, 9 other",
    ),
];

const MAX_TEXT: usize = 256;
const MAX_URL: usize = 2048;
const MAX_TAGS: usize = 32;

impl ChannelFields {
    /// Reads the fields of a JSON object (without `id`), naming the field of any type error.
    pub fn from_json(object: Map<String, Value>) -> Result<Self, FieldError> {
        let value = Value::Object(object);
        serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            // Unknown keys are named by the path; the empty key as the JSON that wrote it.
            let field = match path.as_str() {
                "." => "channel",
                "" => "\"\"",
                path => path,
            };
            FieldError::new(field, message)
        })
    }

    /// Checks every field against GB/T 28181's code tables and sane bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(parent) = &self.parent_id {
            gb28181::parse(parent).map_err(|err| FieldError::new("parent_id", err.to_string()))?;
        }
        if let Some(department) = &self.department {
            crate::model::validate_department_code(department)
                .map_err(|err| FieldError::new("department", err.to_string()))?;
        }
        if let Some(code) = &self.civil_code
            && (!(2..=12).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(FieldError::new(
                "civil_code",
                format!("{code:?} is not a civil code (2 to 12 digits, e.g. 511025)"),
            ));
        }
        for (field, text) in [
            ("name", &self.name),
            ("address", &self.address),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("resolution", &self.resolution),
        ] {
            if let Some(text) = text
                && text.chars().count() > MAX_TEXT
            {
                return Err(FieldError::new(
                    field,
                    format!("longer than {MAX_TEXT} characters"),
                ));
            }
        }
        coordinate_pair(self.longitude, self.latitude)?;
        for (field, allowed, meaning) in CODE_FIELDS {
            if let Some(code) = self.code(field)
                && !allowed.contains(&code)
            {
                return Err(FieldError::new(
                    *field,
                    format!("{code} is not a GB/T 28181 {field} ({meaning})"),
                ));
            }
        }
        if let Some(streams) = &self.streams {
            for (kind, url) in streams.urls() {
                if let Some(url) = url
                    && (url.len() > MAX_URL || !url.contains("://"))
                {
                    return Err(FieldError::new(
                        format!("streams.{kind}"),
                        format!(
                            "{url:?} is not a URL (scheme://host/path, at most {MAX_URL} bytes)"
                        ),
                    ));
                }
            }
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(FieldError::new(
                    "tags",
                    format!("{} tags; at most {MAX_TAGS}", tags.len()),
                ));
            }
            if let Some(index) = tags
                .iter()
                .position(|t| t.trim().is_empty() || t.chars().count() > 64)
            {
                return Err(FieldError::new(
                    format!("tags[{index}]"),
                    "a tag is 1 to 64 characters",
                ));
            }
        }
        Ok(())
    }

    fn code(&self, field: &str) -> Option<u8> {
        match field {
            "ptz_type" => self.ptz_type,
            "position_type" => self.position_type,
            "room_type" => self.room_type,
            "use_type" => self.use_type,
            "supply_light_type" => self.supply_light_type,
            _ => None,
        }
    }

    /// Each field set here, else the one of `reported`: what answers show.
    pub fn over(&self, reported: &ChannelFields) -> ChannelFields {
        fn pick<T: Clone>(curated: &Option<T>, reported: &Option<T>) -> Option<T> {
            curated.clone().or_else(|| reported.clone())
        }
        // Coordinates are one value: a curated position replaces both numbers.
        let (longitude, latitude) = if self.longitude.is_some() {
            (self.longitude, self.latitude)
        } else {
            (reported.longitude, reported.latitude)
        };
        ChannelFields {
            parent_id: pick(&self.parent_id, &reported.parent_id),
            name: pick(&self.name, &reported.name),
            department: pick(&self.department, &reported.department),
            civil_code: pick(&self.civil_code, &reported.civil_code),
            address: pick(&self.address, &reported.address),
            longitude,
            latitude,
            manufacturer: pick(&self.manufacturer, &reported.manufacturer),
            model: pick(&self.model, &reported.model),
            ptz_type: pick(&self.ptz_type, &reported.ptz_type),
            position_type: pick(&self.position_type, &reported.position_type),
            room_type: pick(&self.room_type, &reported.room_type),
            use_type: pick(&self.use_type, &reported.use_type),
            supply_light_type: pick(&self.supply_light_type, &reported.supply_light_type),
            resolution: pick(&self.resolution, &reported.resolution),
            streams: match (&self.streams, &reported.streams) {
                (Some(curated), Some(reported)) => Some(curated.or(reported)),
                (curated, reported) => pick(curated, reported),
            },
            tags: pick(&self.tags, &reported.tags),
        }
    }

    /// 建档: the basic record is complete when name, location, camera type and owner are filled.
    pub fn is_complete(&self) -> bool {
        self.name.as_deref().is_some_and(|n| !n.trim().is_empty())
            && self.longitude.is_some()
            && self.latitude.is_some()
            && self.ptz_type.is_some()
            && self.department.is_some()
    }
}

/// Takes the `id` out of a message object: a string, or absent (`null` counts as absent).
fn take_id(object: &mut Map<String, Value>) -> Result<Option<String>, FieldError> {
    match object.remove("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(id)),
        Some(other) => Err(FieldError::new(
            "id",
            format!("{other} is not a string; write the 20 digits in quotes"),
        )),
    }
}

/// One channel record as a platform sends it: `{id, ...fields}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelReport {
    pub id: DeviceId,
    pub fields: ChannelFields,
}

impl ChannelReport {
    /// Reads and validates one JSON object. The id may also come from the URL (`PUT
    /// /cameras/{id}`), in which case a differing `id` in the body is an error.
    pub fn from_json(value: Value, url_id: Option<&str>) -> Result<Self, FieldError> {
        let Value::Object(mut object) = value else {
            return Err(FieldError::new(
                "channel",
                "a channel is a JSON object {\"id\": \"20 digits\", ...}",
            ));
        };
        let body_id = take_id(&mut object)?;
        let id = match (url_id, body_id) {
            (Some(url), Some(body)) if url != body => {
                return Err(FieldError::new(
                    "id",
                    format!("the body names {body}, the URL {url}; they must agree"),
                ));
            }
            (Some(url), _) => url.to_string(),
            (None, Some(body)) => body,
            (None, None) => return Err(FieldError::new("id", "missing")),
        };
        let id = gb28181::parse(&id)?;
        let fields = ChannelFields::from_json(object)?;
        fields.validate()?;
        if fields.parent_id.as_deref() == Some(id.id.as_str()) {
            return Err(FieldError::new(
                "parent_id",
                "a channel cannot be its own parent",
            ));
        }
        Ok(Self { id, fields })
    }
}

/// PositionType names (`shared/domain/gb28181.md`).
pub fn position_type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "省际检查站 inter-provincial checkpoint",
        2 => "党政机关 party/government organs",
        3 => "车站码头 stations and docks",
        4 => "中心广场 central square",
        5 => "体育场馆 stadium",
        6 => "商业中心 commercial centre",
        7 => "宗教场所 religious site",
        8 => "校园周边 school surroundings",
        9 => "治安复杂区域 complex public-order area",
        10 => "交通干线 traffic artery",
        _ => return None,
    })
}

/// How the registry judges liveness and derives stream URLs, from `[cameras]`.
#[derive(Debug, Clone)]
pub struct CameraSettings {
    pub liveness: Liveness,
    pub templates: StreamTemplates,
    /// Days of daily roll-ups kept.
    pub daily_retention_days: u32,
    /// Days of alarms kept (by the time they happened).
    pub alarm_retention_days: u32,
    /// Days of mobile positions kept.
    pub position_retention_days: u32,
    /// Days of catalogue changes kept for the change feed.
    pub change_retention_days: u32,
}

impl Default for CameraSettings {
    fn default() -> Self {
        Self::from_config(&cityhub_config::CamerasConfig::default())
    }
}

impl CameraSettings {
    pub fn from_config(config: &cityhub_config::CamerasConfig) -> Self {
        let template = |text: &str| (!text.is_empty()).then(|| text.to_string());
        Self {
            liveness: Liveness {
                interval_ms: config.keepalive_interval_secs as i64 * 1000,
                missed: config.offline_after_missed as i64,
            },
            templates: StreamTemplates(Streams {
                rtsp: template(&config.rtsp_template),
                rtmp: template(&config.rtmp_template),
                flv: template(&config.flv_template),
                hls: template(&config.hls_template),
                webrtc: template(&config.webrtc_template),
            }),
            daily_retention_days: config.daily_retention_days as u32,
            alarm_retention_days: config.alarm_retention_days as u32,
            position_retention_days: config.position_retention_days as u32,
            change_retention_days: config.change_retention_days as u32,
        }
    }

    /// A channel's stream URLs: explicit ones, else derived from the media-server template.
    pub fn streams(&self, record: &CameraRecord) -> Streams {
        let derived = self
            .templates
            .derive(&record.id.id, record.fields.parent_id.as_deref());
        match &record.fields.streams {
            Some(explicit) => explicit.or(&derived),
            None => derived,
        }
    }
}

/// Now, in the Unix milliseconds the registry keeps.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A channel as the registry holds it: shown values, decoded id and liveness evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraRecord {
    pub id: DeviceId,
    /// Curated over reported.
    pub fields: ChannelFields,
    pub complete: bool,
    pub live: LiveState,
    /// Unix milliseconds.
    pub registered_at: i64,
    pub updated_at: i64,
}

/// Both sources of a channel's values, for the single-channel answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSources {
    pub reported: ChannelFields,
    pub curated: ChannelFields,
}

/// A registration's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registered {
    Created,
    Updated,
    /// A deleted channel registered again.
    Restored,
}

use crate::region::Scope;

/// A search of the registry. Results are ordered by id; `after` is the cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraQuery {
    /// A GB/T 2260 code at any level: 51 (province), 511000 (city), 511025 (county).
    pub region: Option<String>,
    pub status: Option<Status>,
    pub industry: Option<u8>,
    pub type_code: Option<u16>,
    pub department: Option<String>,
    /// min longitude, min latitude, max longitude, max latitude (WGS-84).
    pub bbox: Option<[f64; 4]>,
    pub after: Option<String>,
    pub limit: usize,
    /// The caller's region scope: channels outside it are not found.
    pub scope: Option<Scope>,
}

/// How a region scope selects channels: a county (or the city) by the region of the
/// channel's id; a town, which ids do not name, by the channel's civil code (reported by
/// its platform or curated by an operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraScope {
    /// `[low, high)` ranges of the id's current region code.
    Region(Vec<(String, String)>),
    /// `[low, high)` ranges of the civil code.
    CivilCode(Vec<(String, String)>),
}

impl CameraScope {
    pub fn of(scope: &Scope) -> Self {
        if scope.region.level == "town" {
            CameraScope::CivilCode(scope.ranges())
        } else {
            CameraScope::Region(scope.ranges())
        }
    }

    /// Whether a channel lies inside the scope.
    pub fn contains(&self, record: &CameraRecord) -> bool {
        self.contains_codes(
            record.id.current_region_code,
            record.fields.civil_code.as_deref(),
        )
    }

    /// The SQL condition on `column_prefix`'s `region_code` or `civil_code` (`c.`, or empty
    /// for `camera_live`, which has no civil code: then a subquery on `cameras`).
    pub fn sql(&self, column_prefix: &str) -> String {
        let ranges = |column: &str, ranges: &[(String, String)]| {
            let alternatives: Vec<String> = ranges
                .iter()
                .map(|(low, high)| format!("({column} >= '{low}' AND {column} < '{high}')"))
                .collect();
            format!("({})", alternatives.join(" OR "))
        };
        // The bounds are digits from the region table, never caller text.
        match self {
            CameraScope::Region(r) => ranges(&format!("{column_prefix}region_code"), r),
            CameraScope::CivilCode(r) if column_prefix.is_empty() => format!(
                "id IN (SELECT id FROM cameras WHERE {})",
                ranges("civil_code", r)
            ),
            CameraScope::CivilCode(r) => ranges(&format!("{column_prefix}civil_code"), r),
        }
    }
}

impl CameraScope {
    /// The SQL condition on a table that holds channel ids in `id_column` and the id's
    /// region in `region_code` (the daily roll-ups).
    pub fn sql_by_id(&self, id_column: &str) -> String {
        match self {
            CameraScope::Region(_) => self.sql(""),
            CameraScope::CivilCode(_) => {
                let condition = self.sql("c.");
                format!("{id_column} IN (SELECT c.id FROM cameras c WHERE {condition})")
            }
        }
    }
}

impl CameraQuery {
    /// The id prefix a region code stands for: trailing `00` pairs are levels not named
    /// (511000 → 5110, all of 内江; 510000 → 51).
    pub fn region_prefix(code: &str) -> String {
        crate::region::code_prefix(code).to_string()
    }
}

/// What statistics are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    Region,
    Industry,
    PositionType,
    Type,
    Department,
}

impl StatsGroup {
    pub const NAMES: &'static str = "region, industry, position_type, type or department";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "region" => Some(StatsGroup::Region),
            "industry" => Some(StatsGroup::Industry),
            "position_type" => Some(StatsGroup::PositionType),
            "type" => Some(StatsGroup::Type),
            "department" => Some(StatsGroup::Department),
            _ => None,
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            StatsGroup::Region => "region_code",
            StatsGroup::Industry => "industry",
            StatsGroup::PositionType => "position_type",
            StatsGroup::Type => "type_code",
            StatsGroup::Department => "department",
        }
    }
}

/// The time a statistic's availability covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    /// The last hours up to now, walked from the status history.
    Hours(i64),
    /// The last whole Beijing-time days, through yesterday, from the daily roll-ups.
    LastDays(u32),
    /// Whole Beijing-time days from one date through another (yesterday if none), from the
    /// daily roll-ups: a month reported to the province.
    Dates {
        from: chrono::NaiveDate,
        to: Option<chrono::NaiveDate>,
    },
}

impl StatsWindow {
    /// The window that `window_hours`, `days` or `from`/`to` name (24 hours if none).
    pub fn from_params(
        hours: Option<&str>,
        days: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, FieldError> {
        let date = |field: &str, text: &str| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                FieldError::new(field, format!("{text:?} is not a date like 2026-11-30"))
            })
        };
        if hours.is_some() && (days.is_some() || from.is_some() || to.is_some()) {
            return Err(FieldError::new(
                "window_hours",
                "give either window_hours or days or from/to, not two of them",
            ));
        }
        if days.is_some() && (from.is_some() || to.is_some()) {
            return Err(FieldError::new(
                "days",
                "give either days or from/to, not both",
            ));
        }
        if let Some(text) = days {
            return match text.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(StatsWindow::LastDays(n)),
                _ => Err(FieldError::new(
                    "days",
                    format!("{text:?} is not a number of days (1 or more)"),
                )),
            };
        }
        match (from, to) {
            (Some(from), to) => {
                return Ok(StatsWindow::Dates {
                    from: date("from", from)?,
                    to: to.map(|to| date("to", to)).transpose()?,
                });
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    "from",
                    "missing: to needs a first day (from=2026-11-01)",
                ));
            }
            (None, None) => {}
        }
        let hours = match hours {
            None => 24,
            Some(text) => text.parse::<i64>().map_err(|_| {
                FieldError::new("window_hours", format!("{text:?} is not a number of hours"))
            })?,
        };
        if !(1..=24 * 366).contains(&hours) {
            return Err(FieldError::new(
                "window_hours",
                "must be between 1 and 8784 (a year)",
            ));
        }
        Ok(StatsWindow::Hours(hours))
    }
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CameraStats {
    /// The group's key as text (`511025`, `5`, `gongan`), `null` for channels without one.
    pub key: Option<String>,
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    pub unknown: u64,
    /// 在线率: online / total.
    pub online_rate: f64,
    /// 完好率: the fraction of the window the group's channels were online.
    pub availability: f64,
    /// Channels with a complete basic record.
    pub complete: u64,
    /// 建档率: complete / total.
    pub completeness: f64,
}

/// A channel's status history brought in whole (from the platform the hub replaces, or the
/// demo city), with the evidence that holds at its end.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedHistory {
    pub id: String,
    /// In order; each starts where the previous ended, the first from the channel's
    /// recorded status.
    pub transitions: Vec<crate::camera::status::Transition>,
    /// The evidence after the last transition; its recorded status must be the last one's.
    pub live: LiveState,
}

/// What a Kafka feed into the registry carries; its `dataset` in the configuration is
/// `hub.cameras`, `hub.camera_keepalives`, `hub.camera_events`, `hub.camera_alarms` or
/// `hub.camera_positions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraFeed {
    /// Channel records, as `PUT /api/v1/cameras/{id}` takes them (with `id`).
    Registrations,
    /// `{id, at?}`
    Keepalives,
    /// `{id, event, at?, channel?}`
    Events,
    /// GB/T 28181 alarms `{id, priority, method, type?, at, ...}`.
    Alarms,
    /// MobilePosition reports `{id, at, longitude, latitude, ...}`.
    Positions,
}

impl CameraFeed {
    pub const DATASETS: &'static str = "hub.cameras, hub.camera_keepalives, hub.camera_events, \
                                        hub.camera_alarms or hub.camera_positions";

    /// The feed a configured `dataset` names, if it is one of the registry's.
    pub fn of_dataset(dataset: &str) -> Option<Self> {
        match dataset {
            "hub.cameras" => Some(CameraFeed::Registrations),
            "hub.camera_keepalives" => Some(CameraFeed::Keepalives),
            "hub.camera_events" => Some(CameraFeed::Events),
            "hub.camera_alarms" => Some(CameraFeed::Alarms),
            "hub.camera_positions" => Some(CameraFeed::Positions),
            _ => None,
        }
    }

    pub fn dataset(self) -> &'static str {
        match self {
            CameraFeed::Registrations => "hub.cameras",
            CameraFeed::Keepalives => "hub.camera_keepalives",
            CameraFeed::Events => "hub.camera_events",
            CameraFeed::Alarms => "hub.camera_alarms",
            CameraFeed::Positions => "hub.camera_positions",
        }
    }

    /// Reads one message's JSON into the operation it asks for.
    pub fn parse(self, value: Value, now: i64) -> Result<CameraOp, FieldError> {
        match self {
            CameraFeed::Registrations => {
                ChannelReport::from_json(value, None).map(|r| CameraOp::Register(Box::new(r)))
            }
            CameraFeed::Keepalives => parse_signal(value, now, true).map(CameraOp::Signal),
            CameraFeed::Events => parse_signal(value, now, false).map(CameraOp::Signal),
            CameraFeed::Alarms => ReportKind::Alarm.parse(value, now).map(CameraOp::Report),
            CameraFeed::Positions => ReportKind::Position.parse(value, now).map(CameraOp::Report),
        }
    }
}

/// One change to the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraOp {
    Register(Box<ChannelReport>),
    Signal(CameraSignal),
    /// An alarm or a position: appended to its history, the registry unchanged.
    Report(CameraReport),
}

/// A Kafka batch of one partition applied to the registry: the decoded operations with the
/// message each came from, the messages that did not decode, and where the partition
/// continues. All of it commits in one transaction, guarded by the expected offset.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraStreamCommit {
    pub feed: CameraFeed,
    /// Each operation with its message (its `error` is filled in if the registry refuses it).
    pub items: Vec<(crate::model::RejectedRecord, CameraOp)>,
    pub rejected: Vec<crate::model::RejectedRecord>,
    pub offset: crate::model::OffsetAdvance,
    pub liveness: Liveness,
    /// When the batch is applied (registrations' time), Unix milliseconds.
    pub at: i64,
}

/// What a committed camera batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CameraStreamOutcome {
    pub applied: usize,
    /// Messages kept as dead letters: undecodable ones and ones the registry refused.
    pub rejected: usize,
}

/// One line of the status history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusEvent {
    pub seq: i64,
    pub camera_id: String,
    pub at: i64,
    pub previous: Status,
    pub status: Status,
    pub cause: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAMERA: &str = "51102500001320000017";

    #[test]
    fn a_report_reads_validates_and_names_bad_fields() {
        let report = ChannelReport::from_json(
            json!({"id": CAMERA, "name": "资中县 北街 1", "longitude": 104.85, "latitude": 29.77,
                   "ptz_type": 1, "streams": {"rtsp": "rtsp://m/rtp/x"}}),
            None,
        )
        .expect("valid");
        assert_eq!(report.id.region_name, "资中县");
        assert_eq!(report.fields.ptz_type, Some(1));

        let refused = |value: Value| {
            ChannelReport::from_json(value, None)
                .expect_err("refused")
                .field
        };
        assert_eq!(refused(json!({"id": "123"})), "id");
        assert_eq!(
            refused(json!({"id": CAMERA, "longitude": 200.0, "latitude": 29.0})),
            "longitude"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "longitude": 104.0, "latitude": -91.0})),
            "latitude"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "longitude": 104.0})),
            "latitude"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "longitude": "east"})),
            "longitude"
        );
        assert_eq!(refused(json!({"id": CAMERA, "ptz_type": 8})), "ptz_type");
        assert_eq!(
            refused(json!({"id": CAMERA, "supply_light_type": 5})),
            "supply_light_type"
        );
        assert_eq!(refused(json!({"id": CAMERA, "colour": "red"})), "colour");
        assert_eq!(
            refused(json!({"id": CAMERA, "streams": {"flv": "nope"}})),
            "streams.flv"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "tags": ["ok", ""]})),
            "tags[1]"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "parent_id": CAMERA})),
            "parent_id"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "parent_id": "5110250000"})),
            "parent_id"
        );
        assert_eq!(
            refused(json!({"id": CAMERA, "civil_code": "51x"})),
            "civil_code"
        );
        assert_eq!(refused(json!({"id": 5110250000132000001u64})), "id");
        assert_eq!(refused(json!([CAMERA])), "channel");
        let unknown = ChannelReport::from_json(json!({"id": CAMERA, "colour": 1}), None)
            .expect_err("refused");
        assert!(unknown.message.contains("colour"), "{}", unknown.message);
        let mismatch =
            ChannelReport::from_json(json!({"id": CAMERA}), Some("51102500001320000018"))
                .expect_err("refused");
        assert_eq!(mismatch.field, "id");
    }

    /// Found by the `camera_messages` fuzz target: an unknown empty key made an error that
    /// named no field.
    #[test]
    fn every_refused_signal_names_a_field() {
        let refused = parse_signal(
            json!({"id": "51102800051310000003", "at": "2026-11-28T0928T09::0", "": "x"}),
            0,
            true,
        )
        .expect_err("bad time");
        assert_eq!(refused.field, "at");
        let refused = parse_signal(json!({"id": "51102800051310000003", "": 1}), 0, true)
            .expect_err("unknown key");
        assert_eq!(refused.field, "\"\"");
        let refused = ChannelReport::from_json(
            json!({"id": "51102800051310000003", "at": "x", "": "y"}),
            None,
        )
        .expect_err("unknown keys");
        assert!(!refused.field.is_empty(), "{refused:?}");
        let refused = parse_signal(json!({"id": "51102800051310000003", "x": 1}), 0, false)
            .expect_err("no event");
        assert_eq!(refused.field, "event");
    }

    #[test]
    fn curated_values_win_and_complete_records_are_recognised() {
        let reported = ChannelFields {
            name: Some("IPC-0017".into()),
            longitude: Some(104.8),
            latitude: Some(29.7),
            ptz_type: Some(3),
            streams: Some(Streams {
                rtsp: Some("rtsp://a".into()),
                flv: Some("http://a.flv".into()),
                ..Streams::default()
            }),
            ..ChannelFields::default()
        };
        assert!(!reported.is_complete(), "no owner yet");
        let curated = ChannelFields {
            name: Some("资中县 北街与东街口".into()),
            department: Some("gongan".into()),
            streams: Some(Streams {
                rtsp: Some("rtsp://b".into()),
                ..Streams::default()
            }),
            ..ChannelFields::default()
        };
        let shown = curated.over(&reported);
        assert_eq!(shown.name.as_deref(), Some("资中县 北街与东街口"));
        assert_eq!(shown.ptz_type, Some(3));
        let streams = shown.streams.clone().expect("streams");
        assert_eq!(streams.rtsp.as_deref(), Some("rtsp://b"));
        assert_eq!(streams.flv.as_deref(), Some("http://a.flv"));
        assert!(shown.is_complete());
    }

    #[test]
    fn gcj02_offsets_points_in_china_only() {
        // 内江 city centre: the offset is a few hundred metres north-east-ish.
        let (lon, lat) = wgs84_to_gcj02(105.0584, 29.5802);
        assert!(
            (lon - 105.0584).abs() > 0.001 && (lon - 105.0584).abs() < 0.01,
            "{lon}"
        );
        assert!(
            (lat - 29.5802).abs() > 0.0005 && (lat - 29.5802).abs() < 0.01,
            "{lat}"
        );
        assert_eq!(wgs84_to_gcj02(2.35, 48.85), (2.35, 48.85));
    }

    #[test]
    fn stream_urls_follow_the_media_server_template() {
        let templates = StreamTemplates(Streams {
            rtsp: Some("rtsp://10.0.0.5:554/rtp/{device}_{channel}".into()),
            flv: Some("http://10.0.0.5/rtp/{device}_{channel}.live.flv".into()),
            ..Streams::default()
        });
        let streams = templates.derive(CAMERA, Some("51102500001180000001"));
        assert_eq!(
            streams.rtsp.as_deref(),
            Some("rtsp://10.0.0.5:554/rtp/51102500001180000001_51102500001320000017")
        );
        assert_eq!(streams.hls, None);
        let own = templates.derive(CAMERA, None);
        assert!(
            own.flv
                .expect("flv")
                .contains(&format!("{CAMERA}_{CAMERA}"))
        );
    }
}
