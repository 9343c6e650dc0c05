//! SQL speed against DuckDB: the hub, plain DataFusion and DuckDB on the same Parquet files.
//!
//! In one run on one machine:
//! 1. `--rows` rows (10 million by default) of a city event feed and three small dimension
//!    tables are generated, written as Parquet and loaded with the import path
//!    (`cityhub import --create`) into a temporary hub;
//! 2. each query of the suite runs `--runs` times through the hub's `POST /api/v1/sql`
//!    (Arrow IPC over loopback HTTP, as an admin), through a plain DataFusion
//!    `SessionContext` over the hub's files, and through DuckDB (the PyPI wheel, in
//!    `benches/duckdb_runner.py`, reading the same files); the three alternate run by run so
//!    that machine noise hits all alike, and the first run of each is a warm-up;
//! 3. the answers' row counts must agree, or the run fails;
//! 4. `--analysts` concurrent analysts run the mix through the hub, and as many threads run
//!    it in DuckDB: throughput and p99 side by side.
//!
//! Run: `cargo run --release -p cityhub-benches --bin sql_suite_bench` (needs
//! `pip install duckdb`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use cityhub_benches::tables::bench_admin;
use cityhub_benches::{DuckDb, Hub, labelled_histogram_totals, percentile};
use cityhub_catalog::DatasetName;
use clap::Parser;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Rows in `bench.events`.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Counted runs per query and engine (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent analysts (and DuckDB threads).
    #[arg(long, default_value_t = 32)]
    analysts: usize,
    /// Queries each analyst runs.
    #[arg(long, default_value_t = 4)]
    per_analyst: usize,
    /// The hub's per-query memory limit in MiB (default: the hub's own default).
    #[arg(long)]
    memory_limit_mib: Option<u64>,
    /// The hub's target partitions (default: the hub's own default).
    #[arg(long)]
    target_partitions: Option<u64>,
    /// Plain DataFusion reads the low-cardinality strings of `bench.events` (county,
    /// category, status) as dictionaries: an experiment on the engine's string handling.
    #[arg(long)]
    plain_dictionary: bool,
    /// Rows per row group in the hub's files (`ingest.row_group_rows`; default: the hub's).
    #[arg(long)]
    row_group_rows: Option<u64>,
    /// Data page size in bytes in the hub's files (`ingest.data_page_bytes`).
    #[arg(long)]
    data_page_bytes: Option<u64>,
    /// Statistics in the hub's files: page, chunk or none (`ingest.statistics`).
    #[arg(long)]
    statistics: Option<String>,
    /// Write the hub's files without dictionary encoding (`ingest.dictionary = false`).
    #[arg(long)]
    no_dictionary: bool,
    /// A DataFusion setting for the hub (`name=value`, repeatable), as
    /// `query.engine_options` takes it; plain DataFusion keeps its defaults.
    #[arg(long = "engine-option")]
    engine_options: Vec<String>,
    /// Only the query of this name, or else the queries whose names contain this.
    #[arg(long)]
    only: Option<String>,
    /// Print the hub's plan of each query before timing it: `plan` (EXPLAIN) or `analyze`
    /// (EXPLAIN ANALYZE, with each operator's rows, time and spills).
    #[arg(long)]
    explain: Option<String>,
    /// Run this SQL (repeatable) instead of the suite: for taking a query apart.
    #[arg(long = "query")]
    queries: Vec<String>,
}

