//! cityhub configuration.
//!
//! Layers, later ones win: built-in defaults (in code, in this file), one TOML file
//! (`--config`), `CITYHUB__SECTION__KEY` environment variables, and finally command-line
//! flags such as `--bind`. Every value remembers the layer it came from, so that
//! `cityhub config` can say why a setting is what it is, and every problem (unknown key,
//! wrong type, bad value) is reported at once, each with its origin, instead of one per run.
//!
//! The shape check is driven by the defaults: every key that exists has a default, so the
//! serialised defaults are the schema. That is why no field here is an `Option`.

mod layers;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use layers::{Loaded, Source};

/// The effective configuration of one cityhub process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub catalog: CatalogConfig,
    pub ingest: IngestConfig,
    pub query: QueryConfig,
    pub sharing: SharingConfig,
    pub audit: AuditConfig,
    pub cameras: CamerasConfig,
    pub viid: ViidConfig,
    pub endpoints: EndpointsConfig,
    pub compaction: CompactionConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, `host:port`; port 0 picks a free one.
    pub bind: String,
    /// Largest request body accepted (a push larger than this answers 413).
    pub max_body_bytes: u64,
    /// How long a graceful shutdown waits for in-flight requests before giving up.
    pub shutdown_grace_secs: u64,
    /// Requests per second one token may make on `/api/v1` (a token may carry its own);
    /// 0 turns the limit off.
    pub rate_limit_per_second: u64,
    /// Requests a token may make at once above its rate before it is answered 429.
    pub rate_limit_burst: u64,
    /// Address of the PostgreSQL wire protocol (psql, DBeaver, Grafana, psycopg), `host:port`;
    /// empty turns it off. The password is a token, so beyond loopback use TLS.
    pub pg_bind: String,
    /// PEM certificate (chain) for PostgreSQL clients' TLS; with `pg_tls_key`.
    pub pg_tls_cert: String,
    /// PEM private key of `pg_tls_cert`.
    pub pg_tls_key: String,
    /// Address of Arrow Flight SQL (ADBC, pyarrow, the Flight SQL JDBC driver), `host:port`;
    /// empty turns it off.
    pub flight_bind: String,
    /// Seconds a client has to send a request's headers, and that an idle keep-alive
    /// connection is kept waiting for its next request; then the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Connections open at once, from everyone; past it new ones are closed at once (and a
    /// warning says so). 0 turns the cap off.
    pub max_connections: u64,
    /// Connections open at once from one client address; 0 turns the cap off. Behind a
    /// proxy every connection comes from the proxy's address: raise it or turn it off there.
    pub max_connections_per_client: u64,
    /// Bearer token `GET /metrics` asks for (Prometheus `authorization`). Empty: the metrics
    /// answer only callers on the loopback interface, since their labels name datasets.
    pub metrics_token: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024 * 1024,
            shutdown_grace_secs: 30,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            pg_bind: "127.0.0.1:5433".into(),
            pg_tls_cert: String::new(),
            pg_tls_key: String::new(),
            flight_bind: "127.0.0.1:50051".into(),
            header_read_timeout_secs: 30,
            max_connections: 8192,
            max_connections_per_client: 1024,
            metrics_token: String::new(),
        }
    }
}

/// Where data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The local data folder: the SQLite catalog and, by default, the objects.
    pub data_dir: String,
    /// Object store URL (`file:///abs/path`, `memory://`, `s3://bucket/prefix`);
    /// empty means `{data_dir}/objects`.
    pub url: String,
    /// Size compaction aims for when it merges small files (Parquet bytes).
    pub target_file_bytes: u64,
    /// Rows compaction puts in one file at most, whatever their size.
    pub target_file_rows: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: "./cityhub-data".into(),
            url: String::new(),
            target_file_bytes: 128 * 1024 * 1024,
            target_file_rows: 10_000_000,
        }
    }
}

/// The metadata catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `sqlite:///path/catalog.db` (embedded; empty means `{data_dir}/catalog.db`), or
    /// `postgres://user:password@host:port/database` for a catalog several nodes share.
    pub url: String,
    /// How long a catalog writer waits for a lock held by another process.
    pub busy_timeout_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            busy_timeout_ms: 10_000,
        }
    }
}

