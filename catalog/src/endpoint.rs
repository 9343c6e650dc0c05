//! Dashboard endpoints: named, parameterised SQL saved in the catalog, versioned.
//!
//! This module holds the definition and its checks, and the typed parameter values a call
//! binds. It knows nothing of SQL planning: the query crate checks that the SQL plans and
//! that its `$name` placeholders are exactly the declared parameters.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the owner saves: `PUT /api/v1/endpoints/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// `Cache-Control: max-age` of the answers, in seconds.
    #[serde(default = "default_max_age")]
    pub max_age_s: u32,
    /// For results that read live tables or the clock: recompute at most this often
    /// (seconds); the hub's `endpoints.live_refresh_secs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<u32>,
    /// Departments whose principals may call the endpoint besides the owner's own.
    #[serde(default)]
    pub allowed_departments: Vec<String>,
    /// For this many seconds after its data changed, the previous result is answered at
    /// once while the new one is computed (and `Cache-Control` says so to HTTP caches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate_s: Option<u32>,
}

fn default_max_age() -> u32 {
    5
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub param_type: ParamType,
    /// Used when the call does not give the parameter; without one it is required. Date
    /// parameters may default to `"today"` (in the city's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    /// The only values accepted, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
}

/// The types a parameter may have, and the SQL type it is bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// 64-bit integer (`BIGINT`).
    Int,
    /// 64-bit float (`DOUBLE`).
    Float,
    /// UTF-8 text (`VARCHAR`).
    Text,
    /// `BOOLEAN`.
    Bool,
    /// A calendar day, `YYYY-MM-DD` (`DATE`).
    Date,
    /// An instant, RFC 3339 (`TIMESTAMP` in UTC).
    Timestamp,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Text => "text",
            ParamType::Bool => "bool",
            ParamType::Date => "date",
            ParamType::Timestamp => "timestamp",
        })
    }
}

/// A parameter's value, typed.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Date(NaiveDate),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Text(v) => f.write_str(v),
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Date(v) => write!(f, "{v}"),
            ParamValue::Timestamp(v) => match DateTime::<Utc>::from_timestamp_micros(*v) {
                Some(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => write!(f, "{v}"),
            },
        }
    }
}

/// The longest text a parameter may carry: dashboards pass codes and names, not documents.
const MAX_TEXT_PARAM: usize = 1024;
const MAX_PARAMS: usize = 32;

impl ParamType {
    /// Reads a value from a query string.
    pub fn parse(self, text: &str) -> Result<ParamValue, String> {
        match self {
            ParamType::Int => text
                .trim()
                .parse::<i64>()
                .map(ParamValue::Int)
                .map_err(|_| format!("must be a whole number, not {text:?}")),
            ParamType::Float => match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(ParamValue::Float(v)),
                _ => Err(format!("must be a finite number, not {text:?}")),
            },
            ParamType::Text => {
                if text.chars().count() > MAX_TEXT_PARAM {
                    Err(format!("is longer than {MAX_TEXT_PARAM} characters"))
                } else if text.contains('\0') {
                    Err("must not contain NUL characters".into())
                } else {
                    Ok(ParamValue::Text(text.to_string()))
                }
            }
            ParamType::Bool => match text.trim() {
                "true" | "1" => Ok(ParamValue::Bool(true)),
                "false" | "0" => Ok(ParamValue::Bool(false)),
                _ => Err(format!("must be true or false, not {text:?}")),
            },
            ParamType::Date => NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map(ParamValue::Date)
                .map_err(|_| format!("must be a date YYYY-MM-DD, not {text:?}")),
            ParamType::Timestamp => DateTime::parse_from_rfc3339(text.trim())
                .map(|t| ParamValue::Timestamp(t.with_timezone(&Utc).timestamp_micros()))
                .map_err(|_| {
                    format!(
                        "must be an RFC 3339 time such as 2026-11-28T08:00:00+08:00, not {text:?}"
                    )
                }),
        }
    }

    /// Reads a value from the definition's JSON (defaults, bounds, allowed values).
    pub fn from_json(self, value: &Value) -> Result<ParamValue, String> {
        match (self, value) {
            (ParamType::Int, Value::Number(n)) => n
                .as_i64()
                .map(ParamValue::Int)
                .ok_or_else(|| format!("must be a whole number, not {n}")),
            (ParamType::Float, Value::Number(n)) => n
                .as_f64()
                .map(ParamValue::Float)
                .ok_or_else(|| format!("must be a number, not {n}")),
            (ParamType::Bool, Value::Bool(b)) => Ok(ParamValue::Bool(*b)),
            (ParamType::Text | ParamType::Date | ParamType::Timestamp, Value::String(s)) => {
                self.parse(s)
            }
            (_, other) => Err(format!("must be a JSON value of type {self}, not {other}")),
        }
    }
}

