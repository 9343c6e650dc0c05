//! Table lifecycle benchmark: compaction, upsert by key, time travel and deletes, each
//! against a baseline measured in the same run.
//!
//! Phases (`--phases`, comma-separated, all by default):
//! - `compaction`: `--pushes` pushes of `--rows` rows against the same rows pushed at once,
//!   before and after compaction; compaction throughput on tiny and on Kafka-flush sized
//!   files; pushes while a compaction runs against pushes without one.
//! - `keyed`: a dataset keyed by `id` fed `--keyed-pushes` pushes of 1,000 rows, a tenth of
//!   each replacing rows of an earlier push, against the same final rows unkeyed: push rate,
//!   and the four queries before and after compaction.
//! - `time-travel`: a query on a snapshot a week old (read by instant) and by id, against
//!   the same query on the current snapshot of the same size.
//! - `deletes`: a delete of 0.1 % of a `--delete-rows` dataset: files rewritten, time.
//!
//! Run: `cargo run --release -p cityhub-benches --bin lifecycle_bench`

use std::time::Instant;

use anyhow::Context;
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use cityhub_benches::Hub;
use cityhub_benches::tables::{
    bench_admin, compare_sql, compare_tables, lifecycle_queries, push_bodies, push_once,
    push_small, push_while, run_sql,
};
use cityhub_catalog::DatasetName;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Runs per query and side (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Pushes into the compaction dataset before it is compacted.
    #[arg(long, default_value_t = 10_000)]
    pushes: usize,
    /// Rows per push of the compaction phase.
    #[arg(long, default_value_t = 50)]
    rows: usize,
    /// Pushes of 1,000 rows into the keyed dataset.
    #[arg(long, default_value_t = 1_000)]
    keyed_pushes: usize,
    /// Rows of the dataset a delete removes 0.1 % of.
    #[arg(long, default_value_t = 10_000_000)]
    delete_rows: usize,
    /// Phases to run, comma-separated: compaction, keyed, time-travel, deletes.
    #[arg(long, default_value = "compaction,keyed,time-travel,deletes")]
    phases: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    let hub = Hub::start().await?;
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if phases.contains(&"compaction") {
        compaction(&hub, args.pushes, args.rows, args.runs).await?;
    }
    if phases.contains(&"keyed") {
        keyed(&hub, args.keyed_pushes, args.runs).await?;
    }
    if phases.contains(&"time-travel") {
        time_travel(&hub, args.pushes * args.rows, args.runs).await?;
    }
    if phases.contains(&"deletes") {
        deletes(&hub, args.delete_rows).await?;
    }
    hub.stop().await;
    Ok(())
}

