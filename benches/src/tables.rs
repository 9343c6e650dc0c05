//! Shared steps of the table benchmarks: timed SQL through the hub's query service, two
//! tables (or two queries) compared in alternation, and pushes by eight concurrent writers.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use cityhub_catalog::{Principal, Role};
use futures::StreamExt;

use crate::{Hub, percentile};

/// The admin the benchmarks query and push as (in process, no token).
pub fn bench_admin() -> Principal {
    Principal {
        id: 0,
        name: "bench".into(),
        department: "admin".into(),
        role: Role::Admin,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
        region: None,
    }
}

/// The lifecycle queries, with `{t}` for the table: count, group-by, point lookup, time range.
pub fn lifecycle_queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("count", "SELECT count(*) FROM {t}"),
        (
            "group-by",
            "SELECT region_code, category, count(*), avg(score) FROM {t} GROUP BY 1, 2",
        ),
        ("point lookup", "SELECT * FROM {t} WHERE id = 123457"),
        (
            "time range",
            "SELECT count(*), sum(count) FROM {t} WHERE occurred_at >= '2026-11-05T00:00:00+08:00' \
             AND occurred_at < '2026-11-06T00:00:00+08:00'",
        ),
    ]
}

pub async fn run_sql(hub: &Hub, admin: &Principal, sql: &str) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let result = hub
        .state
        .query
        .execute(admin, sql, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
    let mut stream = result.batches;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.map_err(|e| anyhow::anyhow!("{e}"))?.num_rows();
    }
    Ok((t.elapsed().as_secs_f64() * 1000.0, rows))
}

/// Each query on table `a` and on table `b`, alternating, medians and ratio a / b.
pub async fn compare_tables(
    hub: &Hub,
    admin: &Principal,
    queries: &[(&str, &str)],
    a: &str,
    b: &str,
    runs: usize,
    label: &str,
) -> anyhow::Result<()> {
    let on = |table: &str| -> Vec<(&str, String)> {
        queries
            .iter()
            .map(|(l, sql)| (*l, sql.replace("{t}", table)))
            .collect()
    };
    let (qa, qb) = (on(a), on(b));
    println!("{label}: {a} against {b} ({} runs each, medians)", runs);
    for ((query, sql_a), (_, sql_b)) in qa.iter().zip(&qb) {
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        let mut rows = (0, 0);
        for run in 0..=runs {
            let (ms_a, rows_a) = run_sql(hub, admin, sql_a).await?;
            let (ms_b, rows_b) = run_sql(hub, admin, sql_b).await?;
            rows = (rows_a, rows_b);
            if run > 0 {
                ta.push(ms_a);
                tb.push(ms_b);
            }
        }
        if rows.0 != rows.1 {
            bail!("{query}: {a} gave {} rows, {b} {}", rows.0, rows.1);
        }
        let (ma, mb) = (percentile(&mut ta, 0.5), percentile(&mut tb, 0.5));
        println!(
            "  {query:<13} {ma:>9.1} ms {mb:>9.1} ms  ratio {:.2}",
            ma / mb
        );
    }
    Ok(())
}

/// `first` against `second` (both with `{t}` for `table`), alternating, medians and ratio.
pub async fn compare_sql(
    hub: &Hub,
    admin: &Principal,
    first: &[(&str, &str)],
    second: &[(&str, &str)],
    table: &str,
    runs: usize,
    label: &str,
) -> anyhow::Result<()> {
    println!("{label}: {table} ({runs} runs each, medians)");
    for ((query, a), (_, b)) in first.iter().zip(second) {
        let (a, b) = (a.replace("{t}", table), b.replace("{t}", table));
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let (ms_a, _) = run_sql(hub, admin, &a).await?;
            let (ms_b, _) = run_sql(hub, admin, &b).await?;
            if run > 0 {
                ta.push(ms_a);
                tb.push(ms_b);
            }
        }
        let (ma, mb) = (percentile(&mut ta, 0.5), percentile(&mut tb, 0.5));
        println!(
            "  {query:<13} {ma:>9.1} ms {mb:>9.1} ms  ratio {:.2}",
            ma / mb
        );
    }
    Ok(())
}

pub fn push_request(first: usize, rows: usize) -> cityhub_ingest::PushRequest {
    cityhub_ingest::PushRequest {
        format: cityhub_ingest::Format::NdJson,
        body: crate::rows_ndjson(first, rows).into_bytes().into(),
        partial: false,
        idempotency_key: None,
    }
}

pub async fn push_once(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    rows: usize,
) -> anyhow::Result<()> {
    if rows > 0 {
        hub.state
            .ingest
            .push(admin, dataset, push_request(first, rows))
            .await?;
    }
    Ok(())
}

/// `pushes` pushes of `rows` rows (ids from `first`) through the ingest path by 8 writers;
/// pushes per second (the bodies are made before the clock starts).
pub async fn push_small(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    pushes: usize,
    rows: usize,
) -> anyhow::Result<f64> {
    let bodies = (0..pushes)
        .map(|push| crate::rows_ndjson(first + push * rows, rows))
        .collect();
    push_bodies(hub, admin, dataset, bodies).await
}

/// Pushes by 8 writers (ids from `first`) until `until` finishes: pushes per second, and
/// how many were pushed.
pub async fn push_while<T>(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    first: usize,
    rows: usize,
    until: &tokio::task::JoinHandle<T>,
) -> anyhow::Result<(f64, usize)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (ingest, admin, next, stop, dataset) = (
            hub.state.ingest.clone(),
            admin.clone(),
            next.clone(),
            stop.clone(),
            dataset.to_string(),
        );
        writers.push(tokio::spawn(async move {
            let mut done = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let push = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ingest
                    .push(&admin, &dataset, push_request(first + push * rows, rows))
                    .await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    while !until.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pushed = 0;
    for writer in writers {
        pushed += writer.await??;
    }
    // Pushes that finished after the compaction count too; the rate uses its window only.
    Ok((pushed as f64 / seconds.max(0.001), pushed))
}

/// NDJSON `bodies` pushed through the ingest path by 8 writers; pushes per second.
pub async fn push_bodies(
    hub: &Hub,
    admin: &Principal,
    dataset: &str,
    bodies: Vec<String>,
) -> anyhow::Result<f64> {
    let count = bodies.len();
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (ingest, admin, queue, dataset) = (
            hub.state.ingest.clone(),
            admin.clone(),
            queue.clone(),
            dataset.to_string(),
        );
        writers.push(tokio::spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .next();
                let Some(body) = next else {
                    return Ok::<_, anyhow::Error>(());
                };
                let request = cityhub_ingest::PushRequest {
                    format: cityhub_ingest::Format::NdJson,
                    body: body.into_bytes().into(),
                    partial: false,
                    idempotency_key: None,
                };
                ingest.push(&admin, &dataset, request).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
