//! The GA/T 1400.3 fields the hub keeps, how each is checked, and the code tables.
//!
//! A record carries many more optional fields than these (GA/T 1400.3 lists over a
//! hundred for a face); the hub keeps the ones a city asks questions of (who, where,
//! when, which plate) and accepts the others without storing them. Each kept field is
//! checked against its definition; a record with a bad one is refused alone, with the
//! field's name and what to send instead.

use chrono::{DateTime, TimeZone, Utc};
use cityhub_catalog::{ColumnType, Sensitivity};
use serde_json::Value;

use super::json::{Json, Object};

/// China Standard Time: GA/T 1400 times are local times without a zone.
pub(crate) fn beijing() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// `ColorType` (GA/T 1400.3 appendix): plate and vehicle colours.
pub const COLOR_CODES: &[(&str, &str)] = &[
    ("1", "黑"),
    ("2", "白"),
    ("3", "灰"),
    ("4", "红"),
    ("5", "蓝"),
    ("6", "黄"),
    ("7", "橙"),
    ("8", "棕"),
    ("9", "绿"),
    ("10", "紫"),
    ("11", "青"),
    ("12", "粉"),
    ("13", "透明"),
    ("99", "其他"),
];

/// GB/T 2261.1 sex codes, as `GenderCode`.
pub const GENDER_CODES: &[(&str, &str)] = &[
    ("0", "未知的性别"),
    ("1", "男性"),
    ("2", "女性"),
    ("9", "未说明的性别"),
];

/// `InfoKind`: how the record was made.
pub const INFO_KINDS: &[(&str, &str)] = &[("0", "其他"), ("1", "自动采集"), ("2", "人工采集")];

/// `IsOnline` of a collection device.
pub const ONLINE_CODES: &[(&str, &str)] = &[("1", "在线"), ("2", "离线"), ("9", "其他")];

/// `HDirection`: the direction of travel.
pub const DIRECTION_CODES: &[(&str, &str)] = &[
    ("1", "东向西"),
    ("2", "西向东"),
    ("3", "南向北"),
    ("4", "北向南"),
    ("5", "东南向西北"),
    ("6", "西北向东南"),
    ("7", "东北向西南"),
    ("8", "西南向东北"),
    ("9", "其他"),
];

/// `ImageType` of a sub-image.
pub const IMAGE_TYPES: &[(&str, &str)] = &[
    ("01", "车辆大图"),
    ("02", "车牌彩色小图"),
    ("03", "车牌二值化图"),
    ("04", "驾驶员面部特征图"),
    ("05", "副驾驶面部特征图"),
    ("06", "车标"),
    ("07", "违章合成图"),
    ("08", "过车合成图"),
    ("09", "车辆特写图"),
    ("10", "人员图"),
    ("11", "人脸图"),
    ("12", "非机动车图"),
    ("13", "物品图"),
    ("14", "场景图"),
    ("100", "一般图片"),
];

/// `FileFormat` of an image.
pub const IMAGE_FORMATS: &[&str] = &["Jpeg", "Bmp", "Gif", "Png", "Tiff", "Other"];

/// The first letters of GA 24.4 vehicle type codes (`VehicleClass`, e.g. K33 轿车): B
/// trailers, D trams, G semi-trailers, H lorries, J machinery, K passenger cars, M
/// motorcycles, N tricycles, Q tractors, T tractors (agricultural), X other, Z special.
const VEHICLE_CLASS_LETTERS: &str = "BDGHJKMNQTXZ";

/// How one kept field is checked.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Exactly this many ASCII digits (object and device ids).
    Digits(usize),
    /// A time `YYYYMMDDhhmmss` (optionally with 3 digits of milliseconds), Beijing time.
    Time,
    /// One code of a table (a JSON string or number).
    Code(&'static [(&'static str, &'static str)]),
    /// A GA 24.4 vehicle type: a letter and two digits.
    VehicleClass,
    /// An integer in a range (a JSON number or a numeric string).
    Int(i64, i64),
    /// A number in a range.
    Float(f64, f64),
    /// Text of at most this many characters.
    Text(usize),
}

impl Check {
    /// The column type the checked value is stored as.
    pub fn column_type(self) -> ColumnType {
        match self {
            Check::Time => ColumnType::Timestamp,
            Check::Int(..) => ColumnType::Int32,
            Check::Float(..) => ColumnType::Float64,
            _ => ColumnType::String,
        }
    }
}

/// One kept field: its JSON name, its column, its check, and what it says about a person.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub json: &'static str,
    pub column: &'static str,
    pub check: Check,
    pub sensitivity: Option<Sensitivity>,
    pub description: &'static str,
}

