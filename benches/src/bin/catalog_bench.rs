//! The catalog on PostgreSQL beside SQLite, in one run on the same machine:
//! 1. NDJSON pushes of 10,000-row requests: committed rows/s;
//! 2. one-row pushes to one dataset, all in flight at once: commits/s;
//! 3. the same one-row pushes through two hubs on one PostgreSQL catalog (and one shared
//!    object folder): commits/s beside one hub's, contention included;
//! 4. planning a query over a dataset of 10,000 files (`EXPLAIN`, nothing read): median ms.
//!
//! Run: `cargo run --profile bench-fast -p cityhub-benches --bin catalog_bench --
//! --postgres postgres://user@127.0.0.1:5432/db` (each backend gets a fresh schema).

use std::time::Instant;

use anyhow::{Context, bail};
use cityhub_benches::{Hub, fresh_postgres_catalog, percentile, rows_ndjson, schema_json};
use cityhub_config::Config;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// A PostgreSQL server the bench may create schemas in.
    #[arg(long)]
    postgres: String,
    /// 10,000-row NDJSON requests per backend.
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Concurrent HTTP clients for the NDJSON pushes.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// One-row pushes per backend, all in flight at once.
    #[arg(long, default_value_t = 1_000)]
    small_pushes: usize,
    /// Files of the dataset the planning measure plans over.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// `EXPLAIN`s timed per backend.
    #[arg(long, default_value_t = 30)]
    plans: usize,
}

struct Figures {
    ndjson_rows_per_s: f64,
    commits_per_s: f64,
    plan_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "machine: {} cores; {} x 10,000-row NDJSON pushes ({} clients), {} one-row pushes, \
         planning over {} files",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.requests,
        args.concurrency,
        args.small_pushes,
        args.files
    );
    let sqlite = measure(&args, |_| {}).await?;
    report("SQLite", &sqlite, None);
    let catalog_url = fresh_postgres_catalog(&args.postgres).await?;
    let postgres = measure(&args, |config| config.catalog.url = catalog_url.clone()).await?;
    report("PostgreSQL", &postgres, Some(&sqlite));

    // Two hubs on one PostgreSQL catalog and one object folder, half the pushes each.
    let objects = tempfile::tempdir()?;
    let catalog_url = fresh_postgres_catalog(&args.postgres).await?;
    let shared = |config: &mut Config| {
        config.catalog.url = catalog_url.clone();
        config.storage.url = format!("file://{}", objects.path().display());
    };
    let one = Hub::start_with(shared).await?;
    let two = Hub::start_with(shared).await?;
    one.register("bench.small", schema_json()).await?;
    let half = args.small_pushes / 2;
    let bodies = |first: usize| -> Vec<(Vec<u8>, &'static str)> {
        (first..first + half)
            .map(|i| (rows_ndjson(i, 1).into_bytes(), "application/x-ndjson"))
            .collect()
    };
    let started = Instant::now();
    let (a, b) = tokio::join!(
        one.push_all("bench.small", bodies(0), half),
        two.push_all("bench.small", bodies(half), half)
    );
    a?;
    b?;
    let seconds = started.elapsed().as_secs_f64();
    let committed = one.dataset("bench.small").await?["rows"]
        .as_u64()
        .unwrap_or(0) as usize;
    if committed != 2 * half {
        bail!(
            "only {committed} of {} pushes through two hubs committed",
            2 * half
        );
    }
    let two_nodes = (2 * half) as f64 / seconds;
    println!(
        "two hubs on one PostgreSQL catalog, {} one-row pushes: {two_nodes:>8.0} commits/s \
         ({:.2}x one hub on PostgreSQL)",
        2 * half,
        two_nodes / postgres.commits_per_s
    );
    one.stop().await;
    two.stop().await;
    Ok(())
}

fn report(name: &str, figures: &Figures, baseline: Option<&Figures>) {
    let ratio = |value: f64, of: fn(&Figures) -> f64| {
        baseline
            .map(|b| format!(" ({:.2}x SQLite)", value / of(b)))
            .unwrap_or_default()
    };
    println!(
        "{name:<10} NDJSON push, committed: {:>10.0} rows/s{}",
        figures.ndjson_rows_per_s,
        ratio(figures.ndjson_rows_per_s, |f| f.ndjson_rows_per_s)
    );
    println!(
        "{name:<10} one-row pushes, all committed: {:>8.0} commits/s{}",
        figures.commits_per_s,
        ratio(figures.commits_per_s, |f| f.commits_per_s)
    );
    println!(
        "{name:<10} planning over the files (EXPLAIN, median): {:>7.2} ms{}",
        figures.plan_ms,
        ratio(figures.plan_ms, |f| f.plan_ms)
    );
}

/// The three measures on one hub whose configuration `adjust` sets.
async fn measure(args: &Args, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Figures> {
    let hub = Hub::start_with(adjust).await?;
    hub.register("bench.ndjson", schema_json()).await?;
    hub.register("bench.small", schema_json()).await?;
    hub.register("bench.many", schema_json()).await?;

    let bodies: Vec<(Vec<u8>, &str)> = (0..args.requests)
        .map(|r| {
            (
                rows_ndjson(r * 10_000, 10_000).into_bytes(),
                "application/x-ndjson",
            )
        })
        .collect();
    let (ndjson_rows_per_s, _, _) = hub
        .push_all("bench.ndjson", bodies, args.concurrency)
        .await?;

    let small: Vec<(Vec<u8>, &str)> = (0..args.small_pushes)
        .map(|i| (rows_ndjson(i, 1).into_bytes(), "application/x-ndjson"))
        .collect();
    let started = Instant::now();
    hub.push_all("bench.small", small, args.small_pushes)
        .await?;
    let commits_per_s = args.small_pushes as f64 / started.elapsed().as_secs_f64();
    let committed = hub.dataset("bench.small").await?["rows"]
        .as_u64()
        .unwrap_or(0) as usize;
    if committed != args.small_pushes {
        bail!(
            "only {committed} of {} small pushes committed",
            args.small_pushes
        );
    }

    // A dataset of many one-row files (the bench hub runs no compaction).
    let many: Vec<(Vec<u8>, &str)> = (0..args.files)
        .map(|i| (rows_ndjson(i, 1).into_bytes(), "application/x-ndjson"))
        .collect();
    hub.push_all("bench.many", many, 64).await?;
    let files = hub.dataset("bench.many").await?["files"]
        .as_u64()
        .unwrap_or(0) as usize;
    if files != args.files {
        bail!("bench.many has {files} files, not {}", args.files);
    }
    let sql =
        "EXPLAIN SELECT region_code, count(*) FROM bench.many WHERE id > 5000 GROUP BY region_code";
    hub.sql_rows(&hub.admin, sql)
        .await
        .context("planning over bench.many")?;
    let mut times = Vec::with_capacity(args.plans);
    for _ in 0..args.plans {
        let started = Instant::now();
        hub.sql_rows(&hub.admin, sql).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let plan_ms = percentile(&mut times, 0.5);
    hub.stop().await;
    Ok(Figures {
        ndjson_rows_per_s,
        commits_per_s,
        plan_ms,
    })
}
