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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
                    self.0.error(
                        Some(unknown),
                        "is not a column of this dataset (check the spelling, or register the \
                         column first)"
                            .into(),
                    );
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
        if self.done {
            return None;
        }
        let mut rows_in_chunk = 0;
        while rows_in_chunk < self.batch_rows {
            self.buffer.clear();
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(_) => {
                    self.line += 1;
                    if self.buffer.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.row += 1;
                    rows_in_chunk += 1;
                    json_row(&mut self.assembler, &self.buffer, self.line, self.row);
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(IngestError::Read(err.to_string())));
                }
            }
        }
        if rows_in_chunk == 0 && self.done {
            return None;
        }
        Some(self.assembler.take())
    }
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
        if self.done {
            return None;
        }
        let mut rows_in_chunk = 0;
        while rows_in_chunk < self.batch_rows {
            let line = self.reader.position().line() + 1;
            let read = self.reader.read_record(&mut self.record);
            match read {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => {
                    let line = self.record.position().map_or(line, |p| p.line());
                    self.row += 1;
                    rows_in_chunk += 1;
                    let assembler = &mut self.assembler;
                    assembler.begin_row();
                    if self.record.len() != self.positions.len() {
                        assembler.error(
                            None,
                            format!(
                                "has {} fields but the header has {}",
                                self.record.len(),
                                self.positions.len()
                            ),
                        );
                    } else {
                        for (field, &index) in self.record.iter().zip(&self.positions) {
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
                    assembler.end_row(line, self.row);
                }
                Err(err) => {
                    let (line, fatal) = match err.kind() {
                        csv::ErrorKind::Utf8 { pos, .. } => {
                            (pos.as_ref().map_or(line, |p| p.line()), false)
                        }
                        csv::ErrorKind::Io(_) => (line, true),
                        _ => (line, false),
                    };
                    if fatal {
                        self.done = true;
                        return Some(Err(IngestError::Read(err.to_string())));
                    }
                    self.row += 1;
                    rows_in_chunk += 1;
                    self.assembler.begin_row();
                    self.assembler.error(None, format!("not valid CSV: {err}"));
                    self.assembler.end_row(line, self.row);
                }
            }
        }
        if rows_in_chunk == 0 && self.done {
            return None;
        }
        Some(self.assembler.take())
    }
}

// ---------------------------------------------------------------------------------------
// Arrow and Parquet

/// Fits batches of a binary columnar format to the dataset's schema: columns matched by
/// name, missing nullable columns filled with nulls, compatible types cast, and rows whose
/// values do not fit (overflow, null in a non-nullable column) rejected one by one.
pub struct Conformer {
    columns: Arc<[Column]>,
    schema: SchemaRef,
    format: Format,
    report_limit: usize,
    rows_seen: u64,
}

impl Conformer {
    pub fn new(columns: Arc<[Column]>, format: Format, report_limit: usize) -> Self {
        Self {
            schema: arrow_schema(&columns),
            columns,
            format,
            report_limit,
            rows_seen: 0,
        }
    }

