//! Decoding pushed or imported bytes into Arrow batches that match a dataset's schema, with
//! every bad row reported by line, column and reason.
//!
//! Each format is an iterator of [`Decoded`] chunks so that imports of files larger than
//! memory stream; a push collects the chunks of its (size-limited) body into one batch.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Read};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use cityhub_catalog::{Column, ColumnType, arrow_schema};
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

mod columnar;

pub use columnar::{Conformer, ParquetDecoder, decode_arrow_stream, parquet_batches};

use crate::IngestError;
use crate::value::{Cell, ColumnBuilder, JsonScalar, cell_from_json, cell_from_text};

/// The body formats the hub reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    NdJson,
    JsonArray,
    Csv,
    ArrowIpc,
    Parquet,
}

impl Format {
    /// The format a `Content-Type` names (parameters such as `charset` are ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
                Format::NdJson
            }
            "application/json" => Format::JsonArray,
            "text/csv" => Format::Csv,
            "application/vnd.apache.arrow.stream" => Format::ArrowIpc,
            "application/vnd.apache.parquet" | "application/x-parquet" => Format::Parquet,
            _ => return None,
        })
    }

    /// The format a file name suggests, for imports.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match extension.as_str() {
            "csv" => Format::Csv,
            "ndjson" | "jsonl" | "json" => Format::NdJson,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::NdJson => "NDJSON",
            Format::JsonArray => "JSON array",
            Format::Csv => "CSV",
            Format::ArrowIpc => "Arrow IPC stream",
            Format::Parquet => "Parquet",
        })
    }
}

/// The supported `Content-Type` values, for error messages.
pub const SUPPORTED_CONTENT_TYPES: &str = "application/x-ndjson, application/json (an array of \
     objects), text/csv (with a header), application/vnd.apache.arrow.stream, \
     application/vnd.apache.parquet";

/// One rejected row (or one bad field of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RowError {
    /// Line of the body where the row starts (for Arrow and Parquet: the row number).
    pub line: u64,
    /// 1-based number of the row among all rows of the body.
    pub row: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub column: Option<String>,
    pub error: String,
}

/// A chunk of decoded input: the good rows as a batch of the dataset's schema, and the bad.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub batch: RecordBatch,
    /// The first rejected rows, up to the reporting limit.
    pub rejected: Vec<RowError>,
    /// How many rows were rejected in all.
    pub rows_rejected: u64,
}

/// Collects rows into column builders, checking nullability, and records rejections.
struct Assembler {
    columns: Arc<[Column]>,
    schema: SchemaRef,
    index: HashMap<String, usize>,
    builders: Vec<ColumnBuilder>,
    scratch: Vec<Cell>,
    seen: Vec<bool>,
    row_errors: Vec<(Option<String>, String)>,
    rows_in_batch: usize,
    rejected: Vec<RowError>,
    rows_rejected: u64,
    report_limit: usize,
}