/// Dynamic default of date parameters: the current day where the city is.
pub const TODAY: &str = "today";

impl ParamSpec {
    /// The value of this parameter for a call: the given text, else the default; checked
    /// against the bounds and the allowed values. `today` is the city's current date.
    pub fn value(&self, given: Option<&str>, today: NaiveDate) -> Result<ParamValue, String> {
        let value = match (given, &self.default) {
            (Some(text), _) => self.param_type.parse(text)?,
            (None, Some(Value::String(s))) if self.param_type == ParamType::Date && s == TODAY => {
                ParamValue::Date(today)
            }
            (None, Some(default)) => self.param_type.from_json(default)?,
            (None, None) => return Err("is required (the endpoint gives no default)".into()),
        };
        self.check(&value)?;
        Ok(value)
    }

    fn bound(&self, bound: &Option<Value>) -> Option<ParamValue> {
        bound
            .as_ref()
            .and_then(|b| self.param_type.from_json(b).ok())
    }

    fn check(&self, value: &ParamValue) -> Result<(), String> {
        if let Some(min) = self.bound(&self.min)
            && value < &min
        {
            return Err(format!("must be at least {min}, not {value}"));
        }
        if let Some(max) = self.bound(&self.max)
            && value > &max
        {
            return Err(format!("must be at most {max}, not {value}"));
        }
        if let Some(allowed) = &self.allowed {
            let is_allowed = |a: &Value| self.param_type.from_json(a).is_ok_and(|a| &a == value);
            if !allowed.iter().any(is_allowed) {
                let list: Vec<String> = allowed
                    .iter()
                    .filter_map(|a| self.param_type.from_json(a).ok())
                    .map(|a| a.to_string())
                    .collect();
                return Err(format!("must be one of {}, not {value}", list.join(", ")));
            }
        }
        Ok(())
    }
}

/// A definition problem: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks an endpoint's name: what goes in its URL.
/// The parameter the hub binds itself: the calling principal's region scope (the city,
/// 511000, for an unscoped caller), so that one definition serves every level's screen.
pub const CALLER_REGION: &str = "caller_region";

pub fn check_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SpecError {
            field: "name".into(),
            message: format!(
                "{name:?} is not an endpoint name: use 1-64 lowercase letters, digits, '_' and '-', starting with a letter"
            ),
        })
    }
}