/// The suite: (name, SQL). Shaped like what city analysts write; every statement is valid
/// in both DataFusion's and DuckDB's dialects, so all engines run the same text.
const SUITE: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM bench.events"),
    (
        "one day",
        "SELECT count(*), sum(amount) FROM bench.events \
         WHERE seen_at >= '2026-10-09T16:00:00Z' AND seen_at < '2026-10-10T16:00:00Z'",
    ),
    (
        "per county",
        "SELECT county_code, count(*) AS n, sum(amount) AS amount FROM bench.events \
         GROUP BY county_code ORDER BY county_code",
    ),
    (
        "per category",
        "SELECT category, count(*) AS n FROM bench.events GROUP BY category ORDER BY n DESC, category",
    ),
    (
        "closed per county x category",
        "SELECT county_code, category, count(*) AS n FROM bench.events WHERE status = '已办结' \
         GROUP BY county_code, category ORDER BY county_code, category",
    ),
    (
        "having",
        "SELECT plate_no, count(*) AS n FROM bench.events GROUP BY plate_no HAVING count(*) > 40 \
         ORDER BY n DESC, plate_no",
    ),
    (
        "join counties",
        "SELECT c.name, count(*) AS n, avg(e.speed) AS speed FROM bench.events e \
         JOIN bench.counties c ON e.county_code = c.code GROUP BY c.name ORDER BY c.name",
    ),
    (
        "join categories",
        "SELECT k.department, count(*) AS n FROM bench.events e JOIN bench.categories k \
         ON e.category = k.category WHERE k.severity >= 3 GROUP BY k.department ORDER BY k.department",
    ),
    (
        "in subquery",
        "SELECT count(*) FROM bench.events WHERE plate_no IN (SELECT plate_no FROM bench.watchlist)",
    ),
    (
        "not in subquery",
        "SELECT count(*) FROM bench.events WHERE county_code NOT IN \
         (SELECT code FROM bench.counties WHERE name LIKE '%县')",
    ),
    (
        "exists",
        "SELECT e.county_code, count(*) AS n FROM bench.events e WHERE EXISTS \
         (SELECT 1 FROM bench.watchlist w WHERE w.plate_no = e.plate_no) \
         GROUP BY e.county_code ORDER BY e.county_code",
    ),
    (
        "not exists",
        "SELECT count(*) FROM bench.events e WHERE NOT EXISTS \
         (SELECT 1 FROM bench.categories k WHERE k.category = e.category AND k.severity = 1)",
    ),
    (
        "top-3 per county",
        "SELECT county_code, event_id, amount FROM (SELECT county_code, event_id, amount, \
         row_number() OVER (PARTITION BY county_code ORDER BY amount DESC, event_id) AS r \
         FROM bench.events) t WHERE r <= 3 ORDER BY county_code, r",
    ),
    (
        "distinct plates",
        "SELECT count(DISTINCT plate_no) FROM bench.events",
    ),
    (
        "distinct phones per county",
        "SELECT county_code, count(DISTINCT phone) AS callers FROM bench.events \
         GROUP BY county_code ORDER BY county_code",
    ),
    (
        "phone prefix",
        "SELECT substr(phone, 1, 3) AS prefix, count(*) AS n FROM bench.events \
         GROUP BY prefix ORDER BY n DESC, prefix",
    ),
    (
        "plate like",
        "SELECT count(*) FROM bench.events WHERE plate_no LIKE '川K1%'",
    ),
    (
        "per Beijing day",
        "SELECT date_trunc('day', seen_at + INTERVAL '8 hours') AS day, count(*) AS n FROM bench.events \
         GROUP BY day ORDER BY day",
    ),
    (
        "per Beijing hour of day",
        "SELECT extract(hour FROM seen_at + INTERVAL '8 hours') AS hour, count(*) AS n, \
         sum(CASE WHEN speed > 80 THEN 1 ELSE 0 END) AS speeding FROM bench.events \
         GROUP BY hour ORDER BY hour",
    ),
    (
        "top speeds",
        "SELECT event_id, plate_no, speed FROM bench.events ORDER BY speed DESC, event_id LIMIT 100",
    ),
    (
        "top callers",
        "SELECT phone, count(*) AS n FROM bench.events WHERE phone IS NOT NULL \
         GROUP BY phone ORDER BY n DESC, phone LIMIT 10",
    ),
    (
        "stats per category",
        "SELECT category, min(amount), max(amount), avg(speed), sum(amount) FROM bench.events \
         GROUP BY category ORDER BY category",
    ),
    (
        "one plate in a week",
        "SELECT event_id, seen_at, county_code FROM bench.events WHERE plate_no = '川K10086' \
         AND seen_at >= '2026-10-01T00:00:00Z' AND seen_at < '2026-10-08T00:00:00Z' ORDER BY seen_at",
    ),
    (
        "point lookup",
        "SELECT * FROM bench.events WHERE event_id = 4321987",
    ),
];

/// Neijiang's five counties: (code, name, population in 10,000s).
const COUNTIES: &[(&str, &str, i64)] = &[
    ("511002", "市中区", 43),
    ("511011", "东兴区", 70),
    ("511024", "威远县", 62),
    ("511025", "资中县", 85),
    ("511083", "隆昌市", 60),
];

