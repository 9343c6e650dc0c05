//! End to end against a separate Kafka-protocol broker process: `tansu` (installed with
//! `cargo install tansu --features dynostore`) on 127.0.0.1 with in-memory storage, and the
//! real `cityhub serve` binary consuming a topic configured in its TOML file. Rows are
//! checked over HTTP; a restart of the hub resumes from the catalog's offsets.
//!
//! The broker is found through `CITYHUB_TANSU` or `PATH`. Without it the test says so and
//! passes, unless `CITYHUB_REQUIRE_BROKER=1` (set by `.ci/run`, which installs tansu), in
//! which case its absence is a failure.
//!
//! Two `cityhub serve` nodes on a PostgreSQL catalog and an S3 bucket share one feed through
//! a node's SIGKILL and the rebalance after it; their broker is librdkafka's mock cluster on
//! a loopback port (tansu 0.6's consumer groups lose a dead member's partitions, see that
//! test).

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
        // Only the HTTP door: the other doors' fixed default ports may be taken by a test
        // running beside this one.
        .env("CITYHUB__SERVER__PG_BIND", "")
        .env("CITYHUB__SERVER__FLIGHT_BIND", "")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cityhub serve");
    wait_for_port(port);
    Running(child)
}

fn produce(bootstrap: &str, ids: std::ops::Range<i64>) -> usize {
    produce_to(bootstrap, 2, ids, true)
}