impl EndpointSpec {
    /// Checks everything that does not need the SQL planner.
    pub fn check(&self) -> Result<(), SpecError> {
        let bad = |field: String, message: String| Err(SpecError { field, message });
        if self.sql.trim().is_empty() {
            return bad("sql".into(), "is empty".into());
        }
        if self.params.len() > MAX_PARAMS {
            return bad(
                "params".into(),
                format!("at most {MAX_PARAMS} parameters, not {}", self.params.len()),
            );
        }
        if self.max_age_s > 86_400 {
            return bad("max_age_s".into(), "must be at most 86400 seconds".into());
        }
        if let Some(refresh) = self.refresh_s
            && !(1..=86_400).contains(&refresh)
        {
            return bad(
                "refresh_s".into(),
                "must be between 1 and 86400 seconds".into(),
            );
        }
        if let Some(window) = self.stale_while_revalidate_s
            && !(1..=86_400).contains(&window)
        {
            return bad(
                "stale_while_revalidate_s".into(),
                "must be between 1 and 86400 seconds".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (index, param) in self.params.iter().enumerate() {
            let field = |what: &str| format!("params[{index}].{what}");
            if param.name == CALLER_REGION {
                return bad(
                    field("name"),
                    format!(
                        "${CALLER_REGION} is the hub's own parameter (the caller's region scope, \
                         the city for an unscoped caller); use it in the SQL without declaring it"
                    ),
                );
            }
            let name_ok = !param.name.is_empty()
                && param.name.len() <= 64
                && param
                    .name
                    .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && param
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return bad(
                    field("name"),
                    format!(
                        "{:?} is not a parameter name: use lowercase letters, digits and '_', starting with a letter or '_'",
                        param.name
                    ),
                );
            }
            if !names.insert(param.name.as_str()) {
                return bad(field("name"), format!("{:?} is declared twice", param.name));
            }
            let typed = |what: &str, value: &Value| {
                param
                    .param_type
                    .from_json(value)
                    .map_err(|message| SpecError {
                        field: field(what),
                        message,
                    })
            };
            let min = param.min.as_ref().map(|v| typed("min", v)).transpose()?;
            let max = param.max.as_ref().map(|v| typed("max", v)).transpose()?;
            if matches!(param.param_type, ParamType::Bool | ParamType::Text)
                && (min.is_some() || max.is_some())
            {
                return bad(
                    field("min"),
                    format!(
                        "{} parameters take no bounds; use allowed",
                        param.param_type
                    ),
                );
            }
            if let (Some(min), Some(max)) = (&min, &max)
                && min > max
            {
                return bad(field("max"), format!("{max} is below min {min}"));
            }
            if let Some(allowed) = &param.allowed {
                if allowed.is_empty() {
                    return bad(field("allowed"), "must list at least one value".into());
                }
                for (i, value) in allowed.iter().enumerate() {
                    typed(&format!("allowed[{i}]"), value)?;
                }
            }
            match &param.default {
                Some(Value::String(s)) if param.param_type == ParamType::Date && s == TODAY => {}
                Some(default) => {
                    let value = typed("default", default)?;
                    param.check(&value).map_err(|message| SpecError {
                        field: field("default"),
                        message,
                    })?;
                }
                None => {}
            }
        }
        for (index, department) in self.allowed_departments.iter().enumerate() {
            if department.trim().is_empty() {
                return bad(format!("allowed_departments[{index}]"), "is empty".into());
            }
        }
        Ok(())
    }
}

/// What saving a definition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Created,
    /// A new version of an existing endpoint.
    Updated,
    /// The definition equals the current version: nothing was written.
    Unchanged,
}

/// What saving a definition comes to, decided from the current version.
pub enum SavePlan {
    /// It equals the current version (given back): nothing to write.
    Unchanged(Endpoint),
    /// Write this version; it creates or updates.
    Write(i64, Saved),
}

impl SavePlan {
    /// What saving `spec` as `name`, to run as `owner`, means next to the `current`
    /// version; refused when `acting_for` (the caller's department; `None` for an admin)
    /// does not own the endpoint.
    pub fn of(
        name: &str,
        current: Option<Endpoint>,
        owner: &str,
        spec: &EndpointSpec,
        acting_for: Option<&str>,
    ) -> Result<SavePlan, crate::error::CatalogError> {
        let Some(current) = current else {
            return Ok(SavePlan::Write(1, Saved::Created));
        };
        if let Some(acting_for) = acting_for
            && current.owner != acting_for
        {
            return Err(crate::error::CatalogError::WrongState(format!(
                "endpoint {name:?} belongs to department {}; only it or an admin may change it",
                current.owner
            )));
        }
        if current.owner == owner && &current.spec == spec {
            return Ok(SavePlan::Unchanged(current));
        }
        Ok(SavePlan::Write(current.version + 1, Saved::Updated))
    }
}

