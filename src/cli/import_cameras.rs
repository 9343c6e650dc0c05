//! `cityhub import cameras FILE.csv`: loads a platform's channel list into the registry.
//!
//! The whole file is read and checked first, so every bad line is reported at once (line,
//! column, reason) and, unless `--skip-bad` is given, nothing is written while any line is
//! bad. Good lines are then registered in chunks, each one transaction, with a progress bar.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cityhub_catalog::camera::{ChannelReport, FieldError, Registered};
use cityhub_catalog::{Action, AuditEvent, Catalog, Outcome, Principal};
use cityhub_config::Config;
use cityhub_server::AppState;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

/// `cityhub import cameras FILE.csv [--skip-bad]`.
pub async fn run(config: Config, file: &Path, skip_bad: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let state = AppState::open(config).await?;
    let departments = state
        .catalog
        .list_departments()
        .await?
        .into_iter()
        .map(|d| d.code)
        .collect();
    let checked = read_file(file, &departments)?;
    let report_bad = |errors: &[LineError]| {
        for error in errors.iter().take(100) {
            eprintln!("  {error}");
        }
        if errors.len() > 100 {
            eprintln!("  ... and {} more", errors.len() - 100);
        }
    };
    if !checked.errors.is_empty() && !skip_bad {
        eprintln!(
            "Nothing was imported: {} of {} line(s) are bad (fix them, or import the good \
             ones with --skip-bad):",
            checked.errors.len(),
            checked.errors.len() + checked.channels.len()
        );
        report_bad(&checked.errors);
        anyhow::bail!("{} bad line(s) in {}", checked.errors.len(), file.display());
    }
    let bar = ProgressBar::new(checked.channels.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} channels  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let bad_lines = checked.errors.len();
    let summary = {
        let bar = bar.clone();
        register(&state.catalog, checked.channels, move |done| {
            bar.set_position(done);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{rate:.0}/s"));
        })
        .await?
    };
    bar.finish_and_clear();
    state.audit.record(audit_event(
        &Principal::local_operator(),
        file,
        &summary,
        bad_lines,
    ));
    state.audit.flush().await;
    println!(
        "Registered {} channel(s) from {} in {:.1} s: {} new, {} updated, {} restored.",
        summary.created + summary.updated + summary.restored,
        file.display(),
        started.elapsed().as_secs_f64(),
        summary.created,
        summary.updated,
        summary.restored
    );
    let mut skipped = checked.errors;
    skipped.extend(summary.refused);
    if !skipped.is_empty() {
        eprintln!("Skipped {} bad line(s):", skipped.len());
        report_bad(&skipped);
    }
    Ok(())
}

/// The columns a camera CSV may have (a header row names them, in any order); only `id` is
/// required. Stream URLs go in `rtsp`, `rtmp`, `flv`, `hls`, `webrtc`; `tags` are separated
/// by `;`.
pub const COLUMNS: &[&str] = &[
    "id",
    "parent_id",
    "name",
    "department",
    "civil_code",
    "address",
    "longitude",
    "latitude",
    "manufacturer",
    "model",
    "ptz_type",
    "position_type",
    "room_type",
    "use_type",
    "supply_light_type",
    "resolution",
    "rtsp",
    "rtmp",
    "flv",
    "hls",
    "webrtc",
    "tags",
];

const NUMBER_COLUMNS: &[&str] = &[
    "longitude",
    "latitude",
    "ptz_type",
    "position_type",
    "room_type",
    "use_type",
    "supply_light_type",
];
const STREAM_COLUMNS: &[&str] = &["rtsp", "rtmp", "flv", "hls", "webrtc"];

/// Rows registered per transaction.
const CHUNK: usize = 5_000;

/// A bad line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, {}: {}", self.line, self.field, self.message)
    }
}

/// The file read and checked: the good channels (with their lines) and the bad lines.
pub struct CheckedFile {
    pub channels: Vec<(u64, ChannelReport)>,
    pub errors: Vec<LineError>,
}

