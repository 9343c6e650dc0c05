//! Converting one field of text input (a JSON value or a CSV field) into a typed cell of the
//! dataset's column type, and collecting cells into Arrow arrays.
//!
//! A row is converted cell by cell into a scratch buffer first and appended to the column
//! builders only when every cell of the row is valid: Arrow builders cannot take a value
//! back, and a bad row must leave no trace in the batch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use base64::Engine;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use cityhub_catalog::{Column, ColumnType};

/// One validated value, ready to append.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    String(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Binary(Vec<u8>),
    Decimal(i128),
}

/// A JSON scalar as it arrived, before it is checked against a column type.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonScalar {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    /// An array or object: never valid for a column.
    Nested(&'static str),
}

impl JsonScalar {
    fn describe(&self) -> String {
        match self {
            JsonScalar::Null => "null".into(),
            JsonScalar::Bool(b) => format!("boolean {b}"),
            JsonScalar::Int(i) => format!("number {i}"),
            JsonScalar::UInt(u) => format!("number {u}"),
            JsonScalar::Float(f) => format!("number {f}"),
            JsonScalar::String(s) => format!("string {:?}", truncate(s)),
            JsonScalar::Nested(kind) => (*kind).to_string(),
        }
    }
}

fn truncate(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Converts a JSON scalar to a cell of `column`'s type; the error says what was expected.
pub fn cell_from_json(column: &Column, value: JsonScalar) -> Result<Cell, String> {
    let mismatch = |value: &JsonScalar| {
        format!(
            "expected {} ({}), found {}",
            expectation(column.column_type),
            column.column_type,
            value.describe()
        )
    };
    let cell = match (column.column_type, value) {
        (_, JsonScalar::Null) => Cell::Null,
        (ColumnType::Bool, JsonScalar::Bool(b)) => Cell::Bool(b),
        (ColumnType::Int32, JsonScalar::Int(i)) => {
            Cell::Int32(i32::try_from(i).map_err(|_| format!("{i} is out of range for int32"))?)
        }
        (ColumnType::Int32, JsonScalar::UInt(u)) => {
            Cell::Int32(i32::try_from(u).map_err(|_| format!("{u} is out of range for int32"))?)
        }
        (ColumnType::Int64, JsonScalar::Int(i)) => Cell::Int64(i),
        (ColumnType::Int64, JsonScalar::UInt(u)) => {
            Cell::Int64(i64::try_from(u).map_err(|_| format!("{u} is out of range for int64"))?)
        }
        (ColumnType::Int32 | ColumnType::Int64, JsonScalar::Float(f))
            if f.fract() == 0.0 && f.abs() < 9.0e15 =>
        {
            return cell_from_json(column, JsonScalar::Int(f as i64));
        }
        (ColumnType::Float64, JsonScalar::Int(i)) => Cell::Float64(i as f64),
        (ColumnType::Float64, JsonScalar::UInt(u)) => Cell::Float64(u as f64),
        (ColumnType::Float64, JsonScalar::Float(f)) => Cell::Float64(f),
        (ColumnType::String, JsonScalar::String(s)) => Cell::String(s),
        (ColumnType::Date, JsonScalar::String(s)) => Cell::Date(parse_date(&s)?),
        (ColumnType::Timestamp, JsonScalar::String(s)) => Cell::Timestamp(parse_timestamp(&s)?),
        (ColumnType::Timestamp, JsonScalar::Int(i)) => Cell::Timestamp(epoch_to_micros(i)?),
        (ColumnType::Timestamp, JsonScalar::UInt(u)) => Cell::Timestamp(epoch_to_micros(
            i64::try_from(u).map_err(|_| format!("{u} is out of range for a timestamp"))?,
        )?),
        (ColumnType::Timestamp, JsonScalar::Float(f)) => {
            Cell::Timestamp(epoch_seconds_float_to_micros(f)?)
        }
        (ColumnType::Binary, JsonScalar::String(s)) => Cell::Binary(parse_base64(&s)?),
        (ColumnType::Decimal { precision, scale }, JsonScalar::String(s)) => {
            Cell::Decimal(parse_decimal(&s, precision, scale)?)
        }
        (ColumnType::Decimal { precision, scale }, JsonScalar::Int(i)) => {
            Cell::Decimal(parse_decimal(&i.to_string(), precision, scale)?)
        }
        (ColumnType::Decimal { precision, scale }, JsonScalar::UInt(u)) => {
            Cell::Decimal(parse_decimal(&u.to_string(), precision, scale)?)
        }
        (ColumnType::Decimal { precision, scale }, JsonScalar::Float(f)) => {
            Cell::Decimal(parse_decimal(&f.to_string(), precision, scale)?)
        }
        (_, other) => return Err(mismatch(&other)),
    };
    Ok(cell)
}

/// Converts a CSV field to a cell of `column`'s type. An empty field is NULL, except in a
/// string column, where it is the empty string.
pub fn cell_from_text(column: &Column, text: &str) -> Result<Cell, String> {
    if text.is_empty() && column.column_type != ColumnType::String {
        return Ok(Cell::Null);
    }
    let bad = || {
        format!(
            "expected {} ({}), found {:?}",
            expectation(column.column_type),
            column.column_type,
            truncate(text)
        )
    };
    Ok(match column.column_type {
        ColumnType::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" => Cell::Bool(true),
            "false" | "f" | "0" | "no" | "n" => Cell::Bool(false),
            _ => return Err(bad()),
        },
        ColumnType::Int32 => {
            let value: i64 = text.trim().parse().map_err(|_| bad())?;
            Cell::Int32(
                i32::try_from(value).map_err(|_| format!("{value} is out of range for int32"))?,
            )
        }
        ColumnType::Int64 => Cell::Int64(text.trim().parse().map_err(|_| bad())?),
        ColumnType::Float64 => {
            let value: f64 = text.trim().parse().map_err(|_| bad())?;
            Cell::Float64(value)
        }
        ColumnType::String => Cell::String(text.to_string()),
        ColumnType::Date => Cell::Date(parse_date(text.trim())?),
        ColumnType::Timestamp => {
            let trimmed = text.trim();
            if let Ok(epoch) = trimmed.parse::<i64>() {
                Cell::Timestamp(epoch_to_micros(epoch)?)
            } else if let Ok(seconds) = trimmed.parse::<f64>() {
                Cell::Timestamp(epoch_seconds_float_to_micros(seconds)?)
            } else {
                Cell::Timestamp(parse_timestamp(trimmed)?)
            }
        }
        ColumnType::Binary => Cell::Binary(parse_base64(text.trim())?),
        ColumnType::Decimal { precision, scale } => {
            Cell::Decimal(parse_decimal(text.trim(), precision, scale)?)
        }
    })
}

