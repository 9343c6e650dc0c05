//! The camera registry under load, each figure beside a baseline measured in the same run:
//!
//! 1. registering 100,000 channels through `POST /api/v1/cameras/batch` (10 requests of
//!    10,000, and one request of 100,000), against plain SQLite inserting the same records
//!    (id + JSON, one transaction, same durability settings);
//! 2. keepalives per second through `POST /api/v1/cameras/keepalive` (batches from several
//!    clients), against plain SQLite updating the same rows by primary key;
//! 3. single-camera lookups `GET /api/v1/cameras/{id}` from 100 concurrent clients: with
//!    `wrk` (closed loop, as fast as the machine goes) against `wrk` on `/healthz`, and with
//!    `oha` at a fixed rate (the latency a fleet of clients sees) against `oha` on `/healthz`
//!    at the same rate; also from a paced client inside the bench process;
//! 4. statistics over the 100,000 channels `GET /api/v1/cameras/stats`, against plain SQLite
//!    counting the same table by region; and over the demo city with a week of history;
//! 5. a new consumer reading the whole change feed (`GET /api/v1/cameras/changes`), against
//!    listing the registry (`GET /api/v1/cameras`), and a poll at the head.
//!
//! Run: `cargo run --release -p cityhub-benches --bin camera_bench`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cityhub_benches::{Hub, percentile};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Channels to register.
    #[arg(long, default_value_t = 100_000)]
    channels: usize,
    /// Keepalives per request.
    #[arg(long, default_value_t = 1_000)]
    keepalive_batch: usize,
    /// Clients sending keepalives at once.
    #[arg(long, default_value_t = 4)]
    keepalive_clients: usize,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent lookup clients.
    #[arg(long, default_value_t = 100)]
    lookup_clients: usize,
    /// Total lookups per second of the paced run (spread over the clients).
    #[arg(long, default_value_t = 5_000)]
    paced_rate: u64,
    /// Runs of each statistics request.
    #[arg(long, default_value_t = 30)]
    stats_runs: usize,
    /// Skip the demo-city statistics (loading it takes a while).
    #[arg(long)]
    no_demo: bool,
}

const PER_NVR: usize = 32;

/// Counties with a centre for coordinates.
const COUNTIES: &[(&str, f64, f64)] = &[
    ("511002", 105.06, 29.58),
    ("511011", 105.18, 29.62),
    ("511024", 104.67, 29.54),
    ("511025", 104.85, 29.78),
    ("511083", 105.29, 29.34),
];

fn channel_id(index: usize) -> String {
    let (county, _, _) = COUNTIES[index % COUNTIES.len()];
    format!("{county}00001320{:06}", index / COUNTIES.len() + 1)
}

fn nvr_id(index: usize) -> String {
    let (county, _, _) = COUNTIES[index % COUNTIES.len()];
    format!("{county}00001180{:06}", index / COUNTIES.len() + 1)
}

/// The NVR of channel `index`: channels of one county in groups of 32.
fn nvr_of(index: usize) -> String {
    let county = index % COUNTIES.len();
    let within = index / COUNTIES.len();
    nvr_id(county + COUNTIES.len() * (within / PER_NVR))
}

fn channel(index: usize) -> Value {
    let (_, lon, lat) = COUNTIES[index % COUNTIES.len()];
    let jitter = (index % 997) as f64 / 997.0 * 0.1;
    json!({
        "id": channel_id(index),
        "parent_id": nvr_of(index),
        "name": format!("通道 {index}"),
        "department": "bench",
        "address": "四川省内江市",
        "longitude": lon + jitter - 0.05,
        "latitude": lat - jitter + 0.05,
        "manufacturer": "海康威视",
        "model": "DS-2CD3T47",
        "ptz_type": 1 + (index % 4) as u8,
        "position_type": 1 + (index % 10) as u8,
        "room_type": 1,
        "use_type": 1,
        "supply_light_type": 2,
        "resolution": "2560x1440"
    })
}

async fn post(hub: &Hub, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
    let response = hub
        .client
        .post(format!("{}{path}", hub.base))
        .bearer_auth(&hub.admin)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {answer}");
    }
    Ok(answer)
}

