//! Checking a request: its shape, then each record on its own (id, capture time, kept
//! fields, images), so that one bad record is refused alone.

use std::collections::HashSet;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fields::{
    self, Check, FieldError, IMAGE_FORMATS, IMAGE_TYPES, Row, check_fields, check_value,
    field_error,
};
use super::json::{Json, Object};
use super::kinds::ViidKind;
use super::{
    CLOCK_SKEW_ALLOWED, ImageIn, MAX_RECORDS_PER_REQUEST, RecordIn, RecordStatus, Sender,
    StatusCode, ViidFailure, ViidSettings, objects_in, parse_body, refused,
};

/// Parses and checks a request body: every record's status in order (good ones `Ok`),
/// and the good records.
pub(super) fn check_request(
    kind: ViidKind,
    body: &[u8],
    sender: &Sender,
    now: DateTime<Utc>,
    settings: ViidSettings,
) -> Result<(Vec<RecordStatus>, Vec<RecordIn>), ViidFailure> {
    let value = parse_body(body)?;
    let objects = objects_in(&value, kind.object_name())?;
    let object_name = format!("{}Object", kind.object_name());
    if objects.len() > MAX_RECORDS_PER_REQUEST {
        return Err(refused(
            StatusCode::InvalidJsonContent,
            format!(
                "{} records in one request; send at most {MAX_RECORDS_PER_REQUEST} at a time",
                objects.len()
            ),
        ));
    }
    let mut statuses = Vec::with_capacity(objects.len());
    let mut good = Vec::new();
    let mut seen = HashSet::new();
    let context = Context {
        kind,
        sender,
        now,
        settings,
        received_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    for (index, sent) in objects.iter().enumerate() {
        let normalized;
        let object = if kind == ViidKind::Image {
            normalized = image_as_record(sent);
            &normalized
        } else {
            sent
        };
        let id = object
            .get(kind.id_field())
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let checked = match object.as_object() {
            None => Err(field_error(object_name.clone(), "must be a JSON object")),
            Some(_) if !id.is_empty() && !seen.insert(id.clone()) => Err(field_error(
                kind.id_field(),
                format!("{id} appears twice in this request; send each record once"),
            )),
            Some(object) => check_record(&context, object),
        };
        match checked {
            Ok((row, images)) => {
                statuses.push(RecordStatus {
                    id,
                    code: StatusCode::Ok,
                    message: "OK".into(),
                });
                good.push(RecordIn { index, row, images });
            }
            Err(mut err) => {
                if kind == ViidKind::Image {
                    err.field = image_field_path(&err.field);
                }
                statuses.push(RecordStatus {
                    id,
                    code: StatusCode::InvalidJsonContent,
                    message: err.to_string(),
                })
            }
        }
    }
    Ok((statuses, good))
}

struct Context<'a> {
    kind: ViidKind,
    sender: &'a Sender,
    now: DateTime<Utc>,
    settings: ViidSettings,
    received_at: String,
}

/// Checks one record: its id, capture time, kept fields and images.
fn check_record(
    context: &Context<'_>,
    object: &Object<'_>,
) -> Result<(Row, Vec<ImageIn>), FieldError> {
    let kind = context.kind;
    let id_field = kind.id_field();
    let id = check_value(
        id_field,
        Check::Digits(kind.id_length()),
        object.get(id_field).unwrap_or(&Json::Null),
    )?;
    if id.is_null() {
        return Err(field_error(
            id_field,
            "is missing; every record needs its id",
        ));
    }
    let captured_at = capture_time(context, object)?;
    let mut row = check_fields(object, &kind.fields(), "")?;
    row.insert(kind.id_column(), id.clone());
    if let Some(at) = &captured_at {
        row.insert("captured_at", Value::String(at.clone()));
    }
    let device = match kind {
        ViidKind::Ape => id.as_str().unwrap_or_default().to_string(),
        _ => match row.text("device_id") {
            Some(device) => device.to_string(),
            None => {
                return Err(field_error(
                    "DeviceID",
                    "is missing; say which device made it",
                ));
            }
        },
    };
    row.insert("region_code", Value::String(device[..6].to_string()));
    row.insert(
        "platform_id",
        Value::String(context.sender.account_id.clone()),
    );
    row.insert("received_at", Value::String(context.received_at.clone()));
    let images = match kind {
        ViidKind::Ape => Vec::new(),
        _ => check_images(context, object, &row, captured_at.as_deref())?,
    };
    if !matches!(kind, ViidKind::Ape | ViidKind::Image) {
        row.insert("image_count", Value::from(images.len()));
    }
    Ok((row, images))
}

