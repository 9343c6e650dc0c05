//! The `cityhub` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use cityhub::{AppState, demo, server, telemetry};
use cityhub_catalog::token::Token;
use cityhub_catalog::{AuditEvent, DatasetName, NewPrincipal, Role};
use cityhub_config::{Config, Loaded};
use cityhub_ingest::IngestError;
use cityhub_ingest::import::ImportProgress;
use clap::{Parser, Subcommand};

mod cli_sql;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "cityhub",
    version,
    about = "The data-sharing and video-resource hub of a city"
)]
struct Cli {
    /// TOML configuration file (defaults < file < CITYHUB__SECTION__KEY variables < flags).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Local data folder (catalog and objects); default ./cityhub-data.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub's HTTP server.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Load the demo city (once; later runs keep it) and print its tokens.
        #[arg(long)]
        demo: bool,
    },
    /// Bulk-load a CSV, NDJSON or Parquet file into a dataset, or (with `cameras` as the
    /// dataset) a CSV of GB/T 28181 channels into the camera registry.
    Import {
        /// Dataset name, department.table; or `cameras` for the camera registry.
        dataset: String,
        /// The file; its extension (.csv, .ndjson/.jsonl, .parquet) gives the format.
        file: PathBuf,
        /// Register the dataset from the file's inferred schema if it does not exist.
        #[arg(long)]
        create: bool,
        /// Cameras only: register the good lines even if some are bad (which are reported).
        /// Without it, a file with a bad line changes nothing.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Manage bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run one SQL query against the local data folder, or a server with --server.
    Sql {
        /// The query, e.g. "SELECT * FROM hub.datasets".
        sql: String,
        /// table (aligned, for people), csv or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// A hub's base URL, e.g. http://127.0.0.1:8080; without it the local data folder
        /// is queried directly, as the operator.
        #[arg(long, value_name = "URL", requires = "token")]
        server: Option<String>,
        /// Bearer token for --server.
        #[arg(long, env = "CITYHUB_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Print the effective configuration and where each value came from.
    Config {
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a principal and print its new token (and nothing else) on stdout.
    Create {
        #[arg(long, value_name = "CODE")]
        department: String,
        /// admin, producer, analyst or dashboard.
        #[arg(long)]
        role: String,
        /// A name for the principal, shown in logs and the audit trail.
        #[arg(long)]
        name: Option<String>,
        /// Days until the token expires; it never expires without this.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bind = match &cli.command {
        Command::Serve { bind, .. } | Command::Config { bind } => bind.clone(),
        _ => None,
    };
    let loaded = match load_config(&cli, bind) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprint!("{err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli, bind: Option<String>) -> Result<Loaded, cityhub_config::ConfigError> {
    let mut flags = Vec::new();
    if let Some(dir) = &cli.data_dir {
        flags.push(("storage.data_dir", dir.clone(), "--data-dir"));
    }
    if let Some(bind) = bind {
        flags.push(("server.bind", bind, "--bind"));
    }
    Config::load(cli.config.as_deref(), std::env::vars(), &flags)
}

async fn run(command: Command, loaded: Loaded) -> anyhow::Result<()> {
    let config = loaded.config.clone();
    match command {
        Command::Config { .. } => {
            print!("{}", loaded.render());
            Ok(())
        }
        Command::Serve { demo, .. } => {
            telemetry::init_logging(&config.log.level, &config.log.format);
            let state = AppState::open(config.clone())?;
            if demo {
                let started = Instant::now();
                let loaded = demo::load(&state).await.context("loading the demo city")?;
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    fresh = loaded.fresh,
                    "The demo city is ready."
                );
                println!("{}", loaded.describe());
            }
            let listener = tokio::net::TcpListener::bind(&config.server.bind)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.bind))?;
            let feeds = cityhub_ingest::kafka::KafkaFeeds::start(
                &state.ingest,
                &config.ingest.kafka,
                state.kafka.clone(),
                state.cameras.liveness,
            )
            .await
            .context("starting the Kafka feeds")?;
            let purger = tokio::spawn(purge_audit_daily(state.clone()));
            let sweeper = tokio::spawn(cityhub::cameras::sweep_loop(state.clone()));
            // The demo city's cameras stay alive only while something sends keepalives.
            let platform =
                demo.then(|| tokio::spawn(cityhub::demo_cameras::simulate(state.clone())));
            server::run(listener, state.clone(), server::shutdown_signal()).await?;
            purger.abort();
            sweeper.abort();
            if let Some(platform) = platform {
                platform.abort();
            }
            // Commit what the feeds consumed before the process ends.
            feeds.stop().await;
            state.audit.flush().await;
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    department,
                    role,
                    name,
                    expires_in_days,
                },
        } => {
            telemetry::init_logging("warn", "text");
            let role: Role = role.parse()?;
            let catalog = cityhub_catalog::open(&config)?;
            let token = Token::generate();
            let expires_at = expires_in_days
                .map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
            let principal = catalog
                .create_principal(
                    NewPrincipal {
                        name: name.unwrap_or_else(|| format!("{department}-{role}")),
                        department,
                        role,
                        expires_at,
                        rate_limit_per_second: None,
                    },
                    &token.hash,
                )
                .await?;
            let operator = cli_sql::local_operator();
            catalog
                .append_audit(vec![
                    AuditEvent::by(&operator, "token_create", "ok").detail(serde_json::json!({
                        "token_id": principal.id,
                        "name": principal.name,
                        "department": principal.department,
                        "role": principal.role,
                        "via": "cli",
                    })),
                ])
                .await?;
            println!("{}", token.plaintext);
            Ok(())
        }
        Command::Sql {
            sql,
            format,
            server,
            token,
        } => {
            telemetry::init_logging("warn", "text");
            cli_sql::run(config, &sql, &format, server.as_deref(), token.as_deref()).await
        }
        Command::Import {
            dataset,
            file,
            create,
            skip_bad,
        } => {
            telemetry::init_logging(&config.log.level, &config.log.format);
            if dataset == "cameras" {
                return import_cameras(config, &file, skip_bad).await;
            }
            if skip_bad {
                anyhow::bail!(
                    "--skip-bad is for `import cameras`; a dataset import is all or nothing \
                     (push with ?partial=true to keep good rows)"
                );
            }
            import(config, &dataset, &file, create).await
        }
    }
}