/// `pushes` pushes of `rows` rows, queried before and after compaction against the same
/// rows pushed at once; compaction throughput; pushes while a compaction runs against
/// pushes without one.
async fn compaction(hub: &Hub, pushes: usize, rows: usize, runs: usize) -> anyhow::Result<()> {
    let admin = bench_admin();
    let total = pushes * rows;
    for name in ["bench.pushed", "bench.at_once"] {
        hub.register(name, cityhub_benches::schema_json()).await?;
    }
    let started = Instant::now();
    let push_rate = push_small(hub, &admin, "bench.pushed", 0, pushes, rows).await?;
    println!(
        "\ncompaction: {pushes} pushes of {rows} rows into bench.pushed in {:.1} s ({push_rate:.0} pushes/s, 8 writers)",
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
    compact_all(hub, &["bench.pushed", "bench.at_once"]).await?;
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
    Ok(())
}

/// Rows per keyed push, and of those how many replace rows of an earlier push.
const KEYED_ROWS: usize = 1_000;
const REPLACED_ROWS: usize = 100;

/// A keyed dataset fed pushes that each add 900 new ids and repeat 100 ids of an earlier
/// push (a correction feed), against an unkeyed dataset fed the same 900 new ids per push:
/// both end with the same rows (a row's values follow from its id).
async fn keyed(hub: &Hub, pushes: usize, runs: usize) -> anyhow::Result<()> {
    let admin = bench_admin();
    let spec = |name: &str, primary_key: serde_json::Value| {
        json!({"name": name, "columns": cityhub_benches::schema_json(),
               "sharing": "unconditional", "primary_key": primary_key})
    };
    hub.register_spec(spec("bench.keyed", json!(["id"])))
        .await?;
    hub.register_spec(spec("bench.unkeyed", json!([]))).await?;
    // The same rows unkeyed and compacted in the keyed dataset's order (by id), so that
    // the comparison after compaction is of keying alone, not of two sort orders.
    let mut by_id = spec("bench.unkeyed_by_id", json!([]));
    by_id["sort_key"] = json!(["id"]);
    hub.register_spec(by_id).await?;
    let fresh = KEYED_ROWS - REPLACED_ROWS;
    let keyed_bodies: Vec<String> = (0..pushes)
        .map(|push| {
            let mut body = cityhub_benches::rows_ndjson(push * fresh, fresh);
            if push > 0 {
                // A contiguous run of ids of some earlier push (spread by a prime stride).
                let earlier = ((push as u64).wrapping_mul(2_654_435_761) >> 7) as usize % push;
                body.push_str(&cityhub_benches::rows_ndjson(
                    earlier * fresh,
                    REPLACED_ROWS,
                ));
            }
            body
        })
        .collect();
    let unkeyed_bodies: Vec<String> = (0..pushes)
        .map(|push| cityhub_benches::rows_ndjson(push * fresh, fresh))
        .collect();
    let keyed_rate = push_bodies(hub, &admin, "bench.keyed", keyed_bodies).await?;
    let unkeyed_rate = push_bodies(hub, &admin, "bench.unkeyed", unkeyed_bodies.clone()).await?;
    push_bodies(hub, &admin, "bench.unkeyed_by_id", unkeyed_bodies).await?;
    let snapshot = hub.dataset("bench.keyed").await?;
    println!(
        "\nkeyed: {pushes} pushes of {KEYED_ROWS} rows ({REPLACED_ROWS} replacing): {keyed_rate:.0} pushes/s \
         ({:.0} rows/s) against {unkeyed_rate:.0} pushes/s unkeyed ({:.0} rows/s of {fresh}-row pushes): {:.2}x; \
         keyed dataset: {} rows in {} files",
        keyed_rate * KEYED_ROWS as f64,
        unkeyed_rate * fresh as f64,
        keyed_rate / unkeyed_rate,
        snapshot["rows"],
        snapshot["files"]
    );
    let check = "SELECT count(*), count(DISTINCT id) FROM bench.keyed";
    let batches = hub.sql_batches(&hub.admin, check).await?;
    let value = |column: usize| {
        batches[0]
            .column(column)
            .as_primitive::<Int64Type>()
            .value(0)
    };
    anyhow::ensure!(
        value(0) == value(1) && value(0) as usize == pushes * fresh,
        "bench.keyed holds {} rows of {} ids, expected {} of each",
        value(0),
        value(1),
        pushes * fresh
    );
    let queries = lifecycle_queries();
    compare_tables(
        hub,
        &admin,
        &queries,
        "bench.keyed",
        "bench.unkeyed",
        runs,
        "keyed vs unkeyed, as pushed",
    )
    .await?;
    compact_all(
        hub,
        &["bench.keyed", "bench.unkeyed", "bench.unkeyed_by_id"],
    )
    .await?;
    compare_tables(
        hub,
        &admin,
        &queries,
        "bench.keyed",
        "bench.unkeyed_by_id",
        runs,
        "keyed vs unkeyed, both compacted by id",
    )
    .await?;
    compare_tables(
        hub,
        &admin,
        &queries,
        "bench.keyed",
        "bench.unkeyed",
        runs,
        "keyed (compacted by id) vs unkeyed (compacted by time)",
    )
    .await?;
    Ok(())
}

/// The queries on a snapshot a week old, read by instant and by id, against the current
/// snapshot with one row more. The old snapshot's commit time is moved back 7 days in the
/// catalog (the catalog stamps commits with the real clock, and a benchmark cannot wait a
/// week); what is measured is the lookup by instant and the read of the old file list.
async fn time_travel(hub: &Hub, rows: usize, runs: usize) -> anyhow::Result<()> {
    let admin = bench_admin();
    hub.register("bench.history", cityhub_benches::schema_json())
        .await?;
    push_once(hub, &admin, "bench.history", 0, rows).await?;
    let history = hub
        .state
        .catalog
        .dataset(&DatasetName::parse("bench.history")?)
        .await?
        .context("bench.history")?;
    let old = history.snapshot_id.context("a snapshot")?;
    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let catalog = std::path::Path::new(&hub.state.config.storage.data_dir).join("catalog.db");
    let connection = rusqlite::Connection::open(&catalog)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.execute(
        "UPDATE snapshots SET created_at = ?1 WHERE id = ?2",
        rusqlite::params![
            week_ago.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            old
        ],
    )?;
    push_once(hub, &admin, "bench.history", rows, 1).await?;
    let instant = (week_ago + chrono::Duration::minutes(1))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).context("offset")?)
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string();
    let queries = lifecycle_queries();
    let as_of = |clause: String| -> Vec<(&str, String)> {
        queries
            .iter()
            .map(|(label, sql)| (*label, sql.replace("{t}", &format!("{{t}} {clause}"))))
            .collect()
    };
    println!(
        "\ntime travel: {rows} rows a week ago (snapshot {old}), {} now",
        rows + 1
    );
    for (label, clause) in [
        (
            "a week back by instant vs current",
            format!("FOR SYSTEM_TIME AS OF TIMESTAMP '{instant}'"),
        ),
        ("by snapshot id vs current", format!("VERSION AS OF {old}")),
    ] {
        let travelled = as_of(clause);
        let travelled: Vec<(&str, &str)> =
            travelled.iter().map(|(l, s)| (*l, s.as_str())).collect();
        compare_sql(
            hub,
            &admin,
            &travelled,
            &queries,
            "bench.history",
            runs,
            label,
        )
        .await?;
    }
    Ok(())
}

