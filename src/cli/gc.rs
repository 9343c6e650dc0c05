//! `cityhub gc [--dry-run]`: expires replaced snapshots past their retention and deletes
//! the files no kept snapshot names and the orphans, listing each with its size. Safe beside
//! running servers on the same catalog (see `cityhub_ingest::gc`).

use cityhub_catalog::Principal;
use cityhub_catalog::clock::Clock;
use cityhub_config::Config;
use cityhub_ingest::gc::Reason;
use cityhub_server::AppState;

pub async fn run(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let state = AppState::open(config).await?;
    let report = state
        .ingest
        .collect_garbage(
            Some(&Principal::local_operator()),
            &state.retention,
            Clock::system().now(),
            dry_run,
        )
        .await;
    state.audit.flush().await;
    let report = report?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for removed in &report.removed {
        let why = match removed.reason {
            Reason::Expired => "only expired snapshots name it",
            Reason::Orphan => "no snapshot names it",
        };
        println!(
            "{verb} {} ({}, {} bytes): {why}",
            removed.key,
            removed.dataset.as_deref().unwrap_or("no dataset"),
            removed.bytes
        );
    }
    println!(
        "{} {} snapshot(s) over {} dataset(s); {verb} {} expired file(s) and {} orphan(s), \
         {} bytes{}.",
        if dry_run { "Would expire" } else { "Expired" },
        report.snapshots_expired,
        report.datasets,
        report.files_expired,
        report.orphans,
        report.bytes_reclaimed,
        if report.failures > 0 {
            format!(
                "; {} deletion(s) failed and stay for the next run",
                report.failures
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