/// Event categories: (name, department, severity 1-4).
const CATEGORIES: &[(&str, &str, i32)] = &[
    ("超速", "gongan", 3),
    ("闯红灯", "gongan", 3),
    ("违法停车", "gongan", 1),
    ("不按导向车道行驶", "gongan", 1),
    ("未系安全带", "gongan", 2),
    ("酒驾", "gongan", 4),
    ("占道经营", "chengguan", 1),
    ("噪音扰民", "huanbao", 2),
    ("垃圾堆放", "chengguan", 1),
    ("井盖缺失", "zhujian", 3),
    ("路灯故障", "zhujian", 1),
    ("消防通道堵塞", "yingji", 4),
    ("矛盾纠纷", "zhili", 2),
    ("供水故障", "zhujian", 2),
    ("环境卫生", "chengguan", 1),
    ("安全隐患", "yingji", 3),
];

const STATUSES: &[&str] = &["已办结", "办理中", "待受理"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let folder = tempfile::tempdir()?;
    let started = Instant::now();
    let files = generate(folder.path(), args.rows)?;
    println!(
        "machine: {} cores; generated {} rows in {:.1} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.rows,
        started.elapsed().as_secs_f64()
    );
    let hub = Hub::start_with(|config| {
        if let Some(mib) = args.memory_limit_mib {
            config.query.memory_limit_bytes = mib * 1024 * 1024;
        }
        if let Some(partitions) = args.target_partitions {
            config.query.target_partitions = partitions;
        }
        if let Some(rows) = args.row_group_rows {
            config.ingest.row_group_rows = rows;
        }
        if let Some(bytes) = args.data_page_bytes {
            config.ingest.data_page_bytes = bytes;
        }
        if let Some(statistics) = &args.statistics {
            config.ingest.statistics = statistics.clone();
        }
        if args.no_dictionary {
            config.ingest.dictionary = false;
        }
        for option in &args.engine_options {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            config
                .query
                .engine_options
                .insert(name.to_string(), value.to_string());
        }
    })
    .await?;
    let started = Instant::now();
    let admin = bench_admin();
    for (name, path) in &files {
        hub.state
            .ingest
            .import_file(&admin, &DatasetName::parse(name)?, path, true, |_| {})
            .await
            .map_err(|err| anyhow::anyhow!("importing {name}: {err}"))?;
    }
    let events = hub
        .state
        .catalog
        .dataset(&DatasetName::parse("bench.events")?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("bench.events is missing"))?;
    println!(
        "imported into the hub in {:.1} s; bench.events takes {:.1} MiB in {} files",
        started.elapsed().as_secs_f64(),
        events.bytes as f64 / (1024.0 * 1024.0),
        events.files
    );
    let tables = hub.local_files().await?;
    let plain = plain_datafusion(&tables, args.plain_dictionary).await?;
    let mut duckdb = DuckDb::start(&tables)?;
    let wanted = |name: &str| match args.only.as_deref() {
        None => true,
        Some(only) if SUITE.iter().any(|(n, _)| *n == only) => name == only,
        Some(only) => name.contains(only),
    };
    // Given SQL is named by its place: "query 1", "query 2", ...
    let names: Vec<String> = (1..=args.queries.len())
        .map(|n| format!("query {n}"))
        .collect();
    let suite: Vec<(&str, &str)> = if args.queries.is_empty() {
        SUITE.iter().copied().filter(|(n, _)| wanted(n)).collect()
    } else {
        names
            .iter()
            .map(String::as_str)
            .zip(args.queries.iter().map(String::as_str))
            .collect()
    };
    let explain = match args.explain.as_deref() {
        None => None,
        Some("plan") => Some("EXPLAIN"),
        Some("analyze") => Some("EXPLAIN ANALYZE"),
        Some(other) => bail!("--explain takes plan or analyze, not {other}"),
    };
    compare(&hub, &plain, &mut duckdb, &suite, args.runs, explain).await?;
    fixed_cost(&hub, &plain, &mut duckdb).await?;
    if args.analysts > 0 {
        concurrency(&hub, &mut duckdb, &suite, args.analysts, args.per_analyst).await?;
    }
    hub.stop().await;
    Ok(())
}

