//! Encoding batches as Parquet files and computing the per-column statistics the catalog
//! keeps for pruning.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute;
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use cityhub_catalog::ColumnStats;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::Value;

use cityhub_config::IngestConfig;

use crate::IngestError;

/// Longest string kept as a min/max statistic; longer values would bloat the catalog.
const MAX_STAT_STRING: usize = 64;

/// Writer settings for hub files, as the `ingest.*` layout settings say (compression, row
/// group and page sizes, statistics level, dictionaries; BENCHMARKS.md, "SQL against
/// DuckDB", measures each). A keyed dataset's files carry a bloom filter on the key's
/// leading column (`bloom`: its name and the rows the file holds, which sizes the filter),
/// so that an upsert rules a stored file out without decoding it.
pub fn writer_properties(layout: &IngestConfig, bloom: Option<(&str, u64)>) -> WriterProperties {
    let compression = match layout.compression.as_str() {
        "snappy" => Compression::SNAPPY,
        "none" => Compression::UNCOMPRESSED,
        _ => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
    };
    let statistics = match layout.statistics.as_str() {
        "none" => EnabledStatistics::None,
        "chunk" => EnabledStatistics::Chunk,
        _ => EnabledStatistics::Page,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(as_size(layout.row_group_rows)))
        .set_data_page_size_limit(as_size(layout.data_page_bytes))
        .set_statistics_enabled(statistics)
        .set_dictionary_enabled(layout.dictionary)
        .set_created_by(format!("cityhub {}", env!("CARGO_PKG_VERSION")));
    if let Some((column, rows)) = bloom {
        let column = ColumnPath::from(column);
        builder = builder
            .set_column_bloom_filter_enabled(column.clone(), true)
            .set_column_bloom_filter_fpp(column.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(column, rows.max(1));
    }
    builder.build()
}

/// A configured count as a size for the writer (at least 1; validated larger at load).
fn as_size(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX).max(1)
}

/// Encodes batches (all of one schema) into one Parquet file in memory, laid out as the
/// `layout` settings say, with a bloom filter on `bloom_column` if given (see [`writer_properties`]).
pub fn encode(
    batches: &[RecordBatch],
    layout: &IngestConfig,
    bloom_column: Option<&str>,
) -> Result<Vec<u8>, IngestError> {
    let Some(first) = batches.first() else {
        return Err(IngestError::Internal("no batch to write".into()));
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let bloom = bloom_column.map(|column| (column, rows as u64));
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(
        &mut buffer,
        first.schema(),
        Some(writer_properties(layout, bloom)),
    )
    .map_err(|err| IngestError::Internal(format!("cannot start a Parquet file: {err}")))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|err| IngestError::Internal(format!("cannot write Parquet: {err}")))?;
    }
    writer
        .close()
        .map_err(|err| IngestError::Internal(format!("cannot finish Parquet: {err}")))?;
    Ok(buffer)
}

/// Min, max and null count per column over `batches`, for the types where that is cheap and
/// meaningful for pruning (numbers, dates, timestamps, short strings). Timestamps are kept
/// as epoch microseconds and dates as epoch days, the way they are stored.
pub fn column_stats(batches: &[RecordBatch]) -> BTreeMap<String, ColumnStats> {
    let mut stats: BTreeMap<String, ColumnStats> = BTreeMap::new();
    let Some(first) = batches.first() else {
        return stats;
    };
    for (index, field) in first.schema().fields().iter().enumerate() {
        let mut entry = ColumnStats {
            null_count: Some(0),
            ..Default::default()
        };
        let mut usable = true;
        for batch in batches {
            let array = batch.column(index);
            entry.null_count = entry.null_count.map(|n| n + array.null_count() as i64);
            let (min, max) = match field.data_type() {
                DataType::Int32 => numeric(
                    compute::min(array.as_primitive::<Int32Type>()),
                    compute::max(array.as_primitive::<Int32Type>()),
                ),
                DataType::Int64 => numeric(
                    compute::min(array.as_primitive::<Int64Type>()),
                    compute::max(array.as_primitive::<Int64Type>()),
                ),
                DataType::Date32 => numeric(
                    compute::min(array.as_primitive::<Date32Type>()),
                    compute::max(array.as_primitive::<Date32Type>()),
                ),
                DataType::Timestamp(_, _) => numeric(
                    compute::min(array.as_primitive::<TimestampMicrosecondType>()),
                    compute::max(array.as_primitive::<TimestampMicrosecondType>()),
                ),
                DataType::Float64 => {
                    let values = array.as_primitive::<Float64Type>();
                    let min = compute::min(values).filter(|v| v.is_finite());
                    let max = compute::max(values).filter(|v| v.is_finite());
                    (min.map(Value::from), max.map(Value::from))
                }
                DataType::Utf8 => {
                    let values = array.as_string::<i32>();
                    let short =
                        |v: Option<&str>| v.filter(|s| s.len() <= MAX_STAT_STRING).map(Value::from);
                    let (min, max) = (compute::min_string(values), compute::max_string(values));
                    if (min.is_some() && short(min).is_none())
                        || (max.is_some() && short(max).is_none())
                    {
                        usable = false;
                    }
                    (short(min), short(max))
                }
                _ => {
                    usable = false;
                    (None, None)
                }
            };
            entry.min = merge_bound(entry.min.take(), min, std::cmp::Ordering::Less);
            entry.max = merge_bound(entry.max.take(), max, std::cmp::Ordering::Greater);
        }
        if !usable {
            entry.min = None;
            entry.max = None;
        }
        stats.insert(field.name().clone(), entry);
    }
    stats
}

