//! Shared pieces of the cityhub benchmarks: an in-process hub on a loopback port with a
//! temporary data folder, a realistic 10-column row generator, and latency percentiles.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use cityhub::AppState;
use cityhub_catalog::token::Token;
use cityhub_catalog::{Column, ColumnType, NewPrincipal, Role};
use cityhub_config::Config;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

/// A hub serving on 127.0.0.1 with its own temporary data folder.
pub struct Hub {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl Hub {
    pub async fn start() -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let mut config = Config::default();
        config.storage.data_dir = data_dir.path().display().to_string();
        config.log.level = "warn".into();
        let state = AppState::open(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cityhub::server::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
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
                },
                &token.hash,
            )
            .await?;
        if state.catalog.department("bench").await?.is_none() {
            state.catalog.create_department("bench", "基准测试").await?;
        }
        Ok(Self {
            base,
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

    /// Registers a dataset from a JSON column list.
    pub async fn register(&self, name: &str, columns: Value) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/api/v1/datasets", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "columns": columns, "sharing": "unconditional"}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("registering {name}: {}", response.text().await?);
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
