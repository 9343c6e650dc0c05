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
use cityhub_benches::{ANALYTICAL_QUERIES as QUERIES, Hub, percentile};
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
    /// Pushes into the lifecycle dataset before it is compacted.
    #[arg(long, default_value_t = 10_000)]
    lifecycle_pushes: usize,
    /// Rows per lifecycle push.
    #[arg(long, default_value_t = 50)]
    lifecycle_rows: usize,
    /// Phases to run, comma-separated: queries, planning, concurrency, lifecycle.
    #[arg(long, default_value = "queries,planning,concurrency,lifecycle")]
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
    if phases.contains(&"lifecycle") {
        lifecycle(&hub, args.lifecycle_pushes, args.lifecycle_rows, args.runs).await?;
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

fn bench_admin() -> Principal {
    Principal {
        id: 0,
        name: "bench".into(),
        department: "admin".into(),
        role: Role::Admin,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
    }
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

/// Table lifecycle: `pushes` pushes of `rows` rows, queried before and after compaction
/// against the same rows pushed at once; compaction throughput; pushes while a compaction
/// runs against pushes without one; a time-travelling read against the current snapshot.
async fn lifecycle(hub: &Hub, pushes: usize, rows: usize, runs: usize) -> anyhow::Result<()> {
    let admin = bench_admin();
    let total = pushes * rows;
    for name in ["bench.pushed", "bench.at_once", "bench.history"] {
        hub.register(name, cityhub_benches::schema_json()).await?;
    }
    let started = Instant::now();
    let push_rate = push_small(hub, &admin, "bench.pushed", 0, pushes, rows).await?;
    println!(
        "\nlifecycle: {pushes} pushes of {rows} rows into bench.pushed in {:.1} s ({push_rate:.0} pushes/s, 8 writers)",
        started.elapsed().as_secs_f64()
    );
    push_once(hub, &admin, "bench.at_once", 0, total).await?;
    let queries = lifecycle_queries();
    compare_tables(
        hub,
        &admin,
        &queries,
        "bench.pushed",
        "bench.at_once",
        runs,
        "before compaction",
    )
    .await?;

    // Compaction of the pushed files while 8 writers keep pushing into the same dataset.
    let name = DatasetName::parse("bench.pushed")?;
    let policy = hub.state.compaction.clone();
    let ingest = hub.state.ingest.clone();
    let compaction = tokio::spawn(async move {
        let started = Instant::now();
        let report = ingest.compact(None, &name, &policy, &|_, _| {}).await;
        (report, started.elapsed().as_secs_f64())
    });
    let (during, pushed_during) =
        push_while(hub, &admin, "bench.pushed", total, rows, &compaction).await?;
    let (report, seconds) = compaction.await?;
    let report = report?;
    println!(
        "compaction: {} files ({} rows) into {} in {seconds:.2} s: {:.0} rows/s; pushes meanwhile {during:.0}/s = {:.2}x of {push_rate:.0}/s without it",
        report.files_merged,
        report.rows,
        report.files_written,
        report.rows as f64 / seconds,
        during / push_rate
    );
    // The same extra rows into the other table, then both compacted to one file each.
    push_once(hub, &admin, "bench.at_once", total, pushed_during * rows).await?;
    for table in ["bench.pushed", "bench.at_once"] {
        let name = DatasetName::parse(table)?;
        hub.state
            .ingest
            .compact(None, &name, &hub.state.compaction, &|_, _| {})
            .await?;
    }
    compare_tables(
        hub,
        &admin,
        &queries,
        "bench.pushed",
        "bench.at_once",
        runs,
        "after compaction",
    )
    .await?;

    // Compaction throughput on larger small files (Kafka-flush sized).
    hub.register("bench.flushes", cityhub_benches::schema_json())
        .await?;
    let flushes = 100;
    let flush_rows = 10_000;
    push_small(hub, &admin, "bench.flushes", 0, flushes, flush_rows).await?;
    let name = DatasetName::parse("bench.flushes")?;
    let started = Instant::now();
    let report = hub
        .state
        .ingest
        .compact(None, &name, &hub.state.compaction, &|_, _| {})
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "compaction: {} files of {flush_rows} rows ({} rows) into {} in {seconds:.2} s: {:.0} rows/s",
        report.files_merged,
        report.rows,
        report.files_written,
        report.rows as f64 / seconds
    );

    // Time travel: the same rows read at an old snapshot and at the current one.
    push_once(hub, &admin, "bench.history", 0, total).await?;
    let history = hub
        .state
        .catalog
        .dataset(&DatasetName::parse("bench.history")?)
        .await?
        .context("bench.history")?;
    let old = history.snapshot_id.context("a snapshot")?;
    push_once(hub, &admin, "bench.history", total, 1).await?;
    let travelled: Vec<(&str, String)> = queries
        .iter()
        .map(|(label, sql)| {
            (
                *label,
                sql.replace("{t}", &format!("{{t}} VERSION AS OF {old}")),
            )
        })
        .collect();
    let travelled: Vec<(&str, &str)> = travelled.iter().map(|(l, s)| (*l, s.as_str())).collect();
    compare_sql(
        hub,
        &admin,
        &travelled,
        &queries,
        "bench.history",
        runs,
        "time travel vs current",
    )
    .await?;
    Ok(())
}

fn lifecycle_queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("count", "SELECT count(*) FROM {t}"),
        (
            "group-by",
            "SELECT region_code, category, count(*), avg(score) FROM {t} GROUP BY 1, 2",
        ),
        ("point lookup", "SELECT * FROM {t} WHERE id = 123457"),
        (
            "time range",
            "SELECT count(*), sum(count) FROM {t} WHERE occurred_at >= '2026-11-05T00:00:00+08:00' \
             AND occurred_at < '2026-11-06T00:00:00+08:00'",
        ),
    ]
}

