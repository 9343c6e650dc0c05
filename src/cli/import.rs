//! `cityhub import DATASET FILE [--create]`: a bulk load with a progress bar.

use std::time::Instant;

use cityhub_catalog::{DatasetName, Principal};
use cityhub_config::Config;
use cityhub_ingest::IngestError;
use cityhub_ingest::import::ImportProgress;
use cityhub_server::AppState;
use indicatif::{ProgressBar, ProgressStyle};

/// Imports `file` into `dataset` as the local operator; all or nothing.
pub async fn run(
    config: Config,
    dataset: &str,
    file: &std::path::Path,
    create: bool,
) -> anyhow::Result<()> {
    let name = DatasetName::parse(dataset)?;
    let state = AppState::open(config).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}%  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let progress = {
        let bar = bar.clone();
        move |p: ImportProgress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
            let rate = p.rows as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{} rows, {:.0} rows/s", p.rows, rate));
        }
    };
    let result = state
        .ingest
        .import_file(&Principal::local_operator(), &name, file, create, progress)
        .await;
    bar.finish_and_clear();
    state.audit.flush().await;
    match result {
        Ok(outcome) => {
            let seconds = started.elapsed().as_secs_f64();
            if outcome.created {
                println!("Registered {} with columns:", outcome.dataset);
                for column in &outcome.columns {
                    println!("  {} {}", column.name, column.column_type);
                }
            }
            println!(
                "Imported {} rows into {} in {:.1} s ({:.0} rows/s): {} file(s), snapshot {}.",
                outcome.rows,
                outcome.dataset,
                seconds,
                outcome.rows as f64 / seconds.max(0.001),
                outcome.files,
                outcome.snapshot_id
            );
            Ok(())
        }
        Err(IngestError::Rejected(outcome)) => {
            eprintln!(
                "Nothing was imported: the file has bad rows (showing the first {}):",
                outcome.rejected.len()
            );
            for row in &outcome.rejected {
                eprintln!(
                    "  line {}{}: {}",
                    row.line,
                    row.column
                        .as_ref()
                        .map(|c| format!(", column {c}"))
                        .unwrap_or_default(),
                    row.error
                );
            }
            anyhow::bail!("{} bad row(s) in {}", outcome.rows_rejected, file.display())
        }
        Err(err) => Err(err.into()),
    }
}
