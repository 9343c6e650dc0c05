//! End to end against a separate Kafka-protocol broker process: `tansu` (installed with
//! `cargo install tansu --features dynostore`) on 127.0.0.1 with in-memory storage, and the
//! real `cityhub serve` binary consuming a topic configured in its TOML file. Rows are
//! checked over HTTP; a restart of the hub resumes from the catalog's offsets.
//!
//! The broker is found through `CITYHUB_TANSU` or `PATH`. Without it the test says so and
//! passes, unless `CITYHUB_REQUIRE_BROKER=1` (set by `.ci/run`, which installs tansu), in
//! which case its absence is a failure.

use crate::support;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};

const TOPIC: &str = "gongan.alarms";

fn tansu() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CITYHUB_TANSU") {
        return Some(PathBuf::from(path));
    }
    support::program_on_path("tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Asks for a graceful stop (SIGTERM) and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve(data_dir: &Path, port: u16, config: Option<&Path>) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cityhub"));
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let log = std::fs::File::create(data_dir.join(format!("serve-{port}.log"))).expect("log");
    let child = command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .env("CITYHUB__LOG__LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cityhub serve");
    wait_for_port(port);
    Running(child)
}

fn produce(bootstrap: &str, ids: std::ops::Range<i64>) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let mut good = 0;
    for id in ids {
        let payload = if id % 10 == 0 {
            "{broken".to_string()
        } else {
            good += 1;
            format!(r#"{{"id":{id},"kind":"theft"}}"#)
        };
        let record = BaseRecord::<(), str>::to(TOPIC)
            .partition((id % 2) as i32)
            .payload(&payload);
        support::send(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    good
}

async fn count(client: &reqwest::Client, base: &str, token: &str) -> i64 {
    let rows: Value = client
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body("SELECT count(*) AS n FROM gongan.alarms")
        .send()
        .await
        .expect("sql")
        .json()
        .await
        .expect("json");
    rows[0]["n"].as_i64().unwrap_or(-1)
}

async fn wait_for_rows(client: &reqwest::Client, base: &str, token: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = count(client, base, token).await;
        if rows == expected {
            return;
        }
        assert!(
            rows < expected,
            "{rows} rows, more than the {expected} produced"
        );
        assert!(
            Instant::now() < deadline,
            "only {rows} of {expected} rows arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_consumes_a_topic_of_a_separate_broker_and_resumes_after_a_restart() {
    let Some(tansu) = tansu() else {
        assert!(
            std::env::var("CITYHUB_REQUIRE_BROKER").as_deref() != Ok("1"),
            "CITYHUB_REQUIRE_BROKER=1 but no tansu binary (install: cargo install tansu --features dynostore)"
        );
        eprintln!("skipped: no tansu broker on PATH (cargo install tansu --features dynostore)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka_port = free_port();
    let broker_url = format!("tcp://127.0.0.1:{kafka_port}");
    let broker_log = std::fs::File::create(dir.path().join("tansu.log")).expect("log");
    let _broker = Running(
        Command::new(&tansu)
            .arg("broker")
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--kafka-listener-url", &broker_url])
            .args(["--kafka-advertised-listener-url", &broker_url])
            .stdout(Stdio::null())
            .stderr(broker_log)
            .spawn()
            .expect("tansu"),
    );
    wait_for_port(kafka_port);
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // The dataset must exist before a feed names it: register it on a first start.
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let token = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args([
            "token",
            "create",
            "--department",
            "admin",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .expect("token create");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hub = serve(&data_dir, port, None);
    for (path, body) in [
        (
            "/api/v1/departments",
            json!({"code": "gongan", "name": "公安局"}),
        ),
        (
            "/api/v1/datasets",
            json!({"name": "gongan.alarms", "sharing": "unconditional", "columns": [
                {"name": "id", "type": "int64", "nullable": false},
                {"name": "kind", "type": "string"},
                {"name": "_offset", "type": "int64"}
            ]}),
        ),
    ] {
        let status = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("register")
            .status();
        assert_eq!(status, 201, "{path}");
    }
    assert!(hub.terminate().success());

    // Now with the feed in the configuration file.
    let config = dir.path().join("cityhub.toml");
    std::fs::write(
        &config,
        format!(
            "[[ingest.kafka]]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{TOPIC}\"\n\
             dataset = \"gongan.alarms\"\nflush_rows = 100\nflush_age_ms = 300\n"
        ),
    )
    .expect("config");
    let good = produce(&bootstrap, 1..501) as i64;
    let hub = serve(&data_dir, port, Some(&config));
    wait_for_rows(&client, &base, &token, good).await;
    let status: Value = client
        .get(format!("{base}/api/v1/ingest/status"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let partitions = status["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2, "{status}");
    let done: i64 = partitions
        .iter()
        .map(|p| p["catalog_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(done, 500, "{status}");
    assert!(hub.terminate().success(), "a graceful stop exits 0");

    // A restart resumes where the catalog says: new messages once, old ones not again.
    let more = produce(&bootstrap, 501..601) as i64;
    let hub = serve(&data_dir, port, Some(&config));
    wait_for_rows(&client, &base, &token, good + more).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&client, &base, &token).await, good + more);
    assert!(hub.terminate().success());
}