/// Plain SQLite with the catalog's durability settings, in a temporary folder.
fn plain_sqlite() -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("plain.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE channels (id TEXT PRIMARY KEY, region TEXT NOT NULL, record TEXT NOT NULL, \
         last_seen INTEGER)",
    )?;
    Ok((dir, conn))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "machine: {} cores; {} channels",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.channels
    );
    let records: Vec<Value> = (0..args.channels).map(channel).collect();
    let nvrs: Vec<Value> = (0..args.channels.div_ceil(PER_NVR))
        .map(|i| json!({"id": nvr_id(i), "name": format!("NVR {i}"), "department": "bench"}))
        .collect();

    // 1. Registration.
    let hub = Hub::start().await?;
    post(&hub, "/api/v1/cameras/batch", serde_json::to_vec(&nvrs)?).await?;
    let bodies: Vec<Vec<u8>> = records
        .chunks(10_000)
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut accepted = 0;
    for body in bodies {
        let answer = post(&hub, "/api/v1/cameras/batch", body).await?;
        accepted += answer["accepted"].as_u64().context("accepted")?;
    }
    let chunked = started.elapsed().as_secs_f64();
    if accepted != args.channels as u64 {
        bail!("only {accepted} channels were accepted");
    }
    let single_hub = Hub::start().await?;
    post(
        &single_hub,
        "/api/v1/cameras/batch",
        serde_json::to_vec(&nvrs)?,
    )
    .await?;
    let body = serde_json::to_vec(&records)?;
    let body_mb = body.len() as f64 / 1e6;
    let started = Instant::now();
    post(&single_hub, "/api/v1/cameras/batch", body).await?;
    let single = started.elapsed().as_secs_f64();
    single_hub.stop().await;
    let (_plain_dir, mut plain) = plain_sqlite()?;
    let started = Instant::now();
    {
        let tx = plain.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT INTO channels (id, region, record) VALUES (?1, ?2, ?3)")?;
            for record in &records {
                let id = record["id"].as_str().context("id")?;
                insert.execute(rusqlite::params![id, &id[..6], record.to_string()])?;
            }
        }
        tx.commit()?;
    }
    let plain_insert = started.elapsed().as_secs_f64();
    println!("\n1. register {} channels (target <= 5 s)", args.channels);
    println!("   hub, 10 requests of 10,000:        {chunked:>7.2} s");
    println!("   hub, one request ({body_mb:.0} MB JSON):   {single:>7.2} s");
    println!(
        "   plain SQLite insert, one transaction: {plain_insert:>5.2} s  (hub / plain = {:.1}x chunked, {:.1}x single)",
        chunked / plain_insert,
        single / plain_insert
    );

    // 2. Keepalives.
    let (channels, nvr_count) = (args.channels, nvrs.len());
    let rate = keepalive_load(&hub, &args, move |i| channel_id(i % channels)).await?;
    let nvr_rate = keepalive_load(&hub, &args, move |i| nvr_id(i % nvr_count)).await?;
    let started = Instant::now();
    let mut updated = 0u64;
    let now = cityhub_catalog::camera::now_ms();
    while started.elapsed() < Duration::from_secs(args.seconds.min(5)) {
        let tx = plain.transaction()?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE channels SET last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1",
            )?;
            for i in 0..args.keepalive_batch {
                let index = (updated as usize + i * 7919) % args.channels;
                update.execute(rusqlite::params![channel_id(index), now])?;
            }
        }
        tx.commit()?;
        updated += args.keepalive_batch as u64;
    }
    let plain_rate = updated as f64 / started.elapsed().as_secs_f64();
    println!(
        "\n2. keepalives ({} clients, {} per request; target >= 50,000/s)",
        args.keepalive_clients, args.keepalive_batch
    );
    println!("   hub, channel ids:                   {rate:>10.0} keepalives/s");
    println!(
        "   hub, NVR ids ({PER_NVR} channels each):    {:>10.0} keepalives/s = {:.0} channels marked/s",
        nvr_rate,
        nvr_rate * PER_NVR as f64
    );
    println!(
        "   plain SQLite update by key, 1 client:{plain_rate:>10.0} rows/s  (hub / plain = {:.2})",
        rate / plain_rate
    );

    // 3. Lookups.
    println!(
        "\n3. single-camera lookup, {} concurrent clients (target p99 <= 2 ms)",
        args.lookup_clients
    );
    match wrk_available() {
        true => {
            let ids: Vec<String> = (0..args.channels).step_by(7).map(channel_id).collect();
            let lookup = wrk(&hub, &args, Some(&ids))?;
            let health = wrk(&hub, &args, None)?;
            println!(
                "   wrk, GET /api/v1/cameras/{{id}}: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                lookup.0, lookup.1, lookup.2
            );
            println!(
                "   wrk, GET /healthz (baseline):  {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  (lookup / healthz throughput = {:.2})",
                health.0,
                health.1,
                health.2,
                lookup.0 / health.0
            );
        }
        false => println!("   (wrk not installed: apt-get install wrk; closed-loop run skipped)"),
    }
    if oha_available() {
        // A separate load generator at a fixed rate: the latency a fleet of clients sees.
        let lookup = oha_paced(&hub, &args, true)?;
        let health = oha_paced(&hub, &args, false)?;
        println!(
            "   oha, {} req/s over {} connections, GET /api/v1/cameras/{{id}}: {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({:.3} answered 200)",
            args.paced_rate, args.lookup_clients, lookup.0, lookup.1, lookup.2, lookup.3
        );
        println!(
            "   oha, same rate, GET /healthz (baseline):      {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            health.0, health.1, health.2
        );
    } else {
        // Without oha, a paced client inside this process; it shares the runtime and the
        // cores with the hub, so its latencies are an upper bound (oha is preferred).
        println!("   (oha not installed: cargo install oha)");
        let (p50, p99, achieved) = paced_lookups(&hub, &args).await?;
        println!(
            "   paced in-process client, {} req/s in all ({:.0} achieved): p50 {p50:.2} ms  p99 {p99:.2} ms",
            args.paced_rate, achieved
        );
    }

    // 4. Statistics.
    println!(
        "\n4. statistics over {} channels (target <= 50 ms)",
        args.channels
    );
    for group in ["region", "industry", "position_type"] {
        let (p50, p99) = stats_times(&hub, group, 24, args.stats_runs).await?;
        println!("   hub, group_by={group:<14} window 24 h: p50 {p50:>6.1} ms  p99 {p99:>6.1} ms");
    }
    let catalog_path = hub.state.config.data_dir().join("catalog.db");
    let reader = rusqlite::Connection::open(&catalog_path)?;
    let mut times = Vec::new();
    for _ in 0..args.stats_runs {
        let started = Instant::now();
        let mut stmt = reader.prepare_cached(
            "SELECT region_code, count(*) FROM camera_live WHERE deleted_at IS NULL GROUP BY 1",
        )?;
        let groups = stmt
            .query_map([], |row| row.get::<_, i64>(1))?
            .collect::<Result<Vec<_>, _>>()?;
        if groups.iter().sum::<i64>() == 0 {
            bail!("the plain count found nothing");
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "   plain SQLite count by region, same file: p50 {:>6.1} ms",
        percentile(&mut times, 0.5)
    );

    // 5. The change feed, against re-reading the registry.
    let (read, feed_secs) = follow_feed(&hub).await?;
    let (listed, list_secs) = list_all(&hub).await?;
    let mut polls = Vec::new();
    let head = format!(
        "{}/api/v1/cameras/changes?since={}",
        hub.base,
        hub.state.catalog.camera_change_head().await?
    );
    for run in 0..=args.stats_runs {
        let started = Instant::now();
        let answer = get_json(&hub, head.clone()).await?;
        if answer["changes"].as_array().is_none_or(|c| !c.is_empty()) {
            bail!("a poll at the head found changes: {answer}");
        }
        if run > 0 {
            polls.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    println!("\n5. change feed (GET /api/v1/cameras/changes, pages of 1,000)");
    println!(
        "   hub, from the start: {read} changes in {feed_secs:.2} s = {:.0} changes/s",
        read as f64 / feed_secs
    );
    println!(
        "   baseline, listing GET /api/v1/cameras: {listed} channels in {list_secs:.2} s = {:.0} channels/s (feed / listing = {:.2})",
        listed as f64 / list_secs,
        (read as f64 / feed_secs) / (listed as f64 / list_secs)
    );
    println!(
        "   a poll at the head (nothing new; sweeps first): p50 {:.2} ms  p99 {:.2} ms",
        percentile(&mut polls, 0.5),
        percentile(&mut polls, 0.99)
    );
    hub.stop().await;

    if !args.no_demo {
        let demo = Hub::start_with_demo().await?;
        for hours in [24, 168] {
            let (p50, p99) = stats_times(&demo, "region", hours, args.stats_runs).await?;
            let events: i64 =
                rusqlite::Connection::open(demo.state.config.data_dir().join("catalog.db"))?
                    .query_row("SELECT count(*) FROM camera_status_events", [], |r| {
                        r.get(0)
                    })?;
            println!(
                "   demo city (94,000 channels, {events} history events), window {hours:>3} h: p50 {p50:>6.1} ms  p99 {p99:>6.1} ms"
            );
        }
        demo.stop().await;
    }
    Ok(())
}

async fn keepalive_load(
    hub: &Hub,
    args: &Args,
    id_of: impl Fn(usize) -> String,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..args.keepalive_clients {
        let (http, url, token) = (
            hub.client.clone(),
            format!("{}/api/v1/cameras/keepalive", hub.base),
            hub.admin.clone(),
        );
        let (done, stop, batch) = (done.clone(), stop.clone(), args.keepalive_batch);
        // Bodies are made before the clock starts: the machine's two cores should be
        // measuring the hub, not the load generator's JSON.
        let bodies: Vec<bytes::Bytes> = (0..50)
            .map(|round| {
                let next = client * 1_000_003 + round * batch;
                let items: Vec<Value> = (0..batch)
                    .map(|i| json!({"id": id_of(next + i * 7919)}))
                    .collect();
                serde_json::to_vec(&items).map(bytes::Bytes::from)
            })
            .collect::<Result<_, _>>()?;
        clients.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = bodies[round % bodies.len()].clone();
                round += 1;
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let answer: Value = response.json().await?;
                let accepted = answer["accepted"].as_u64().context("accepted")?;
                if accepted != batch as u64 {
                    bail!("keepalives refused: {answer}");
                }
                done.fetch_add(accepted, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let rate =
        (done.load(Ordering::Relaxed) - start_count) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await??;
    }
    Ok(rate)
}

fn oha_available() -> bool {
    std::process::Command::new("oha")
        .arg("--version")
        .output()
        .is_ok()
}

/// oha at `paced_rate` requests/s over `lookup_clients` connections for `seconds`, on random
/// registered channels (or `/healthz`); returns (req/s, p50 ms, p99 ms, success rate).
fn oha_paced(hub: &Hub, args: &Args, lookup: bool) -> anyhow::Result<(f64, f64, f64, f64)> {
    let mut command = std::process::Command::new("oha");
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .arg("-z")
        .arg(format!("{}s", args.seconds))
        .arg("-c")
        .arg(args.lookup_clients.to_string())
        .arg("-q")
        .arg(args.paced_rate.to_string());
    if lookup {
        // Serials 000001..019999 ending in 1-9: every one is registered (5 counties x 20,000).
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", hub.admin))
            .arg("--rand-regex-url")
            .arg(format!(
                "{}/api/v1/cameras/5110(02|11|24|25|83)00001320(0[01][0-9]{{3}}[1-9])",
                hub.base
            ));
    } else {
        command.arg(format!("{}/healthz", hub.base));
    }
    let output = command.output()?;
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("oha said: {}", String::from_utf8_lossy(&output.stderr)))?;
    let seconds = |key: &str| {
        report["latencyPercentiles"][key]
            .as_f64()
            .unwrap_or(f64::NAN)
            * 1000.0
    };
    let codes = report["statusCodeDistribution"]
        .as_object()
        .context("no status codes in oha's report")?;
    let all: f64 = codes.values().filter_map(Value::as_f64).sum();
    let ok = codes.get("200").and_then(Value::as_f64).unwrap_or(0.0);
    Ok((
        report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        seconds("p50"),
        seconds("p99"),
        ok / all.max(1.0),
    ))
}

fn wrk_available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// Runs wrk with `lookup_clients` connections; returns (req/s, p50 ms, p99 ms).
fn wrk(hub: &Hub, args: &Args, ids: Option<&[String]>) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("lookup.lua");
    let (path, body) = match ids {
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
            (
                "/".to_string(),
                format!(
                    "local ids = {{{}}}\nrequest = function()\n  return wrk.format(\"GET\", \
                     \"/api/v1/cameras/\" .. ids[math.random(#ids)], {{[\"Authorization\"] = \
                     \"Bearer {}\"}})\nend\n",
                    list.join(","),
                    hub.admin
                ),
            )
        }
        None => ("/healthz".to_string(), String::new()),
    };
    std::fs::write(&script, body)?;
    let mut command = std::process::Command::new("wrk");
    command
        .args(["-t", "2", "-c"])
        .arg(args.lookup_clients.to_string())
        .arg("-d")
        .arg(format!("{}s", args.seconds))
        .arg("--latency");
    if ids.is_some() {
        command.arg("-s").arg(&script);
    }
    let output = command.arg(format!("{}{path}", hub.base)).output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    let number = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        let value = line.split_whitespace().nth(1)?;
        let (digits, unit) = value.split_at(value.find(|c: char| c.is_alphabetic())?);
        let n: f64 = digits.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => n,
        })
    };
    let rate = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no rate in wrk's output:\n{text}"))?;
    Ok((
        rate,
        number("50%").context("no p50")?,
        number("99%").context("no p99")?,
    ))
}