pub(crate) const fn field(
    json: &'static str,
    column: &'static str,
    check: Check,
    description: &'static str,
) -> Field {
    Field {
        json,
        column,
        check,
        sensitivity: None,
        description,
    }
}

pub(crate) const fn personal(
    json: &'static str,
    column: &'static str,
    check: Check,
    sensitivity: Sensitivity,
    description: &'static str,
) -> Field {
    Field {
        json,
        column,
        check,
        sensitivity: Some(sensitivity),
        description,
    }
}

/// A row as checked: each column's value, every column named once.
///
/// A short list rather than a map: a record has about twenty columns, and a map's owned
/// keys and nodes were a visible share of the receiver's allocations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(Vec<(&'static str, Value)>);

impl Row {
    pub fn with_capacity(columns: usize) -> Self {
        Self(Vec::with_capacity(columns))
    }

    /// Sets `column` to `value`, replacing what it held.
    pub fn insert(&mut self, column: &'static str, value: Value) {
        match self.0.iter_mut().find(|(name, _)| *name == column) {
            Some((_, held)) => *held = value,
            None => self.0.push((column, value)),
        }
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| *name == column)
            .map(|(_, value)| value)
    }

    /// The column's text, if it holds text.
    pub fn text(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(Value::as_str)
    }

    /// The (column, value) pairs, moved out.
    pub fn into_cells(self) -> impl Iterator<Item = (&'static str, Value)> {
        self.0.into_iter()
    }
}

/// `row["column"]`: the column's value, `null` when it is not set (as `Value` indexes).
impl std::ops::Index<&str> for Row {
    type Output = Value;

    fn index(&self, column: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(column).unwrap_or(&NULL)
    }
}