/// Deletes audit entries past `audit.retention_days` once at start and then daily.
async fn purge_audit_daily(state: AppState) {
    let mut every_day = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
    loop {
        every_day.tick().await;
        if let Err(err) = cityhub::sharing::purge_expired_audit(&state).await {
            tracing::error!(error = %err, "Could not purge expired audit entries; will retry tomorrow.");
        }
    }
}

/// `cityhub import cameras FILE.csv [--skip-bad]`.
async fn import_cameras(
    config: Config,
    file: &std::path::Path,
    skip_bad: bool,
) -> anyhow::Result<()> {
    use cityhub::camera_import;
    let state = AppState::open(config)?;
    let departments = state
        .catalog
        .list_departments()
        .await?
        .into_iter()
        .map(|d| d.code)
        .collect();
    let started = Instant::now();
    let checked = camera_import::read_file(file, &departments)?;
    let report_bad = |errors: &[camera_import::LineError]| {
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
        camera_import::register(&state.catalog, checked.channels, move |done| {
            bar.set_position(done);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{rate:.0}/s"));
        })
        .await?
    };
    bar.finish_and_clear();
    state.audit.record(camera_import::audit_event(
        &cli_sql::local_operator(),
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

async fn import(
    config: Config,
    dataset: &str,
    file: &std::path::Path,
    create: bool,
) -> anyhow::Result<()> {
    let name = DatasetName::parse(dataset)?;
    let state = AppState::open(config)?;
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
        .import_file(&name, file, create, progress)
        .await;
    bar.finish_and_clear();
    let event = match &result {
        Ok(outcome) => AuditEvent::by(&cli_sql::local_operator(), "import", "ok").detail(
            serde_json::json!({"rows": outcome.rows, "snapshot_id": outcome.snapshot_id,
                "file": file.display().to_string(), "created": outcome.created}),
        ),
        Err(err) => AuditEvent::by(&cli_sql::local_operator(), "import", "failed").detail(
            serde_json::json!({"error": err.to_string(), "file": file.display().to_string()}),
        ),
    };
    state.audit.record(event.dataset(name.to_string()));
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
