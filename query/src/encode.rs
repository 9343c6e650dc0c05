//! Result encoders: a stream of record batches becomes a stream of bytes in the format the
//! client asked for, batch by batch, so that a large result never sits in memory whole.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::writer::{JsonArray, JsonFormat, LineDelimited, WriterBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use futures::{Stream, StreamExt};

use crate::QueryError;

/// The result formats, chosen by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// An array of row objects (the default).
    Json,
    NdJson,
    Csv,
    ArrowIpc,
    Parquet,
}

impl ResultFormat {
    /// The first supported media type in an `Accept` header; JSON for `*/*` or none.
    pub fn from_accept(accept: Option<&str>) -> Result<Self, QueryError> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(ResultFormat::Json);
        };
        for item in accept.split(',') {
            let essence = item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let format = match essence.as_str() {
                "application/json" | "*/*" | "application/*" => ResultFormat::Json,
                "application/x-ndjson" | "application/jsonl" => ResultFormat::NdJson,
                "text/csv" | "text/*" => ResultFormat::Csv,
                "application/vnd.apache.arrow.stream" => ResultFormat::ArrowIpc,
                "application/vnd.apache.parquet" | "application/x-parquet" => ResultFormat::Parquet,
                _ => continue,
            };
            return Ok(format);
        }
        Err(QueryError::NotAcceptable(format!(
            "none of {accept:?} is a result format the hub writes: use application/json, \
             application/x-ndjson, text/csv, application/vnd.apache.arrow.stream or \
             application/vnd.apache.parquet"
        )))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::NdJson => "application/x-ndjson",
            ResultFormat::Csv => "text/csv; charset=utf-8",
            ResultFormat::ArrowIpc => "application/vnd.apache.arrow.stream",
            ResultFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Rows buffered by the Parquet encoder before it closes a row group and sends it.
const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A `Write` whose bytes can be taken out while the writer still owns it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Encoder {
    Json { first: bool },
    NdJson,
    Csv { header: bool, schema: SchemaRef },
    Arrow(StreamWriter<SharedBuffer>, SharedBuffer),
    Parquet(Option<ArrowWriter<SharedBuffer>>, SharedBuffer),
}

fn encoding_error(err: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(format!("encoding the result failed: {err}"))
}

impl Encoder {
    fn new(format: ResultFormat, schema: &SchemaRef) -> Result<(Self, Vec<u8>), QueryError> {
        Ok(match format {
            ResultFormat::Json => (Encoder::Json { first: true }, b"[".to_vec()),
            ResultFormat::NdJson => (Encoder::NdJson, Vec::new()),
            ResultFormat::Csv => (
                Encoder::Csv {
                    header: true,
                    schema: schema.clone(),
                },
                Vec::new(),
            ),
            ResultFormat::ArrowIpc => {
                let buffer = SharedBuffer::default();
                let writer =
                    StreamWriter::try_new(buffer.clone(), schema).map_err(encoding_error)?;
                let start = buffer.take();
                (Encoder::Arrow(writer, buffer), start)
            }
            ResultFormat::Parquet => {
                let buffer = SharedBuffer::default();
                let writer = ArrowWriter::try_new(buffer.clone(), schema.clone(), None)
                    .map_err(encoding_error)?;
                (Encoder::Parquet(Some(writer), buffer), Vec::new())
            }
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
        match self {
            Encoder::Json { first } => {
                if batch.num_rows() == 0 {
                    return Ok(Vec::new());
                }
                let out = json_rows::<JsonArray>(batch)?;
                // The writer frames each batch as its own array: keep only the rows.
                let inner = out
                    .strip_prefix(b"[")
                    .and_then(|rest| rest.strip_suffix(b"]"))
                    .unwrap_or(&out);
                let mut rows = Vec::with_capacity(inner.len() + 1);
                if !*first {
                    rows.push(b',');
                }
                rows.extend_from_slice(inner);
                *first = false;
                Ok(rows)
            }
            Encoder::NdJson => json_rows::<LineDelimited>(batch),
            Encoder::Csv { header, .. } => {
                let mut out = Vec::new();
                {
                    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(*header)
                        .build(&mut out);
                    writer.write(batch).map_err(encoding_error)?;
                }
                *header = false;
                Ok(out)
            }
            Encoder::Arrow(writer, buffer) => {
                writer.write(batch).map_err(encoding_error)?;
                writer.flush().map_err(encoding_error)?;
                Ok(buffer.take())
            }
            Encoder::Parquet(writer, buffer) => {
                let Some(writer) = writer else {
                    return Ok(Vec::new());
                };
                writer.write(batch).map_err(encoding_error)?;
                if writer.in_progress_rows() >= PARQUET_ROW_GROUP_ROWS {
                    writer.flush().map_err(encoding_error)?;
                }
                Ok(buffer.take())
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, QueryError> {
        match self {
            Encoder::Json { .. } => Ok(b"]\n".to_vec()),
            Encoder::NdJson => Ok(Vec::new()),
            Encoder::Csv { header, schema } => {
                // An empty result still says which columns it has.
                if *header {
                    let empty = RecordBatch::new_empty(schema.clone());
                    return self.batch(&empty);
                }
                Ok(Vec::new())
            }
            Encoder::Arrow(writer, buffer) => {
                writer.finish().map_err(encoding_error)?;
                Ok(buffer.take())
            }
            Encoder::Parquet(writer, buffer) => {
                if let Some(writer) = writer.take() {
                    writer.close().map_err(encoding_error)?;
                }
                Ok(buffer.take())
            }
        }
    }
}

/// One batch as JSON in the given framing, with nulls written out.
fn json_rows<F: JsonFormat>(batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(&mut out);
    writer.write(batch).map_err(encoding_error)?;
    writer.finish().map_err(encoding_error)?;
    drop(writer);
    Ok(out)
}

/// Encodes a batch stream as bytes. A failure mid-stream ends the byte stream with an error,
/// which makes the HTTP layer abort the response rather than send a truncated success.
pub fn encode(
    format: ResultFormat,
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, QueryError>> + Send + 'static {
    enum Phase {
        Start,
        Rows,
        Done,
    }
    let state = (
        None::<Encoder>,
        Box::pin(batches),
        Phase::Start,
        format,
        schema,
    );
    futures::stream::unfold(
        state,
        |(mut encoder, mut batches, phase, format, schema)| async move {
            match phase {
                Phase::Done => None,
                Phase::Start => match Encoder::new(format, &schema) {
                    Ok((new, start)) => Some((
                        Ok(Bytes::from(start)),
                        (Some(new), batches, Phase::Rows, format, schema),
                    )),
                    Err(err) => Some((Err(err), (None, batches, Phase::Done, format, schema))),
                },
                Phase::Rows => {
                    let active = encoder.as_mut()?;
                    match batches.next().await {
                        Some(Ok(batch)) => {
                            let chunk = active.batch(&batch);
                            let phase = if chunk.is_ok() {
                                Phase::Rows
                            } else {
                                Phase::Done
                            };
                            Some((
                                chunk.map(Bytes::from),
                                (encoder, batches, phase, format, schema),
                            ))
                        }
                        Some(Err(err)) => {
                            Some((Err(err), (None, batches, Phase::Done, format, schema)))
                        }
                        None => {
                            let end = active.finish().map(Bytes::from);
                            Some((end, (None, batches, Phase::Done, format, schema)))
                        }
                    }
                }
            }
        },
    )
    .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())))
}