/// A saved version of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub version: i64,
    /// The department whose rights the query runs with; only it (and admins) may change it.
    pub owner: String,
    pub spec: EndpointSpec,
    pub created_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether principals of `department` may call the endpoint.
    pub fn callable_by(&self, department: &str) -> bool {
        department == self.owner
            || self
                .spec
                .allowed_departments
                .iter()
                .any(|d| d == department)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: Value) -> EndpointSpec {
        serde_json::from_value(serde_json::json!({"sql": "SELECT 1", "params": params}))
            .expect("spec")
    }

    #[test]
    fn definitions_name_the_bad_field() {
        let cases = [
            (
                serde_json::json!([{"name": "Bad", "type": "int"}]),
                "params[0].name",
            ),
            (
                serde_json::json!([{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]),
                "params[1].name",
            ),
            (
                serde_json::json!([{"name": "a", "type": "int", "default": "x"}]),
                "params[0].default",
            ),
            (
                serde_json::json!([{"name": "a", "type": "int", "min": 5, "max": 1}]),
                "params[0].max",
            ),
            (
                serde_json::json!([{"name": "a", "type": "int", "min": 1, "default": 0}]),
                "params[0].default",
            ),
            (
                serde_json::json!([{"name": "a", "type": "text", "allowed": ["x", 3]}]),
                "params[0].allowed[1]",
            ),
            (
                serde_json::json!([{"name": "a", "type": "text", "min": "a"}]),
                "params[0].min",
            ),
            (
                serde_json::json!([{"name": "d", "type": "date", "default": "yesterday"}]),
                "params[0].default",
            ),
        ];
        for (params, field) in cases {
            let err = spec(params.clone()).check().expect_err(&params.to_string());
            assert_eq!(err.field, field, "{params}: {err}");
        }
        assert!(
            spec(serde_json::json!([{"name": "d", "type": "date", "default": "today"}]))
                .check()
                .is_ok()
        );
        assert!(check_name("camera-online_rate2").is_ok());
        for bad in ["", "Upper", "1st", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_are_typed_bounded_and_allowed() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 28).expect("date");
        let param = |json: Value| -> ParamSpec { serde_json::from_value(json).expect("param") };
        let hours = param(
            serde_json::json!({"name": "hours", "type": "int", "min": 1, "max": 168, "default": 24}),
        );
        assert_eq!(hours.value(None, today), Ok(ParamValue::Int(24)));
        assert_eq!(hours.value(Some("48"), today), Ok(ParamValue::Int(48)));
        for bad in ["0", "169", "1.5", "24; DROP TABLE x", "", "0x10"] {
            assert!(hours.value(Some(bad), today).is_err(), "{bad:?}");
        }
        let region = param(
            serde_json::json!({"name": "region", "type": "text", "allowed": ["511002", "511011"]}),
        );
        assert!(
            region
                .value(None, today)
                .expect_err("required")
                .contains("required")
        );
        assert_eq!(
            region.value(Some("511011"), today),
            Ok(ParamValue::Text("511011".into()))
        );
        assert!(region.value(Some("511011' OR '1'='1"), today).is_err());
        let day = param(
            serde_json::json!({"name": "day", "type": "date", "default": "today", "max": "2030-01-01"}),
        );
        assert_eq!(day.value(None, today), Ok(ParamValue::Date(today)));
        assert!(day.value(Some("2031-01-01"), today).is_err());
        assert!(day.value(Some("28/11/2026"), today).is_err());
        let at = param(serde_json::json!({"name": "at", "type": "timestamp"}));
        assert_eq!(
            at.value(Some("2026-11-28T08:00:00+08:00"), today),
            Ok(ParamValue::Timestamp(1_795_824_000_000_000))
        );
        let rate = param(serde_json::json!({"name": "r", "type": "float", "min": 0.0, "max": 1.0}));
        assert!(rate.value(Some("NaN"), today).is_err());
        assert!(rate.value(Some("inf"), today).is_err());
        assert_eq!(rate.value(Some("0.5"), today), Ok(ParamValue::Float(0.5)));
        let text = param(serde_json::json!({"name": "t", "type": "text"}));
        assert!(text.value(Some(&"长".repeat(1025)), today).is_err());
        assert!(text.value(Some("a\0b"), today).is_err());
    }
}