/// Push and import behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// How often a commit that lost a race to a concurrent writer is retried.
    pub commit_retries: u32,
    /// At most this many rejected rows are listed in one answer (all are counted).
    pub max_rejected_reported: u64,
    /// Rows per Parquet file written by imports (pushes write one file each).
    pub file_rows: u64,
    /// Parquet compression: `zstd`, `snappy` or `none`.
    pub compression: String,
    /// Rows per Parquet row group: the unit a scan splits over cores and skips by its
    /// statistics (BENCHMARKS.md, "SQL against DuckDB", measures the choice).
    pub row_group_rows: u64,
    /// Target size of a Parquet data page in bytes: the unit the page index lets a scan
    /// skip inside a row group.
    pub data_page_bytes: u64,
    /// Statistics written into files: `page` (row groups and a page index), `chunk` (row
    /// groups only) or `none`. The catalog keeps its own per-file statistics either way.
    pub statistics: String,
    /// Dictionary-encode columns (each falls back to plain encoding once its dictionary
    /// outgrows a page).
    pub dictionary: bool,
    /// Kafka feeds consumed into datasets (`[[ingest.kafka]]` tables).
    pub kafka: Vec<KafkaFeed>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            commit_retries: 100,
            max_rejected_reported: 1000,
            file_rows: 1_000_000,
            compression: "zstd".into(),
            row_group_rows: 1024 * 1024,
            data_page_bytes: 1024 * 1024,
            statistics: "page".into(),
            dictionary: true,
            kafka: Vec::new(),
        }
    }
}

/// One Kafka topic consumed into one dataset (`[[ingest.kafka]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFeed {
    /// `host:port[,host:port...]`
    pub bootstrap_servers: String,
    pub topic: String,
    /// The target dataset, `department.table`.
    pub dataset: String,
    /// `json` (one object per message) or `csv` (one line per message, in column order).
    #[serde(default = "KafkaFeed::default_format")]
    pub format: String,
    #[serde(default = "KafkaFeed::default_group")]
    pub group_id: String,
    /// Where a dataset with no stored offsets starts: `earliest` or `latest`.
    #[serde(default = "KafkaFeed::default_start")]
    pub start: String,
    /// A batch is committed when it holds this many rows, this many bytes, or is this old,
    /// whichever comes first.
    #[serde(default = "KafkaFeed::default_flush_rows")]
    pub flush_rows: u64,
    #[serde(default = "KafkaFeed::default_flush_bytes")]
    pub flush_bytes: u64,
    #[serde(default = "KafkaFeed::default_flush_age_ms")]
    pub flush_age_ms: u64,
    /// Consumers of this feed in each process (they share the partitions).
    #[serde(default = "KafkaFeed::default_workers")]
    pub workers: u64,
    /// Messages larger than this go to the dead-letter table.
    #[serde(default = "KafkaFeed::default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Passed to librdkafka as they are (security settings and the like).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

impl KafkaFeed {
    fn default_format() -> String {
        "json".into()
    }
    fn default_group() -> String {
        "cityhub".into()
    }
    fn default_start() -> String {
        "earliest".into()
    }
    fn default_flush_rows() -> u64 {
        100_000
    }
    fn default_flush_bytes() -> u64 {
        64 * 1024 * 1024
    }
    fn default_flush_age_ms() -> u64 {
        1_000
    }
    fn default_workers() -> u64 {
        1
    }
    fn default_max_message_bytes() -> u64 {
        1024 * 1024
    }

    /// The settings of a feed with only the required keys given.
    pub fn new(bootstrap_servers: &str, topic: &str, dataset: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            dataset: dataset.into(),
            format: Self::default_format(),
            group_id: Self::default_group(),
            start: Self::default_start(),
            flush_rows: Self::default_flush_rows(),
            flush_bytes: Self::default_flush_bytes(),
            flush_age_ms: Self::default_flush_age_ms(),
            workers: Self::default_workers(),
            max_message_bytes: Self::default_max_message_bytes(),
            properties: Default::default(),
        }
    }
}

