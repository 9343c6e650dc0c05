//! Inferring a dataset schema from a sample of a file, for `cityhub import --create`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use cityhub_catalog::{Column, ColumnType};

use crate::IngestError;
use crate::decode::Format;
use crate::value::parse_timestamp;

/// Rows read to decide column types.
pub const SAMPLE_ROWS: usize = 10_000;

/// What a column's sampled values allow, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Unknown,
    Bool,
    Int,
    Float,
    Date,
    Timestamp,
    String,
}

impl Kind {
    fn of_text(text: &str) -> Kind {
        let text = text.trim();
        if text.is_empty() {
            return Kind::Unknown;
        }
        if matches!(text.to_ascii_lowercase().as_str(), "true" | "false") {
            return Kind::Bool;
        }
        // Leading zeros mean an identifier (a phone number, a code), not a number.
        let leading_zero = text.len() > 1 && text.starts_with('0') && !text.starts_with("0.");
        if !leading_zero && text.parse::<i64>().is_ok() {
            return Kind::Int;
        }
        if !leading_zero && text.parse::<f64>().is_ok_and(f64::is_finite) {
            return Kind::Float;
        }
        if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
            return Kind::Date;
        }
        if parse_timestamp(text).is_ok() {
            return Kind::Timestamp;
        }
        Kind::String
    }

    fn of_json(value: &serde_json::Value) -> Kind {
        match value {
            serde_json::Value::Null => Kind::Unknown,
            serde_json::Value::Bool(_) => Kind::Bool,
            serde_json::Value::Number(n) if n.is_i64() => Kind::Int,
            serde_json::Value::Number(_) => Kind::Float,
            serde_json::Value::String(s) => match Kind::of_text(s) {
                kind @ (Kind::Date | Kind::Timestamp) => kind,
                _ => Kind::String,
            },
            _ => Kind::String,
        }
    }

    /// The narrowest kind that holds both.
    fn join(self, other: Kind) -> Kind {
        match (self, other) {
            (Kind::Unknown, k) | (k, Kind::Unknown) => k,
            (a, b) if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            _ => Kind::String,
        }
    }

    fn column_type(self) -> ColumnType {
        match self {
            Kind::Bool => ColumnType::Bool,
            Kind::Int => ColumnType::Int64,
            Kind::Float => ColumnType::Float64,
            Kind::Date => ColumnType::Date,
            Kind::Timestamp => ColumnType::Timestamp,
            Kind::Unknown | Kind::String => ColumnType::String,
        }
    }
}

/// Turns a header into a column name: lowercase, other characters to `_`.
fn column_name(header: &str, index: usize) -> Result<String, IngestError> {
    let mut name: String = header
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "c_");
    }
    let name = name.trim_matches('_').to_string();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(IngestError::Invalid {
            field: format!("column {}", index + 1),
            message: format!(
                "header {header:?} cannot become a column name; rename it to ASCII letters, \
                 digits and underscores, or register the dataset with its columns first"
            ),
        });
    }
    Ok(name)
}

/// Infers columns from the first [`SAMPLE_ROWS`] rows of a CSV, NDJSON or Parquet file.
/// Every inferred column is nullable.
pub fn infer_columns(path: &Path, format: Format) -> Result<Vec<Column>, IngestError> {
    let open = || {
        std::fs::File::open(path)
            .map_err(|err| IngestError::Read(format!("cannot open {}: {err}", path.display())))
    };
    let columns = match format {
        Format::Csv => infer_csv(open()?)?,
        Format::NdJson | Format::JsonArray => infer_ndjson(BufReader::new(open()?))?,
        Format::Parquet => {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
                    .map_err(|err| IngestError::Malformed {
                        format,
                        message: err.to_string(),
                    })?;
            builder
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(index, field)| {
                    let column_type =
                        ColumnType::from_arrow(field.data_type()).ok_or_else(|| {
                            IngestError::SchemaMismatch(format!(
                                "column {:?} has type {}, which the hub does not store",
                                field.name(),
                                field.data_type()
                            ))
                        })?;
                    Ok(Column::new(
                        &column_name(field.name(), index)?,
                        column_type,
                        true,
                    ))
                })
                .collect::<Result<Vec<_>, IngestError>>()?
        }
        Format::ArrowIpc => {
            return Err(IngestError::Invalid {
                field: "format".into(),
                message: "schema inference reads CSV, NDJSON or Parquet".into(),
            });
        }
    };
    if columns.is_empty() {
        return Err(IngestError::EmptyBody);
    }
    Ok(columns)
}

