//! The query doors side by side, in one run on one machine: Arrow Flight SQL and the
//! PostgreSQL wire protocol against HTTP with Arrow IPC output (the baseline), all three
//! answered by the same in-process hub.
//!
//! Phases (`--phases`, comma-separated):
//! - `suite`: the analytical query suite over the demo city, through Flight SQL and through
//!   HTTP Arrow, alternating, `--runs` each; medians per query and the median ratio;
//! - `large`: one wide result (10 columns: integers, floats, strings, a timestamp, a
//!   boolean) of `--large-rows` rows through HTTP Arrow and Flight SQL, and of `--pg-rows`
//!   rows through HTTP Arrow and PostgreSQL in binary format to a Rust client
//!   (tokio-postgres); rows per second of each;
//! - `connections`: `--connections` PostgreSQL connections, each running a small query
//!   `--per-connection` times, then as many HTTP clients doing the same; throughput and
//!   p50/p99 latency of each.
//!
//! Run: `cargo run --profile bench-fast -p cityhub-benches --bin doors_bench`

use std::time::Instant;

use anyhow::{Context, bail};
use arrow_flight::sql::client::FlightSqlServiceClient;
use cityhub_benches::{ANALYTICAL_QUERIES as QUERIES, Hub, percentile};
use clap::Parser;
use futures::TryStreamExt;

#[derive(Parser)]
struct Args {
    /// Runs per query and door in the suite.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Rows of the wide result fetched through HTTP Arrow and Flight SQL.
    #[arg(long, default_value_t = 10_000_000)]
    large_rows: usize,
    /// Rows of the wide result fetched through HTTP Arrow and PostgreSQL.
    #[arg(long, default_value_t = 1_000_000)]
    pg_rows: usize,
    /// Concurrent connections (and HTTP clients) in the connections phase.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Queries each connection runs.
    #[arg(long, default_value_t = 20)]
    per_connection: usize,
    #[arg(long, default_value = "suite,large,connections")]
    phases: String,
}

/// A wide result of `rows` rows computed by the engine (no file read dominates, so the
/// doors' encoding and transport are what differs).
fn wide_result(rows: usize) -> String {
    format!(
        "SELECT value AS id, value * 7 AS amount, value % 97 AS bucket, \
         CAST(value AS DOUBLE) / 3 AS score, CAST(value AS DOUBLE) * 0.001 AS longitude, \
         concat('网格事件-', CAST(value % 100000 AS VARCHAR)) AS label, \
         CASE WHEN value % 3 = 0 THEN 'open' ELSE 'closed' END AS status, \
         value % 2 = 0 AS even, to_timestamp(1764547200 + value % 86400) AS at, \
         concat('5110', CAST(value % 90 AS VARCHAR)) AS region_code \
         FROM generate_series(1, {rows})"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    let hub = Hub::start_with_demo().await?;
    let mut flight = flight_client(&hub).await?;
    if phases.contains(&"suite") {
        suite(&hub, &mut flight, args.runs).await?;
    }
    if phases.contains(&"large") {
        large(&hub, &mut flight, args.large_rows, args.pg_rows).await?;
    }
    if phases.contains(&"connections") {
        connections(&hub, args.connections, args.per_connection).await?;
    }
    hub.stop().await;
    Ok(())
}

async fn flight_client(
    hub: &Hub,
) -> anyhow::Result<FlightSqlServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", hub.flight_address))?
        .connect()
        .await
        .context("connecting to the Flight SQL door")?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("authorization", format!("Bearer {}", hub.admin));
    Ok(client)
}

/// Runs `sql` through Flight SQL and counts its rows.
async fn flight_rows(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> anyhow::Result<usize> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut rows = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("an endpoint without a ticket")?;
        let mut batches = client.do_get(ticket).await?;
        while let Some(batch) = batches.try_next().await? {
            rows += batch.num_rows();
        }
    }
    Ok(rows)
}

/// Runs `sql` through HTTP with Arrow output, decoding batches as they arrive.
async fn http_rows(hub: &Hub, sql: &str) -> anyhow::Result<usize> {
    hub.sql_rows(&hub.admin, sql).await
}