/// Reads and checks a camera CSV. `departments` are the codes that exist.
pub fn read_file(path: &Path, departments: &HashSet<String>) -> anyhow::Result<CheckedFile> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| anyhow::anyhow!("{}: the header row is unreadable: {err}", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        anyhow::bail!(
            "{}: column {unknown:?} is not a camera field; the columns are {}",
            path.display(),
            COLUMNS.join(", ")
        );
    }
    if !headers.iter().any(|h| h == "id") {
        anyhow::bail!("{}: the header row has no id column", path.display());
    }
    let mut checked = CheckedFile {
        channels: Vec::new(),
        errors: Vec::new(),
    };
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(index as u64 + 2, |p| p.line());
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                checked.errors.push(LineError {
                    line,
                    field: "line".into(),
                    message: format!("not a CSV row of {} fields: {err}", headers.len()),
                });
                continue;
            }
        };
        match channel_of(&headers, &record, departments) {
            Ok(report) => {
                if let Some(first) = first_line.get(&report.id.id) {
                    checked.errors.push(LineError {
                        line,
                        field: "id".into(),
                        message: format!("duplicate of line {first}; list each channel once"),
                    });
                    continue;
                }
                first_line.insert(report.id.id.clone(), line);
                checked.channels.push((line, report));
            }
            Err(err) => checked.errors.push(LineError {
                line,
                field: err.field,
                message: err.message,
            }),
        }
    }
    Ok(checked)
}

fn channel_of(
    headers: &[String],
    record: &csv::StringRecord,
    departments: &HashSet<String>,
) -> Result<ChannelReport, FieldError> {
    let mut object = Map::new();
    let mut streams = Map::new();
    for (header, cell) in headers.iter().zip(record.iter()) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        let header = header.as_str();
        let value = if NUMBER_COLUMNS.contains(&header) {
            let number: f64 = cell
                .parse()
                .map_err(|_| FieldError::new(header, format!("{cell:?} is not a number")))?;
            if header.ends_with("itude") {
                Value::from(number)
            } else if number.fract() == 0.0 && (0.0..=255.0).contains(&number) {
                Value::from(number as u8)
            } else {
                return Err(FieldError::new(
                    header,
                    format!("{cell:?} is not a code number"),
                ));
            }
        } else if header == "tags" {
            Value::from(
                cell.split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>(),
            )
        } else {
            Value::from(cell)
        };
        if STREAM_COLUMNS.contains(&header) {
            streams.insert(header.to_string(), value);
        } else {
            object.insert(header.to_string(), value);
        }
    }
    if !streams.is_empty() {
        object.insert("streams".into(), Value::Object(streams));
    }
    let report = ChannelReport::from_json(Value::Object(object), None)?;
    if let Some(department) = &report.fields.department
        && !departments.contains(department)
    {
        return Err(FieldError::new(
            "department",
            format!("{department} is not a department of this hub"),
        ));
    }
    Ok(report)
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    pub created: u64,
    pub updated: u64,
    pub restored: u64,
    /// Lines refused when the registry applied them (none, once the file is checked).
    pub refused: Vec<LineError>,
}

/// Registers the checked channels in chunks, calling `progress(done)` after each.
pub async fn register(
    catalog: &Catalog,
    channels: Vec<(u64, ChannelReport)>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<ImportSummary> {
    let mut summary = ImportSummary::default();
    let mut done = 0u64;
    let mut channels = channels.into_iter().peekable();
    while channels.peek().is_some() {
        let chunk: Vec<(u64, ChannelReport)> = channels.by_ref().take(CHUNK).collect();
        let lines: Vec<u64> = chunk.iter().map(|(line, _)| *line).collect();
        let reports = chunk.into_iter().map(|(_, report)| report).collect();
        let outcomes = catalog
            .register_cameras(reports, None, cityhub_catalog::camera::now_ms())
            .await?;
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            match outcome {
                Ok(Registered::Created) => summary.created += 1,
                Ok(Registered::Updated) => summary.updated += 1,
                Ok(Registered::Restored) => summary.restored += 1,
                Err(err) => summary.refused.push(LineError {
                    line,
                    field: err.field,
                    message: err.message,
                }),
            }
            done += 1;
        }
        progress(done);
    }
    Ok(summary)
}

/// The audit entry of an import.
pub fn audit_event(
    operator: &cityhub_catalog::Principal,
    file: &Path,
    summary: &ImportSummary,
    bad_lines: usize,
) -> AuditEvent {
    AuditEvent::by(operator, Action::CameraImport, Outcome::Ok).detail(serde_json::json!({
        "file": file.display().to_string(),
        "created": summary.created,
        "updated": summary.updated,
        "restored": summary.restored,
        "bad_lines": bad_lines + summary.refused.len(),
    }))
}
