//! Weekly and monthly availability (完好率) from the daily roll-ups, beside the 24-hour
//! statistic on the same hub in the same run (the target: 30 days within 1.2x of 24 hours),
//! and beside the same windows walked from the status history (`window_hours=168` and
//! `720`), which is what long windows cost without the roll-ups.
//!
//! 1. 100,000 channels in five counties, registered 31 days ago, with a month of history:
//!    every day each channel goes down with probability `--outage-rate` for 20 minutes to
//!    6 hours (a keepalive timeout and its recovery: two transitions).
//! 2. The roll-ups: the first (every day of the month at once, as after an upgrade), then
//!    one day (what the sweeper does after each Beijing midnight).
//! 3. `GET /api/v1/cameras/stats?group_by=region&...`, `--runs` times each, p50 and p99.
//!
//! Run: `cargo run --release -p cityhub-benches --bin camera_daily_bench`

use std::time::Instant;

use anyhow::bail;
use cityhub_benches::{Hub, percentile};
use cityhub_catalog::camera::status::{LiveState, Status, Transition};
use cityhub_catalog::camera::{ChannelReport, ImportedHistory};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Channels to register.
    #[arg(long, default_value_t = 100_000)]
    channels: usize,
    /// Days of history.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// The chance that a channel goes down on a given day.
    #[arg(long, default_value_t = 0.15)]
    outage_rate: f64,
    /// Runs of each statistics request.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// A PostgreSQL database to keep the catalog in (a fresh schema of it), instead of the
    /// embedded SQLite: `postgres://user@127.0.0.1:5432/db`.
    #[arg(long)]
    postgres: Option<String>,
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const COUNTIES: &[&str] = &["511002", "511011", "511024", "511025", "511083"];

fn channel_id(index: usize) -> String {
    format!(
        "{}00001320{:06}",
        COUNTIES[index % COUNTIES.len()],
        index / COUNTIES.len() + 1
    )
}

/// A month of one channel: online from its registration, with the day's outage if any.
fn history(
    id: String,
    registered: i64,
    now: i64,
    days: i64,
    rate: f64,
    rng: &mut StdRng,
) -> ImportedHistory {
    let mut transitions = vec![Transition {
        at: registered,
        from: Status::Unknown,
        to: Status::Online,
        cause: "keepalive",
    }];
    for day in 0..days {
        if !rng.random_bool(rate) {
            continue;
        }
        let down = now - (days - day) * DAY + rng.random_range(0..DAY - 6 * HOUR);
        let up = down + rng.random_range(20 * MINUTE..6 * HOUR);
        transitions.push(Transition {
            at: down,
            from: Status::Online,
            to: Status::Offline,
            cause: "keepalive_timeout",
        });
        transitions.push(Transition {
            at: up,
            from: Status::Offline,
            to: Status::Online,
            cause: "keepalive",
        });
    }
    let last = transitions.last().map_or(registered, |t| t.at);
    ImportedHistory {
        id,
        transitions,
        live: LiveState {
            last_seen_at: Some(now),
            recorded: Some(Status::Online),
            recorded_since: Some(last),
            ..LiveState::default()
        },
    }
}