/// Why one field was refused: its path in the record and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub(crate) fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks `value` of the field at `path` and answers the JSON value to store (`Null` for
/// an absent or empty optional value).
pub fn check_value(path: &str, check: Check, value: &Json<'_>) -> Result<Value, FieldError> {
    if value.is_null() || value.as_str() == Some("") {
        return Ok(Value::Null);
    }
    match check {
        Check::Digits(length) => {
            let text = text_of(path, value)?;
            if text.len() == length && text.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Value::String(text.to_string()))
            } else {
                Err(field_error(
                    path,
                    format!(
                        "{text:?} is not {length} digits; GA/T 1400 ids are fixed-length digit strings"
                    ),
                ))
            }
        }
        Check::Time => {
            let text = text_of(path, value)?;
            parse_time(text)
                .map(|at| Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                .ok_or_else(|| {
                    field_error(
                        path,
                        format!(
                            "{text:?} is not a time: use YYYYMMDDhhmmss in Beijing time, e.g. \
                             20261206083000"
                        ),
                    )
                })
        }
        Check::Code(table) => {
            let code = code_of(value).ok_or_else(|| {
                field_error(path, "must be a code: a string or number from its table")
            })?;
            if table.iter().any(|(known, _)| *known == code) {
                Ok(Value::String(code))
            } else {
                let known: Vec<String> = table
                    .iter()
                    .map(|(code, name)| format!("{code} {name}"))
                    .collect();
                Err(field_error(
                    path,
                    format!("{code:?} is not in the code table: {}", known.join(", ")),
                ))
            }
        }
        Check::VehicleClass => {
            let text = text_of(path, value)?;
            let mut chars = text.chars();
            let letter_ok = chars
                .next()
                .is_some_and(|c| VEHICLE_CLASS_LETTERS.contains(c));
            let digits: String = chars.collect();
            if letter_ok && digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Value::String(text.to_string()))
            } else {
                Err(field_error(
                    path,
                    format!(
                        "{text:?} is not a GA 24.4 vehicle type: a letter of \
                         {VEHICLE_CLASS_LETTERS} and two digits, e.g. K33 (轿车)"
                    ),
                ))
            }
        }
        Check::Int(low, high) => {
            let number = match value {
                Json::Number(n) => n.as_i64(),
                Json::Str(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match number {
                Some(n) if (low..=high).contains(&n) => Ok(Value::from(n)),
                _ => Err(field_error(
                    path,
                    format!("{value} is not a whole number from {low} to {high}"),
                )),
            }
        }
        Check::Float(low, high) => {
            let number = match value {
                Json::Number(n) => n.as_f64(),
                Json::Str(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match number {
                Some(n) if n.is_finite() && (low..=high).contains(&n) => Ok(Value::from(n)),
                _ => Err(field_error(
                    path,
                    format!("{value} is not a number from {low} to {high}"),
                )),
            }
        }
        Check::Text(max) => {
            let text = text_of(path, value)?;
            if text.chars().count() > max {
                return Err(field_error(
                    path,
                    format!("is {} characters long; at most {max}", text.chars().count()),
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(field_error(path, "must not hold control characters"));
            }
            Ok(Value::String(text.to_string()))
        }
    }
}

fn text_of<'a>(path: &str, value: &'a Json<'_>) -> Result<&'a str, FieldError> {
    match value {
        Json::Str(text) => Ok(text),
        _ => Err(field_error(path, format!("must be a string, not {value}"))),
    }
}

fn code_of(value: &Json<'_>) -> Option<String> {
    match value {
        Json::Str(s) => Some(s.trim().to_string()),
        Json::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A GA/T 1400 time (`YYYYMMDDhhmmss`, or with milliseconds `YYYYMMDDhhmmssSSS`) read as
/// Beijing time.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() != 14 && text.len() != 17 {
        return None;
    }
    // Read digit by digit: every record carries two or three times, and chrono's format
    // parser was a visible part of the receiver's time.
    let number = |range: std::ops::Range<usize>| -> u32 {
        text.as_bytes()[range]
            .iter()
            .fold(0, |n, digit| n * 10 + u32::from(digit - b'0'))
    };
    let date = chrono::NaiveDate::from_ymd_opt(number(0..4) as i32, number(4..6), number(6..8))?;
    let naive = date.and_hms_opt(number(8..10), number(10..12), number(12..14))?;
    let naive = match text.len() {
        17 => naive + chrono::Duration::milliseconds(i64::from(number(14..17))),
        _ => naive,
    };
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|at| at.with_timezone(&Utc))
}

/// `at` as GA/T 1400 writes times: `YYYYMMDDhhmmss`, Beijing time.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&beijing())
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Checks every kept field of `object`; answers the row's values by column.
pub fn check_fields(
    object: &Object<'_>,
    fields: &[Field],
    prefix: &str,
) -> Result<Row, FieldError> {
    let mut row = Row::with_capacity(fields.len() + 8);
    for field in fields {
        let value = object.get(field.json).unwrap_or(&Json::Null);
        // The field's path is spelled out only when it is refused.
        let checked = check_value(field.json, field.check, value).map_err(|mut err| {
            err.field.insert_str(0, prefix);
            err
        })?;
        row.insert(field.column, checked);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(sent: &str) -> Json<'_> {
        Json::Str(sent.into())
    }

    fn number(sent: i64) -> Json<'static> {
        Json::Number(sent.into())
    }

    #[test]
    fn times_are_beijing_local_times() {
        let at = parse_time("20261206083000").expect("valid");
        assert_eq!(at.to_rfc3339(), "2026-12-06T00:30:00+00:00");
        assert_eq!(format_time(at), "20261206083000");
        let with_millis = parse_time("20261206083000123").expect("valid");
        assert_eq!(with_millis.timestamp_millis() - at.timestamp_millis(), 123);
        for bad in [
            "2026120608300",
            "20261306083000",
            "20261206253000",
            "20260230083000",
            "20261206086000",
            "2026120608300012",
            "2026-12-06 08:30",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn each_check_names_the_field_and_the_way_out() {
        let err = check_value("PlateColor", Check::Code(COLOR_CODES), &text("77"))
            .expect_err("not a colour");
        assert!(err.message.contains("5 蓝"), "{err}");
        assert_eq!(
            check_value("PlateColor", Check::Code(COLOR_CODES), &number(5)).expect("number"),
            json!("5")
        );
        let err =
            check_value("MotorVehicleID", Check::Digits(48), &text("12ab")).expect_err("short");
        assert_eq!(err.field, "MotorVehicleID");
        assert!(err.message.contains("48 digits"), "{err}");
        let err = check_value("VehicleClass", Check::VehicleClass, &text("A33")).expect_err("bad");
        assert!(err.message.contains("K33"), "{err}");
        assert_eq!(
            check_value("VehicleClass", Check::VehicleClass, &text("K33")).expect("ok"),
            json!("K33")
        );
        let err = check_value("Speed", Check::Float(0.0, 500.0), &number(-3)).expect_err("neg");
        assert!(err.message.contains("from 0 to 500"), "{err}");
        let err = check_value("PlateNo", Check::Text(15), &text("川K\u{0}12345")).expect_err("ctl");
        assert!(err.message.contains("control"), "{err}");
        assert_eq!(
            check_value("LaneNo", Check::Int(0, 99), &text("3")).expect("numeric string"),
            json!(3)
        );
        assert_eq!(
            check_value("PlateNo", Check::Text(15), &text("")).expect("empty"),
            Value::Null
        );
    }
}
