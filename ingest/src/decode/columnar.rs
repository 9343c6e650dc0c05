//! The binary columnar formats (Arrow IPC, Parquet): batches fitted to the dataset's schema.

use std::sync::Arc;

use super::*;

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
