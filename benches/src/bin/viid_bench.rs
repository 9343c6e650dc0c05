//! GA/T 1400 benchmark: the `/VIID/` receiver beside the hub's own push, and "every pass
//! of one plate in 30 days" beside DuckDB on the same files.
//!
//! 1. **ingest**: `--requests` bodies of `--records` motor vehicles, each with one image of
//!    `--image-bytes` random (incompressible) bytes in base64, posted to
//!    `/VIID/MotorVehicles` by `--concurrency` clients; a record counts when its request is
//!    answered with every status 0 (rows and image rows committed, images durable). Beside
//!    it, in the same run and alternating with it, the baseline: the same rows without
//!    images pushed as NDJSON to a dataset of the same columns.
//! 2. **plates**: `--plate-rows` vehicle rows over `--days` days written straight into a
//!    `viid_motor_vehicles` dataset (one file per day, sorted by capture time, as the
//!    receiver and compaction leave them); then all passes of one plate in the last 30 days,
//!    through the hub's HTTP SQL and through DuckDB over the same Parquet files, alternating,
//!    `--runs` runs each after a warm-up.
//!
//! Run: `cargo run --profile bench-fast -p cityhub-benches --bin viid_bench -- --phases
//! ingest,plates` (plates needs `pip install duckdb`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use cityhub_benches::{DuckDb, Hub, histogram_totals, percentile, process_cpu_seconds};
use cityhub_catalog::{DatasetName, Principal};
use cityhub_ingest::viid::ViidKind;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const PLATFORM: &str = "51100000001190000001";
const CHECKPOINT: &str = "51102500001210000001";
/// The plate the query looks for.
const WANTED: &str = "川K8A888";

#[derive(Parser)]
struct Args {
    /// ingest, plates (comma-separated).
    #[arg(long, default_value = "ingest,plates")]
    phases: String,
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Vehicles per request.
    #[arg(long, default_value_t = 100)]
    records: usize,
    #[arg(long, default_value_t = 10_240)]
    image_bytes: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Rounds of (baseline, receiver), alternating.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, default_value_t = 30_000_000)]
    plate_rows: usize,
    #[arg(long, default_value_t = 180)]
    days: i64,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// The hub's `ingest.compression` (zstd, snappy, none).
    #[arg(long, default_value = "zstd")]
    compression: String,
    /// After the last round, receive the same bodies in-process (no HTTP) once more.
    #[arg(long)]
    in_process: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let compression = args.compression.clone();
    let hub = Hub::start_with(|config| config.ingest.compression = compression).await?;
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for phase in args.phases.split(',') {
        match phase.trim() {
            "ingest" => ingest(&hub, &args).await?,
            "plates" => plates(&hub, &args).await?,
            other => bail!("unknown phase {other}: ingest or plates"),
        }
    }
    Ok(())
}

/// A 48-digit vehicle id for serial `n`.
fn vehicle_id(n: usize) -> String {
    format!(
        "{CHECKPOINT}0220261206000000{:05}02{:05}",
        n % 100_000,
        n / 100_000
    )
}

fn plate(rng: &mut StdRng) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
    let tail: String = (0..5)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect();
    format!("川K{tail}")
}

fn beijing(at: DateTime<Utc>) -> String {
    cityhub_ingest::viid::fields::format_time(at)
}

