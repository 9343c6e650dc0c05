//! Dashboard endpoints under load, on the demo city, each figure beside a baseline measured in
//! the same run:
//!
//! 1. 1,000 concurrent clients polling one endpoint with `If-None-Match` (`oha`, closed
//!    loop, a separate process), against `oha` on `/healthz` with the same clients;
//!    and without `If-None-Match` (every answer a cached body);
//! 2. the same clients paced at a fixed total rate (the latency a fleet of screens sees),
//!    against `/healthz` at the same rate;
//! 3. 1,000 clients polling across a commit to the endpoint's source: how many times the
//!    query ran;
//! 4. 5,000 open server-sent event streams (held by a child process): the time from a
//!    commit's answer until every stream has the new result.
//!
//! Run: `cargo run --release -p cityhub-benches --bin endpoint_bench` (needs `oha`:
//! `cargo install oha`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cityhub_benches::{Hub, percentile};
use cityhub_catalog::token::Token;
use cityhub_catalog::{NewPrincipal, Role};
use clap::Parser;
use futures::StreamExt;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// Concurrent polling clients.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// Seconds of each polling phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second of the paced runs (all clients together).
    #[arg(long, default_value_t = 30_000)]
    paced_rate: u64,
    /// Open event streams.
    #[arg(long, default_value_t = 5_000)]
    streams: usize,
    /// The endpoint polled (a demo endpoint).
    #[arg(long, default_value = "hotline-today")]
    endpoint: String,
    /// Internal: run as the event-stream holder for the parent bench.
    #[arg(long, hide = true)]
    listen: Option<String>,
    #[arg(long, hide = true)]
    token: Option<String>,
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(url) = &args.listen {
        return hold_streams(url, args.token.as_deref().unwrap_or(""), args.streams).await;
    }
    if std::process::Command::new("oha")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("this benchmark needs oha (cargo install oha)");
    }
    let hub = Hub::start_with_demo().await?;
    // The governance centre's screens: one dashboard token, no rate limit (the benchmark
    // measures the hub, not the limiter).
    let token = Token::generate();
    hub.state
        .catalog
        .create_principal(
            NewPrincipal {
                name: "bench-screens".into(),
                department: "zhili".into(),
                role: Role::Dashboard,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await?;
    let screen = token.plaintext;
    let url = format!("{}/api/v1/endpoints/{}", hub.base, args.endpoint);
    let first = hub.client.get(&url).bearer_auth(&screen).send().await?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("no ETag")?
        .to_string();
    let body = first.bytes().await?;
    println!(
        "endpoint {}: {} bytes of JSON, ETag {etag}",
        args.endpoint,
        body.len()
    );

    println!(
        "1. {} clients, {} s each, oha closed loop:",
        args.clients, args.seconds
    );
    let health = oha(&args, &format!("{}/healthz", hub.base), &[])?;
    println!("   GET /healthz (baseline):            {health}");
    let auth = format!("Authorization: Bearer {screen}");
    let not_modified = oha(
        &args,
        &url,
        &[auth.as_str(), &format!("If-None-Match: {etag}")],
    )?;
    println!("   GET endpoint with If-None-Match:    {not_modified}");
    println!(
        "   ratio endpoint/healthz: {:.2}",
        not_modified.rate / health.rate.max(1.0)
    );
    let bodies = oha(&args, &url, &[auth.as_str()])?;
    println!("   GET endpoint, cached body:          {bodies}");

    println!(
        "2. {} clients paced at {} req/s together (oha --latency-correction), {} s each:",
        args.clients, args.paced_rate, args.seconds
    );
    let health = oha_paced(&args, &format!("{}/healthz", hub.base), &[])?;
    println!("   GET /healthz (baseline):            {health}");
    let not_modified = oha_paced(
        &args,
        &url,
        &[auth.as_str(), &format!("If-None-Match: {etag}")],
    )?;
    println!("   GET endpoint with If-None-Match:    {not_modified}");

    println!("3. {} clients polling across a commit:", args.clients);
    let before = executions(&hub, &args.endpoint).await?;
    let poller = {
        let mut command = oha_command(
            &args,
            &url,
            &[auth.as_str(), &format!("If-None-Match: {etag}")],
        );
        command.arg("-z").arg("6s");
        command.spawn()?
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    commit_hotline_case(&hub).await?;
    let output = poller.wait_with_output()?;
    let report = Report::from_oha(&output.stdout)?;
    let after = executions(&hub, &args.endpoint).await?;
    println!(
        "   {report}; the query ran {} time(s) across the commit",
        after - before
    );

    println!("4. {} open event streams:", args.streams);
    let events_url = format!("{url}/events");
    let mut holder = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--listen")
        .arg(&events_url)
        .arg("--token")
        .arg(&screen)
        .arg("--streams")
        .arg(args.streams.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = holder.stdout.take().context("child stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = lines
        .next_line()
        .await?
        .context("the stream holder ended")?;
    println!("   {ready}");
    let commit_started = unix_micros();
    commit_hotline_case(&hub).await?;
    let committed = unix_micros();
    let done = lines
        .next_line()
        .await?
        .context("the stream holder ended")?;
    let last: i64 = done
        .split_whitespace()
        .find_map(|w| w.strip_prefix("last_at="))
        .and_then(|v| v.parse().ok())
        .context("no last_at")?;
    println!(
        "   commit answered {:.1} ms after it was sent; {done}; the last stream had the new result {:.1} ms after the commit's answer",
        (committed - commit_started) as f64 / 1e3,
        (last - committed) as f64 / 1e3
    );
    holder.wait().await?;
    hub.stop().await;
    Ok(())
}

/// One row for the hotline, committed as any department feed would.
async fn commit_hotline_case(hub: &Hub) -> anyhow::Result<()> {
    let now = chrono::Utc::now().to_rfc3339();
    let row = serde_json::json!({
        "case_id": format!("BENCH-{}", unix_micros()),
        "received_at": now,
        "region_code": "511002",
        "region_name": "市中区",
        "category": "环境保护",
        "channel": "电话",
        "status": "已受理",
    });
    let response = hub
        .client
        .post(format!(
            "{}/api/v1/datasets/zhili.hotline_cases/rows",
            hub.base
        ))
        .bearer_auth(&hub.admin)
        .header("content-type", "application/x-ndjson")
        .body(format!("{row}\n"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("commit: {}", response.text().await?);
    }
    Ok(())
}

async fn executions(hub: &Hub, endpoint: &str) -> anyhow::Result<u64> {
    let answer: Value = hub
        .client
        .get(format!(
            "{}/api/v1/endpoints/{endpoint}/definition",
            hub.base
        ))
        .bearer_auth(&hub.admin)
        .send()
        .await?
        .json()
        .await?;
    answer["executions"].as_u64().context("executions")
}

struct Report {
    rate: f64,
    p50: f64,
    p99: f64,
    codes: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} resp/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({})",
            self.rate, self.p50, self.p99, self.codes
        )
    }
}

impl Report {
    fn from_oha(stdout: &[u8]) -> anyhow::Result<Self> {
        let report: Value = serde_json::from_slice(stdout)
            .with_context(|| format!("oha said: {}", String::from_utf8_lossy(stdout)))?;
        let ms = |key: &str| {
            report["latencyPercentiles"][key]
                .as_f64()
                .unwrap_or(f64::NAN)
                * 1000.0
        };
        let codes = report["statusCodeDistribution"]
            .as_object()
            .map(|codes| {
                codes
                    .iter()
                    .map(|(code, n)| format!("{code}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        Ok(Self {
            rate: report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
            p50: ms("p50"),
            p99: ms("p99"),
            codes,
        })
    }
}

fn oha_command(args: &Args, url: &str, headers: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("oha");
    command
        .args(["--no-tui", "--output-format", "json"])
        .arg("-c")
        .arg(args.clients.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for header in headers {
        command.arg("-H").arg(header);
    }
    command.arg(url);
    command
}

fn oha(args: &Args, url: &str, headers: &[&str]) -> anyhow::Result<Report> {
    let mut command = oha_command(args, url, headers);
    command.arg("-z").arg(format!("{}s", args.seconds));
    let output = command.output()?;
    Report::from_oha(&output.stdout)
}

fn oha_paced(args: &Args, url: &str, headers: &[&str]) -> anyhow::Result<Report> {
    let mut command = oha_command(args, url, headers);
    command
        .arg("-z")
        .arg(format!("{}s", args.seconds))
        .arg("-q")
        .arg(args.paced_rate.to_string())
        .arg("--latency-correction");
    let output = command.output()?;
    Report::from_oha(&output.stdout)
}

/// The child process: opens `count` event streams, prints a line once every stream has
/// its first result, then waits for each stream's next result and prints when the last
/// one arrived (Unix µs) and the spread.
async fn hold_streams(url: &str, token: &str, count: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().build()?;
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(count);
    let (next_tx, mut next_rx) = tokio::sync::mpsc::channel::<i64>(count);
    let opened = Instant::now();
    for _ in 0..count {
        let request = client.get(url).bearer_auth(token);
        let (first_tx, next_tx) = (first_tx.clone(), next_tx.clone());
        tokio::spawn(async move {
            let Ok(response) = request.send().await else {
                return;
            };
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            let mut results = 0;
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if block.lines().any(|l| l == "event: result") {
                        results += 1;
                        if results == 1 {
                            let _ = first_tx.send(()).await;
                        } else {
                            let _ = next_tx.send(unix_micros()).await;
                            return;
                        }
                    }
                }
            }
        });
    }
    drop((first_tx, next_tx));
    for _ in 0..count {
        first_rx
            .recv()
            .await
            .context("a stream ended before its first result")?;
    }
    println!(
        "all {count} streams open with their first result after {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let mut arrivals = Vec::with_capacity(count);
    while arrivals.len() < count {
        match tokio::time::timeout(Duration::from_secs(30), next_rx.recv()).await {
            Ok(Some(at)) => arrivals.push(at as f64),
            _ => break,
        }
    }
    let first = arrivals.iter().copied().fold(f64::INFINITY, f64::min);
    let last = arrivals.iter().copied().fold(0.0, f64::max);
    let median = percentile(&mut arrivals.clone(), 0.5);
    println!(
        "{} of {count} streams received the update (spread first..median..last {:.1}..{:.1}..{:.1} ms) last_at={}",
        arrivals.len(),
        0.0,
        (median - first) / 1e3,
        (last - first) / 1e3,
        last as i64
    );
    Ok(())
}
