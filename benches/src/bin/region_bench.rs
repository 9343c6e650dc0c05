//! Row-level security's cost: a county-scoped principal's queries against an admin running
//! the same queries with the equivalent `WHERE`, on one 10M-row dataset whose files each
//! hold one county's rows (so the scope prunes files and row groups by their region
//! statistics); and a county's camera statistics against the whole city's per-region
//! statistics on one registry.
//!
//! `cargo run --release -p cityhub-benches --bin region_bench -- --rows 10000000`

use std::time::Instant;

use anyhow::{Context, bail};
use cityhub_benches::tables::{bench_admin, run_sql};
use cityhub_benches::{Hub, percentile};
use cityhub_catalog::sharing::NewToken;
use cityhub_catalog::{Principal, Role};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Rows of the scoped dataset.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Camera channels in the registry.
    #[arg(long, default_value_t = 94_000)]
    channels: usize,
    /// Timed runs of each query (after one warm-up).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Also print `EXPLAIN ANALYZE` of each query as both principals see it.
    #[arg(long)]
    explain: bool,
}

/// The county the scoped principal watches (one of the five the rows cycle through).
const COUNTY: &str = "511025";
const COUNTIES: [&str; 5] = ["511002", "511011", "511024", "511025", "511083"];

/// (label, the scoped principal's SQL, the admin's SQL with the scope written out).
fn queries() -> Vec<(&'static str, String, String)> {
    let scope = format!("region_code LIKE '{COUNTY}%'");
    let day =
        "occurred_at >= '2026-11-05T00:00:00+08:00' AND occurred_at < '2026-11-06T00:00:00+08:00'";
    vec![
        (
            "count",
            "SELECT count(*) FROM bench.cases".to_string(),
            format!("SELECT count(*) FROM bench.cases WHERE {scope}"),
        ),
        (
            "group-by",
            "SELECT category, status, count(*), avg(score) FROM bench.cases GROUP BY 1, 2"
                .to_string(),
            format!(
                "SELECT category, status, count(*), avg(score) FROM bench.cases WHERE {scope} \
                 GROUP BY 1, 2"
            ),
        ),
        (
            "time range",
            format!("SELECT count(*), sum(count) FROM bench.cases WHERE {day}"),
            format!("SELECT count(*), sum(count) FROM bench.cases WHERE {scope} AND {day}"),
        ),
        (
            "top-k",
            "SELECT id, score FROM bench.cases ORDER BY score DESC, id LIMIT 10".to_string(),
            format!(
                "SELECT id, score FROM bench.cases WHERE {scope} ORDER BY score DESC, id LIMIT 10"
            ),
        ),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "machine: {} cores; {} rows; {} channels",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.rows,
        args.channels
    );
    let hub = Hub::start().await?;
    rows(&hub, &args).await?;
    cameras(&hub, &args).await?;
    hub.stop().await;
    Ok(())
}

async fn rows(hub: &Hub, args: &Args) -> anyhow::Result<()> {
    let admin = bench_admin();
    hub.register_spec(json!({
        "name": "bench.cases",
        "sharing": "unconditional",
        "region_column": "region_code",
        "sort_key": ["region_code", "occurred_at"],
        "columns": cityhub_benches::schema_json(),
    }))
    .await?;
    // Pushes of 500,000 rows, each from one county (its county and town codes), as a
    // county's feed delivers them: files then hold narrow ranges of region codes.
    let started = Instant::now();
    let chunk = 500_000;
    let (mut first, mut pushes) = (0, 0);
    while first < args.rows {
        let count = chunk.min(args.rows - first);
        let county = COUNTIES[pushes % COUNTIES.len()];
        let mut body = cityhub_benches::rows_ndjson(first, count);
        for (code, suffix) in COUNTIES.iter().zip(["", "001", "100", "002", "101"]) {
            body = body.replace(
                &format!("\"region_code\":\"{code}\""),
                &format!("\"region_code\":\"{county}{suffix}\""),
            );
        }
        let request = cityhub_ingest::PushRequest {
            format: cityhub_ingest::Format::NdJson,
            body: body.into_bytes().into(),
            partial: false,
            idempotency_key: None,
        };
        hub.state
            .ingest
            .push(&admin, "bench.cases", request)
            .await?;
        first += count;
        pushes += 1;
    }
    let dataset = hub.dataset("bench.cases").await?;
    println!(
        "\nbench.cases: {} rows in {} files, pushed in {:.1} s (each push one county's rows)",
        args.rows,
        dataset["files"],
        started.elapsed().as_secs_f64()
    );
    let county = Principal {
        department: "bench".into(),
        role: Role::Analyst,
        region: Some(COUNTY.into()),
        ..bench_admin()
    };
    println!(
        "county {COUNTY} (scoped analyst, no WHERE) against the admin with WHERE region_code LIKE \
         '{COUNTY}%' ({} runs each, alternating, medians)",
        args.runs
    );
    for (label, scoped_sql, admin_sql) in queries() {
        let (mut scoped_ms, mut admin_ms) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        for run in 0..=args.runs {
            let (ms_scoped, rows_scoped) = run_sql(hub, &county, &scoped_sql).await?;
            let (ms_admin, rows_admin) = run_sql(hub, &admin, &admin_sql).await?;
            rows = (rows_scoped, rows_admin);
            if run > 0 {
                scoped_ms.push(ms_scoped);
                admin_ms.push(ms_admin);
            }
        }
        if rows.0 != rows.1 {
            bail!(
                "{label}: the county got {} rows, the admin {}",
                rows.0,
                rows.1
            );
        }
        if args.explain {
            for (who, principal, sql) in [
                ("scoped", &county, &scoped_sql),
                ("admin", &admin, &admin_sql),
            ] {
                println!("{label}, {who}:\n{}", explain(hub, principal, sql).await?);
            }
        }
        let (s, a) = (
            percentile(&mut scoped_ms, 0.5),
            percentile(&mut admin_ms, 0.5),
        );
        println!(
            "  {label:<11} scoped {s:>8.1} ms  admin+WHERE {a:>8.1} ms  ratio {:.2}",
            s / a
        );
    }
    Ok(())
}

