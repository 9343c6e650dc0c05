//! `cityhub compact DATASET`: merges a dataset's small files now, with a progress bar. Safe
//! beside a running server: pushes keep committing, the compaction rebases over them.

use std::time::Instant;

use cityhub_catalog::{DatasetName, Principal};
use cityhub_config::Config;
use cityhub_server::AppState;
use indicatif::{ProgressBar, ProgressStyle};

pub async fn run(config: Config, dataset: &str) -> anyhow::Result<()> {
    let name = DatasetName::parse(dataset)?;
    let state = AppState::open(config).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("merging");
    let started = Instant::now();
    let progress = {
        let bar = bar.clone();
        move |read: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(read);
        }
    };
    let result = state
        .ingest
        .compact(
            Some(&Principal::local_operator()),
            &name,
            &state.compaction,
            &progress,
        )
        .await;
    bar.finish_and_clear();
    state.audit.flush().await;
    let report = result?;
    match report.snapshot_id {
        None => println!(
            "Nothing to compact in {name}: {} file(s), none small enough to merge with another.",
            report.files_before
        ),
        Some(snapshot) => println!(
            "Compacted {name} in {:.1} s: {} small file(s) ({} bytes) merged into {} ({} bytes), \
             {} rows; the dataset now has {} file(s) (was {}); snapshot {snapshot}.",
            started.elapsed().as_secs_f64(),
            report.files_merged,
            report.bytes_merged,
            report.files_written,
            report.bytes_written,
            report.rows,
            report.files_after,
            report.files_before
        ),
    }
    Ok(())
}