async fn run_sql(hub: &Hub, admin: &Principal, sql: &str) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let result = hub
        .state
        .query
        .execute(admin, sql, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
    let mut stream = result.batches;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.map_err(|e| anyhow::anyhow!("{e}"))?.num_rows();
    }
    Ok((t.elapsed().as_secs_f64() * 1000.0, rows))
}

/// Each query on table `a` and on table `b`, alternating, medians and ratio a / b.
async fn compare_tables(
    hub: &Hub,
    admin: &Principal,
    queries: &[(&str, &str)],
    a: &str,
    b: &str,
    runs: usize,
    label: &str,
) -> anyhow::Result<()> {
    let on = |table: &str| -> Vec<(&str, String)> {
        queries
            .iter()
            .map(|(l, sql)| (*l, sql.replace("{t}", table)))
            .collect()
    };
    let (qa, qb) = (on(a), on(b));
    println!("{label}: {a} against {b} ({} runs each, medians)", runs);
    for ((query, sql_a), (_, sql_b)) in qa.iter().zip(&qb) {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        for run in 0..=runs {
            let (ms_a, rows_a) = run_sql(hub, admin, sql_a).await?;
            let (ms_b, rows_b) = run_sql(hub, admin, sql_b).await?;
            rows = (rows_a, rows_b);
            if run > 0 {
                ta.push(ms_a);
                tb.push(ms_b);
            }
        }
        if rows.0 != rows.1 {
            bail!("{query}: {a} gave {} rows, {b} {}", rows.0, rows.1);
        }
        let (ma, mb) = (percentile(&mut ta, 0.5), percentile(&mut tb, 0.5));
        println!(
            "  {query:<13} {ma:>9.1} ms {mb:>9.1} ms  ratio {:.2}",
            ma / mb
        );
    }
    Ok(())
}

/// `first` against `second` (both with `{t}` for `table`), alternating, medians and ratio.
async fn compare_sql(
    hub: &Hub,
    admin: &Principal,
    first: &[(&str, &str)],
    second: &[(&str, &str)],
    table: &str,
    runs: usize,
    label: &str,
) -> anyhow::Result<()> {
    println!("{label}: {table} ({runs} runs each, medians)");
    for ((query, a), (_, b)) in first.iter().zip(second) {
        let (a, b) = (a.replace("{t}", table), b.replace("{t}", table));
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let (ms_a, _) = run_sql(hub, admin, &a).await?;
            let (ms_b, _) = run_sql(hub, admin, &b).await?;
            if run > 0 {
                ta.push(ms_a);
                tb.push(ms_b);
            }
        }
        let (ma, mb) = (percentile(&mut ta, 0.5), percentile(&mut tb, 0.5));
        println!(
            "  {query:<13} {ma:>9.1} ms {mb:>9.1} ms  ratio {:.2}",
            ma / mb
        );
    }
    Ok(())
}

fn push_request(first: usize, rows: usize) -> cityhub_ingest::PushRequest {
    cityhub_ingest::PushRequest {
        format: cityhub_ingest::Format::NdJson,
        body: cityhub_benches::rows_ndjson(first, rows)
            .into_bytes()
            .into(),
        partial: false,
        idempotency_key: None,
    }
}

async fn push_once(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    rows: usize,
) -> anyhow::Result<()> {
    if rows > 0 {
        hub.state
            .ingest
            .push(admin, dataset, push_request(first, rows))
            .await?;
    }
    Ok(())
}

/// `pushes` pushes of `rows` rows through the ingest path by 8 writers; pushes per second.
async fn push_small(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    pushes: usize,
    rows: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (ingest, admin, next, dataset) = (
            hub.state.ingest.clone(),
            admin.clone(),
            next.clone(),
            dataset.to_string(),
        );
        writers.push(tokio::spawn(async move {
            loop {
                let push = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if push >= pushes {
                    return Ok::<_, anyhow::Error>(());
                }
                ingest
                    .push(&admin, &dataset, push_request(first + push * rows, rows))
                    .await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(pushes as f64 / started.elapsed().as_secs_f64())
}

/// Pushes by 8 writers (ids from `first`) until `until` finishes: pushes per second, and
/// how many were pushed.
async fn push_while<T>(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    rows: usize,
    until: &tokio::task::JoinHandle<T>,
) -> anyhow::Result<(f64, usize)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (ingest, admin, next, stop, dataset) = (
            hub.state.ingest.clone(),
            admin.clone(),
            next.clone(),
            stop.clone(),
            dataset.to_string(),
        );
        writers.push(tokio::spawn(async move {
            let mut done = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let push = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ingest
                    .push(&admin, &dataset, push_request(first + push * rows, rows))
                    .await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    while !until.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pushed = 0;
    for writer in writers {
        pushed += writer.await??;
    }
    // Pushes that finished after the compaction count too; the rate uses its window only.
    Ok((pushed as f64 / seconds.max(0.001), pushed))
}