fn expectation(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::Bool => "true or false",
        ColumnType::Int32 | ColumnType::Int64 => "a whole number",
        ColumnType::Float64 => "a number",
        ColumnType::String => "a string",
        ColumnType::Date => "a date such as 2024-05-01",
        ColumnType::Timestamp => {
            "an RFC 3339 time such as 2024-05-01T08:30:00+08:00, or epoch seconds, milliseconds \
             or microseconds"
        }
        ColumnType::Binary => "base64 text",
        ColumnType::Decimal { .. } => "a decimal number",
    }
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn parse_date(text: &str) -> Result<i32, String> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!(
            "expected a date such as 2024-05-01, found {:?}",
            truncate(text)
        )
    })?;
    Ok(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// RFC 3339 with an offset (a space instead of `T` is accepted). Times without an offset
/// are refused: the hub cannot guess whether a feed means UTC or Beijing time.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"));
    match parsed {
        Ok(time) => Ok(time.with_timezone(&Utc).timestamp_micros()),
        Err(_) => {
            let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"));
            if naive.is_ok() {
                Err(format!(
                    "{:?} has no UTC offset: add one, e.g. {}+08:00 for Beijing time or {}Z for UTC",
                    truncate(text),
                    text,
                    text
                ))
            } else {
                Err(format!(
                    "expected an RFC 3339 time such as 2024-05-01T08:30:00+08:00, found {:?}",
                    truncate(text)
                ))
            }
        }
    }
}

/// Epoch numbers are read by magnitude: seconds below 10^11 (until year 5138), milliseconds
/// below 10^14, microseconds below 10^17, nanoseconds above. Feeds use all four.
fn epoch_to_micros(value: i64) -> Result<i64, String> {
    let magnitude = value.unsigned_abs();
    let micros = if magnitude < 100_000_000_000 {
        value.checked_mul(1_000_000)
    } else if magnitude < 100_000_000_000_000 {
        value.checked_mul(1_000)
    } else if magnitude < 100_000_000_000_000_000 {
        Some(value)
    } else {
        Some(value / 1_000)
    };
    micros.ok_or_else(|| format!("{value} is out of range for a timestamp"))
}

fn epoch_seconds_float_to_micros(seconds: f64) -> Result<i64, String> {
    let micros = (seconds * 1_000_000.0).round();
    if micros.is_finite() && micros.abs() < 9.2e18 {
        Ok(micros as i64)
    } else {
        Err(format!("{seconds} is out of range for a timestamp"))
    }
}

fn parse_base64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|err| format!("expected base64 text: {err}"))
}