/// A delete of 0.1 % of a dataset of `rows` rows in files of 100,000 (by id, as a feed
/// would write them): the files it rewrites, against the dataset's files, and its time,
/// against a full count of the dataset.
async fn deletes(hub: &Hub, rows: usize) -> anyhow::Result<()> {
    let admin = bench_admin();
    hub.register("bench.big", cityhub_benches::schema_json())
        .await?;
    let per_push = 100_000.min(rows);
    let started = Instant::now();
    push_small(hub, &admin, "bench.big", 0, rows / per_push, per_push).await?;
    let loaded = started.elapsed().as_secs_f64();
    let files = hub.dataset("bench.big").await?["files"].clone();
    let doomed = rows / 1000;
    let first = rows / 2 + per_push / 3;
    let predicate = format!("id >= {first} AND id < {}", first + doomed);
    let name = DatasetName::parse("bench.big")?;
    let (scan_ms, _) = run_sql(hub, &admin, "SELECT count(*), sum(score) FROM bench.big").await?;
    let started = Instant::now();
    let report = cityhub_server::deletes::delete_rows(&hub.state, None, &name, &predicate)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "\ndeletes: {rows} rows in {files} files (loaded in {loaded:.1} s); `{predicate}` deleted {} rows \
         rewriting {} file(s) in {:.0} ms (snapshot {}); a full scan of the dataset takes {scan_ms:.0} ms",
        report.rows_deleted,
        report.files_rewritten,
        seconds * 1000.0,
        report
            .snapshot_id
            .map_or("none".into(), |id| id.to_string()),
    );
    Ok(())
}

/// Compacts each of `tables` by the hub's policy, one after the other.
async fn compact_all(hub: &Hub, tables: &[&str]) -> anyhow::Result<()> {
    for table in tables {
        let name = DatasetName::parse(table)?;
        hub.state
            .ingest
            .compact(None, &name, &hub.state.compaction, &|_, _| {})
            .await?;
    }
    Ok(())
}