/// SQL queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Memory one query may use for sorts, joins and aggregations before it spills to
    /// disk or, where it cannot, fails cleanly; 0 (the default) means a quarter of the
    /// machine's memory, at least 2 GiB. A fixed 2 GiB made a distinct count over 10M rows
    /// spill and run 5x slower than plain DataFusion (BENCHMARKS.md, "SQL against DuckDB").
    pub memory_limit_bytes: u64,
    /// A query running longer than this is cancelled.
    pub timeout_secs: u64,
    /// Parallelism of one query; 0 means one per CPU core.
    pub target_partitions: u64,
    /// DataFusion settings by their own names, over the hub's choices, e.g.
    /// `"datafusion.execution.batch_size" = "16384"`: for measuring and tuning without a
    /// rebuild. A name DataFusion does not know, or a bad value, stops the start.
    pub engine_options: std::collections::BTreeMap<String, String>,
    /// Where queries over datasets run: `local` (this process) or `ballista` (the Ballista
    /// cluster at `ballista_scheduler`, for queries bigger than one node).
    pub engine: QueryEngineKind,
    /// The Ballista scheduler, `df://host:port` (`cityhub scheduler` listens on 50050).
    pub ballista_scheduler: String,
    /// When the Ballista scheduler cannot be reached, run the query here instead of
    /// answering an error. A query the cluster started and then failed is never re-run.
    pub ballista_fallback: bool,
    /// Optimized plans kept for SQL asked again by the same principal (dashboards, BI
    /// tools), reused while the tables they name are unchanged; 0 turns the cache off.
    pub plan_cache_entries: u64,
}

/// Where queries over datasets run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueryEngineKind {
    /// In the hub's own process.
    #[default]
    Local,
    /// On a Ballista cluster: the hub plans, the executors scan, mask and compute.
    Ballista,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 0,
            timeout_secs: 300,
            target_partitions: 0,
            engine_options: std::collections::BTreeMap::new(),
            engine: QueryEngineKind::Local,
            ballista_scheduler: String::new(),
            ballista_fallback: false,
            plan_cache_entries: 1024,
        }
    }
}

impl QueryConfig {
    /// The Ballista scheduler's gRPC address as `http://host:port`, from
    /// `ballista_scheduler` (`df://host:port`; `None` when it is not such a URL).
    pub fn ballista_scheduler_url(&self) -> Option<String> {
        let (host, port) = ballista_scheduler_address(&self.ballista_scheduler)?;
        Some(format!("http://{host}:{port}"))
    }
}

/// The host and port of a Ballista scheduler given as `df://host:port` (`None` when `url`
/// is not such a URL).
pub fn ballista_scheduler_address(url: &str) -> Option<(&str, u16)> {
    let rest = url.strip_prefix("df://")?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port > 0 && !host.contains('/')).then_some((host, port))
}

/// Sharing between departments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharingConfig {
    /// Working days (Monday to Friday) an owner has to answer a share request before it is
    /// flagged overdue; the national rule is 10, many cities use 5.
    pub answer_within_working_days: u64,
}

impl Default for SharingConfig {
    fn default() -> Self {
        Self {
            answer_within_working_days: 5,
        }
    }
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Entries older than this are deleted (by a daily purge that is itself audited).
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
        }
    }
}

/// The camera registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CamerasConfig {
    /// The keepalive interval devices are configured with (GB/T 28181 default 60 s).
    pub keepalive_interval_secs: u64,
    /// A channel is offline once this many keepalives in a row are missing.
    pub offline_after_missed: u64,
    /// How often the sweeper appends "went offline" transitions to the status history.
    /// Reads never wait for it: the status is computed from the evidence when read.
    pub sweep_interval_secs: u64,
    /// How many Beijing-time days of daily roll-ups (`hub.camera_daily`) are kept; weekly
    /// and monthly availability reach this far back.
    pub daily_retention_days: u64,
    /// How many days of GB/T 28181 alarms (`hub.camera_alarms`) are kept, counted from the
    /// time each happened.
    pub alarm_retention_days: u64,
    /// How many days of mobile positions (`hub.camera_positions`) are kept: a patrol car
    /// reporting every 10 s sends 8,640 a day.
    pub position_retention_days: u64,
    /// How many days of catalogue changes (`GET /api/v1/cameras/changes`) are kept: a
    /// consumer that falls further behind is told to list the registry again.
    pub change_retention_days: u64,
    /// Media-server URL templates for channels without explicit stream URLs; `{device}` is
    /// the parent device id, `{channel}` the channel id. Empty: no derived URL. ZLMediaKit
    /// plays a GB/T 28181 stream as app `rtp`, stream `{device}_{channel}`, e.g.
    /// `rtsp://media.example:554/rtp/{device}_{channel}`.
    pub rtsp_template: String,
    pub rtmp_template: String,
    pub flv_template: String,
    pub hls_template: String,
    pub webrtc_template: String,
}

