//! Push load generator: a real hub on loopback, real HTTP, commits included.
//!
//! Measures, in one run on the same machine:
//! 1. NDJSON pushes of 10,000-row requests with 10 mixed columns: rows/s, ack p50/p99;
//! 2. Arrow IPC pushes of the same rows: rows/s, ack p50/p99;
//! 3. the baseline: the same NDJSON decoded by plain `arrow-json` and written as one synced
//!    Parquet file per request, with no HTTP, validation or catalog (the floor of the work);
//! 4. 1,000 concurrent one-row pushes to one dataset: all must commit; commits/s.
//!
//! Run: `cargo run --release -p cityhub-benches --bin push_load -- --requests 100`

use std::time::Instant;

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use cityhub_benches::{Hub, rows_ndjson, schema_json};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Requests per format.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Rows per request.
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Concurrent one-row pushes for the commit test.
    #[arg(long, default_value_t = 1_000)]
    small_pushes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hub = Hub::start().await?;
    hub.register("bench.ndjson", schema_json()).await?;
    hub.register("bench.arrow", schema_json()).await?;
    hub.register("bench.small", schema_json()).await?;

    let bodies: Vec<String> = (0..args.requests)
        .map(|r| rows_ndjson(r * args.rows, args.rows))
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    println!(
        "machine: {} cores; {} requests x {} rows, {} concurrent clients; NDJSON {:.1} MB",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.requests,
        args.rows,
        args.concurrency,
        bytes as f64 / 1e6
    );

    // Baseline first, while the machine is as quiet as it gets.
    let baseline = baseline(&bodies).await?;
    println!(
        "baseline  arrow-json decode + Parquet write + fsync, no HTTP/catalog: {:>10.0} rows/s",
        baseline
    );

    let ndjson: Vec<(Vec<u8>, &str)> = bodies
        .iter()
        .map(|b| (b.clone().into_bytes(), "application/x-ndjson"))
        .collect();
    let (rate, p50, p99) = hub
        .push_all("bench.ndjson", ndjson, args.concurrency)
        .await?;
    println!(
        "hub       NDJSON push over HTTP, committed:                {rate:>10.0} rows/s  ack p50 {p50:.1} ms  p99 {p99:.1} ms  ({:.2}x baseline)",
        rate / baseline
    );

    let ipc: Vec<(Vec<u8>, &str)> = bodies
        .iter()
        .map(|b| Ok((to_ipc(b)?, "application/vnd.apache.arrow.stream")))
        .collect::<anyhow::Result<_>>()?;
    let (rate, p50, p99) = hub.push_all("bench.arrow", ipc, args.concurrency).await?;
    println!(
        "hub       Arrow IPC push over HTTP, committed:             {rate:>10.0} rows/s  ack p50 {p50:.1} ms  p99 {p99:.1} ms  ({:.2}x baseline)",
        rate / baseline
    );

    let small: Vec<(Vec<u8>, &str)> = (0..args.small_pushes)
        .map(|i| (rows_ndjson(i, 1).into_bytes(), "application/x-ndjson"))
        .collect();
    let started = Instant::now();
    let (_, p50, p99) = hub
        .push_all("bench.small", small, args.small_pushes)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let info = hub.dataset("bench.small").await?;
    let committed = info["rows"].as_u64().unwrap_or(0) as usize;
    if committed != args.small_pushes {
        bail!(
            "only {committed} of {} small pushes committed",
            args.small_pushes
        );
    }
    println!(
        "hub       {} concurrent one-row pushes, all committed:     {:>10.0} commits/s  ack p50 {p50:.1} ms  p99 {p99:.1} ms",
        args.small_pushes,
        args.small_pushes as f64 / seconds
    );
    hub.stop().await;
    Ok(())
}

/// The floor: decode each body with arrow-json and write it as a synced Parquet file.
async fn baseline(bodies: &[String]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let schema = cityhub_catalog::arrow_schema(&cityhub_benches::columns());
    let bodies: Vec<String> = bodies.to_vec();
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut rows = 0;
        for (i, body) in bodies.iter().enumerate() {
            let reader = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(65_536)
                .build(body.as_bytes())?;
            let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            let file = std::fs::File::create(path.join(format!("{i}.parquet")))?;
            let mut writer = parquet::arrow::ArrowWriter::try_new(
                file.try_clone()?,
                schema.clone(),
                Some(cityhub_ingest::parquet_file::writer_properties(
                    &Default::default(),
                    None,
                )),
            )?;
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.close()?;
            file.sync_all()?;
        }
        Ok(rows)
    })
    .await??;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

fn to_ipc(body: &str) -> anyhow::Result<Vec<u8>> {
    let schema = cityhub_catalog::arrow_schema(&cityhub_benches::columns());
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(65_536)
        .build(body.as_bytes())
        .context("decoding the bench rows")?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
        for batch in reader {
            writer.write(&batch?)?;
        }
        writer.finish()?;
    }
    Ok(out)
}