fn numeric<T: Into<Value>>(min: Option<T>, max: Option<T>) -> (Option<Value>, Option<Value>) {
    (min.map(Into::into), max.map(Into::into))
}

fn merge_bound(
    current: Option<Value>,
    next: Option<Value>,
    keep: std::cmp::Ordering,
) -> Option<Value> {
    match (current, next) {
        (None, next) => next,
        (current, None) => current,
        (Some(a), Some(b)) => {
            let ordering = match (&a, &b) {
                (Value::Number(x), Value::Number(y)) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal),
                (Value::String(x), Value::String(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            };
            if ordering == keep { Some(a) } else { Some(b) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    /// Each layout setting reaches the file: statistics levels, dictionaries, row groups.
    #[test]
    fn the_layout_settings_shape_the_file() {
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let schema = Arc::new(Schema::new(vec![Field::new(
            "county",
            DataType::Utf8,
            false,
        )]));
        let counties: Vec<&str> = (0..10_000)
            .map(|i| ["511002", "511011", "511024", "511025", "511083"][i % 5])
            .collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(counties))])
            .expect("batch");
        let write = |layout: IngestConfig| {
            let bytes = encode(std::slice::from_ref(&batch), &layout, None).expect("encode");
            SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("read back")
        };
        let base = IngestConfig {
            row_group_rows: 4096,
            ..IngestConfig::default()
        };

        let page = write(base.clone());
        let meta = page.metadata();
        assert_eq!(meta.num_row_groups(), 3, "10,000 rows in groups of 4,096");
        let chunk = meta.row_group(0).column(0);
        assert!(chunk.statistics().is_some());
        assert!(chunk.column_index_offset().is_some(), "a page index");
        assert!(chunk.dictionary_page_offset().is_some(), "a dictionary");

        let chunk_only = write(IngestConfig {
            statistics: "chunk".into(),
            ..base.clone()
        });
        let chunk = chunk_only.metadata().row_group(0).column(0);
        assert!(chunk.statistics().is_some());
        assert!(chunk.column_index_offset().is_none(), "no page index");

        let bare = write(IngestConfig {
            statistics: "none".into(),
            dictionary: false,
            ..base
        });
        let chunk = bare.metadata().row_group(0).column(0);
        assert!(chunk.statistics().is_none());
        assert!(chunk.dictionary_page_offset().is_none(), "plain encoding");
    }

    #[test]
    fn stats_span_all_batches_and_skip_long_strings() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("long", DataType::Utf8, true),
        ]));
        let long = "x".repeat(100);
        let a = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(5), None])),
                Arc::new(StringArray::from(vec!["b", "c"])),
                Arc::new(StringArray::from(vec![long.as_str(), "a"])),
            ],
        )
        .expect("batch");
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(-3), Some(9)])),
                Arc::new(StringArray::from(vec!["a", "z"])),
                Arc::new(StringArray::from(vec!["b", "c"])),
            ],
        )
        .expect("batch");
        let stats = column_stats(&[a.clone(), b]);
        assert_eq!(stats["n"].min, Some(Value::from(-3)));
        assert_eq!(stats["n"].max, Some(Value::from(9)));
        assert_eq!(stats["n"].null_count, Some(1));
        assert_eq!(stats["s"].min, Some(Value::from("a")));
        assert_eq!(stats["s"].max, Some(Value::from("z")));
        assert_eq!(stats["long"].min, None);
        assert_eq!(stats["long"].max, None);
        let layout = IngestConfig {
            row_group_rows: 1024,
            ..IngestConfig::default()
        };
        let bytes = encode(&[a], &layout, None).expect("encode");
        assert_eq!(&bytes[..4], b"PAR1");
    }
}