/// `EXPLAIN ANALYZE` of `sql` as `principal` sees it, as a table.
async fn explain(hub: &Hub, principal: &Principal, sql: &str) -> anyhow::Result<String> {
    let result = hub
        .state
        .query
        .execute(principal, &format!("EXPLAIN ANALYZE {sql}"), &[])
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
    let batches: Vec<_> = futures::TryStreamExt::try_collect(result.batches).await?;
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

fn channel(index: usize) -> Value {
    let county = COUNTIES[index % COUNTIES.len()];
    json!({
        "id": format!("{county}00001320{:06}", index / COUNTIES.len() + 1),
        "name": format!("通道 {index}"),
        "department": "bench",
        "civil_code": county,
        "longitude": 105.0,
        "latitude": 29.5,
    })
}

async fn post(hub: &Hub, token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let response = hub
        .client
        .post(format!("{}{path}", hub.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{path} answered {}", response.status());
    }
    Ok(response.json().await?)
}

async fn stats_ms(hub: &Hub, token: &str) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let response = hub
        .client
        .get(format!(
            "{}/api/v1/cameras/stats?group_by=region&window_hours=24",
            hub.base
        ))
        .bearer_auth(token)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("stats answered {}", response.status());
    }
    let answer: Value = response.json().await?;
    let total = answer["overall"]["total"].as_u64().context("total")?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, total))
}

async fn cameras(hub: &Hub, args: &Args) -> anyhow::Result<()> {
    let records: Vec<Value> = (0..args.channels).map(channel).collect();
    for batch in records.chunks(10_000) {
        post(hub, &hub.admin, "/api/v1/cameras/batch", &json!(batch)).await?;
    }
    // Nine in ten channels send a keepalive: statuses to count.
    let alive: Vec<Value> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, r)| json!({"id": r["id"]}))
        .collect();
    for batch in alive.chunks(10_000) {
        post(hub, &hub.admin, "/api/v1/cameras/keepalive", &json!(batch)).await?;
    }
    let (_, token) = hub
        .state
        .sharing
        .create_token(
            &Principal::local_operator(),
            NewToken {
                department: "bench".into(),
                role: Role::Analyst,
                name: Some("bench county centre".into()),
                expires_at: None,
                rate_limit_per_second: None,
                region: Some(COUNTY.into()),
            },
            "bench",
        )
        .await?;
    let (mut city_ms, mut county_ms) = (Vec::new(), Vec::new());
    let mut totals = (0, 0);
    for run in 0..=args.runs {
        let (city, city_total) = stats_ms(hub, &hub.admin).await?;
        let (county, county_total) = stats_ms(hub, &token.plaintext).await?;
        totals = (city_total, county_total);
        if run > 0 {
            city_ms.push(city);
            county_ms.push(county);
        }
    }
    let (c, k) = (
        percentile(&mut city_ms, 0.5),
        percentile(&mut county_ms, 0.5),
    );
    println!(
        "\ncamera statistics (group_by=region, 24 h), {} runs each, alternating, medians:\n  \
         city (admin, per region) {c:>7.1} ms ({} channels)  county {COUNTY} {k:>7.1} ms ({} channels)  ratio {:.2}",
        args.runs,
        totals.0,
        totals.1,
        k / c
    );
    Ok(())
}
