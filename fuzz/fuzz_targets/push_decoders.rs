//! Every push decoder on arbitrary bytes against a schema with every column type: it may
//! refuse the body or rows, but never panic, and what it accepts conforms to the schema.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use cityhub_catalog::{Column, ColumnType, Sensitivity};
use cityhub_ingest::Format;
use cityhub_ingest::decode::decode_body;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    format: u8,
    body: Vec<u8>,
}

fn columns() -> Arc<[Column]> {
    vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("small", ColumnType::Int32, true),
        Column::new("ok", ColumnType::Bool, true),
        Column::new("score", ColumnType::Float64, true),
        Column::new("name", ColumnType::String, true).sensitive(Sensitivity::PersonName),
        Column::new("day", ColumnType::Date, true),
        Column::new("at", ColumnType::Timestamp, true),
        Column::new("blob", ColumnType::Binary, true),
        Column::new(
            "amount",
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
            true,
        ),
    ]
    .into()
}

fuzz_target!(|input: Input| {
    let format = match input.format % 5 {
        0 => Format::NdJson,
        1 => Format::JsonArray,
        2 => Format::Csv,
        3 => Format::ArrowIpc,
        _ => Format::Parquet,
    };
    let columns = columns();
    if let Ok(decoded) = decode_body(format, bytes::Bytes::from(input.body), columns.clone(), 100) {
        let batch = &decoded.batch;
        assert_eq!(batch.num_columns(), columns.len());
        // The non-nullable column never holds a null in accepted rows.
        assert_eq!(batch.column(0).null_count(), 0);
    }
});