impl Default for CamerasConfig {
    fn default() -> Self {
        Self {
            keepalive_interval_secs: 60,
            offline_after_missed: 3,
            sweep_interval_secs: 30,
            daily_retention_days: 400,
            alarm_retention_days: 400,
            position_retention_days: 90,
            change_retention_days: 7,
            rtsp_template: String::new(),
            rtmp_template: String::new(),
            flv_template: String::new(),
            hls_template: String::new(),
            webrtc_template: String::new(),
        }
    }
}

/// The GA/T 1400 视图库 receiver under `/VIID/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViidConfig {
    /// The hub's own 20-digit id, as `System/Time` answers it (`VIIDServerID`).
    pub server_id: String,
    /// Days the landed records (`{dept}.viid_*`) are kept, counted from capture time;
    /// their images go with them. Personal data is kept no longer than needed (PIPL).
    pub retention_days: u32,
    /// The largest request body accepted, in bytes (a list of records with their images).
    pub max_body_bytes: u64,
    /// The largest single image accepted, in bytes (decoded).
    pub max_image_bytes: u64,
    /// Failed deliveries in a row after which an upper platform's subscription is dropped
    /// (the pause between attempts doubles from 1 s up to 5 minutes: 20 is about an hour).
    pub notify_max_attempts: u32,
}

impl Default for ViidConfig {
    fn default() -> Self {
        Self {
            server_id: "51100000005030000001".into(),
            retention_days: 180,
            max_body_bytes: 64 * 1024 * 1024,
            max_image_bytes: 8 * 1024 * 1024,
            notify_max_attempts: 20,
        }
    }
}

/// Dashboard endpoints: saved queries served from a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsConfig {
    /// Memory the cached results may take, in bytes (least recently used go first).
    pub cache_bytes: u64,
    /// How often the hub looks for commits made by other processes on the same catalog
    /// (commits of this process are seen at once). A PostgreSQL catalog announces changes
    /// as they commit (LISTEN/NOTIFY); then this is only a safety net, at least 30 s.
    pub poll_interval_ms: u64,
    /// Server-sent events wait this long after a change before recomputing, so that a
    /// burst of commits sends one update.
    pub debounce_ms: u64,
    /// Server-sent events send a comment this often, so that proxies keep the stream open.
    pub heartbeat_secs: u64,
    /// Results that read live tables (`hub.cameras` and the other registry tables) or the
    /// clock (`now()`) are recomputed at most this often unless the endpoint says otherwise.
    pub live_refresh_secs: u64,
    /// The city's offset from UTC in minutes (China: +480), for the `today` default of date
    /// parameters.
    pub utc_offset_minutes: i32,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 * 1024 * 1024,
            poll_interval_ms: 1000,
            debounce_ms: 100,
            heartbeat_secs: 15,
            live_refresh_secs: 10,
            utc_offset_minutes: 480,
        }
    }
}

/// Compaction: merging a dataset's small files (every push and Kafka flush writes one)
/// into files of `storage.target_file_bytes`, sorted by the dataset's sort key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Whether the server compacts datasets by itself (on-demand compaction always works).
    pub enabled: bool,
    /// How often the server looks for datasets to compact.
    pub interval_secs: u64,
    /// A file smaller than this is small: worth merging with others.
    pub small_file_bytes: u64,
    /// A dataset is compacted when it has more than this many small files...
    pub min_small_files: u64,
    /// ...or when its small files hold more than this many bytes together.
    pub min_small_bytes: u64,
    /// Memory one compaction may hold for decoded rows; it writes a file before it would
    /// hold more, so a dataset is never loaded whole.
    pub memory_bytes: u64,
    /// While pushes or Kafka flushes are in flight, the share of its time a compaction
    /// works; it pauses for the rest, so that writers keep their throughput. Alone it runs
    /// at full speed.
    pub cpu_share: f64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 60,
            small_file_bytes: 32 * 1024 * 1024,
            min_small_files: 16,
            min_small_bytes: 256 * 1024 * 1024,
            memory_bytes: 512 * 1024 * 1024,
            cpu_share: 0.2,
        }
    }
}

