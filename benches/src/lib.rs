//! Shared pieces of the cityhub benchmarks: an in-process hub on a loopback port with a
//! temporary data folder, a realistic 10-column row generator, and latency percentiles.

pub mod tables;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cityhub_catalog::token::Token;
use cityhub_catalog::{Column, ColumnType, NewPrincipal, Role};
use cityhub_config::Config;
use cityhub_server::AppState;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

/// The analytical query suite over the demo city: (name, SQL).
pub const ANALYTICAL_QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM zhili.hotline_cases"),
    (
        "group by category",
        "SELECT category, count(*) AS n FROM zhili.hotline_cases GROUP BY category ORDER BY n DESC",
    ),
    (
        "filter + group",
        "SELECT region_code, count(*) AS n FROM zhili.hotline_cases WHERE status = '已办结' GROUP BY region_code ORDER BY region_code",
    ),
    (
        "fines by type",
        "SELECT violation_type, sum(fine_yuan) AS fines, avg(points) AS points FROM gongan.traffic_violations GROUP BY violation_type ORDER BY fines DESC",
    ),
    (
        "violations per hour",
        "SELECT date_trunc('hour', occurred_at) AS hour, count(*) AS n FROM gongan.traffic_violations GROUP BY hour ORDER BY hour",
    ),
    (
        "top plates",
        "SELECT plate_no, count(*) AS n FROM gongan.traffic_violations GROUP BY plate_no ORDER BY n DESC, plate_no LIMIT 10",
    ),
    (
        "join per region",
        "WITH h AS (SELECT region_code, count(*) AS cases FROM zhili.hotline_cases GROUP BY region_code), \
         g AS (SELECT region_code, count(*) AS open_events FROM zhili.grid_events WHERE status = 'open' GROUP BY region_code) \
         SELECT h.region_code, cases, open_events FROM h JOIN g ON h.region_code = g.region_code ORDER BY h.region_code",
    ),
    (
        "window rank",
        "SELECT region_code, incident_type, n, rank() OVER (PARTITION BY region_code ORDER BY n DESC) AS r \
         FROM (SELECT region_code, incident_type, count(*) AS n FROM yingji.incidents GROUP BY region_code, incident_type) t \
         ORDER BY region_code, r",
    ),
    (
        "top-k speeding",
        "SELECT violation_id, plate_no, speed_kmh FROM gongan.traffic_violations WHERE speed_kmh > 100 ORDER BY speed_kmh DESC, violation_id LIMIT 100",
    ),
    (
        "distinct callers",
        "SELECT count(DISTINCT caller_phone) FROM zhili.hotline_cases",
    ),
    (
        "handling hours",
        "SELECT category, avg(date_part('epoch', closed_at) - date_part('epoch', received_at)) / 3600 AS hours \
         FROM zhili.hotline_cases WHERE closed_at IS NOT NULL GROUP BY category ORDER BY category",
    ),
    (
        "violations x checkpoints",
        "SELECT v.region_code, count(*) AS n FROM gongan.traffic_violations v \
         JOIN (SELECT DISTINCT checkpoint_id FROM gongan.traffic_violations WHERE violation_type = '闯红灯') c \
         ON v.checkpoint_id = c.checkpoint_id GROUP BY v.region_code ORDER BY v.region_code",
    ),
];

/// A hub serving on 127.0.0.1 with its own temporary data folder.
pub struct Hub {
    pub base: String,
    /// The PostgreSQL door (`host:port`, database `cityhub`, a token as password).
    pub pg_address: std::net::SocketAddr,
    /// The Flight SQL door (`host:port`).
    pub flight_address: std::net::SocketAddr,
    pub admin: String,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl Hub {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// A hub whose default configuration `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let mut config = Config::default();
        adjust(&mut config);
        config.storage.data_dir = data_dir.path().display().to_string();
        config.log.level = "warn".into();
        // Benchmarks measure throughput; per-token rate limits would measure the limit.
        config.server.rate_limit_per_second = 0;
        let state = AppState::open(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cityhub_server::serve::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        // The other doors end with the process.
        let pg_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let pg_address = pg_listener.local_addr()?;
        tokio::spawn(cityhub_server::pg::run(
            pg_listener,
            state.clone(),
            None,
            std::future::pending(),
        ));
        let flight_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let flight_address = flight_listener.local_addr()?;
        tokio::spawn(cityhub_server::flight::run(
            flight_listener,
            state.clone(),
            std::future::pending(),
        ));
        let token = Token::generate();
        state
            .catalog
            .create_principal(
                NewPrincipal {
                    name: "bench".into(),
                    department: "admin".into(),
                    role: Role::Admin,
                    expires_at: None,
                    rate_limit_per_second: None,
                    region: None,
                },
                &token.hash,
            )
            .await?;
        if state.catalog.department("bench").await?.is_none() {
            state.catalog.create_department("bench", "基准测试").await?;
        }
        Ok(Self {
            base,
            pg_address,
            flight_address,
            admin: token.plaintext,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(2048)
                .build()?,
            state,
            stop,
            task,
            _data_dir: data_dir,
        })
    }

    /// A hub with the demo city loaded; prints the machine and the loading time.
    pub async fn start_with_demo() -> anyhow::Result<Self> {
        let hub = Self::start().await?;
        let started = Instant::now();
        cityhub::demo::load(&hub.state).await?;
        println!(
            "machine: {} cores; demo city loaded in {:.1} s",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            started.elapsed().as_secs_f64()
        );
        Ok(hub)
    }

    /// Runs a query over HTTP as `token` with Arrow output and returns the row count.
    pub async fn sql_rows(&self, token: &str, sql: &str) -> anyhow::Result<usize> {
        Ok(self
            .sql_batches(token, sql)
            .await?
            .iter()
            .map(|b| b.num_rows())
            .sum())
    }

    /// Runs a query over HTTP as `token` with Arrow output and returns its batches.
    pub async fn sql_batches(
        &self,
        token: &str,
        sql: &str,
    ) -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
        let response = self
            .client
            .post(format!("{}/api/v1/sql", self.base))
            .bearer_auth(token)
            .header("accept", "application/vnd.apache.arrow.stream")
            .body(sql.to_string())
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }

    /// Registers a dataset from a JSON column list.
    pub async fn register(&self, name: &str, columns: Value) -> anyhow::Result<()> {
        self.register_spec(json!({"name": name, "columns": columns, "sharing": "unconditional"}))
            .await
    }

    /// Registers a dataset from a whole registration request.
    pub async fn register_spec(&self, spec: Value) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/api/v1/datasets", self.base))
            .bearer_auth(&self.admin)
            .json(&spec)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("registering {}: {}", spec["name"], response.text().await?);
        }
        Ok(())
    }

    pub async fn dataset(&self, name: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}/api/v1/datasets/{name}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Pushes every body with at most `concurrency` in flight; returns rows/s and the ack
    /// latency p50 and p99 in milliseconds. Any non-success answer fails the run.
    pub async fn push_all(
        &self,
        dataset: &str,
        bodies: Vec<(Vec<u8>, &'static str)>,
        concurrency: usize,
    ) -> anyhow::Result<(f64, f64, f64)> {
        let url = format!("{}/api/v1/datasets/{dataset}/rows", self.base);
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(bodies.len());
        for (body, content_type) in bodies {
            let permit = gate.clone().acquire_owned().await?;
            let request = self
                .client
                .post(&url)
                .bearer_auth(&self.admin)
                .header("content-type", content_type)
                .body(body);
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                drop(permit);
                if !status.is_success() {
                    bail!("push answered {status}: {answer}");
                }
                let rows = answer["rows_accepted"].as_u64().context("rows_accepted")?;
                Ok::<_, anyhow::Error>((rows, sent.elapsed().as_secs_f64() * 1000.0))
            }));
        }
        let mut rows = 0;
        let mut latencies = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (n, ms) = task.await??;
            rows += n;
            latencies.push(ms);
        }
        let rate = rows as f64 / started.elapsed().as_secs_f64();
        Ok((
            rate,
            percentile(&mut latencies, 0.50),
            percentile(&mut latencies, 0.99),
        ))
    }

    /// `analysts` concurrent HTTP clients, each running `per_analyst` queries of `queries`
    /// in turn (starting at its own offset, Arrow output, body read to the end): the
    /// seconds it took and every query's latency in milliseconds.
    pub async fn analysts(
        &self,
        queries: &[String],
        analysts: usize,
        per_analyst: usize,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for analyst in 0..analysts {
            let queries = queries.to_vec();
            let client = self.client.clone();
            let url = format!("{}/api/v1/sql", self.base);
            let token = self.admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..per_analyst {
                    let sql = queries[(analyst + i) % queries.len()].clone();
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("accept", "application/vnd.apache.arrow.stream")
                        .body(sql)
                        .send()
                        .await?;
                    if !response.status().is_success() {
                        bail!("{}: {}", response.status(), response.text().await?);
                    }
                    response.bytes().await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, anyhow::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        Ok((started.elapsed().as_secs_f64(), latencies))
    }

    /// Every dataset's current files as local paths (the objects must be on local disk),
    /// for other engines to read the same files.
    pub async fn local_files(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let objects = self.state.config.storage_url();
        let root = objects
            .strip_prefix("file://")
            .context("the benchmark needs local storage")?;
        let mut tables = Vec::new();
        for dataset in self.state.catalog.list_datasets().await? {
            let files = self.state.catalog.snapshot_files(dataset.id, None).await?;
            let paths = files
                .iter()
                .map(|file| format!("{root}/{}", file.path))
                .collect();
            tables.push((dataset.name.to_string(), paths));
        }
        Ok(tables)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The bench dataset: 10 mixed columns, like a department's event feed.
pub fn columns() -> Vec<Column> {
    vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("occurred_at", ColumnType::Timestamp, false),
        Column::new("region_code", ColumnType::String, false),
        Column::new("category", ColumnType::String, true),
        Column::new("status", ColumnType::String, true),
        Column::new("score", ColumnType::Float64, true),
        Column::new("count", ColumnType::Int32, true),
        Column::new("closed", ColumnType::Bool, true),
        Column::new("longitude", ColumnType::Float64, true),
        Column::new("note", ColumnType::String, true),
    ]
}

/// [`columns`] as the JSON of a registration request.
pub fn schema_json() -> Value {
    serde_json::to_value(columns()).unwrap_or_default()
}

/// `count` NDJSON rows starting at id `first`, about 230 bytes each.
pub fn rows_ndjson(first: usize, count: usize) -> String {
    let regions = ["511002", "511011", "511024", "511025", "511083"];
    let categories = ["环境卫生", "安全隐患", "矛盾纠纷", "设施损坏"];
    let mut out = String::with_capacity(count * 240);
    for i in first..first + count {
        out.push_str(&format!(
            "{{\"id\":{i},\"occurred_at\":\"2026-11-{:02}T{:02}:{:02}:00+08:00\",\"region_code\":\"{}\",\"category\":\"{}\",\"status\":\"{}\",\"score\":{:.2},\"count\":{},\"closed\":{},\"longitude\":{:.5},\"note\":\"网格员巡查记录 {i}\"}}\n",
            1 + i % 27,
            i % 24,
            i % 60,
            regions[i % regions.len()],
            categories[i % categories.len()],
            if i % 3 == 0 { "open" } else { "closed" },
            (i % 1000) as f64 / 10.0,
            i % 50,
            i % 2 == 0,
            104.6 + (i % 700) as f64 / 1000.0,
        ));
    }
    out
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The CPU time this process (all its threads, user and system) has used so far, in
/// seconds, from `/proc/self/stat` (Linux; `None` elsewhere). Beside a rate it tells work
/// saved from waiting saved: a change that only shortens waits leaves it where it was. (On
/// the shared VM of BENCHMARKS.md it drifts from run to run about as much as the rate.)
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5), in USER_HZ ticks: 100 a second on
    // x86-64 and arm64 Linux, the machines the benchmarks run on.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The running sum and count of a histogram of this process's Prometheus recorder (the
/// hub's `/metrics`), e.g. `cityhub_viid_requests_per_commit`: the difference of two
/// readings gives the mean over what happened between them.
pub fn histogram_totals(name: &str) -> (f64, f64) {
    labelled_histogram_totals(name, "")
}

/// [`histogram_totals`] of one labelled series, `labels` as the exposition writes them
/// (`route="/api/v1/sql"`; empty for an unlabelled histogram).
pub fn labelled_histogram_totals(name: &str, labels: &str) -> (f64, f64) {
    let text = cityhub_server::telemetry::metrics_handle().render();
    let value = |suffix: &str| {
        let wanted = match labels {
            "" => format!("{name}_{suffix}"),
            labels => format!("{name}_{suffix}{{{labels}}}"),
        };
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(metric, _)| *metric == wanted)
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

/// The URL of a new empty schema in the PostgreSQL database at `url`, for one hub's
/// catalog (the URL sets the schema as the connections' search path).
pub async fn fresh_postgres_catalog(url: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    let schema = format!("bench_{}_{}", std::process::id(), rand::random::<u32>());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// DuckDB in a child process (`duckdb_runner.py`), each query timed inside it.
pub struct DuckDb {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl DuckDb {
    /// Starts the runner with one view per table over its Parquet files (schema `bench`).
    pub fn start(tables: &[(String, Vec<String>)]) -> anyhow::Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/duckdb_runner.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting python3 for DuckDB")?;
        let input = child.stdin.take().context("runner stdin")?;
        let output = BufReader::new(child.stdout.take().context("runner stdout")?);
        let mut duckdb = Self {
            child,
            input,
            output,
        };
        let mut setup = vec!["CREATE SCHEMA bench".to_string()];
        for (name, files) in tables {
            let list = files
                .iter()
                .map(|f| format!("'{f}'"))
                .collect::<Vec<_>>()
                .join(", ");
            setup.push(format!(
                "CREATE VIEW {name} AS SELECT * FROM read_parquet([{list}])"
            ));
        }
        let answer = duckdb.ask(json!({ "setup": setup }))?;
        println!(
            "DuckDB {} (PyPI wheel, in-process, {} threads by default)",
            answer["version"].as_str().unwrap_or("?"),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        Ok(duckdb)
    }

    pub fn ask(&mut self, command: Value) -> anyhow::Result<Value> {
        writeln!(self.input, "{command}")?;
        self.input.flush()?;
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            bail!("the DuckDB runner ended (is the duckdb wheel installed?)");
        }
        let answer: Value = serde_json::from_str(&line)?;
        if let Some(error) = answer["error"].as_str() {
            bail!("DuckDB: {error}");
        }
        Ok(answer)
    }

    /// One query: milliseconds and rows.
    pub fn run(&mut self, sql: &str) -> anyhow::Result<(f64, usize)> {
        let answer = self.ask(json!({ "run": sql }))?;
        Ok((
            answer["ms"].as_f64().context("ms")?,
            answer["rows"].as_u64().context("rows")? as usize,
        ))
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