fn infer_csv(reader: impl Read) -> Result<Vec<Column>, IngestError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = reader
        .headers()
        .map_err(|err| IngestError::Malformed {
            format: Format::Csv,
            message: err.to_string(),
        })?
        .clone();
    let mut kinds = vec![Kind::Unknown; headers.len()];
    for record in reader.records().take(SAMPLE_ROWS) {
        let Ok(record) = record else { continue };
        for (kind, field) in kinds.iter_mut().zip(record.iter()) {
            *kind = kind.join(Kind::of_text(field));
        }
    }
    headers
        .iter()
        .enumerate()
        .map(|(index, header)| {
            Ok(Column::new(
                &column_name(header, index)?,
                kinds[index].column_type(),
                true,
            ))
        })
        .collect()
}

fn infer_ndjson(reader: impl BufRead) -> Result<Vec<Column>, IngestError> {
    let mut order: Vec<String> = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    for line in reader.lines().take(SAMPLE_ROWS) {
        let line = line.map_err(|err| IngestError::Read(err.to_string()))?;
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(&line) else {
            continue;
        };
        for (key, value) in object {
            let position = match order.iter().position(|k| k == &key) {
                Some(position) => position,
                None => {
                    order.push(key);
                    kinds.push(Kind::Unknown);
                    order.len() - 1
                }
            };
            kinds[position] = kinds[position].join(Kind::of_json(&value));
        }
    }
    order
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let name = column_name(key, index)?;
            if &name != key {
                return Err(IngestError::Invalid {
                    field: format!("key {key:?}"),
                    message: "JSON keys must already be column names (lowercase ASCII letters, \
                              digits, underscores) so that rows can be matched to columns"
                        .into(),
                });
            }
            Ok(Column::new(&name, kinds[index].column_type(), true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_widen_sensibly() {
        assert_eq!(Kind::of_text("42"), Kind::Int);
        assert_eq!(Kind::of_text("13800001111"), Kind::Int);
        assert_eq!(Kind::of_text("013800001111"), Kind::String);
        assert_eq!(Kind::of_text("4.5"), Kind::Float);
        assert_eq!(Kind::of_text("2024-05-01"), Kind::Date);
        assert_eq!(Kind::of_text("2024-05-01T08:00:00+08:00"), Kind::Timestamp);
        assert_eq!(Kind::Int.join(Kind::Float), Kind::Float);
        assert_eq!(Kind::Int.join(Kind::Unknown), Kind::Int);
        assert_eq!(Kind::Date.join(Kind::Int), Kind::String);
    }

    #[test]
    fn csv_headers_become_column_names() {
        let csv = "Case ID,Opened At,Score,Name\n1,2024-05-01T08:00:00+08:00,1.5,张三\n2,,2,李四\n";
        let columns = infer_csv(csv.as_bytes()).expect("infer");
        let described: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.column_type))
            .collect();
        assert_eq!(
            described,
            vec![
                "case_id int64",
                "opened_at timestamp",
                "score float64",
                "name string"
            ]
        );
        let bad = infer_csv("名称\n1\n".as_bytes()).expect_err("non-ASCII header");
        assert!(
            bad.to_string().contains("cannot become a column name"),
            "{bad}"
        );
    }
}