/// How long replaced snapshots stay readable, and garbage collection of the files that no
/// kept snapshot names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a snapshot stays readable by time travel after a newer one replaced it (a
    /// dataset may set its own `snapshot_retention_days`). Deleted rows are gone for good
    /// once the snapshots that still hold them expire.
    pub snapshot_days: u64,
    /// A file that no snapshot names (written, then never committed, e.g. by a crash
    /// between write and commit) is deleted once it is this old.
    pub orphan_grace_secs: u64,
    /// How often the server collects garbage.
    pub gc_interval_secs: u64,
    /// Whether the server collects garbage by itself (`cityhub gc` always works).
    pub enabled: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            snapshot_days: 7,
            orphan_grace_secs: 3600,
            gc_interval_secs: 3600,
            enabled: true,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `cityhub=debug,info`.
    pub level: String,
    /// `text` for people, `json` for log shippers.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// The local data folder.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.storage.data_dir)
    }

    /// The object store URL, with the `{data_dir}/objects` default resolved.
    pub fn storage_url(&self) -> String {
        if self.storage.url.is_empty() {
            format!(
                "file://{}",
                absolute(&self.data_dir().join("objects")).display()
            )
        } else {
            self.storage.url.clone()
        }
    }

    /// The catalog URL, with the `{data_dir}/catalog.db` default resolved.
    pub fn catalog_url(&self) -> String {
        if self.catalog.url.is_empty() {
            format!(
                "sqlite://{}",
                absolute(&self.data_dir().join("catalog.db")).display()
            )
        } else {
            self.catalog.url.clone()
        }
    }

    /// Checks values that have the right type but a wrong meaning; one entry per problem,
    /// as (dotted key, message).
    fn semantic_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut check = |key: &str, ok: bool, message: &str| {
            if !ok {
                problems.push((key.to_string(), message.to_string()));
            }
        };
        check(
            "server.bind",
            self.server.bind.parse::<SocketAddr>().is_ok(),
            "must be an IP address and port such as 127.0.0.1:8080 or 0.0.0.0:8080",
        );
        check(
            "server.max_body_bytes",
            self.server.max_body_bytes > 0,
            "must be greater than 0",
        );
        check(
            "storage.data_dir",
            !self.storage.data_dir.trim().is_empty(),
            "must name a folder",
        );
        check(
            "storage.url",
            self.storage.url.is_empty()
                || ["file://", "memory://", "s3://", "s3a://"]
                    .iter()
                    .any(|scheme| self.storage.url.starts_with(scheme)),
            "must be empty (objects under the data folder) or a file://, memory:// or s3:// URL",
        );
        check(
            "catalog.url",
            self.catalog.url.is_empty()
                || ["sqlite://", "postgres://", "postgresql://"]
                    .iter()
                    .any(|scheme| self.catalog.url.starts_with(scheme)),
            "must be empty (catalog.db in the data folder), a sqlite:// URL, or a postgres:// \
             URL (postgres://user:password@host:port/database)",
        );
        check(
            "query.ballista_scheduler",
            self.query.engine != QueryEngineKind::Ballista
                || self.query.ballista_scheduler_url().is_some(),
            "must be the Ballista scheduler as df://host:port (e.g. df://10.0.0.5:50050) \
             when query.engine = \"ballista\"",
        );
        check(
            "ingest.file_rows",
            self.ingest.file_rows > 0,
            "must be greater than 0",
        );
        check(
            "ingest.row_group_rows",
            self.ingest.row_group_rows >= 1024,
            "must be at least 1024",
        );
        check(
            "ingest.data_page_bytes",
            self.ingest.data_page_bytes >= 4096,
            "must be at least 4096",
        );
        check(
            "ingest.statistics",
            ["page", "chunk", "none"].contains(&self.ingest.statistics.as_str()),
            "must be one of page, chunk, none",
        );
        check(
            "ingest.compression",
            ["zstd", "snappy", "none"].contains(&self.ingest.compression.as_str()),
            "must be one of zstd, snappy, none",
        );
        check(
            "query.memory_limit_bytes",
            self.query.memory_limit_bytes == 0 || self.query.memory_limit_bytes >= 1024 * 1024,
            "must be 0 (a quarter of the machine's memory) or at least 1048576 (1 MiB)",
        );
        check(
            "query.timeout_secs",
            self.query.timeout_secs > 0,
            "must be greater than 0",
        );
        check(
            "server.rate_limit_burst",
            self.server.rate_limit_per_second == 0 || self.server.rate_limit_burst > 0,
            "must be greater than 0 while server.rate_limit_per_second is set",
        );
        check(
            "server.pg_tls_key",
            self.server.pg_tls_cert.is_empty() == self.server.pg_tls_key.is_empty(),
            "must be set together with server.pg_tls_cert (both PEM files), or both left empty",
        );
        check(
            "sharing.answer_within_working_days",
            (1..=60).contains(&self.sharing.answer_within_working_days),
            "must be between 1 and 60 working days",
        );
        check(
            "audit.retention_days",
            self.audit.retention_days >= 1,
            "must be at least 1 day",
        );
        check(
            "cameras.keepalive_interval_secs",
            (1..=86_400).contains(&self.cameras.keepalive_interval_secs),
            "must be between 1 and 86400 seconds",
        );
        check(
            "cameras.offline_after_missed",
            (1..=100).contains(&self.cameras.offline_after_missed),
            "must be between 1 and 100 keepalives",
        );
        check(
            "cameras.sweep_interval_secs",
            self.cameras.sweep_interval_secs >= 1,
            "must be at least 1 second",
        );
        check(
            "cameras.daily_retention_days",
            (1..=3_660).contains(&self.cameras.daily_retention_days),
            "must be between 1 and 3660 days (ten years)",
        );
        check(
            "cameras.alarm_retention_days",
            (1..=3_660).contains(&self.cameras.alarm_retention_days),
            "must be between 1 and 3660 days (ten years)",
        );
        check(
            "cameras.position_retention_days",
            (1..=3_660).contains(&self.cameras.position_retention_days),
            "must be between 1 and 3660 days (ten years)",
        );
        check(
            "cameras.change_retention_days",
            (1..=366).contains(&self.cameras.change_retention_days),
            "must be between 1 and 366 days",
        );
        check(
            "viid.server_id",
            self.viid.server_id.len() == 20
                && self.viid.server_id.bytes().all(|b| b.is_ascii_digit()),
            "must be the hub's 20-digit GA/T 1400 id",
        );
        check(
            "viid.retention_days",
            (1..=3_660).contains(&self.viid.retention_days),
            "must be between 1 and 3660 days (ten years)",
        );
        check(
            "viid.max_body_bytes",
            (1024..=1024 * 1024 * 1024).contains(&self.viid.max_body_bytes),
            "must be between 1 KiB and 1 GiB",
        );
        check(
            "viid.max_image_bytes",
            self.viid.max_image_bytes >= 1024
                && self.viid.max_image_bytes <= self.viid.max_body_bytes,
            "must be at least 1 KiB and at most viid.max_body_bytes",
        );
        check(
            "viid.notify_max_attempts",
            (1..=1_000).contains(&self.viid.notify_max_attempts),
            "must be between 1 and 1000",
        );
        check(
            "endpoints.cache_bytes",
            self.endpoints.cache_bytes >= 1024 * 1024,
            "must be at least 1 MiB (1048576)",
        );
        check(
            "endpoints.poll_interval_ms",
            (10..=3_600_000).contains(&self.endpoints.poll_interval_ms),
            "must be between 10 ms and one hour",
        );
        check(
            "endpoints.debounce_ms",
            self.endpoints.debounce_ms <= 60_000,
            "must be at most 60000 ms",
        );
        check(
            "endpoints.heartbeat_secs",
            (1..=3600).contains(&self.endpoints.heartbeat_secs),
            "must be between 1 and 3600 seconds",
        );
        check(
            "endpoints.live_refresh_secs",
            (1..=86_400).contains(&self.endpoints.live_refresh_secs),
            "must be between 1 and 86400 seconds",
        );
        check(
            "endpoints.utc_offset_minutes",
            (-720..=840).contains(&self.endpoints.utc_offset_minutes),
            "must be between -720 and 840 minutes",
        );
        for (key, template) in [
            ("cameras.rtsp_template", &self.cameras.rtsp_template),
            ("cameras.rtmp_template", &self.cameras.rtmp_template),
            ("cameras.flv_template", &self.cameras.flv_template),
            ("cameras.hls_template", &self.cameras.hls_template),
            ("cameras.webrtc_template", &self.cameras.webrtc_template),
        ] {
            check(
                key,
                template.is_empty() || template.contains("://"),
                "must be empty or a URL template such as rtsp://host:554/rtp/{device}_{channel}",
            );
        }
        check(
            "storage.target_file_bytes",
            self.storage.target_file_bytes >= 1024 * 1024,
            "must be at least 1 MiB (1048576)",
        );
        check(
            "storage.target_file_rows",
            self.storage.target_file_rows >= 1000,
            "must be at least 1000",
        );
        check(
            "compaction.interval_secs",
            (1..=86_400).contains(&self.compaction.interval_secs),
            "must be between 1 and 86400 seconds",
        );
        check(
            "compaction.small_file_bytes",
            self.compaction.small_file_bytes > 0
                && self.compaction.small_file_bytes <= self.storage.target_file_bytes,
            "must be greater than 0 and at most storage.target_file_bytes",
        );
        check(
            "compaction.min_small_files",
            self.compaction.min_small_files >= 1,
            "must be at least 1",
        );
        check(
            "compaction.cpu_share",
            self.compaction.cpu_share > 0.0 && self.compaction.cpu_share <= 1.0,
            "must be greater than 0 and at most 1 (1: never pause for writers)",
        );
        check(
            "compaction.memory_bytes",
            self.compaction.memory_bytes >= 16 * 1024 * 1024,
            "must be at least 16 MiB (16777216)",
        );
        check(
            "retention.snapshot_days",
            (1..=36_500).contains(&self.retention.snapshot_days),
            "must be between 1 and 36500 days",
        );
        check(
            "retention.orphan_grace_secs",
            self.retention.orphan_grace_secs >= 60,
            "must be at least 60 seconds: a file is written a moment before its commit",
        );
        check(
            "retention.gc_interval_secs",
            (1..=604_800).contains(&self.retention.gc_interval_secs),
            "must be between 1 second and one week",
        );
        check(
            "log.format",
            ["text", "json"].contains(&self.log.format.as_str()),
            "must be text or json",
        );
        for (index, feed) in self.ingest.kafka.iter().enumerate() {
            let mut check = |field: &str, ok: bool, message: &str| {
                if !ok {
                    problems.push((
                        format!("ingest.kafka[{index}].{field}"),
                        message.to_string(),
                    ));
                }
            };
            check(
                "bootstrap_servers",
                !feed.bootstrap_servers.trim().is_empty(),
                "must name at least one broker, e.g. 127.0.0.1:9092",
            );
            check("topic", !feed.topic.trim().is_empty(), "must name a topic");
            check(
                "dataset",
                feed.dataset
                    .split_once('.')
                    .is_some_and(|(d, t)| !d.is_empty() && !t.is_empty()),
                "must be department.table, or one of the camera registry's: hub.cameras, hub.camera_keepalives, hub.camera_events, hub.camera_alarms or hub.camera_positions",
            );
            check(
                "format",
                ["json", "csv"].contains(&feed.format.as_str()),
                "must be json or csv",
            );
            check(
                "start",
                ["earliest", "latest"].contains(&feed.start.as_str()),
                "must be earliest or latest",
            );
            check("flush_rows", feed.flush_rows > 0, "must be greater than 0");
            check(
                "flush_bytes",
                feed.flush_bytes > 0,
                "must be greater than 0",
            );
            check(
                "flush_age_ms",
                feed.flush_age_ms > 0,
                "must be greater than 0",
            );
            check(
                "workers",
                (1..=64).contains(&feed.workers),
                "must be between 1 and 64",
            );
            check(
                "group_id",
                !feed.group_id.trim().is_empty(),
                "must name a consumer group",
            );
        }
        problems
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key such as `server.bind`; empty for a file that could not be read at all.
    pub key: String,
    /// Where the offending value came from.
    pub source: Source,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{} (from {}): {}", self.key, self.source, self.message)
        }
    }
}

/// Every problem found while loading, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "the configuration has {count} problem{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
