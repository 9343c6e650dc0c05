//! Keepalives and NOTIFY events as an API batch item or a Kafka message carries them.

use serde_json::Value;

use super::*;
use crate::camera::daily::BEIJING_OFFSET_MS;

/// A keepalive or a NOTIFY event for one id, at a time (Unix milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSignal {
    pub id: String,
    pub at: i64,
    pub kind: SignalKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalKind {
    /// Marks the id and every channel under it (a device's keepalive marks its channels).
    Keepalive,
    /// ON, OFF, VLOST, DEFECT, DEL; ADD and UPDATE may carry the channel's fields.
    Event(Event, Option<Box<ChannelFields>>),
}

/// How far in the future a device clock may be before its `at` is refused.
const CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// The time of a keepalive or event: as [`report_time`] reads it; now if absent.
fn signal_time(value: Option<&Value>, now: i64) -> Result<i64, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(now),
        Some(value) => report_time(value, now),
    }
}

/// A device's time of a report (field `at`): RFC 3339 text, GB/T 28181's own form without an
/// offset (`2026-11-28T08:00:00`, Beijing time), or Unix milliseconds; not before 1970 and
/// not more than five minutes ahead of `now`.
pub(crate) fn report_time(value: &Value, now: i64) -> Result<i64, FieldError> {
    let at = match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .or_else(|err| {
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|local| local.and_utc().timestamp_millis() - BEIJING_OFFSET_MS)
                    .map_err(|_| err)
            })
            .map_err(|err| {
                FieldError::new(
                    "at",
                    format!(
                        "{text:?} is not an RFC 3339 time ({err}) nor GB/T 28181's local form; \
                         e.g. 2026-11-28T08:00:00+08:00 or 2026-11-28T08:00:00 (Beijing time)"
                    ),
                )
            })?,
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| FieldError::new("at", format!("{n} is not Unix milliseconds")))?,
        other => {
            return Err(FieldError::new(
                "at",
                format!("{other} is neither an RFC 3339 time nor Unix milliseconds"),
            ));
        }
    };
    if at > now + CLOCK_SKEW_MS {
        return Err(FieldError::new(
            "at",
            format!(
                "{} is more than 5 minutes in the future; check the device's clock",
                chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
        ));
    }
    if at < 0 {
        return Err(FieldError::new("at", "before 1970"));
    }
    Ok(at)
}

/// Reads one keepalive (`{id, at?}`) or NOTIFY event (`{id, event, at?, channel?}`) as an
/// API batch item or a Kafka message carries it.
pub fn parse_signal(value: Value, now: i64, keepalive: bool) -> Result<CameraSignal, FieldError> {
    let Value::Object(mut object) = value else {
        return Err(FieldError::new("item", "each item is a JSON object"));
    };
    let id = take_id(&mut object)?.ok_or_else(|| FieldError::new("id", "missing"))?;
    gb28181::parse(&id)?;
    let at = signal_time(object.remove("at").as_ref(), now)?;
    let kind = if keepalive {
        SignalKind::Keepalive
    } else {
        let event = match object.remove("event") {
            Some(Value::String(name)) => {
                Event::parse(&name.to_ascii_uppercase()).ok_or_else(|| {
                    FieldError::new(
                        "event",
                        format!("{name:?} is not a catalog event; use {}", Event::NAMES),
                    )
                })?
            }
            _ => {
                return Err(FieldError::new(
                    "event",
                    format!("missing; use {}", Event::NAMES),
                ));
            }
        };
        let fields = match object.remove("channel") {
            None | Some(Value::Null) => None,
            Some(Value::Object(channel)) => {
                let mut report = channel;
                report.insert("id".into(), Value::String(id.clone()));
                let report =
                    ChannelReport::from_json(Value::Object(report), None).map_err(|err| {
                        FieldError::new(format!("channel.{}", err.field), err.message)
                    })?;
                if !matches!(event, Event::Add | Event::Update) {
                    return Err(FieldError::new(
                        "channel",
                        "only ADD and UPDATE carry a channel",
                    ));
                }
                Some(Box::new(report.fields))
            }
            Some(_) => return Err(FieldError::new("channel", "must be a JSON object")),
        };
        SignalKind::Event(event, fields)
    };
    if let Some(unknown) = object.keys().next() {
        let allowed = if keepalive {
            "id, at"
        } else {
            "id, event, at, channel"
        };
        // An empty key is still named, as the JSON that wrote it ("").
        let field = if unknown.is_empty() {
            "\"\"".to_string()
        } else {
            unknown.clone()
        };
        return Err(FieldError::new(
            field,
            format!("unknown field; an item has {allowed}"),
        ));
    }
    Ok(CameraSignal { id, at, kind })
}
