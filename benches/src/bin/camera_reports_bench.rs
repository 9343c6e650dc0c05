//! GB/T 28181 mobile positions and alarms into the hub over HTTP, beside the registry's own
//! hot path (keepalives, the same number of items in the same batches) and beside a plain
//! NDJSON push of the same positions into a department dataset; then "one device's track"
//! in SQL over `hub.camera_positions` beside the same query over that dataset.
//!
//! 1. `--devices` mobile devices registered, each reporting `--reports` positions a second
//!    apart, posted in batches of `--batch` (one request in flight, as one platform sends).
//! 2. Keepalives of the same devices, the same count and batches.
//! 3. Alarms: a tenth as many as positions.
//! 4. The same positions pushed as NDJSON rows to `bench.positions`.
//! 5. `SELECT ... WHERE camera_id = ... ORDER BY at` on both, `--runs` times, p50 and p99.
//!
//! Run: `cargo run --release -p cityhub-benches --bin camera_reports_bench`

use std::time::Instant;

use anyhow::bail;
use cityhub_benches::{Hub, percentile};
use cityhub_catalog::camera::ChannelReport;
use cityhub_catalog::{Column, ColumnType};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Mobile devices registered.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Positions each device reports.
    #[arg(long, default_value_t = 200)]
    reports: usize,
    /// Items per request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Runs of each query.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// A PostgreSQL database to keep the catalog in (a fresh schema of it), instead of the
    /// embedded SQLite: `postgres://user@127.0.0.1:5432/db`.
    #[arg(long)]
    postgres: Option<String>,
}

fn device_id(index: usize) -> String {
    format!("5110250000138{:07}", index + 1)
}