/// An `Image` of `/VIID/Images` (`{"ImageInfo": {...}, "Data": "..."}`) in the shape of a
/// record with one sub-image, so that it is checked exactly as images of records are.
fn image_as_record<'a>(image: &Json<'a>) -> Json<'a> {
    let Some(mut info) = image.get("ImageInfo").and_then(Json::as_object).cloned() else {
        return image.clone();
    };
    if let Some(data) = image.get("Data") {
        info.insert("Data", data.clone());
    }
    let mut record = Object::default();
    for name in ["ImageID", "DeviceID", "ShotTime"] {
        if let Some(value) = info.get(name) {
            record.insert(name, value.clone());
        }
    }
    let mut list = Object::default();
    list.insert("SubImageInfoObject", Json::Array(vec![Json::Object(info)]));
    record.insert("SubImageList", Json::Object(list));
    Json::Object(record)
}

/// Where a field of an `Image` is in what was sent: `ImageInfo.ShotTime`, `Data`.
fn image_field_path(checked: &str) -> String {
    let field = checked
        .strip_prefix("SubImageList.SubImageInfoObject[0].")
        .unwrap_or(checked);
    if field == "Data" {
        field.to_string()
    } else {
        format!("ImageInfo.{field}")
    }
}

/// The record's capture time from the first of its kind's time fields present, checked
/// against the clock and the retention.
fn capture_time(context: &Context<'_>, object: &Object<'_>) -> Result<Option<String>, FieldError> {
    let names = context.kind.time_fields();
    if names.is_empty() {
        return Ok(None);
    }
    for name in names {
        let checked = check_value(name, Check::Time, object.get(name).unwrap_or(&Json::Null))?;
        if let Value::String(text) = checked {
            check_time_window(name, &text, context)?;
            return Ok(Some(text));
        }
    }
    Err(field_error(
        names.join(" or "),
        "is missing; every record needs the time it was captured",
    ))
}

fn check_time_window(name: &str, rfc3339: &str, context: &Context<'_>) -> Result<(), FieldError> {
    let at = DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| field_error(name, err.to_string()))?;
    if at > context.now + CLOCK_SKEW_ALLOWED {
        return Err(field_error(
            name,
            format!(
                "{} is in the future (the hub's clock says {}); check the device's clock",
                fields::format_time(at),
                fields::format_time(context.now)
            ),
        ));
    }
    let retention = Duration::days(i64::from(context.settings.retention_days));
    if at < context.now - retention {
        return Err(field_error(
            name,
            format!(
                "{} is older than the {} days records are kept; it would be deleted at once",
                fields::format_time(at),
                context.settings.retention_days
            ),
        ));
    }
    Ok(())
}