/// A deterministic random city: the event feed in time order (as feeds deliver it) and the
/// dimension tables, as Parquet files written with the writer's defaults.
fn generate(folder: &Path, rows: usize) -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    let mut random = StdRng::seed_from_u64(28181);
    let mut files = Vec::new();

    let counties = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("code", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("population", DataType::Int64, false),
        ])),
        vec![
            strings(COUNTIES.iter().map(|c| Some(c.0))),
            strings(COUNTIES.iter().map(|c| Some(c.1))),
            Arc::new(Int64Array::from_iter_values(COUNTIES.iter().map(|c| c.2))),
        ],
    )?;
    files.push(write(folder, "bench.counties", &[counties])?);

    let categories = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("category", DataType::Utf8, false),
            Field::new("department", DataType::Utf8, false),
            Field::new("severity", DataType::Int32, false),
        ])),
        vec![
            strings(CATEGORIES.iter().map(|c| Some(c.0))),
            strings(CATEGORIES.iter().map(|c| Some(c.1))),
            Arc::new(Int32Array::from_iter_values(CATEGORIES.iter().map(|c| c.2))),
        ],
    )?;
    files.push(write(folder, "bench.categories", &[categories])?);

    // Plates seen in the feed: 川K plus five characters, 400,000 distinct.
    let plate =
        |n: u32| format!("川K{:05}", n % 100_000) + ["", "A", "B", "C"][(n / 100_000) as usize % 4];
    let watchlist: Vec<String> = (0..1_000)
        .map(|_| plate(random.random_range(0..400_000)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let watch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "plate_no",
            DataType::Utf8,
            false,
        )])),
        vec![strings(watchlist.iter().map(|p| Some(p.as_str())))],
    )?;
    files.push(write(folder, "bench.watchlist", &[watch])?);

    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new(
            "seen_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("county_code", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("plate_no", DataType::Utf8, false),
        Field::new("phone", DataType::Utf8, true),
        Field::new("speed", DataType::Int32, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    // 90 days from 2026-09-01 Beijing time, in order.
    let start = 1_788_192_000_000_000i64;
    let span = 90 * 86_400 * 1_000_000i64;
    let path = folder.join("bench.events.parquet");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path)?, schema.clone(), None)?;
    let chunk = 100_000;
    for first in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - first);
        let ids = (first..first + n).map(|i| i as i64);
        let at: Vec<i64> = (first..first + n)
            .map(|i| {
                start
                    + (i as i128 * span as i128 / rows as i128) as i64
                    + random.random_range(0..60_000_000)
            })
            .collect();
        let county = (0..n).map(|_| {
            // A few events come in without a county (a device not yet curated).
            let pick: u32 = random.random_range(0..1000);
            (pick >= 5).then(|| COUNTIES[(pick % 5) as usize].0)
        });
        let county: Vec<Option<&str>> = county.collect();
        let category: Vec<&str> = (0..n)
            .map(|_| {
                // Skewed: the first categories are the common ones.
                let a = random.random_range(0..CATEGORIES.len());
                let b = random.random_range(0..CATEGORIES.len());
                CATEGORIES[a.min(b)].0
            })
            .collect();
        let status: Vec<&str> = (0..n)
            .map(|_| STATUSES[random.random_range(0..10usize).min(2)])
            .collect();
        let plates: Vec<String> = (0..n)
            .map(|_| plate(random.random_range(0..400_000)))
            .collect();
        let phones: Vec<Option<String>> = (0..n)
            .map(|_| {
                (random.random_range(0..20) != 0).then(|| {
                    let prefix = ["138", "139", "158", "187", "133", "199", "152", "181"]
                        [random.random_range(0..8)];
                    format!("{prefix}{:08}", random.random_range(0..2_000_000u32))
                })
            })
            .collect();
        let speed: Vec<i32> = (0..n).map(|_| random.random_range(10..130)).collect();
        let amount: Vec<f64> = (0..n)
            .map(|_| f64::from(random.random_range(0..20_000u32)) / 10.0)
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(TimestampMicrosecondArray::from_iter_values(at).with_timezone("UTC")),
                strings(county.into_iter()),
                strings(category.into_iter().map(Some)),
                strings(status.into_iter().map(Some)),
                strings(plates.iter().map(|p| Some(p.as_str()))),
                strings(phones.iter().map(|p| p.as_deref())),
                Arc::new(Int32Array::from(speed)),
                Arc::new(Float64Array::from(amount)),
            ],
        )?;
        writer.write(&batch)?;
    }
    writer.close()?;
    files.push(("bench.events".into(), path));
    Ok(files)
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn write(
    folder: &Path,
    name: &str,
    batches: &[RecordBatch],
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let path = folder.join(format!("{name}.parquet"));
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path)?, batches[0].schema(), None)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok((name.to_string(), path))
}