async fn pg_client(hub: &Hub) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(hub.pg_address.ip().to_string())
        .port(hub.pg_address.port())
        .dbname("cityhub")
        .user("bench")
        .password(hub.admin.as_str())
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the PostgreSQL door")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `sql` through PostgreSQL's extended protocol (binary results), streaming rows.
async fn pg_rows(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<usize> {
    let rows = client.query_raw(sql, std::iter::empty::<i64>()).await?;
    futures::pin_mut!(rows);
    let mut count = 0;
    while let Some(row) = rows.try_next().await? {
        // Touch the first column so the row is really decoded, as a client would.
        let _: i64 = row.try_get(0)?;
        count += 1;
    }
    Ok(count)
}

async fn suite(
    hub: &Hub,
    flight: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    runs: usize,
) -> anyhow::Result<()> {
    println!(
        "\n{:<26} {:>9} {:>11} {:>7} {:>8}",
        "query", "http ms", "flight ms", "ratio", "rows"
    );
    let mut ratios = Vec::new();
    for (name, sql) in QUERIES {
        let (mut http_times, mut flight_times) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        // Alternate the two doors so that machine noise hits both alike; the first run of
        // each warms caches and is not counted.
        for run in 0..=runs {
            let t = Instant::now();
            rows.0 = http_rows(hub, sql).await?;
            let http_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            rows.1 = flight_rows(flight, sql).await?;
            let flight_ms = t.elapsed().as_secs_f64() * 1e3;
            if run > 0 {
                http_times.push(http_ms);
                flight_times.push(flight_ms);
            }
        }
        if rows.0 != rows.1 {
            bail!(
                "{name}: HTTP returned {} rows, Flight SQL {}",
                rows.0,
                rows.1
            );
        }
        let http_ms = percentile(&mut http_times, 0.5);
        let flight_ms = percentile(&mut flight_times, 0.5);
        let ratio = flight_ms / http_ms;
        ratios.push(ratio);
        println!(
            "{name:<26} {http_ms:>9.1} {flight_ms:>11.1} {ratio:>7.2} {:>8}",
            rows.0
        );
    }
    println!(
        "median ratio flight / http over {} queries: {:.2}",
        ratios.len(),
        percentile(&mut ratios, 0.5)
    );
    Ok(())
}

async fn large(
    hub: &Hub,
    flight: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    large_rows: usize,
    pg_rows_wanted: usize,
) -> anyhow::Result<()> {
    println!("\nwide result, 10 columns (best of 3 per door, alternating)");
    let sql = wide_result(large_rows);
    let (mut http_best, mut flight_best) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let rows = http_rows(hub, &sql).await?;
        http_best = http_best.min(t.elapsed().as_secs_f64());
        ensure_rows(rows, large_rows, "HTTP Arrow")?;
        let t = Instant::now();
        let rows = flight_rows(flight, &sql).await?;
        flight_best = flight_best.min(t.elapsed().as_secs_f64());
        ensure_rows(rows, large_rows, "Flight SQL")?;
    }
    let rate = |seconds: f64, rows: usize| rows as f64 / seconds;
    println!(
        "{large_rows} rows: http arrow {:.0} rows/s, flight sql {:.0} rows/s, flight / http rate {:.2}",
        rate(http_best, large_rows),
        rate(flight_best, large_rows),
        http_best / flight_best
    );

    let sql = wide_result(pg_rows_wanted);
    let pg = pg_client(hub).await?;
    let (mut http_best, mut pg_best) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let rows = http_rows(hub, &sql).await?;
        http_best = http_best.min(t.elapsed().as_secs_f64());
        ensure_rows(rows, pg_rows_wanted, "HTTP Arrow")?;
        let t = Instant::now();
        let rows = pg_rows(&pg, &sql).await?;
        pg_best = pg_best.min(t.elapsed().as_secs_f64());
        ensure_rows(rows, pg_rows_wanted, "PostgreSQL")?;
    }
    println!(
        "{pg_rows_wanted} rows: http arrow {:.0} rows/s, postgresql binary (tokio-postgres) {:.0} rows/s",
        rate(http_best, pg_rows_wanted),
        rate(pg_best, pg_rows_wanted),
    );
    Ok(())
}

fn ensure_rows(got: usize, wanted: usize, door: &str) -> anyhow::Result<()> {
    if got != wanted {
        bail!("{door} returned {got} rows instead of {wanted}");
    }
    Ok(())
}

/// The small query each connection runs.
const SMALL: &str = "SELECT code, name FROM hub.regions WHERE parent = '511000' ORDER BY code";

async fn connections(hub: &Hub, connections: usize, per_connection: usize) -> anyhow::Result<()> {
    println!("\n{connections} concurrent clients, {per_connection} small queries each");
    // PostgreSQL: every connection logs in first, then all run at once.
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(pg_client(hub).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let t = Instant::now();
                    let rows = client.query(SMALL, &[]).await?;
                    anyhow::ensure!(!rows.is_empty(), "the regions are missing");
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let pg = gather(tasks, started).await?;
    // HTTP: as many clients, each on its own connection pool slot.
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let client = hub.client.clone();
            let url = format!("{}/api/v1/sql", hub.base);
            let token = hub.admin.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .body(SMALL)
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "{}", response.status());
                    let _ = response.bytes().await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let http = gather(tasks, started).await?;
    for (door, (throughput, mut latencies)) in [("postgresql", pg), ("http json", http)] {
        println!(
            "{door:<12} {throughput:>8.0} queries/s  p50 {:>7.1} ms  p99 {:>7.1} ms",
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
    }
    Ok(())
}

/// Waits for the clients; the throughput over the whole run and every latency.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>>,
    started: Instant,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((latencies.len() as f64 / seconds, latencies))
}