async fn ingest(hub: &Hub, args: &Args) -> anyhow::Result<()> {
    let state = &hub.state;
    cityhub_catalog::viid::create_account(
        &state.catalog,
        &state.audit,
        &Principal::local_operator(),
        PLATFORM,
        "bench",
    )
    .await?;
    state.viid.ensure_datasets("bench").await?;
    // The baseline dataset: the landing dataset's columns under another name.
    let mut plain = ViidKind::MotorVehicle.new_dataset("bench", 180);
    plain.name = DatasetName::parse("bench.vehicles_plain")?;
    state.catalog.create_dataset(plain).await?;

    let now = Utc::now();
    let mut rng = StdRng::seed_from_u64(1400);
    let mut receiver_bodies = Vec::new();
    let mut plain_bodies = Vec::new();
    for request in 0..args.requests * args.rounds {
        let mut vehicles = Vec::with_capacity(args.records);
        let mut rows = String::new();
        for i in 0..args.records {
            let n = request * args.records + i;
            let passed = now - Duration::seconds(rng.random_range(60..86_400));
            let plate = plate(&mut rng);
            let image: Vec<u8> = (0..args.image_bytes).map(|_| rng.random()).collect();
            vehicles.push(json!({
                "MotorVehicleID": vehicle_id(n), "InfoKind": 1, "DeviceID": CHECKPOINT,
                "TollgateID": CHECKPOINT, "PassTime": beijing(passed), "LaneNo": 2,
                "PlateNo": plate, "PlateColor": "5", "VehicleClass": "K33", "VehicleColor": "2",
                "Speed": 48.5, "Direction": "3",
                "SubImageList": {"SubImageInfoObject": [{
                    "Type": "01", "FileFormat": "Jpeg", "ShotTime": beijing(passed),
                    "Width": 1920, "Height": 1080,
                    "Data": base64::engine::general_purpose::STANDARD.encode(&image)
                }]}
            }));
            let row = json!({
                "motor_vehicle_id": vehicle_id(n), "captured_at": passed.to_rfc3339(),
                "info_kind": "1", "tollgate_id": CHECKPOINT, "device_id": CHECKPOINT,
                "lane_no": 2, "plate_no": plate, "plate_color": "5", "vehicle_class": "K33",
                "vehicle_color": "2", "speed": 48.5, "direction": "3", "image_count": 1,
                "region_code": "511025", "platform_id": PLATFORM,
                "received_at": now.to_rfc3339()
            });
            rows.push_str(&row.to_string());
            rows.push('\n');
        }
        let body = json!({"MotorVehicleListObject": {"MotorVehicleObject": vehicles}});
        receiver_bodies.push(body.to_string().into_bytes());
        plain_bodies.push(rows.into_bytes());
    }
    let receiver_mb = receiver_bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "ingest: {} rounds x {} requests x {} vehicles, one {}-byte image each; receiver \
         bodies {receiver_mb:.0} MB, NDJSON {:.1} MB; {} clients",
        args.rounds,
        args.requests,
        args.records,
        args.image_bytes,
        plain_bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
        args.concurrency
    );
    let mut receiver_chunks = receiver_bodies.chunks(args.requests);
    let mut plain_chunks = plain_bodies.chunks(args.requests);
    for round in 1..=args.rounds {
        let plain = plain_chunks.next().context("bodies")?.to_vec();
        let records_per_round = (args.requests * args.records) as f64;
        let cpu_before = process_cpu_seconds();
        let (rate, p50, p99) = hub
            .push_all(
                "bench.vehicles_plain",
                plain
                    .into_iter()
                    .map(|b| (b, "application/x-ndjson"))
                    .collect(),
                args.concurrency,
            )
            .await?;
        println!(
            "round {round}  NDJSON push, same rows without images: {rate:>9.0} records/s  \
             ack p50 {p50:.1} ms  p99 {p99:.1} ms  {}",
            cpu_per_record(cpu_before, records_per_round)
        );
        // Registered (the digest handshake is the tests' business), kept alive per round.
        state
            .catalog
            .set_viid_registration(PLATFORM, Some(Utc::now()))
            .await?;
        let bodies = receiver_chunks.next().context("bodies")?.to_vec();
        if round == args.rounds && args.in_process {
            // The same work without HTTP: what the receiver costs when the load generator
            // does not share the two cores.
            let sender = cityhub_ingest::viid::Sender {
                account_id: PLATFORM.into(),
                department: "bench".into(),
            };
            let gate = Arc::new(Semaphore::new(args.concurrency));
            let cpu_before = process_cpu_seconds();
            let commits_before = histogram_totals(REQUESTS_PER_COMMIT);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for body in bodies.clone() {
                let permit = gate.clone().acquire_owned().await?;
                let (viid, sender) = (state.viid.clone(), sender.clone());
                tasks.push(tokio::spawn(async move {
                    let statuses = viid
                        .receive(&sender, ViidKind::MotorVehicle, body.into(), Utc::now())
                        .await
                        .map_err(|err| anyhow::anyhow!("{err:?}"))?;
                    drop(permit);
                    anyhow::ensure!(statuses.iter().all(|s| s.code.code() == 0), "refused");
                    Ok::<_, anyhow::Error>(statuses.len())
                }));
            }
            let mut records = 0;
            for task in tasks {
                records += task.await??;
            }
            let rate = records as f64 / started.elapsed().as_secs_f64();
            println!(
                "round {round}  the same bodies received in-process, no HTTP:  {rate:>9.0} records/s  {}  {}",
                cpu_per_record(cpu_before, records as f64),
                requests_per_commit(commits_before)
            );
        }
        let cpu_before = process_cpu_seconds();
        let commits_before = histogram_totals(REQUESTS_PER_COMMIT);
        let (viid, p50, p99) = post_all(hub, bodies, args.records, args.concurrency).await?;
        println!(
            "round {round}  /VIID/MotorVehicles with images:       {viid:>9.0} records/s  \
             ack p50 {p50:.1} ms  p99 {p99:.1} ms  ({:.2}x the NDJSON push; {:.0} MB/s of images)  {}  {}",
            viid / rate,
            viid * args.image_bytes as f64 / 1e6,
            cpu_per_record(cpu_before, records_per_round),
            requests_per_commit(commits_before)
        );
    }
    Ok(())
}

