//! The `cityhub` command line: one file per command, this one parses and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use cityhub_config::{Config, Loaded};
use cityhub_server::telemetry;
use clap::{Parser, Subcommand};

pub mod compact;
pub mod gc;
pub mod import;
pub mod import_cameras;
pub mod serve;
pub mod sql;
pub mod token;
pub mod viid;

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
        /// Address of the PostgreSQL wire protocol, e.g. 127.0.0.1:5433; empty turns it off.
        #[arg(long, value_name = "ADDR")]
        pg_bind: Option<String>,
        /// Address of Arrow Flight SQL, e.g. 127.0.0.1:50051; empty turns it off.
        #[arg(long, value_name = "ADDR")]
        flight_bind: Option<String>,
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
    /// Merge a dataset's small files now (the server also does it by itself).
    Compact {
        /// The dataset, department.table.
        dataset: String,
    },
    /// Expire replaced snapshots past their retention and delete the files no kept
    /// snapshot names, and orphan files (the server also does it by itself).
    Gc {
        /// List what would be deleted, with sizes, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage GA/T 1400 视图库 accounts (the platforms that post to /VIID/).
    Viid {
        #[command(subcommand)]
        command: ViidCommand,
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
    /// Run a Ballista scheduler for hubs with query.engine = "ballista": it plans the
    /// queries hubs send it and hands their stages to executors.
    Scheduler {
        /// Address of its gRPC service, where hubs and executors reach it.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:50050")]
        bind: String,
        /// The host name executors and hubs reach it by (default: the address bound).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
    },
    /// Run a Ballista executor: it runs the stages a scheduler hands it, reading the hub's
    /// objects from storage.url (give it the hubs' --config).
    Executor {
        /// The scheduler, df://host:port.
        #[arg(long, value_name = "URL")]
        scheduler: String,
        /// Address of its Arrow Flight service (shuffle reads and results).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:50051")]
        bind: String,
        /// Port of its gRPC service (default: the Flight port + 1).
        #[arg(long, value_name = "PORT")]
        grpc_port: Option<u16>,
        /// The host name the scheduler and other executors reach it by (default: the
        /// address bound).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Tasks it runs at once (default: one per core).
        #[arg(long, value_name = "N")]
        concurrent_tasks: Option<usize>,
        /// Folder for shuffle files (default: a temporary folder).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (what GET /api/v1/openapi.json serves),
    /// e.g. to generate a client.
    Openapi,
    /// Print the effective configuration and where each value came from.
    Config {
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
}

#[derive(Subcommand)]
enum ViidCommand {
    /// GA/T 1400 accounts.
    Account {
        #[command(subcommand)]
        command: ViidAccountCommand,
    },
}

#[derive(Subcommand)]
enum ViidAccountCommand {
    /// Create an account and print its password (and nothing else) on stdout, once.
    Create {
        /// The platform's 20-digit GA/T 1400 id (its User-Identify header and digest
        /// username).
        #[arg(long, value_name = "ID")]
        id: String,
        /// The department whose viid_* datasets its records land in.
        #[arg(long, value_name = "CODE")]
        department: String,
    },
    /// List the accounts and whether each is registered.
    List,
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
        /// A region scope for a county's or a town's governance centre (analyst and
        /// dashboard tokens): a GB/T 2260 code such as 511025, or a town such as 511025100.
        #[arg(long, value_name = "CODE")]
        region: Option<String>,
    },
}

/// Runs the command line given to the process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let doors = match &cli.command {
        Command::Serve {
            bind,
            pg_bind,
            flight_bind,
            ..
        } => Doors {
            bind: bind.clone(),
            pg_bind: pg_bind.clone(),
            flight_bind: flight_bind.clone(),
        },
        Command::Config { bind } => Doors {
            bind: bind.clone(),
            ..Doors::default()
        },
        _ => Doors::default(),
    };
    let loaded = match load_config(&cli, doors) {
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

/// The listening addresses given as flags.
#[derive(Default)]
struct Doors {
    bind: Option<String>,
    pg_bind: Option<String>,
    flight_bind: Option<String>,
}

fn load_config(cli: &Cli, doors: Doors) -> Result<Loaded, cityhub_config::ConfigError> {
    let mut flags = Vec::new();
    if let Some(dir) = &cli.data_dir {
        flags.push(("storage.data_dir", dir.clone(), "--data-dir"));
    }
    if let Some(bind) = doors.bind {
        flags.push(("server.bind", bind, "--bind"));
    }
    if let Some(pg_bind) = doors.pg_bind {
        flags.push(("server.pg_bind", pg_bind, "--pg-bind"));
    }
    if let Some(flight_bind) = doors.flight_bind {
        flags.push(("server.flight_bind", flight_bind, "--flight-bind"));
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
        Command::Openapi => {
            println!(
                "{}",
                cityhub_server::http::openapi_document().to_pretty_json()?
            );
            Ok(())
        }
        Command::Serve { demo, .. } => serve::run(config, demo).await,
        Command::Scheduler {
            bind,
            external_host,
        } => {
            telemetry::init_logging(&config.log.level, &config.log.format);
            let bind = parse_address("--bind", &bind)?;
            cityhub_server::query_cluster::run_scheduler(&config, bind, external_host)
                .await
                .map_err(|err| anyhow::anyhow!("the Ballista scheduler stopped: {err}"))
        }
        Command::Executor {
            scheduler,
            bind,
            grpc_port,
            external_host,
            concurrent_tasks,
            work_dir,
        } => {
            telemetry::init_logging(&config.log.level, &config.log.format);
            let options = cityhub_server::query_cluster::ExecutorOptions {
                scheduler,
                bind: parse_address("--bind", &bind)?,
                grpc_port,
                external_host,
                concurrent_tasks,
                work_dir,
            };
            cityhub_server::query_cluster::run_executor(&config, options)
                .await
                .map_err(|err| anyhow::anyhow!("the Ballista executor stopped: {err}"))
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    department,
                    role,
                    name,
                    expires_in_days,
                    region,
                },
        } => {
            telemetry::init_logging("warn", "text");
            token::create(config, department, &role, name, expires_in_days, region).await
        }
        Command::Viid {
            command: ViidCommand::Account { command },
        } => {
            telemetry::init_logging("warn", "text");
            match command {
                ViidAccountCommand::Create { id, department } => {
                    viid::create_account(config, &id, &department).await
                }
                ViidAccountCommand::List => viid::list_accounts(config).await,
            }
        }
        Command::Sql {
            sql,
            format,
            server,
            token,
        } => {
            telemetry::init_logging("warn", "text");
            sql::run(config, &sql, &format, server.as_deref(), token.as_deref()).await
        }
        Command::Gc { dry_run } => {
            telemetry::init_logging("warn", "text");
            gc::run(config, dry_run).await
        }
        Command::Compact { dataset } => {
            telemetry::init_logging("warn", "text");
            compact::run(config, &dataset).await
        }
        Command::Import {
            dataset,
            file,
            create,
            skip_bad,
        } => {
            telemetry::init_logging(&config.log.level, &config.log.format);
            if dataset == "cameras" {
                return import_cameras::run(config, &file, skip_bad).await;
            }
            if skip_bad {
                anyhow::bail!(
                    "--skip-bad is for `import cameras`; a dataset import is all or nothing \
                     (push with ?partial=true to keep good rows)"
                );
            }
            import::run(config, &dataset, &file, create).await
        }
    }
}

/// A listening address given as a flag, or an error naming the flag.
fn parse_address(flag: &str, text: &str) -> anyhow::Result<std::net::SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!("{flag} {text:?} must be an IP address and port such as 0.0.0.0:50050")
    })
}