/// Produces `{"id": id}` for each id, round robin over `partitions`; with `some_broken`
/// every tenth message is not JSON. Answers how many good messages were sent.
fn produce_to(
    bootstrap: &str,
    partitions: i64,
    ids: std::ops::Range<i64>,
    some_broken: bool,
) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let mut good = 0;
    for id in ids {
        let payload = if some_broken && id % 10 == 0 {
            "{broken".to_string()
        } else {
            good += 1;
            format!(r#"{{"id":{id},"kind":"theft"}}"#)
        };
        let record = BaseRecord::<(), str>::to(TOPIC)
            .partition((id % partitions) as i32)
            .payload(&payload);
        support::send(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    good
}

async fn count(client: &reqwest::Client, base: &str, token: &str) -> i64 {
    let rows = sql(
        client,
        base,
        token,
        "SELECT count(*) AS n FROM gongan.alarms",
    )
    .await;
    rows[0]["n"].as_i64().unwrap_or(-1)
}

async fn sql(client: &reqwest::Client, base: &str, token: &str, query: &str) -> Value {
    client
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(query.to_string())
        .send()
        .await
        .expect("sql")
        .json()
        .await
        .expect("json")
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

/// A tansu broker on a free port with in-memory storage, and [`TOPIC`] created on it with
/// two partitions; `None` (the test skips) when there is no tansu.
async fn broker(dir: &Path) -> Option<(Running, String)> {
    let Some(tansu) = tansu() else {
        assert!(
            std::env::var("CITYHUB_REQUIRE_BROKER").as_deref() != Ok("1"),
            "CITYHUB_REQUIRE_BROKER=1 but no tansu binary (install: cargo install tansu --features dynostore)"
        );
        eprintln!("skipped: no tansu broker on PATH (cargo install tansu --features dynostore)");
        return None;
    };
    let kafka_port = free_port();
    let broker_url = format!("tcp://127.0.0.1:{kafka_port}");
    let broker_log = std::fs::File::create(dir.join("tansu.log")).expect("log");
    let broker = Running(
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
    Some((broker, bootstrap))
}

/// An admin token made by `cityhub token create` on the catalog that `location` names
/// (`--data-dir DIR` or `--config FILE`).
fn admin_token(location: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args([
            "token",
            "create",
            "--department",
            "admin",
            "--role",
            "admin",
        ])
        .args(location)
        .output()
        .expect("token create");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Registers `gongan` and `gongan.alarms` (id, kind, and the message's offset) on the hub
/// at `base`: a feed's dataset must exist before the hub starts with the feed.
async fn register_alarms(client: &reqwest::Client, base: &str, token: &str) {
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
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("register")
            .status();
        assert_eq!(status, 201, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_consumes_a_topic_of_a_separate_broker_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((_broker, bootstrap)) = broker(dir.path()).await else {
        return;
    };

    // The dataset must exist before a feed names it: register it on a first start.
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let token = admin_token(&["--data-dir".as_ref(), data_dir.as_os_str()]);
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hub = serve(&data_dir, port, None);
    register_alarms(&client, &base, &token).await;
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

/// `GET /api/v1/ingest/status` of one node, as an admin.
async fn ingest_status(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let response = client
        .get(format!("{base}/api/v1/ingest/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("status");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("json")
}

/// The feed workers of `topic` in a status answer.
fn workers_of<'a>(status: &'a Value, topic: &str) -> Vec<&'a Value> {
    status["feeds"]
        .as_array()
        .expect("feeds")
        .iter()
        .filter(|w| w["topic"] == topic)
        .collect()
}

/// The partitions a worker in a status answer holds.
fn held_by(worker: &Value) -> Vec<i64> {
    worker["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["partition"].as_i64())
        .collect()
}

/// Polls `check` on node `base`'s ingest status until it holds, for up to `seconds`.
async fn wait_for_status(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    seconds: u64,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let status = ingest_status(client, base, token).await;
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Two `cityhub serve` nodes on one PostgreSQL catalog and one S3 bucket, both configured
/// with the same feed of a four-partition topic (and one whose broker does not exist): the
/// consumer group spreads the partitions over both, every node's status shows every node's
/// workers, a node killed with SIGKILL mid-stream loses nothing and the survivor takes its
/// partitions over at the catalog's offsets, so every message lands exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_feed_on_two_nodes_lands_every_message_once_through_a_node_kill_and_a_rebalance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(shared) = crate::cluster::shared().await else {
        return;
    };
    // The broker: librdkafka's mock cluster, serving the Kafka protocol on a loopback port
    // to the hubs' processes. (tansu 0.6, which the test above uses, drops a live member from
    // a two-member group and then never tells the survivor of the dead one's partitions, so
    // a rebalance across processes cannot be tested on it.)
    let broker = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    broker.create_topic(TOPIC, 4, 1).expect("create topic");
    let bootstrap = broker.bootstrap_servers();
    let base_config = format!(
        "[catalog]\nurl = \"{}\"\n\n[storage]\nurl = \"{}\"\n",
        shared.catalog_url, shared.storage_url
    );
    let base_file = dir.path().join("base.toml");
    std::fs::write(&base_file, &base_config).expect("config");
    let token = admin_token(&["--config".as_ref(), base_file.as_os_str()]);
    let client = reqwest::Client::new();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    for folder in [&dir_a, &dir_b] {
        std::fs::create_dir_all(folder).expect("data dir");
    }

    // The dataset is registered once, on the shared catalog, before a feed names it.
    let (port_a, port_b) = (free_port(), free_port());
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let hub = serve(&dir_a, port_a, Some(&base_file));
    register_alarms(&client, &base_a, &token).await;
    assert!(hub.terminate().success());

    // Both nodes get the feed; a short session timeout so that the group notices a dead
    // node in seconds rather than librdkafka's default 45.
    let dead_broker = free_port();
    let feed_file = dir.path().join("feeds.toml");
    std::fs::write(
        &feed_file,
        format!(
            "{base_config}\n[[ingest.kafka]]\nbootstrap_servers = \"{bootstrap}\"\n\
             topic = \"{TOPIC}\"\ndataset = \"gongan.alarms\"\nflush_rows = 50\n\
             flush_age_ms = 200\n\
             properties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n\n\
             [[ingest.kafka]]\nbootstrap_servers = \"127.0.0.1:{dead_broker}\"\n\
             topic = \"gongan.nowhere\"\ndataset = \"gongan.alarms\"\n\
             group_id = \"cityhub-nowhere\"\n"
        ),
    )
    .expect("config");
    let node_a = serve(&dir_a, port_a, Some(&feed_file));
    let node_b = serve(&dir_b, port_b, Some(&feed_file));

    // Each node lists both nodes' workers as soon as it answers: every worker reports when
    // its feeds start, before the group has assigned anything.
    let first = wait_for_status(&client, &base_b, &token, 30, "both nodes' workers", |s| {
        s["feeds"].as_array().is_some_and(|f| f.len() == 4)
    })
    .await;
    assert!(
        first["feeds"]
            .as_array()
            .expect("feeds")
            .iter()
            .all(|w| w["silent"] == false && w["state"].is_string()),
        "{first:#}"
    );

    // The group spreads the four partitions over both nodes; the feed whose broker does not
    // exist is shown on both as unreachable, with the error.
    let spread = wait_for_status(&client, &base_b, &token, 60, "the partitions spread", |s| {
        let live = workers_of(s, TOPIC);
        let mut held: Vec<i64> = live.iter().flat_map(|w| held_by(w)).collect();
        held.sort_unstable();
        let dead = workers_of(s, "gongan.nowhere");
        live.len() == 2
            && live.iter().all(|w| w["state"] == "assigned")
            && held == [0, 1, 2, 3]
            && dead.len() == 2
            && dead.iter().all(|w| {
                w["state"] == "broker_unreachable"
                    && w["broker_unreachable_since"].is_string()
                    && w["last_error"].is_string()
            })
    })
    .await;
    let node_a_name = workers_of(&spread, TOPIC)
        .into_iter()
        .map(|w| w["node"].as_str().expect("node").to_string())
        .find(|node| node.contains(&format!(":{port_a} ")))
        .expect("node a's worker");

    // Messages flow through both; node A dies with SIGKILL mid-stream.
    let first_half = produce_to(&bootstrap, 4, 1..2001, false) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&client, &base_b, &token).await < first_half / 4 {
        assert!(Instant::now() < deadline, "no rows arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node_a);
    let second_half = produce_to(&bootstrap, 4, 2001..4001, false) as i64;
    let total = first_half + second_half;
    wait_for_rows(&client, &base_b, &token, total).await;
    let distinct = sql(
        &client,
        &base_b,
        &token,
        "SELECT count(DISTINCT id) AS n, min(id) AS low, max(id) AS high FROM gongan.alarms",
    )
    .await;
    assert_eq!(distinct, json!([{"n": total, "low": 1, "high": 4000}]));

    // Node B holds every partition now; node A's workers are shown as silent, and the
    // catalog's offsets account for every message.
    let after = wait_for_status(&client, &base_b, &token, 60, "node b took over", |s| {
        let workers = workers_of(s, TOPIC);
        let a_silent = workers
            .iter()
            .filter(|w| w["node"] == node_a_name.as_str())
            .all(|w| w["silent"] == true);
        let b_holds_all = workers
            .iter()
            .any(|w| w["node"] != node_a_name.as_str() && held_by(w) == [0, 1, 2, 3]);
        a_silent && b_holds_all
    })
    .await;
    let partitions: Vec<&Value> = after["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["topic"] == TOPIC)
        .collect();
    assert_eq!(partitions.len(), 4, "{after:#}");
    let offsets: i64 = partitions
        .iter()
        .map(|p| p["catalog_offset"].as_i64().expect("catalog offset"))
        .sum();
    assert_eq!(offsets, total, "{after:#}");
    assert!(
        partitions
            .iter()
            .all(|p| p["node"].is_string() && p["node"] != node_a_name.as_str()),
        "{after:#}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&client, &base_b, &token).await, total);
    assert!(node_b.terminate().success());
}