/// p50 and p99 of `runs` answers (after one warm-up), and the answer.
async fn stats(hub: &Hub, query: &str, runs: usize) -> anyhow::Result<(f64, f64, Value)> {
    let url = format!("{}/api/v1/cameras/stats?group_by=region&{query}", hub.base);
    let mut times = Vec::new();
    let mut last = Value::Null;
    for run in 0..=runs {
        let started = Instant::now();
        let response = hub.client.get(&url).bearer_auth(&hub.admin).send().await?;
        if !response.status().is_success() {
            bail!(
                "{query} answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        last = response.json().await?;
        if run > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        last,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The sweeper would roll up in the middle of the timings: once an hour is out of the way.
    let catalog_url = match &args.postgres {
        Some(url) => Some(cityhub_benches::fresh_postgres_catalog(url).await?),
        None => None,
    };
    // Keepalives an hour apart (offline after three hours): loading takes minutes on
    // PostgreSQL, and channels timing out meanwhile would add a sweep to the timings.
    let hub = Hub::start_with(|config| {
        config.cameras.sweep_interval_secs = 3600;
        config.cameras.keepalive_interval_secs = 3600;
        if let Some(url) = catalog_url {
            config.catalog.url = url;
        }
    })
    .await?;
    let catalog = hub.state.catalog.clone();
    let settings = hub.state.cameras.settings().clone();
    println!(
        "machine: {} cores; catalog: {}; {} channels, {} days of history, outage rate {} a day",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.channels,
        args.days,
        args.outage_rate
    );

    let now = chrono::Utc::now().timestamp_millis();
    let registered = now - (args.days + 1) * DAY;
    let started = Instant::now();
    let reports: Vec<ChannelReport> = (0..args.channels)
        .map(|i| {
            ChannelReport::from_json(
                json!({"id": channel_id(i), "name": format!("通道 {i}"), "department": "bench",
                       "longitude": 105.0, "latitude": 29.6, "position_type": 1 + i % 10}),
                None,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("{}: {}", err.field, err.message))?;
    for chunk in reports.chunks(10_000) {
        catalog
            .register_cameras(chunk.to_vec(), None, registered)
            .await?;
    }
    let mut rng = StdRng::seed_from_u64(2026);
    let mut transitions = 0;
    let mut pending = Vec::new();
    for i in 0..args.channels {
        let history = history(
            channel_id(i),
            registered,
            now,
            args.days,
            args.outage_rate,
            &mut rng,
        );
        transitions += history.transitions.len();
        pending.push(history);
        if pending.len() == 10_000 || i + 1 == args.channels {
            catalog
                .import_camera_history(std::mem::take(&mut pending), now)
                .await?;
        }
    }
    println!(
        "loaded {} channels and {transitions} transitions in {:.1} s",
        args.channels,
        started.elapsed().as_secs_f64()
    );

    // The first roll-up stops a day short, so that the next is the sweeper's daily one.
    let started = Instant::now();
    let first = catalog
        .roll_up_camera_days(now - DAY, settings.liveness, settings.daily_retention_days)
        .await?;
    let first_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let daily = catalog
        .roll_up_camera_days(now, settings.liveness, settings.daily_retention_days)
        .await?;
    let daily_secs = started.elapsed().as_secs_f64();
    println!(
        "roll-up: first {} days in {first_secs:.2} s ({:.0} ms a day); the next day alone ({}) in {:.0} ms",
        first.len(),
        first_secs * 1000.0 / first.len().max(1) as f64,
        daily.len(),
        daily_secs * 1000.0
    );

    // The same three steps inside the process, without HTTP: where the time goes.
    let mut check = Vec::new();
    let mut daily_stats = Vec::new();
    let mut live_stats = Vec::new();
    let days = cityhub_catalog::camera::daily::beijing_day(now) - 30
        ..=cityhub_catalog::camera::daily::beijing_day(now) - 1;
    for _ in 0..args.runs {
        let now = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        catalog
            .roll_up_camera_days(now, settings.liveness, settings.daily_retention_days)
            .await?;
        check.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        catalog
            .camera_daily_stats(
                cityhub_catalog::camera::StatsGroup::Region,
                days.clone(),
                now,
                settings.liveness,
                None,
            )
            .await?;
        daily_stats.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        catalog
            .camera_stats(
                cityhub_catalog::camera::StatsGroup::Region,
                now - DAY,
                now,
                settings.liveness,
                None,
            )
            .await?;
        live_stats.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "in process, p50: roll-up with nothing to do {:.1} ms, 30-day statistic from the roll-ups {:.1} ms, 24 h statistic {:.1} ms",
        percentile(&mut check, 0.5),
        percentile(&mut daily_stats, 0.5),
        percentile(&mut live_stats, 0.5)
    );

    let (base_p50, base_p99, _) = stats(&hub, "window_hours=24", args.runs).await?;
    println!(
        "stats by region, 24 h from the history (baseline): p50 {base_p50:>7.1} ms  p99 {base_p99:>7.1} ms"
    );
    for query in ["days=7", "days=30", "window_hours=168", "window_hours=720"] {
        let (p50, p99, answer) = stats(&hub, query, args.runs).await?;
        let availability = answer["overall"]["availability"].as_f64().unwrap_or(0.0);
        println!(
            "stats by region, {query:<16}: p50 {p50:>7.1} ms  p99 {p99:>7.1} ms  ({:.2}x the 24 h p50; availability {availability:.4})",
            p50 / base_p50
        );
    }
    hub.stop().await;
    Ok(())
}