/// Every client asks at `paced_rate / lookup_clients` per second; returns p50, p99 (ms) and
/// the rate achieved.
async fn paced_lookups(hub: &Hub, args: &Args) -> anyhow::Result<(f64, f64, f64)> {
    let per_client = args.paced_rate as f64 / args.lookup_clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut clients = Vec::new();
    for client in 0..args.lookup_clients {
        let (http, base, token, channels) = (
            hub.client.clone(),
            hub.base.clone(),
            hub.admin.clone(),
            args.channels,
        );
        clients.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut latencies = Vec::new();
            let mut n = client * 7919;
            while Instant::now() < deadline {
                ticker.tick().await;
                n += 104_729;
                let sent = Instant::now();
                let response = http
                    .get(format!(
                        "{base}/api/v1/cameras/{}",
                        channel_id(n % channels)
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("lookup answered {}", response.status());
                }
                response.bytes().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    let achieved = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.99),
        achieved,
    ))
}

async fn stats_times(
    hub: &Hub,
    group: &str,
    hours: u64,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let url = format!(
        "{}/api/v1/cameras/stats?group_by={group}&window_hours={hours}",
        hub.base
    );
    let mut times = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let response = hub.client.get(&url).bearer_auth(&hub.admin).send().await?;
        if !response.status().is_success() {
            bail!("stats answered {}", response.status());
        }
        let answer: Value = response.json().await?;
        if answer["overall"]["total"].as_u64().unwrap_or(0) == 0 {
            bail!("stats counted nothing: {answer}");
        }
        if run > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((percentile(&mut times, 0.5), percentile(&mut times, 0.99)))
}