/// The process's CPU time (hub and load generator together: they share the machine) per
/// record since `before`, for the line of a phase.
fn cpu_per_record(before: Option<f64>, records: f64) -> String {
    match (before, process_cpu_seconds()) {
        (Some(before), Some(after)) if records > 0.0 => {
            format!("CPU {:.1} µs a record", (after - before) / records * 1e6)
        }
        _ => String::new(),
    }
}

/// The receiver's histogram of requests carried by each commit (group commit).
const REQUESTS_PER_COMMIT: &str = "cityhub_viid_requests_per_commit";

/// How many requests each commit carried on average since `before` (a reading of
/// [`histogram_totals`]), for the line of a phase.
fn requests_per_commit(before: (f64, f64)) -> String {
    let (sum, count) = histogram_totals(REQUESTS_PER_COMMIT);
    let commits = count - before.1;
    if commits <= 0.0 {
        return String::new();
    }
    format!(
        "{:.1} requests a commit ({commits:.0} commits)",
        (sum - before.0) / commits
    )
}

/// Posts every body to `/VIID/MotorVehicles`; every record must be answered 0.
async fn post_all(
    hub: &Hub,
    bodies: Vec<Vec<u8>>,
    records: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let url = format!("{}/VIID/MotorVehicles", hub.base);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for body in bodies {
        let permit = gate.clone().acquire_owned().await?;
        let request = hub
            .client
            .post(&url)
            .header("User-Identify", PLATFORM)
            .header("Content-Type", "application/VIID+JSON")
            .body(body);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer: Value = request.send().await?.json().await?;
            drop(permit);
            let statuses = answer["ResponseStatusListObject"]["ResponseStatusObject"]
                .as_array()
                .with_context(|| format!("not a status list: {answer}"))?;
            if statuses.len() != records || statuses.iter().any(|s| s["StatusCode"] != json!(0)) {
                bail!("not every record was stored: {answer}");
            }
            Ok::<_, anyhow::Error>(sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await??);
    }
    let rate = (latencies.len() * records) as f64 / started.elapsed().as_secs_f64();
    Ok((
        rate,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
    ))
}