impl Assembler {
    fn new(columns: Arc<[Column]>, report_limit: usize, capacity: usize) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let builders = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.column_type, capacity))
            .collect();
        Self {
            schema: arrow_schema(&columns),
            scratch: vec![Cell::Null; columns.len()],
            seen: vec![false; columns.len()],
            columns,
            index,
            builders,
            row_errors: Vec::new(),
            rows_in_batch: 0,
            rejected: Vec::new(),
            rows_rejected: 0,
            report_limit,
        }
    }

    fn begin_row(&mut self) {
        self.scratch.iter_mut().for_each(|cell| *cell = Cell::Null);
        self.seen.iter_mut().for_each(|seen| *seen = false);
        self.row_errors.clear();
    }

    fn error(&mut self, column: Option<String>, message: String) {
        self.row_errors.push((column, message));
    }

    fn unknown_column(&mut self, name: String) {
        self.error(
            Some(name),
            "is not a column of this dataset (check the spelling, or register the column \
             first)"
                .into(),
        );
    }

    /// Ends a row: appends it if every cell was valid, otherwise records why not.
    fn end_row(&mut self, line: u64, row: u64) {
        // Every missing or null non-nullable column is reported, except one whose value was
        // already refused (its cell is null because it was bad, not because it was absent).
        let whole_row_refused = self.row_errors.iter().any(|(column, _)| column.is_none());
        for (i, column) in self.columns.iter().enumerate() {
            let already_reported = self
                .row_errors
                .iter()
                .any(|(name, _)| name.as_deref() == Some(column.name.as_str()));
            if column.nullable
                || self.scratch[i] != Cell::Null
                || already_reported
                || whole_row_refused
            {
                continue;
            }
            let message = if self.seen[i] {
                "is null but the column is not nullable"
            } else {
                "is missing and the column is not nullable"
            };
            self.row_errors
                .push((Some(column.name.clone()), message.to_string()));
        }
        if self.row_errors.is_empty() {
            for (builder, cell) in self.builders.iter_mut().zip(self.scratch.iter_mut()) {
                builder.append(std::mem::replace(cell, Cell::Null));
            }
            self.rows_in_batch += 1;
        } else {
            self.reject_row(line, row);
        }
    }

    fn reject_row(&mut self, line: u64, row: u64) {
        self.rows_rejected += 1;
        for (column, error) in self.row_errors.drain(..) {
            if self.rejected.len() < self.report_limit {
                self.rejected.push(RowError {
                    line,
                    row,
                    column,
                    error,
                });
            }
        }
    }

    fn take(&mut self) -> Result<Decoded, IngestError> {
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(self.rows_in_batch)),
        )
        .map_err(|err| IngestError::Internal(format!("assembling a batch failed: {err}")))?;
        self.rows_in_batch = 0;
        Ok(Decoded {
            batch,
            rejected: std::mem::take(&mut self.rejected),
            rows_rejected: std::mem::take(&mut self.rows_rejected),
        })
    }

    fn set_json(&mut self, index: usize, value: JsonScalar) {
        if self.seen[index] {
            let name = self.columns[index].name.clone();
            self.error(Some(name), "is given twice in one object".into());
            return;
        }
        self.seen[index] = true;
        match cell_from_json(&self.columns[index], value) {
            Ok(cell) => self.scratch[index] = cell,
            Err(message) => {
                let name = self.columns[index].name.clone();
                self.error(Some(name), message);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON

/// Reads one JSON object into the assembler's scratch row without building a JSON tree.
struct ObjectSeed<'a>(&'a mut Assembler);

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(&self.0.index))? {
            match key {
                Ok(index) => {
                    let value: JsonScalar = map.next_value()?;
                    self.0.set_json(index, value);
                }
                Err(unknown) => {
                    map.next_value::<IgnoredAny>()?;
                    self.0.unknown_column(unknown);
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.0
            .error(None, "expected a JSON object, found an array".into());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_an_object("null")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean")
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_object("a number")
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string")
    }
}

impl ObjectSeed<'_> {
    fn not_an_object<E>(self, found: &str) -> Result<(), E> {
        self.0
            .error(None, format!("expected a JSON object, found {found}"));
        Ok(())
    }
}

/// Resolves an object key to a column index without allocating.
struct KeySeed<'a>(&'a HashMap<String, usize>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Result<usize, String>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Result<usize, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.get(key).copied().ok_or_else(|| key.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for JsonScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = JsonScalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<JsonScalar, E> {
        Ok(JsonScalar::Null)
    }
    fn visit_none<E>(self) -> Result<JsonScalar, E> {
        Ok(JsonScalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<JsonScalar, E> {
        Ok(JsonScalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<JsonScalar, E> {
        Ok(JsonScalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JsonScalar, E> {
        Ok(JsonScalar::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<JsonScalar, E> {
        Ok(JsonScalar::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<JsonScalar, E> {
        Ok(JsonScalar::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<JsonScalar, E> {
        Ok(JsonScalar::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonScalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonScalar::Nested("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonScalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonScalar::Nested("an object"))
    }
}

/// Parses one JSON document (an object) into the assembler as one row.
fn json_row(assembler: &mut Assembler, text: &[u8], line: u64, row: u64) {
    assembler.begin_row();
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let parsed = ObjectSeed(assembler)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Err(err) = parsed {
        assembler.row_errors.clear();
        assembler.error(None, format!("not valid JSON: {err}"));
    }
    assembler.end_row(line, row);
}

/// Newline-delimited JSON, streamed in chunks of `batch_rows` rows.
pub struct NdJsonDecoder<R> {
    reader: R,
    assembler: Assembler,
    batch_rows: usize,
    line: u64,
    row: u64,
    buffer: Vec<u8>,
    done: bool,
}

impl<R: BufRead> NdJsonDecoder<R> {
    pub fn new(reader: R, columns: Arc<[Column]>, batch_rows: usize, report_limit: usize) -> Self {
        Self {
            reader,
            assembler: Assembler::new(columns, report_limit, batch_rows.min(65_536)),
            batch_rows,
            line: 0,
            row: 0,
            buffer: Vec::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for NdJsonDecoder<R> {
    type Item = Result<Decoded, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (reader, buffer, line, row) = (
            &mut self.reader,
            &mut self.buffer,
            &mut self.line,
            &mut self.row,
        );
        next_chunk(
            &mut self.assembler,
            self.batch_rows,
            &mut self.done,
            |assembler| {
                buffer.clear();
                match reader.read_until(b'\n', buffer) {
                    Ok(0) => Step::End,
                    Ok(_) => {
                        *line += 1;
                        if buffer.iter().all(u8::is_ascii_whitespace) {
                            return Step::Blank;
                        }
                        *row += 1;
                        json_row(assembler, buffer, *line, *row);
                        Step::Row
                    }
                    Err(err) => Step::Fatal(IngestError::Read(err.to_string())),
                }
            },
        )
    }
}

/// What reading one record of a streamed text format gave.
enum Step {
    /// A row (good or rejected) went into the assembler.
    Row,
    /// Nothing to count (a blank line).
    Blank,
    End,
    /// The input cannot be read on (an I/O error).
    Fatal(IngestError),
}

/// Reads records with `read_one` until a chunk holds `batch_rows` rows or the input ends,
/// and hands the chunk over: the one chunk loop of the streaming text decoders.
fn next_chunk(
    assembler: &mut Assembler,
    batch_rows: usize,
    done: &mut bool,
    mut read_one: impl FnMut(&mut Assembler) -> Step,
) -> Option<Result<Decoded, IngestError>> {
    if *done {
        return None;
    }
    let mut rows_in_chunk = 0;
    while rows_in_chunk < batch_rows {
        match read_one(assembler) {
            Step::Row => rows_in_chunk += 1,
            Step::Blank => {}
            Step::End => {
                *done = true;
                break;
            }
            Step::Fatal(err) => {
                *done = true;
                return Some(Err(err));
            }
        }
    }
    if rows_in_chunk == 0 && *done {
        return None;
    }
    Some(assembler.take())
}

/// A JSON array of objects (push bodies only; arrays are not streamed).
pub fn decode_json_array(
    body: &[u8],
    columns: Arc<[Column]>,
    report_limit: usize,
) -> Result<Decoded, IngestError> {
    let elements: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|err| IngestError::Malformed {
            format: Format::JsonArray,
            message: format!(
                "{err}; the body must be one JSON array of objects (send \
                 application/x-ndjson for one object per line)"
            ),
        })?;
    let mut assembler = Assembler::new(columns, report_limit, elements.len());
    let base = body.as_ptr() as usize;
    let mut line = 1u64;
    let mut scanned = 0usize;
    for (i, element) in elements.iter().enumerate() {
        let text = element.get();
        // The raw value borrows from the body, so its offset gives its line.
        let offset = (text.as_ptr() as usize)
            .saturating_sub(base)
            .min(body.len());
        line += body[scanned..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        scanned = offset;
        json_row(&mut assembler, text.as_bytes(), line, i as u64 + 1);
    }
    assembler.take()
}

/// Rows that are JSON objects already (the GA/T 1400 receiver checks its records as JSON
/// before they land), each given as its (column, value) pairs and assembled as they are:
/// printing them as NDJSON only to parse that again cost the receiver a tenth of its
/// time. The values are moved into the batch, not copied. Row `n` is reported as line `n`.
pub fn decode_json_objects<K: AsRef<str>, R: IntoIterator<Item = (K, serde_json::Value)>>(
    rows: impl ExactSizeIterator<Item = R>,
    columns: Arc<[Column]>,
    report_limit: usize,
) -> Result<Decoded, IngestError> {
    let mut assembler = Assembler::new(columns, report_limit, rows.len());
    for (i, row) in rows.enumerate() {
        let number = i as u64 + 1;
        assembler.begin_row();
        for (name, value) in row {
            let name = name.as_ref();
            let Some(&index) = assembler.index.get(name) else {
                assembler.unknown_column(name.to_string());
                continue;
            };
            // The scalar as a JSON text's value reads (strings moved, not copied).
            match <JsonScalar as serde::Deserialize>::deserialize(value) {
                Ok(scalar) => assembler.set_json(index, scalar),
                Err(err) => assembler.error(Some(name.to_string()), err.to_string()),
            }
        }
        assembler.end_row(number, number);
    }
    assembler.take()
}

// ---------------------------------------------------------------------------------------
// CSV

/// CSV with a header row naming the columns, streamed in chunks of `batch_rows` rows.
pub struct CsvDecoder<R: Read> {
    reader: csv::Reader<R>,
    assembler: Assembler,
    /// For each CSV field position, the dataset column it fills.
    positions: Vec<usize>,
    batch_rows: usize,
    row: u64,
    record: csv::StringRecord,
    done: bool,
}

impl<R: Read> CsvDecoder<R> {
    /// Reads the header and maps it to the dataset's columns; a header that names unknown
    /// columns, or omits a non-nullable one, is refused before any row is read.
    pub fn new(
        reader: R,
        columns: Arc<[Column]>,
        batch_rows: usize,
        report_limit: usize,
    ) -> Result<Self, IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(reader);
        let headers = reader
            .headers()
            .map_err(|err| IngestError::Malformed {
                format: Format::Csv,
                message: format!("the header row cannot be read: {err}"),
            })?
            .clone();
        if headers.is_empty() || headers.iter().all(str::is_empty) {
            return Err(IngestError::Malformed {
                format: Format::Csv,
                message: "the body has no header row; the first line must name the columns".into(),
            });
        }
        let mut positions = Vec::with_capacity(headers.len());
        let mut problems = Vec::new();
        for header in headers.iter() {
            let name = header.trim().trim_start_matches('\u{feff}');
            match columns.iter().position(|c| c.name == name) {
                Some(index) if positions.contains(&index) => {
                    problems.push(format!("column {name:?} appears twice in the header"));
                }
                Some(index) => positions.push(index),
                None => problems.push(format!(
                    "header column {name:?} is not a column of this dataset"
                )),
            }
        }
        for (index, column) in columns.iter().enumerate() {
            if !column.nullable && !positions.contains(&index) {
                problems.push(format!(
                    "the header lacks column {:?}, which is not nullable",
                    column.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(IngestError::SchemaMismatch(problems.join("; ")));
        }
        Ok(Self {
            reader,
            assembler: Assembler::new(columns, report_limit, batch_rows.min(65_536)),
            positions,
            batch_rows,
            row: 0,
            record: csv::StringRecord::new(),
            done: false,
        })
    }
}

impl<R: Read> Iterator for CsvDecoder<R> {
    type Item = Result<Decoded, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (reader, record, positions, row) = (
            &mut self.reader,
            &mut self.record,
            &self.positions,
            &mut self.row,
        );
        next_chunk(
            &mut self.assembler,
            self.batch_rows,
            &mut self.done,
            |assembler| {
                let line = reader.position().line() + 1;
                match reader.read_record(record) {
                    Ok(false) => Step::End,
                    Ok(true) => {
                        let line = record.position().map_or(line, |p| p.line());
                        *row += 1;
                        csv_row(assembler, record, positions);
                        assembler.end_row(line, *row);
                        Step::Row
                    }
                    Err(err) => {
                        let line = match err.kind() {
                            csv::ErrorKind::Io(_) => {
                                return Step::Fatal(IngestError::Read(err.to_string()));
                            }
                            csv::ErrorKind::Utf8 { pos, .. } => {
                                pos.as_ref().map_or(line, |p| p.line())
                            }
                            _ => line,
                        };
                        *row += 1;
                        assembler.begin_row();
                        assembler.error(None, format!("not valid CSV: {err}"));
                        assembler.end_row(line, *row);
                        Step::Row
                    }
                }
            },
        )
    }
}

/// Fills the assembler's row from one CSV record, field by field in header order.
fn csv_row(assembler: &mut Assembler, record: &csv::StringRecord, positions: &[usize]) {
    assembler.begin_row();
    if record.len() != positions.len() {
        assembler.error(
            None,
            format!(
                "has {} fields but the header has {}",
                record.len(),
                positions.len()
            ),
        );
        return;
    }
    for (field, &index) in record.iter().zip(positions) {
        assembler.seen[index] = true;
        match cell_from_text(&assembler.columns[index], field) {
            Ok(cell) => assembler.scratch[index] = cell,
            Err(message) => {
                let name = assembler.columns[index].name.clone();
                assembler.error(Some(name), message);
            }
        }
    }
}

/// Decodes a whole push body into one chunk of good rows plus rejections.
pub fn decode_body(
    format: Format,
    body: bytes::Bytes,
    columns: Arc<[Column]>,
    report_limit: usize,
) -> Result<Decoded, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::EmptyBody);
    }
    let schema = arrow_schema(&columns);
    let chunks: Vec<Decoded> = match format {
        Format::JsonArray => vec![decode_json_array(&body, columns, report_limit)?],
        Format::NdJson => NdJsonDecoder::new(&body[..], columns, usize::MAX, report_limit)
            .collect::<Result<_, _>>()?,
        Format::Csv => CsvDecoder::new(&body[..], columns, usize::MAX, report_limit)?
            .collect::<Result<_, _>>()?,
        Format::ArrowIpc => decode_arrow_stream(&body[..], columns, report_limit)?,
        Format::Parquet => {
            parquet_batches(body, columns, 65_536, report_limit)?.collect::<Result<_, _>>()?
        }
    };
    merge(schema, chunks, report_limit)
}

/// Concatenates chunks into one, keeping the rejection report within its limit.
pub fn merge(
    schema: SchemaRef,
    chunks: Vec<Decoded>,
    report_limit: usize,
) -> Result<Decoded, IngestError> {
    let mut rejected = Vec::new();
    let mut rows_rejected = 0;
    let mut batches = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        rows_rejected += chunk.rows_rejected;
        let room = report_limit.saturating_sub(rejected.len());
        rejected.extend(chunk.rejected.into_iter().take(room));
        batches.push(chunk.batch);
    }
    let batch = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|err| IngestError::Internal(format!("joining batches failed: {err}")))?;
    Ok(Decoded {
        batch,
        rejected,
        rows_rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityhub_catalog::ColumnType;
    use serde_json::{Map, Value, json};

    fn columns() -> Arc<[Column]> {
        vec![
            Column::new("plate_no", ColumnType::String, true),
            Column::new("speed", ColumnType::Int32, true),
            Column::new("captured_at", ColumnType::Timestamp, false),
        ]
        .into()
    }

    fn objects(values: &[Value]) -> Vec<Map<String, Value>> {
        values
            .iter()
            .map(|v| v.as_object().expect("test setup").clone())
            .collect()
    }

    #[test]
    fn parsed_objects_decode_as_their_ndjson_text_does() {
        let rows = objects(&[
            json!({"plate_no": "川K12345", "speed": 62, "captured_at": "2026-12-06T01:02:03Z"}),
            json!({"plate_no": null, "captured_at": "2026-12-06T01:02:04.5Z"}),
            json!({"captured_at": "2026-12-06T01:02:05Z", "extra": [1]}),
            json!({"speed": "fast", "captured_at": "2026-12-06T01:02:06Z"}),
            json!({"plate_no": "川K00001"}),
        ]);
        let text: String = rows
            .iter()
            .map(|row| format!("{}\n", Value::Object(row.clone())))
            .collect();
        let from_text =
            decode_body(Format::NdJson, text.into(), columns(), 10).expect("test setup");
        let from_objects =
            decode_json_objects(rows.clone().into_iter(), columns(), 10).expect("test setup");
        assert_eq!(from_objects.batch, from_text.batch);
        assert_eq!(
            from_objects.batch.num_rows(),
            2,
            "{:?}",
            from_objects.rejected
        );
        assert_eq!(from_objects.rejected, from_text.rejected);
        assert_eq!(from_objects.rows_rejected, 3);
        let reasons: Vec<_> = from_objects
            .rejected
            .iter()
            .map(|r| (r.row, r.column.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, Some("extra")),
                (4, Some("speed")),
                (5, Some("captured_at"))
            ]
        );
    }
}