/// Plain DataFusion with its defaults, each table registered over the hub's files.
async fn plain_datafusion(
    tables: &[(String, Vec<String>)],
    dictionary: bool,
) -> anyhow::Result<SessionContext> {
    let ctx = SessionContext::new_with_config(SessionConfig::new());
    ctx.sql("CREATE SCHEMA IF NOT EXISTS bench").await?;
    for (name, files) in tables {
        let mut frame = ctx
            .read_parquet(files.clone(), ParquetReadOptions::default())
            .await?;
        if dictionary && name == "bench.events" {
            let schema = frame.schema().as_arrow().clone();
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|field| {
                    let low_cardinality =
                        ["county_code", "category", "status"].contains(&field.name().as_str());
                    let data_type = if low_cardinality {
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
                    } else {
                        field.data_type().clone()
                    };
                    field.as_ref().clone().with_data_type(data_type)
                })
                .collect();
            let schema = Schema::new(fields);
            frame = ctx
                .read_parquet(files.clone(), ParquetReadOptions::default().schema(&schema))
                .await?;
        }
        ctx.register_table(name.as_str(), frame.into_view())?;
    }
    Ok(ctx)
}

/// The DuckDB runner process.
async fn compare(
    hub: &Hub,
    plain: &SessionContext,
    duckdb: &mut DuckDb,
    suite: &[(&str, &str)],
    runs: usize,
    explain: Option<&str>,
) -> anyhow::Result<()> {
    println!(
        "\n{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "query", "hub ms", "DF ms", "DuckDB ms", "hub/DF", "hub/Duck", "rows"
    );
    let (mut to_plain, mut to_duckdb) = (Vec::new(), Vec::new());
    for (name, sql) in suite {
        if let Some(explain) = explain {
            let batches = hub
                .sql_batches(&hub.admin, &format!("{explain} {sql}"))
                .await?;
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
        }
        let (mut hub_ms, mut plain_ms, mut duck_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut rows = (0, 0, 0);
        for run in 0..=runs {
            let t = Instant::now();
            rows.0 = hub.sql_rows(&hub.admin, sql).await?;
            let a = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let batches = plain.sql(sql).await?.collect().await?;
            let b = t.elapsed().as_secs_f64() * 1000.0;
            rows.1 = batches.iter().map(RecordBatch::num_rows).sum();
            let (c, duck_rows) = duckdb.run(sql)?;
            rows.2 = duck_rows;
            if run > 0 {
                hub_ms.push(a);
                plain_ms.push(b);
                duck_ms.push(c);
            }
        }
        if rows.0 != rows.1 || rows.0 != rows.2 {
            bail!(
                "{name}: rows differ: hub {}, DataFusion {}, DuckDB {}",
                rows.0,
                rows.1,
                rows.2
            );
        }
        let hub_ms = percentile(&mut hub_ms, 0.5);
        let plain_ms = percentile(&mut plain_ms, 0.5);
        let duck_ms = percentile(&mut duck_ms, 0.5);
        to_plain.push(hub_ms / plain_ms);
        to_duckdb.push(hub_ms / duck_ms);
        println!(
            "{name:<30} {hub_ms:>9.1} {plain_ms:>9.1} {duck_ms:>9.1} {:>9.2} {:>9.2} {:>9}",
            hub_ms / plain_ms,
            hub_ms / duck_ms,
            rows.0
        );
    }
    let worst = to_duckdb.iter().copied().fold(0.0, f64::max);
    println!(
        "medians over {} queries: hub / DataFusion {:.2}, hub / DuckDB {:.2} (worst {:.2})",
        suite.len(),
        percentile(&mut to_plain, 0.5),
        percentile(&mut to_duckdb, 0.5),
        worst
    );
    Ok(())
}

/// The cost of a request that does almost nothing (`SELECT count(*)` of the one-file
/// county table, answered from row counts): through HTTP, through the engine in-process
/// (no HTTP), plain DataFusion and DuckDB; medians of 500 after 50 warm-ups.
async fn fixed_cost(hub: &Hub, plain: &SessionContext, duckdb: &mut DuckDb) -> anyhow::Result<()> {
    let sql = "SELECT count(*) FROM bench.counties";
    let admin = bench_admin();
    let (mut http, mut engine, mut datafusion, mut duck) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The same query as a text the hub has not seen (a comment numbers it): planned afresh,
    // where the repeated text reuses its plan (query/src/plan_cache.rs).
    let mut http_new = Vec::new();
    let mut round_trip = Vec::new();
    let health = format!("{}/healthz", hub.base);
    // The hub's own clock on the SQL route (from accepting the request to the answer's
    // headers, the first batch included), to tell the handler from the transport.
    let handler = || {
        labelled_histogram_totals(
            "cityhub_http_request_duration_seconds",
            "route=\"/api/v1/sql\"",
        )
    };
    let mut handler_before = handler();
    for run in 0..550 {
        if run == 50 {
            handler_before = handler();
        }
        // The HTTP round trip alone: an authenticated-free GET the hub answers at once.
        let t = Instant::now();
        hub.client.get(&health).send().await?.bytes().await?;
        let r = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        hub.sql_rows(&hub.admin, sql).await?;
        let a = t.elapsed().as_secs_f64() * 1000.0;
        let numbered = format!("{sql} -- run {run}");
        let t = Instant::now();
        hub.sql_rows(&hub.admin, &numbered).await?;
        let n = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let mut stream = hub
            .state
            .query
            .execute(&admin, sql, &[])
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?
            .batches;
        while let Some(batch) = stream.next().await {
            batch.map_err(|err| anyhow::anyhow!("{err}"))?;
        }
        drop(stream);
        let b = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        plain.sql(sql).await?.collect().await?;
        let c = t.elapsed().as_secs_f64() * 1000.0;
        let (d, _) = duckdb.run(sql)?;
        if run >= 50 {
            round_trip.push(r);
            http.push(a);
            http_new.push(n);
            engine.push(b);
            datafusion.push(c);
            duck.push(d);
        }
    }
    let handler_after = handler();
    let handler_count = handler_after.1 - handler_before.1;
    let handler_mean_ms = match handler_count > 0.0 {
        true => (handler_after.0 - handler_before.0) / handler_count * 1000.0,
        false => f64::NAN,
    };
    println!(
        "\nfixed cost, {sql}, median of 500: hub over HTTP {:.3} ms (a text not seen before: {:.3} ms; a bare HTTP round trip, GET /healthz: {:.3} ms; the hub's SQL handler {:.3} ms, mean of both), hub engine in-process {:.3} ms, plain DataFusion {:.3} ms, DuckDB {:.3} ms (from Python)",
        percentile(&mut http, 0.5),
        percentile(&mut http_new, 0.5),
        percentile(&mut round_trip, 0.5),
        handler_mean_ms,
        percentile(&mut engine, 0.5),
        percentile(&mut datafusion, 0.5),
        percentile(&mut duck, 0.5),
    );
    println!(
        "plans reused by the hub so far: {}",
        hub.state.query.plans_reused()
    );
    Ok(())
}

/// The mix from `analysts` concurrent HTTP clients, then from as many DuckDB threads.
async fn concurrency(
    hub: &Hub,
    duckdb: &mut DuckDb,
    suite: &[(&str, &str)],
    analysts: usize,
    per_analyst: usize,
) -> anyhow::Result<()> {
    let queries: Vec<String> = suite.iter().map(|(_, sql)| sql.to_string()).collect();
    let (hub_seconds, mut latencies) = hub.analysts(&queries, analysts, per_analyst).await?;
    let answer = duckdb.ask(json!({
        "concurrent": queries, "threads": analysts, "per_thread": per_analyst
    }))?;
    let duck_seconds = answer["seconds"].as_f64().context("seconds")?;
    let mut duck_latencies: Vec<f64> = answer["latencies_ms"]
        .as_array()
        .context("latencies")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let total = latencies.len();
    println!(
        "\n{analysts} concurrent analysts, {total} queries of the mix:\n  hub    {:>6.2} queries/s, p50 {:>6.0} ms, p99 {:>6.0} ms\n  DuckDB {:>6.2} queries/s, p50 {:>6.0} ms, p99 {:>6.0} ms",
        total as f64 / hub_seconds,
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies, 0.99),
        duck_latencies.len() as f64 / duck_seconds,
        percentile(&mut duck_latencies.clone(), 0.5),
        percentile(&mut duck_latencies, 0.99),
    );
    Ok(())
}