async fn plates(hub: &Hub, args: &Args) -> anyhow::Result<()> {
    let state = &hub.state;
    let dataset = ViidKind::MotorVehicle.new_dataset("bench", 400);
    let name = dataset.name.clone();
    let dataset = match state.catalog.dataset(&name).await? {
        Some(dataset) => dataset,
        None => state.catalog.create_dataset(dataset).await?,
    };
    // Whole seconds, so that the query's literal edge is exactly the one counted here.
    let now = Utc::now().trunc_subsecs(0);
    let per_day = args.plate_rows / args.days as usize;
    let started = Instant::now();
    let mut files = Vec::new();
    let mut wanted_recent = 0;
    for day in 0..args.days {
        let columns = dataset.columns.clone();
        let (batch, recent) =
            tokio::task::spawn_blocking(move || day_batch(&columns, now, day, per_day)).await??;
        wanted_recent += recent;
        files.push(state.ingest.write_file(&dataset, vec![batch]).await?);
        if day % 30 == 29 {
            println!(
                "plates: {} of {} days written ({:.0} s)",
                day + 1,
                args.days,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let total: i64 = files.iter().map(|f| f.bytes).sum();
    state.ingest.commit_append(&dataset, files, None).await?;
    println!(
        "plates: {} rows over {} days in {:.0} s, {:.0} MiB of Parquet; {WANTED} passed {} \
         times in the last 30 days",
        per_day * args.days as usize,
        args.days,
        started.elapsed().as_secs_f64(),
        total as f64 / 1048576.0,
        wanted_recent
    );
    let since = (now - Duration::days(30)).format("%Y-%m-%d %H:%M:%S");
    let sql = format!(
        "SELECT motor_vehicle_id, captured_at, device_id, lane_no FROM bench.viid_motor_vehicles \
         WHERE plate_no = '{WANTED}' AND captured_at >= TIMESTAMP '{since}' ORDER BY captured_at"
    );
    let tables: Vec<(String, Vec<String>)> = hub
        .local_files()
        .await?
        .into_iter()
        .filter(|(table, _)| table == "bench.viid_motor_vehicles")
        .collect();
    let mut duckdb = DuckDb::start(&tables)?;
    let (mut hub_ms, mut duck_ms) = (Vec::new(), Vec::new());
    for run in 0..=args.runs {
        let t = Instant::now();
        let rows = hub.sql_rows(&hub.admin, &sql).await?;
        let a = t.elapsed().as_secs_f64() * 1000.0;
        let (b, duck_rows) = duckdb.run(&sql)?;
        if rows != wanted_recent || duck_rows != wanted_recent {
            bail!("rows differ: hub {rows}, DuckDB {duck_rows}, expected {wanted_recent}");
        }
        if run > 0 {
            hub_ms.push(a);
            duck_ms.push(b);
        }
    }
    let (hub_p50, duck_p50) = (percentile(&mut hub_ms, 0.5), percentile(&mut duck_ms, 0.5));
    println!(
        "plates: all passes of one plate in 30 days, p50 of {} runs: hub (HTTP SQL) {hub_p50:.1} ms \
         (max {:.1}), DuckDB {duck_p50:.1} ms (max {:.1}); hub/DuckDB {:.2}",
        args.runs,
        percentile(&mut hub_ms, 1.0),
        percentile(&mut duck_ms, 1.0),
        hub_p50 / duck_p50
    );
    Ok(())
}

/// One day's vehicles `day` days back, sorted by capture time, and how many passes of the
/// wanted plate fall in the last 30 days.
fn day_batch(
    columns: &[cityhub_catalog::Column],
    now: DateTime<Utc>,
    day: i64,
    rows: usize,
) -> anyhow::Result<(RecordBatch, usize)> {
    let mut rng = StdRng::seed_from_u64(day as u64);
    let start = now - Duration::days(day + 1);
    let step = 86_400_000_000 / rows.max(1) as i64;
    let times: Vec<i64> = (0..rows)
        .map(|i| start.timestamp_micros() + i as i64 * step)
        .collect();
    // The wanted plate passes twice a day somewhere in the city.
    let first = rng.random_range(0..rows);
    let wanted: [usize; 2] = [first, (first + rows / 2) % rows];
    let recent = if day < 29 {
        2
    } else if day == 29 {
        // The day that straddles the 30-day edge: count exactly.
        let edge = (now - Duration::days(30)).timestamp_micros();
        wanted.iter().filter(|&&i| times[i] >= edge).count()
    } else {
        0
    };
    let plates: Vec<String> = (0..rows)
        .map(|i| {
            if wanted.contains(&i) {
                WANTED.to_string()
            } else {
                plate(&mut rng)
            }
        })
        .collect();
    let received = now.timestamp_micros();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for column in columns {
        let array: ArrayRef = match column.name.as_str() {
            "motor_vehicle_id" => Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| vehicle_id(day as usize * rows + i)),
            )),
            "captured_at" => {
                Arc::new(TimestampMicrosecondArray::from(times.clone()).with_timezone("UTC"))
            }
            "received_at" => {
                Arc::new(TimestampMicrosecondArray::from(vec![received; rows]).with_timezone("UTC"))
            }
            "plate_no" => Arc::new(StringArray::from_iter_values(plates.iter())),
            "device_id" | "tollgate_id" => Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("5110250000121{:07}", i % 2_000 + 1)),
            )),
            "region_code" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "511025", rows,
            ))),
            "platform_id" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                PLATFORM, rows,
            ))),
            "lane_no" => Arc::new(Int32Array::from_iter_values(
                (0..rows).map(|i| (i % 4) as i32 + 1),
            )),
            "image_count" => Arc::new(Int32Array::from(vec![1; rows])),
            "speed" => Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| 30.0 + (i % 50) as f64),
            )),
            "plate_color" | "vehicle_color" => Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| ["2", "5", "6", "9"][i % 4]),
            )),
            "vehicle_class" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "K33", rows,
            ))),
            "info_kind" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "1", rows,
            ))),
            "direction" => Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| ["1", "2", "3", "4"][i % 4]),
            )),
            _ => arrow::array::new_null_array(&column.column_type.arrow_type(), rows),
        };
        arrays.push(array);
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| arrow::datatypes::Field::new(&c.name, c.column_type.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ));
    Ok((RecordBatch::try_new(schema, arrays)?, recent))
}