    /// Checks an incoming schema once, before any batch: unknown columns, missing
    /// non-nullable columns and types that cannot be converted are refused as a whole.
    pub fn check_schema(&self, incoming: &arrow::datatypes::Schema) -> Result<(), IngestError> {
        let mut problems = Vec::new();
        for field in incoming.fields() {
            match self.columns.iter().find(|c| &c.name == field.name()) {
                None => problems.push(format!(
                    "column {:?} is not a column of this dataset",
                    field.name()
                )),
                Some(column) if !convertible(field.data_type(), column.column_type) => problems
                    .push(format!(
                        "column {:?} is {} in the {} but {} in the dataset",
                        field.name(),
                        field.data_type(),
                        self.format,
                        column.column_type
                    )),
                Some(_) => {}
            }
        }
        for column in self.columns.iter() {
            if !column.nullable && incoming.field_with_name(&column.name).is_err() {
                problems.push(format!(
                    "column {:?} is missing and is not nullable",
                    column.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngestError::SchemaMismatch(problems.join("; ")))
        }
    }

    /// Converts one incoming batch (whose schema passed [`Self::check_schema`]).
    pub fn conform(&mut self, batch: &RecordBatch) -> Result<Decoded, IngestError> {
        let rows = batch.num_rows();
        let first_row = self.rows_seen;
        self.rows_seen += rows as u64;
        let mut bad: Vec<Vec<(String, String)>> = Vec::new();
        let mark = |bad: &mut Vec<Vec<(String, String)>>, row: usize, column: &str, why: String| {
            if bad.is_empty() {
                bad.resize(rows, Vec::new());
            }
            bad[row].push((column.to_string(), why));
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for column in self.columns.iter() {
            let target = column.column_type.arrow_type();
            let array = match batch.column_by_name(&column.name) {
                None => new_null_array(&target, rows),
                Some(source) if source.data_type() == &target => source.clone(),
                Some(source) => {
                    let options = CastOptions {
                        safe: true,
                        ..Default::default()
                    };
                    let cast = cast_with_options(source, &target, &options).map_err(|err| {
                        IngestError::SchemaMismatch(format!(
                            "column {:?} cannot be converted to {}: {err}",
                            column.name, column.column_type
                        ))
                    })?;
                    // A safe cast turns values that do not fit into nulls: find them.
                    if cast.null_count() > source.null_count() {
                        for row in 0..rows {
                            if cast.is_null(row) && !source.is_null(row) {
                                mark(
                                    &mut bad,
                                    row,
                                    &column.name,
                                    format!("value does not fit {}", column.column_type),
                                );
                            }
                        }
                    }
                    cast
                }
            };
            if !column.nullable && array.null_count() > 0 {
                for row in 0..rows {
                    if array.is_null(row) {
                        mark(
                            &mut bad,
                            row,
                            &column.name,
                            "is null but the column is not nullable".into(),
                        );
                    }
                }
            }
            arrays.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays.clone(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        );
        let mut rejected = Vec::new();
        let mut rows_rejected = 0;
        let batch = if bad.is_empty() {
            batch.map_err(|err| IngestError::Internal(err.to_string()))?
        } else {
            // Build with relaxed nullability first, then drop the bad rows.
            let relaxed = Arc::new(arrow::datatypes::Schema::new(
                self.schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
            let relaxed_batch = RecordBatch::try_new(relaxed, arrays)
                .map_err(|err| IngestError::Internal(err.to_string()))?;
            let keep = BooleanArray::from(bad.iter().map(Vec::is_empty).collect::<Vec<_>>());
            let kept = filter_record_batch(&relaxed_batch, &keep)
                .map_err(|err| IngestError::Internal(err.to_string()))?;
            for (row, problems) in bad.into_iter().enumerate() {
                if problems.is_empty() {
                    continue;
                }
                rows_rejected += 1;
                let number = first_row + row as u64 + 1;
                for (column, error) in problems {
                    if rejected.len() < self.report_limit {
                        rejected.push(RowError {
                            line: number,
                            row: number,
                            column: Some(column),
                            error,
                        });
                    }
                }
            }
            RecordBatch::try_new(self.schema.clone(), kept.columns().to_vec())
                .map_err(|err| IngestError::Internal(err.to_string()))?
        };
        Ok(Decoded {
            batch,
            rejected,
            rows_rejected,
        })
    }
}

/// Whether an incoming Arrow type may fill a column: the same logical type, or a lossless
/// widening (smaller integers, Float32, other timestamp units, large or view strings).
fn convertible(source: &DataType, target: ColumnType) -> bool {
    if source == &DataType::Null {
        return true;
    }
    let Some(kind) = ColumnType::from_arrow(source) else {
        return false;
    };
    match (kind, target) {
        (ColumnType::Decimal { .. }, ColumnType::Decimal { .. }) => true,
        (a, b) if a == b => true,
        (ColumnType::Int32, ColumnType::Int64) => true,
        (ColumnType::Int32 | ColumnType::Int64, ColumnType::Float64) => true,
        // Int64 values are checked one by one when narrowed to Int32.
        (ColumnType::Int64, ColumnType::Int32) => true,
        _ => false,
    }
}

/// Arrow IPC stream batches, conformed.
pub fn decode_arrow_stream(
    reader: impl Read,
    columns: Arc<[Column]>,
    report_limit: usize,
) -> Result<Vec<Decoded>, IngestError> {
    let stream = arrow::ipc::reader::StreamReader::try_new(reader, None).map_err(|err| {
        IngestError::Malformed {
            format: Format::ArrowIpc,
            message: format!("not an Arrow IPC stream: {err}"),
        }
    })?;
    let mut conformer = Conformer::new(columns, Format::ArrowIpc, report_limit);
    conformer.check_schema(&stream.schema())?;
    let mut out = Vec::new();
    for batch in stream {
        let batch = batch.map_err(|err| IngestError::Malformed {
            format: Format::ArrowIpc,
            message: format!("the stream breaks off or is corrupt: {err}"),
        })?;
        out.push(conformer.conform(&batch)?);
    }
    Ok(out)
}

/// Opens a Parquet source (a body or a file) as conformed batches.
pub fn parquet_batches<T: parquet::file::reader::ChunkReader + 'static>(
    source: T,
    columns: Arc<[Column]>,
    batch_rows: usize,
    report_limit: usize,
) -> Result<ParquetDecoder, IngestError> {
    let malformed = |err: parquet::errors::ParquetError| IngestError::Malformed {
        format: Format::Parquet,
        message: format!("not a readable Parquet file: {err}"),
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(source)
        .map_err(malformed)?;
    let conformer = Conformer::new(columns, Format::Parquet, report_limit);
    conformer.check_schema(builder.schema())?;
    let reader = builder
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(malformed)?;
    Ok(ParquetDecoder { reader, conformer })
}

/// Conformed batches of a Parquet source.
pub struct ParquetDecoder {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    conformer: Conformer,
}

impl Iterator for ParquetDecoder {
    type Item = Result<Decoded, IngestError>;
    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.reader.next()?;
        Some(
            batch
                .map_err(|err| IngestError::Malformed {
                    format: Format::Parquet,
                    message: format!("the file is corrupt: {err}"),
                })
                .and_then(|batch| self.conformer.conform(&batch)),
        )
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