/// Checks `SubImageList.SubImageInfoObject[]`: each image's fields, and its data
/// (base64 `Data`) or reference (`StoragePath`).
fn check_images(
    context: &Context<'_>,
    object: &Object<'_>,
    record: &Row,
    captured_at: Option<&str>,
) -> Result<Vec<ImageIn>, FieldError> {
    let Some(list) = object.get("SubImageList") else {
        return Ok(Vec::new());
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    let items = list
        .get("SubImageInfoObject")
        .and_then(Json::as_array)
        .ok_or_else(|| field_error("SubImageList", "expected {\"SubImageInfoObject\": [...]}"))?;
    let parent_id = record
        .get(context.kind.id_column())
        .cloned()
        .unwrap_or(Value::Null);
    let mut images = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let prefix = format!("SubImageList.SubImageInfoObject[{index}].");
        let item = item
            .as_object()
            .ok_or_else(|| field_error(prefix.trim_end_matches('.'), "must be a JSON object"))?;
        let image_fields = [
            fields::field("ImageID", "image_id", Check::Digits(41), ""),
            fields::field("DeviceID", "device_id", Check::Digits(20), ""),
            fields::field("Type", "type", Check::Code(IMAGE_TYPES), ""),
            fields::field("Width", "width", Check::Int(0, 100_000), ""),
            fields::field("Height", "height", Check::Int(0, 100_000), ""),
            fields::field("StoragePath", "storage_path", Check::Text(1024), ""),
        ];
        let mut row = check_fields(item, &image_fields, &prefix)?;
        let format = match item.get("FileFormat").and_then(Json::as_str) {
            None | Some("") => "Jpeg",
            Some(text) => IMAGE_FORMATS
                .iter()
                .copied()
                .find(|known| known.eq_ignore_ascii_case(text))
                .ok_or_else(|| {
                    field_error(
                        format!("{prefix}FileFormat"),
                        format!("{text:?} is not one of {}", IMAGE_FORMATS.join(", ")),
                    )
                })?,
        };
        row.insert("file_format", Value::String(format.into()));
        let shot = check_value(
            "ShotTime",
            Check::Time,
            item.get("ShotTime").unwrap_or(&Json::Null),
        )
        .map_err(|mut err| {
            err.field.insert_str(0, &prefix);
            err
        })?;
        let captured = match (shot, captured_at) {
            (Value::String(text), _) => text,
            (_, Some(parent)) => parent.to_string(),
            (_, None) => context.received_at.clone(),
        };
        row.insert("captured_at", Value::String(captured));
        if row.get("device_id").is_none_or(Value::is_null) {
            row.insert(
                "device_id",
                record.get("device_id").cloned().unwrap_or(Value::Null),
            );
        }
        row.insert("parent_kind", Value::String(context.kind.label().into()));
        row.insert("parent_id", parent_id.clone());
        for column in ["region_code", "platform_id", "received_at"] {
            row.insert(column, record.get(column).cloned().unwrap_or(Value::Null));
        }
        let data = match item.get("Data") {
            None | Some(Json::Null) => None,
            Some(Json::Str(text)) if text.is_empty() => None,
            Some(Json::Str(text)) => Some(decode_image(
                &format!("{prefix}Data"),
                text,
                context.settings.max_image_bytes,
            )?),
            Some(other) => {
                return Err(field_error(
                    format!("{prefix}Data"),
                    format!("must be base64 text, not {}", kind_of(other)),
                ));
            }
        };
        if data.is_none() && row.get("storage_path").is_none_or(Value::is_null) {
            return Err(field_error(
                format!("{prefix}Data"),
                "is missing: send the image as base64 Data or its StoragePath",
            ));
        }
        let sha256 = data
            .as_deref()
            .map(|data| hex::encode(Sha256::digest(data)));
        images.push(ImageIn {
            row,
            data,
            sha256,
            extension: extension(format),
        });
    }
    Ok(images)
}

fn kind_of(value: &Json<'_>) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::Str(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Decodes base64 image data (a `data:` URL prefix and line breaks are tolerated), no
/// larger than `max_bytes`.
pub(super) fn decode_image(path: &str, text: &str, max_bytes: u64) -> Result<Vec<u8>, FieldError> {
    let text = match text.strip_prefix("data:") {
        Some(url) => url.split_once(',').map(|(_, data)| data).unwrap_or(url),
        None => text,
    };
    // Base64 takes 4 characters for 3 bytes: refuse before decoding what cannot fit.
    if (text.len() as u64) / 4 * 3 > max_bytes + 3 {
        return Err(field_error(
            path,
            format!("the image is larger than {max_bytes} bytes (viid.max_image_bytes)"),
        ));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    // Most senders send one line: decode it as it is (with SIMD: decoding was the
    // receiver's largest single cost), and only text that fails is looked at again for
    // line breaks (MIME-style base64) or for the reason it is not base64.
    let decoded = base64_simd::STANDARD
        .decode_to_vec(text)
        .or_else(|_| engine.decode(text))
        .or_else(|err| {
            if text.bytes().any(|b| b.is_ascii_whitespace()) {
                let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                engine.decode(compact)
            } else {
                Err(err)
            }
        });
    let data = decoded.map_err(|err| field_error(path, format!("is not valid base64: {err}")))?;
    if data.is_empty() {
        return Err(field_error(path, "is empty"));
    }
    if data.len() as u64 > max_bytes {
        return Err(field_error(
            path,
            format!("the image is larger than {max_bytes} bytes (viid.max_image_bytes)"),
        ));
    }
    Ok(data)
}

fn extension(format: &str) -> &'static str {
    match format {
        "Jpeg" => "jpg",
        "Png" => "png",
        "Bmp" => "bmp",
        "Gif" => "gif",
        "Tiff" => "tif",
        _ => "bin",
    }
}