/// Reads the whole change feed from the start as a new consumer would: how many changes,
/// in how many seconds.
async fn follow_feed(hub: &Hub) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let (mut cursor, mut read) = ("0".to_string(), 0);
    loop {
        let page = get_json(
            hub,
            format!(
                "{}/api/v1/cameras/changes?since={cursor}&limit=1000",
                hub.base
            ),
        )
        .await?;
        read += page["changes"].as_array().context("changes")?.len();
        cursor = page["next_cursor"].as_str().context("cursor")?.to_string();
        if !page["more"].as_bool().context("more")? {
            return Ok((read, started.elapsed().as_secs_f64()));
        }
    }
}

/// Lists every channel in pages of 1,000: what a consumer without the feed re-reads.
async fn list_all(hub: &Hub) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let (mut after, mut listed) = (None::<String>, 0);
    loop {
        let mut url = format!("{}/api/v1/cameras?limit=1000", hub.base);
        if let Some(after) = &after {
            url.push_str(&format!("&cursor={after}"));
        }
        let page = get_json(hub, url).await?;
        listed += page["cameras"].as_array().context("cameras")?.len();
        match page["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok((listed, started.elapsed().as_secs_f64())),
        }
    }
}

/// An admin's GET that must succeed, as JSON.
async fn get_json(hub: &Hub, url: String) -> anyhow::Result<Value> {
    Ok(hub
        .client
        .get(url)
        .bearer_auth(&hub.admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