/// Parses a decimal string to its unscaled integer, refusing more fractional digits than
/// the scale or more digits than the precision (no silent rounding of money).
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let bad = || format!("expected a decimal number, found {:?}", truncate(text));
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let scale = scale.max(0) as usize;
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale {
        return Err(format!(
            "{text} has more than {scale} digits after the point (decimal({precision},{scale}))"
        ));
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() + scale > precision as usize {
        return Err(format!(
            "{text} has too many digits for decimal({precision},{scale})"
        ));
    }
    let mut unscaled: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        unscaled = unscaled * 10 + i128::from(b - b'0');
    }
    for _ in fraction.len()..scale {
        unscaled *= 10;
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// Builds the Arrow array of one column from validated cells.
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    String(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Binary(BinaryBuilder),
    Decimal(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    pub fn new(column_type: ColumnType, capacity: usize) -> Self {
        match column_type {
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            ColumnType::String => {
                Self::String(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            ColumnType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            ColumnType::Binary => {
                Self::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            ColumnType::Decimal { precision, scale } => {
                Self::Decimal(Decimal128Builder::with_capacity(capacity), precision, scale)
            }
        }
    }

    /// Appends a cell that was produced for this column's type.
    pub fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Self::Int32(b), Cell::Int32(v)) => b.append_value(v),
            (Self::Int64(b), Cell::Int64(v)) => b.append_value(v),
            (Self::Float64(b), Cell::Float64(v)) => b.append_value(v),
            (Self::String(b), Cell::String(v)) => b.append_value(v),
            (Self::Date(b), Cell::Date(v)) => b.append_value(v),
            (Self::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            (Self::Binary(b), Cell::Binary(v)) => b.append_value(v),
            (Self::Decimal(b, _, _), Cell::Decimal(v)) => b.append_value(v),
            // Null, or (never produced by the converters) a cell of another type.
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::String(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Decimal(b, _, _) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::String(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Decimal(b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| arrow::array::Decimal128Array::from(Vec::<i128>::new())),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(column_type: ColumnType) -> Column {
        Column::new("c", column_type, true)
    }

    #[test]
    fn timestamps_accept_rfc3339_and_epochs_and_refuse_naive_times() {
        let expected = 1_714_523_400_000_000; // 2024-05-01T00:30:00Z
        for text in [
            "2024-05-01T08:30:00+08:00",
            "2024-05-01T00:30:00Z",
            "2024-05-01 08:30:00+08:00",
            "1714523400",
            "1714523400000",
            "1714523400000000",
        ] {
            assert_eq!(
                cell_from_text(&column(ColumnType::Timestamp), text),
                Ok(Cell::Timestamp(expected)),
                "{text}"
            );
        }
        let err = cell_from_text(&column(ColumnType::Timestamp), "2024-05-01 08:30:00")
            .expect_err("naive");
        assert!(err.contains("no UTC offset"), "{err}");
        assert_eq!(
            cell_from_json(
                &column(ColumnType::Timestamp),
                JsonScalar::Float(1714523400.5)
            ),
            Ok(Cell::Timestamp(expected + 500_000))
        );
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal("12.30", 10, 2), Ok(1230));
        assert_eq!(parse_decimal("-0.5", 10, 2), Ok(-50));
        assert_eq!(parse_decimal("7", 3, 2), Ok(700));
        assert!(parse_decimal("1.234", 10, 2).is_err());
        assert!(parse_decimal("12345", 5, 2).is_err());
        assert!(parse_decimal("1e5", 10, 2).is_err());
        assert!(parse_decimal("-", 10, 2).is_err());
    }

    #[test]
    fn json_types_are_checked_strictly() {
        let int = column(ColumnType::Int32);
        assert_eq!(cell_from_json(&int, JsonScalar::Int(5)), Ok(Cell::Int32(5)));
        assert!(cell_from_json(&int, JsonScalar::Int(1 << 40)).is_err());
        let err = cell_from_json(&int, JsonScalar::String("5".into())).expect_err("string");
        assert!(
            err.contains("expected a whole number (int32), found string \"5\""),
            "{err}"
        );
        assert!(cell_from_json(&int, JsonScalar::Float(2.5)).is_err());
        assert_eq!(
            cell_from_json(&int, JsonScalar::Float(2.0)),
            Ok(Cell::Int32(2))
        );
        let text = column(ColumnType::String);
        assert!(cell_from_json(&text, JsonScalar::Nested("an object")).is_err());
        assert!(cell_from_json(&text, JsonScalar::Int(3)).is_err());
        assert_eq!(cell_from_json(&text, JsonScalar::Null), Ok(Cell::Null));
    }

    #[test]
    fn csv_fields_parse_by_column_type() {
        assert_eq!(
            cell_from_text(&column(ColumnType::Bool), "Yes"),
            Ok(Cell::Bool(true))
        );
        assert_eq!(
            cell_from_text(&column(ColumnType::Int64), ""),
            Ok(Cell::Null)
        );
        assert_eq!(
            cell_from_text(&column(ColumnType::String), ""),
            Ok(Cell::String(String::new()))
        );
        assert_eq!(
            cell_from_text(&column(ColumnType::Date), "1970-01-02"),
            Ok(Cell::Date(1))
        );
        assert!(cell_from_text(&column(ColumnType::Date), "2024-02-30").is_err());
        assert!(cell_from_text(&column(ColumnType::Float64), "abc").is_err());
        assert_eq!(
            cell_from_text(&column(ColumnType::Binary), "aGk="),
            Ok(Cell::Binary(b"hi".to_vec()))
        );
    }
}
