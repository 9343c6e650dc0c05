//! Sharing overhead: the analytical query suite run by an analyst of another department,
//! through grants and masking, against the same suite run by an admin, who reads raw data.
//!
//! In one run on one machine, over the demo city (1.1 million rows): the analyst's
//! department holds grants on the conditional datasets; the unconditional ones are read
//! masked without one. Each query runs `--runs` times per side, alternating sides; the
//! medians and their ratio are printed per query, then the median ratio over the suite.
//!
//! Run: `cargo run --release -p cityhub-benches --bin sharing_bench`

use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::AsArray;
use cityhub_benches::{ANALYTICAL_QUERIES, Hub, percentile};
use cityhub_catalog::sharing::{Decision, NewShareRequest};
use cityhub_catalog::token::Token;
use cityhub_catalog::{DatasetName, NewPrincipal, Role};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Runs per query and side.
    #[arg(long, default_value_t = 9)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hub = Hub::start_with_demo().await?;
    let analyst = analyst_with_grants(&hub).await?;

    // The analyst really reads masked values.
    let sample = hub
        .sql_batches(
            &analyst,
            "SELECT plate_no, caller_phone FROM gongan.traffic_violations, \
             (SELECT caller_phone FROM zhili.hotline_cases WHERE caller_phone IS NOT NULL LIMIT 1) LIMIT 1",
        )
        .await?;
    let plate = sample[0].column(0).as_string_view().value(0).to_string();
    let phone = sample[0].column(1).as_string_view().value(0).to_string();
    if !plate.contains('*') || !phone.contains("****") {
        bail!("the analyst should read masked values, got {plate} and {phone}");
    }
    println!("analyst reads plate {plate}, phone {phone}");

    println!(
        "\n{:<26} {:>10} {:>11} {:>7}",
        "query", "admin ms", "analyst ms", "ratio"
    );
    let mut ratios = Vec::new();
    for (name, sql) in ANALYTICAL_QUERIES {
        let mut admin_times = Vec::new();
        let mut analyst_times = Vec::new();
        for run in 0..=args.runs {
            let t = Instant::now();
            hub.sql_rows(&hub.admin, sql).await?;
            let admin_ms = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            hub.sql_rows(&analyst, sql)
                .await
                .with_context(|| format!("{name} as the analyst"))?;
            let analyst_ms = t.elapsed().as_secs_f64() * 1000.0;
            if run > 0 {
                admin_times.push(admin_ms);
                analyst_times.push(analyst_ms);
            }
        }
        let admin_ms = percentile(&mut admin_times, 0.5);
        let analyst_ms = percentile(&mut analyst_times, 0.5);
        let ratio = analyst_ms / admin_ms;
        ratios.push(ratio);
        println!("{name:<26} {admin_ms:>10.1} {analyst_ms:>11.1} {ratio:>7.3}");
    }
    let median = percentile(&mut ratios, 0.5);
    println!(
        "median ratio analyst (grants + masking) / admin over {} queries: {median:.3} \
         (overhead {:+.1} %)",
        ratios.len(),
        (median - 1.0) * 100.0
    );
    hub.stop().await;
    Ok(())
}

/// A `bench` analyst whose department holds grants (all columns, none unmasked) on every
/// conditional demo dataset.
async fn analyst_with_grants(hub: &Hub) -> anyhow::Result<String> {
    let catalog = &hub.state.catalog;
    let token = Token::generate();
    let analyst = catalog
        .create_principal(
            NewPrincipal {
                name: "bench-analyst".into(),
                department: "bench".into(),
                role: Role::Analyst,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await?;
    let owner = catalog
        .create_principal(
            NewPrincipal {
                name: "bench-owner".into(),
                department: "admin".into(),
                role: Role::Admin,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &Token::generate().hash,
        )
        .await?;
    for name in ["zhili.hotline_cases", "gongan.traffic_violations"] {
        let dataset = catalog
            .dataset(&DatasetName::parse(name)?)
            .await?
            .context("demo dataset")?;
        let request = catalog
            .create_share_request(NewShareRequest {
                dataset_id: dataset.id,
                department: "bench".into(),
                requested_by: analyst.id,
                purpose: "benchmark".into(),
                columns: None,
                unmasked: vec![],
                until: None,
                answer_due_at: chrono::Utc::now() + chrono::Duration::days(7),
                rows: None,
            })
            .await?;
        catalog
            .decide_share_request(Decision {
                request_id: request.id,
                decided_by: owner.id,
                approve: true,
                reason: None,
                columns: None,
                unmasked: None,
                expires_at: None,
                rows: None,
            })
            .await?;
    }
    Ok(token.plaintext)
}
