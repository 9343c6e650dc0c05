//! Query benchmark: the hub's SQL endpoint against plain DataFusion on the same files.
//!
//! In one run on one machine:
//! 1. the demo city (1.1 million rows) is loaded into a temporary hub;
//! 2. each analytical query runs `--runs` times through `POST /api/v1/sql` (Arrow IPC
//!    output, over loopback HTTP, as an admin) and `--runs` times through a plain
//!    DataFusion `SessionContext` with the same datasets registered as Parquet tables over
//!    the same files; medians and their ratio are printed per query;
//! 3. planning over a dataset of `--files` files: the time from request to a started
//!    physical plan (catalog view, file list, pruning, planning), median of 20;
//! 4. 32 concurrent analysts run the query mix: throughput and p99.
//!
//! Run: `cargo run --release -p cityhub-benches --bin query_bench`

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cityhub_benches::{Hub, percentile};
use cityhub_catalog::{Column, ColumnType, DatasetName, NewDataset, Principal, Role};
use clap::Parser;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    /// Runs per query and side.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Files in the many-files dataset.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Concurrent analysts.
    #[arg(long, default_value_t = 32)]
    analysts: usize,
    /// Queries each analyst runs.
    #[arg(long, default_value_t = 10)]
    per_analyst: usize,
}

const QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM zhili.hotline_cases"),
    (
        "group by category",
        "SELECT category, count(*) AS n FROM zhili.hotline_cases GROUP BY category ORDER BY n DESC",
    ),
    (
        "filter + group",
        "SELECT region_code, count(*) AS n FROM zhili.hotline_cases WHERE status = '已办结' GROUP BY region_code ORDER BY region_code",
    ),
    (
        "fines by type",
        "SELECT violation_type, sum(fine_yuan) AS fines, avg(points) AS points FROM gongan.traffic_violations GROUP BY violation_type ORDER BY fines DESC",
    ),
    (
        "violations per hour",
        "SELECT date_trunc('hour', occurred_at) AS hour, count(*) AS n FROM gongan.traffic_violations GROUP BY hour ORDER BY hour",
    ),
    (
        "top plates",
        "SELECT plate_no, count(*) AS n FROM gongan.traffic_violations GROUP BY plate_no ORDER BY n DESC, plate_no LIMIT 10",
    ),
    (
        "join per region",
        "WITH h AS (SELECT region_code, count(*) AS cases FROM zhili.hotline_cases GROUP BY region_code), \
         g AS (SELECT region_code, count(*) AS open_events FROM zhili.grid_events WHERE status = 'open' GROUP BY region_code) \
         SELECT h.region_code, cases, open_events FROM h JOIN g ON h.region_code = g.region_code ORDER BY h.region_code",
    ),
    (
        "window rank",
        "SELECT region_code, incident_type, n, rank() OVER (PARTITION BY region_code ORDER BY n DESC) AS r \
         FROM (SELECT region_code, incident_type, count(*) AS n FROM yingji.incidents GROUP BY region_code, incident_type) t \
         ORDER BY region_code, r",
    ),
    (
        "top-k speeding",
        "SELECT violation_id, plate_no, speed_kmh FROM gongan.traffic_violations WHERE speed_kmh > 100 ORDER BY speed_kmh DESC, violation_id LIMIT 100",
    ),
    (
        "distinct callers",
        "SELECT count(DISTINCT caller_phone) FROM zhili.hotline_cases",
    ),
    (
        "handling hours",
        "SELECT category, avg(date_part('epoch', closed_at) - date_part('epoch', received_at)) / 3600 AS hours \
         FROM zhili.hotline_cases WHERE closed_at IS NOT NULL GROUP BY category ORDER BY category",
    ),
    (
        "violations x checkpoints",
        "SELECT v.region_code, count(*) AS n FROM gongan.traffic_violations v \
         JOIN (SELECT DISTINCT checkpoint_id FROM gongan.traffic_violations WHERE violation_type = '闯红灯') c \
         ON v.checkpoint_id = c.checkpoint_id GROUP BY v.region_code ORDER BY v.region_code",
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hub = Hub::start().await?;
    let started = Instant::now();
    cityhub::demo::load(&hub.state).await?;
    println!(
        "machine: {} cores; demo city loaded in {:.1} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );

    let plain = plain_datafusion(&hub).await?;
    println!(
        "\n{:<26} {:>10} {:>12} {:>7} {:>8}",
        "query", "hub ms", "datafusion ms", "ratio", "rows"
    );
    let mut ratios = Vec::new();
    for (name, sql) in QUERIES {
        let mut hub_times = Vec::new();
        let mut plain_times = Vec::new();
        let mut rows = (0, 0);
        // Alternate the two sides so that machine noise hits both alike.
        for run in 0..=args.runs {
            let t = Instant::now();
            let hub_rows = hub_query(&hub, sql).await?;
            let hub_ms = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let batches = plain.sql(sql).await?.collect().await?;
            let plain_ms = t.elapsed().as_secs_f64() * 1000.0;
            rows = (
                hub_rows,
                batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            );
            if run > 0 {
                // The first run of each side warms caches and is not counted.
                hub_times.push(hub_ms);
                plain_times.push(plain_ms);
            }
        }
        if rows.0 != rows.1 {
            bail!(
                "{name}: the hub returned {} rows, DataFusion {}",
                rows.0,
                rows.1
            );
        }
        let hub_ms = percentile(&mut hub_times, 0.5);
        let plain_ms = percentile(&mut plain_times, 0.5);
        let ratio = hub_ms / plain_ms;
        ratios.push(ratio);
        println!(
            "{name:<26} {hub_ms:>10.1} {plain_ms:>12.1} {ratio:>7.2} {:>8}",
            rows.0
        );
    }
    println!(
        "median ratio hub / plain DataFusion over {} queries: {:.2}",
        ratios.len(),
        percentile(&mut ratios, 0.5)
    );

    planning(&hub, args.files).await?;
    concurrency(&hub, args.analysts, args.per_analyst).await?;
    hub.stop().await;
    Ok(())
}

/// Runs a query over HTTP with Arrow output and returns the row count.
async fn hub_query(hub: &Hub, sql: &str) -> anyhow::Result<usize> {
    let response = hub
        .client
        .post(format!("{}/api/v1/sql", hub.base))
        .bearer_auth(&hub.admin)
        .header("accept", "application/vnd.apache.arrow.stream")
        .body(sql.to_string())
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&bytes));
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let mut rows = 0;
    for batch in reader {
        rows += batch?.num_rows();
    }
    Ok(rows)
}