/// Posts `items` to `path` in batches, one request at a time; items per second. Every item
/// must be accepted (or be a duplicate, for keepalives there are none).
async fn post_all(hub: &Hub, path: &str, items: &[Value], batch: usize) -> anyhow::Result<f64> {
    let url = format!("{}{path}", hub.base);
    let started = Instant::now();
    for chunk in items.chunks(batch) {
        let response = hub
            .client
            .post(&url)
            .bearer_auth(&hub.admin)
            .json(chunk)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if !status.is_success() || answer["rejected"] != 0 {
            bail!("{path} answered {status}: {answer}");
        }
    }
    Ok(items.len() as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 in milliseconds of `runs` runs (after one warm-up), and the rows answered.
async fn query(hub: &Hub, sql: &str, runs: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for run in 0..=runs {
        let started = Instant::now();
        rows = hub.sql_rows(&hub.admin, sql).await?;
        if run > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        rows,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let catalog_url = match &args.postgres {
        Some(url) => Some(cityhub_benches::fresh_postgres_catalog(url).await?),
        None => None,
    };
    let hub = Hub::start_with(|config| {
        config.cameras.sweep_interval_secs = 3600;
        if let Some(url) = catalog_url {
            config.catalog.url = url;
        }
    })
    .await?;
    let total = args.devices * args.reports;
    println!(
        "machine: {} cores; catalog: {}; {} devices x {} positions = {total}, {} per request",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.devices,
        args.reports,
        args.batch
    );
    let now = chrono::Utc::now().timestamp_millis();
    let reports: Vec<ChannelReport> = (0..args.devices)
        .map(|i| {
            ChannelReport::from_json(
                json!({"id": device_id(i), "name": format!("巡逻车 {i}"), "department": "bench"}),
                None,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("{}: {}", err.field, err.message))?;
    hub.state
        .catalog
        .register_cameras(reports, None, now - 86_400_000)
        .await?;

    // Report r of every device, then r + 1: as devices report, interleaved.
    let at = |report: usize| now - ((args.reports - report) as i64) * 1_000;
    let position = |device: usize, report: usize| {
        json!({"id": device_id(device), "at": at(report),
               "longitude": 105.0 + device as f64 * 1e-4 + report as f64 * 1e-5,
               "latitude": 29.58, "speed": 40.0, "direction": 90.0})
    };
    let positions: Vec<Value> = (0..args.reports)
        .flat_map(|r| (0..args.devices).map(move |d| (d, r)))
        .map(|(d, r)| position(d, r))
        .collect();
    let keepalives: Vec<Value> = (0..args.reports)
        .flat_map(|r| (0..args.devices).map(move |d| (d, r)))
        .map(|(d, r)| json!({"id": device_id(d), "at": at(r)}))
        .collect();
    let alarms: Vec<Value> = (0..total / 10)
        .map(|i| {
            json!({"id": device_id(i % args.devices), "priority": 1 + i % 4, "method": 5,
                   "type": 1 + i % 13, "at": at(i / args.devices % args.reports)})
        })
        .collect();

    let keepalive_rate =
        post_all(&hub, "/api/v1/cameras/keepalive", &keepalives, args.batch).await?;
    let position_rate = post_all(&hub, "/api/v1/cameras/positions", &positions, args.batch).await?;
    let alarm_rate = post_all(&hub, "/api/v1/cameras/alarms", &alarms, args.batch).await?;

    hub.register(
        "bench.positions",
        serde_json::to_value(vec![
            Column::new("camera_id", ColumnType::String, false),
            Column::new("at", ColumnType::Timestamp, false),
            Column::new("longitude", ColumnType::Float64, false),
            Column::new("latitude", ColumnType::Float64, false),
            Column::new("speed", ColumnType::Float64, true),
            Column::new("direction", ColumnType::Float64, true),
        ])?,
    )
    .await?;
    let bodies = positions
        .chunks(args.batch)
        .map(|chunk| {
            let mut body = Vec::new();
            for row in chunk {
                let mut row = row.clone();
                row["camera_id"] = row["id"].take();
                row.as_object_mut().map(|o| o.remove("id"));
                body.extend_from_slice(row.to_string().as_bytes());
                body.push(b'\n');
            }
            (body, "application/x-ndjson")
        })
        .collect();
    let (push_rate, _, _) = hub.push_all("bench.positions", bodies, 1).await?;

    println!(
        "ingest over HTTP, {} items per request, one request in flight (items/s):",
        args.batch
    );
    println!("  keepalives (baseline)         {keepalive_rate:>10.0}");
    println!(
        "  positions                     {position_rate:>10.0}  ({:.2}x the keepalives)",
        position_rate / keepalive_rate
    );
    println!(
        "  alarms ({:>7})              {alarm_rate:>10.0}  ({:.2}x)",
        alarms.len(),
        alarm_rate / keepalive_rate
    );
    println!(
        "  NDJSON push, same positions   {push_rate:>10.0}  ({:.2}x)",
        push_rate / keepalive_rate
    );

    let device = device_id(args.devices / 2);
    let track = |table: &str| {
        format!(
            "SELECT at, longitude, latitude FROM {table} WHERE camera_id = '{device}' ORDER BY at"
        )
    };
    let (dataset_p50, dataset_p99, dataset_rows) =
        query(&hub, &track("bench.positions"), args.runs).await?;
    let (hub_p50, hub_p99, hub_rows) =
        query(&hub, &track("hub.camera_positions"), args.runs).await?;
    if hub_rows != args.reports || dataset_rows != args.reports {
        bail!(
            "one device's track: {hub_rows} and {dataset_rows} rows, not {}",
            args.reports
        );
    }
    println!(
        "one device's track over {total} positions ({} rows), ms:",
        args.reports
    );
    println!(
        "  bench.positions (dataset, baseline)  p50 {dataset_p50:>8.1}  p99 {dataset_p99:>8.1}"
    );
    println!(
        "  hub.camera_positions                 p50 {hub_p50:>8.1}  p99 {hub_p99:>8.1}  ({:.2}x)",
        hub_p50 / dataset_p50
    );
    hub.stop().await;
    Ok(())
}
