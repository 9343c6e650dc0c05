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
//! 4. 32 concurrent analysts run the query mix: throughput and p99;
//! 5. (`--phases ballista`) each analytical query on the hub's own engine and on a Ballista
//!    scheduler with two executors (the hub's embedded ones, in this process, each with
//!    its own task slots), same catalog and files: medians, the ratio and the overhead per
//!    query.
//!
//! Run: `cargo run --release -p cityhub-benches --bin query_bench`

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cityhub_benches::tables::bench_admin;
use cityhub_benches::{ANALYTICAL_QUERIES as QUERIES, Hub, percentile};
use cityhub_catalog::{Column, ColumnType, DatasetName, NewDataset};
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
    /// Phases to run, comma-separated: queries, planning, concurrency, ballista (the table
    /// lifecycle has its own benchmark, `lifecycle_bench`).
    #[arg(long, default_value = "queries,planning,concurrency")]
    phases: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    let hub = Hub::start_with_demo().await?;
    if phases.contains(&"queries") {
        compare_with_datafusion(&hub, args.runs).await?;
    }
    if phases.contains(&"planning") {
        planning(&hub, args.files).await?;
    }
    if phases.contains(&"concurrency") {
        concurrency(&hub, args.analysts, args.per_analyst).await?;
    }
    if phases.contains(&"ballista") {
        ballista(&hub, args.runs).await?;
    }
    hub.stop().await;
    Ok(())
}

/// The analytical queries through the hub and through plain DataFusion on the same files.
async fn compare_with_datafusion(hub: &Hub, runs: usize) -> anyhow::Result<()> {
    let plain = plain_datafusion(hub).await?;
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
        for run in 0..=runs {
            let t = Instant::now();
            let hub_rows = hub_query(hub, sql).await?;
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
    Ok(())
}

async fn hub_query(hub: &Hub, sql: &str) -> anyhow::Result<usize> {
    hub.sql_rows(&hub.admin, sql).await
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
            sort_key: vec![],
            primary_key: vec![],
            snapshot_retention_days: None,
            row_retention: None,
            region_column: None,
            region_free: false,
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
    let admin = bench_admin();
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

/// Concurrent analysts over HTTP.
async fn concurrency(hub: &Hub, analysts: usize, per_analyst: usize) -> anyhow::Result<()> {
    let queries: Vec<String> = QUERIES.iter().map(|(_, sql)| sql.to_string()).collect();
    let (seconds, mut latencies) = hub.analysts(&queries, analysts, per_analyst).await?;
    println!(
        "\n{analysts} concurrent analysts, {} queries of the mix: {:.1} queries/s, p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies, 0.99)
    );
    Ok(())
}

/// The analytical queries on the hub's engine and on a Ballista cluster of one scheduler
/// and two executors (two task slots each), on the same catalog and files.
async fn ballista(hub: &Hub, runs: usize) -> anyhow::Result<()> {
    use cityhub_server::query_cluster::{ExecutorOptions, run_executor, run_scheduler};
    let free = || -> anyhow::Result<std::net::SocketAddr> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let scheduler = free()?;
    let config = hub.state.config.as_ref().clone();
    tokio::spawn(async move { run_scheduler(&config, scheduler, None).await });
    let url = format!("df://{scheduler}");
    for _ in 0..2 {
        let options = ExecutorOptions {
            scheduler: url.clone(),
            bind: free()?,
            grpc_port: Some(free()?.port()),
            external_host: None,
            concurrent_tasks: Some(2),
            work_dir: None,
        };
        let config = hub.state.config.as_ref().clone();
        tokio::spawn(async move { run_executor(&config, options).await });
    }
    let mut query = hub.state.config.query.clone();
    query.engine = cityhub_config::QueryEngineKind::Ballista;
    query.ballista_scheduler = url;
    let cluster = cityhub_query::QueryEngine::new(
        hub.state.catalog.clone(),
        hub.state.ingest.storage().store(),
        query,
        hub.state.audit.clone(),
        cityhub_catalog::camera::CameraSettings::from_config(&hub.state.config.cameras),
    )?;
    let admin = bench_admin();
    // The executors register with the scheduler within seconds of starting.
    let mut ready = false;
    for _ in 0..60 {
        if engine_rows(&cluster, &admin, QUERIES[0].1).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    if !ready {
        bail!("the Ballista cluster did not answer within 30 s");
    }
    println!(
        "\n{:<26} {:>10} {:>12} {:>7} {:>12} {:>8}",
        "query", "local ms", "ballista ms", "ratio", "overhead ms", "rows"
    );
    let mut ratios = Vec::new();
    let mut overheads = Vec::new();
    for (name, sql) in QUERIES {
        let (mut local_times, mut cluster_times) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        for run in 0..=runs {
            let t = Instant::now();
            let local_rows = engine_rows(&hub.state.query, &admin, sql).await?;
            let local_ms = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let cluster_rows = engine_rows(&cluster, &admin, sql).await?;
            let cluster_ms = t.elapsed().as_secs_f64() * 1000.0;
            rows = (local_rows, cluster_rows);
            if run > 0 {
                local_times.push(local_ms);
                cluster_times.push(cluster_ms);
            }
        }
        if rows.0 != rows.1 {
            bail!(
                "{name}: the hub returned {} rows, Ballista {}",
                rows.0,
                rows.1
            );
        }
        let local_ms = percentile(&mut local_times, 0.5);
        let cluster_ms = percentile(&mut cluster_times, 0.5);
        let ratio = cluster_ms / local_ms;
        ratios.push(ratio);
        overheads.push(cluster_ms - local_ms);
        println!(
            "{name:<26} {local_ms:>10.1} {cluster_ms:>12.1} {ratio:>7.2} {:>12.1} {:>8}",
            cluster_ms - local_ms,
            rows.0
        );
    }
    println!(
        "median ratio Ballista / local over {} queries: {:.2}; median overhead {:.1} ms",
        ratios.len(),
        percentile(&mut ratios, 0.5),
        percentile(&mut overheads, 0.5)
    );
    Ok(())
}

/// Rows of `sql` run on `engine` as `admin`.
async fn engine_rows(
    engine: &cityhub_query::QueryEngine,
    admin: &cityhub_catalog::Principal,
    sql: &str,
) -> anyhow::Result<usize> {
    let result = engine.execute(admin, sql, &[]).await?;
    let mut batches = result.batches;
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        rows += batch?.num_rows();
    }
    Ok(rows)
}