/// A plain DataFusion context with each demo dataset registered over its folder of Parquet
/// files (the same files the hub reads; the hub writes no others there).
async fn plain_datafusion(hub: &Hub) -> anyhow::Result<SessionContext> {
    // Files sit in date folders under each dataset's folder: list them recursively.
    let config = datafusion::prelude::SessionConfig::new().set_bool(
        "datafusion.execution.listing_table_ignore_subdirectory",
        false,
    );
    let ctx = SessionContext::new_with_config(config);
    let objects = hub.state.config.storage_url();
    let root = objects
        .strip_prefix("file://")
        .context("bench needs local storage")?;
    for dataset in hub.state.catalog.list_datasets().await? {
        ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", dataset.owner))
            .await?;
        let folder = format!("{root}/datasets/{}/", dataset.id);
        ctx.register_parquet(
            dataset.name.to_string(),
            &folder,
            ParquetReadOptions::default(),
        )
        .await?;
    }
    Ok(ctx)
}

/// Planning time over a dataset made of many small files.
async fn planning(hub: &Hub, files: usize) -> anyhow::Result<()> {
    let name = DatasetName::parse("bench.many_files")?;
    let dataset = hub
        .state
        .catalog
        .create_dataset(NewDataset {
            name: name.clone(),
            description: "many small files".into(),
            columns: vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new("value", ColumnType::Float64, true),
            ],
            classification: Default::default(),
            sharing: cityhub_catalog::Sharing::Unconditional,
            resource_code: None,
            update_cycle: None,
            tags: vec![],
        })
        .await?;
    let started = Instant::now();
    let schema = dataset.arrow_schema();
    let mut written = Vec::with_capacity(files);
    for i in 0..files {
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![
                    i as i64 * 10,
                    i as i64 * 10 + 9,
                ])),
                Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0])),
            ],
        )?;
        written.push(hub.state.ingest.write_file(&dataset, vec![batch]).await?);
    }
    hub.state
        .ingest
        .commit_append(&dataset, written, None)
        .await?;
    println!(
        "\nwrote and committed {files} files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let admin = Principal {
        id: 0,
        name: "bench".into(),
        department: "admin".into(),
        role: Role::Admin,
        created_at: chrono_now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
    };
    for (label, sql) in [
        (
            "full scan",
            "SELECT count(*), sum(value) FROM bench.many_files",
        ),
        (
            "pruned to 1 file",
            "SELECT * FROM bench.many_files WHERE id = 12345",
        ),
    ] {
        let mut times = Vec::new();
        let mut rows = 0;
        for run in 0..21 {
            let t = Instant::now();
            let result = hub
                .state
                .query
                .execute(&admin, sql, &[])
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let planned = t.elapsed().as_secs_f64() * 1000.0;
            let mut stream = result.batches;
            rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch.map_err(|e| anyhow::anyhow!("{e}"))?.num_rows();
            }
            if run > 0 {
                times.push(planned);
            }
        }
        println!(
            "plan over {files} files, {label:<17}: median {:.1} ms, p95 {:.1} ms ({rows} rows)",
            percentile(&mut times.clone(), 0.5),
            percentile(&mut times, 0.95)
        );
    }
    Ok(())
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Concurrent analysts over HTTP.
async fn concurrency(hub: &Hub, analysts: usize, per_analyst: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for analyst in 0..analysts {
        let client = hub.client.clone();
        let url = format!("{}/api/v1/sql", hub.base);
        let token = hub.admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..per_analyst {
                let (_, sql) = QUERIES[(analyst + i) % QUERIES.len()];
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("accept", "application/vnd.apache.arrow.stream")
                    .body(sql)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("{}: {}", response.status(), response.text().await?);
                }
                response.bytes().await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "\n{analysts} concurrent analysts, {} queries of the mix: {:.1} queries/s, p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies, 0.99)
    );
    Ok(())
}
