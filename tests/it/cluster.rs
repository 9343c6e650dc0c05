//! Past one machine: hubs whose catalog is PostgreSQL and whose objects are in an S3 bucket
//! (a moto server), as `.ci/run` starts them: `CITYHUB_TEST_POSTGRES_URL`, and
//! `CITYHUB_TEST_S3_ENDPOINT` with the usual `AWS_*` variables the hub reads its S3
//! settings from. Without them these tests say so and pass, unless `CITYHUB_REQUIRE_POSTGRES`
//! or `CITYHUB_REQUIRE_S3` is `1` (as in `.ci/run`).

use bytes::Bytes;
use cityhub_catalog::Role;
use cityhub_ingest::Storage;
use serde_json::{Value, json};

use crate::support::{self, TestServer};

const NDJSON: &str = "application/x-ndjson";

/// A fresh catalog schema and a fresh bucket for one test.
pub struct Shared {
    pub catalog_url: String,
    pub storage_url: String,
}

fn required(variable: &str, flag: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var(flag).as_deref() != Ok("1"),
                "{flag}=1 but {variable} is not set"
            );
            eprintln!("skipped: set {variable} to run the cluster tests");
            None
        }
    }
}

/// A fresh schema on `CITYHUB_TEST_POSTGRES_URL` and a fresh bucket on
/// `CITYHUB_TEST_S3_ENDPOINT`; `None` (the test skips) when they are not configured.
pub async fn shared() -> Option<Shared> {
    let postgres = required("CITYHUB_TEST_POSTGRES_URL", "CITYHUB_REQUIRE_POSTGRES")?;
    let endpoint = required("CITYHUB_TEST_S3_ENDPOINT", "CITYHUB_REQUIRE_S3")?;
    let suffix = hex_suffix();
    let (client, connection) = tokio_postgres::connect(&postgres, tokio_postgres::NoTls)
        .await
        .expect("connect to CITYHUB_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    let schema = format!("cluster_{suffix}");
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create a schema");
    let separator = if postgres.contains('?') { '&' } else { '?' };
    let catalog_url = format!("{postgres}{separator}options=-c%20search_path%3D{schema}");
    // moto creates a bucket on a plain PUT, as S3 does for its owner.
    let bucket = format!("cityhub-{suffix}");
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .expect("the S3 server answers");
    assert!(created.status().is_success(), "{}", created.status());
    Some(Shared {
        catalog_url,
        storage_url: format!("s3://{bucket}/hub"),
    })
}

fn hex_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:x}{:04x}", nanos, std::process::id() & 0xffff)
}

async fn node(shared: &Shared) -> TestServer {
    TestServer::spawn_with(|config| {
        config.catalog.url = shared.catalog_url.clone();
        config.storage.url = shared.storage_url.clone();
    })
    .await
}

/// Every file below `dir`.
fn files_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

async fn push(node: &TestServer, token: &str, dataset: &str, key: String, body: String) -> Value {
    let response = node
        .client
        .post(node.url(&format!("/api/v1/datasets/{dataset}/rows")))
        .bearer_auth(token)
        .header("content-type", NDJSON)
        .header("idempotency-key", key)
        .body(body)
        .send()
        .await
        .expect("request");
    let (status, answer) = support::split(response).await;
    assert!(status == 200 || status == 201, "{status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_and_s3_commit_every_push_exactly_once() {
    let Some(shared) = shared().await else {
        return;
    };
    let (a, b) = (node(&shared).await, node(&shared).await);
    // Registered through one node, known to the other at once: one catalog.
    let dataset = a.events_dataset("gongan").await;
    let producer = b.token("gongan", Role::Producer).await;
    let (status, listed) = b.get(&producer, "/api/v1/datasets").await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(&dataset), "{listed}");

    // 16 pushes of 25 rows, through both nodes at once, each sent twice (the client
    // retrying through the load balancer): once to each node.
    let mut sends = Vec::new();
    for push_index in 0..16 {
        let body: String = (0..25)
            .map(|row| {
                format!(
                    "{}\n",
                    json!({"id": push_index * 25 + row, "kind": "patrol"})
                )
            })
            .collect();
        let key = format!("push-{push_index:02}");
        for target in [&a, &b] {
            sends.push(push(target, &producer, &dataset, key.clone(), body.clone()));
        }
    }
    let answers = futures::future::join_all(sends).await;
    let replayed = answers.iter().filter(|a| a["replayed"] == true).count();
    assert_eq!(replayed, 16, "one of each pair is a replay: {answers:?}");
    for pair in answers.chunks(2) {
        assert_eq!(pair[0]["snapshot_id"], pair[1]["snapshot_id"], "{pair:?}");
    }

    // Both nodes answer the same 400 rows, each once.
    for target in [&a, &b] {
        let rows = support::sql_ok(
            target,
            &target.admin,
            &format!("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM {dataset}"),
        )
        .await;
        assert_eq!(rows, json!([{"n": 400, "ids": 400}]));
    }

    // Both nodes start their background jobs: the ones that run at once (the camera
    // sweeper, the audit purge) are each held by one of the two nodes, and the other node
    // stays out of them.
    let jobs_a = cityhub_server::tasks::Tasks::start(&a.state);
    let jobs_b = cityhub_server::tasks::Tasks::start(&b.state);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    jobs_a.stop();
    jobs_b.stop();
    let (client, connection) = tokio_postgres::connect(&shared.catalog_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let leases = client
        .query("SELECT job, holder FROM job_leases ORDER BY job", &[])
        .await
        .expect("leases");
    let leases: Vec<(String, String)> = leases.iter().map(|row| (row.get(0), row.get(1))).collect();
    let jobs: Vec<&str> = leases.iter().map(|(job, _)| job.as_str()).collect();
    assert_eq!(jobs, ["audit_purge", "camera_sweep"], "{leases:?}");
    for (_, holder) in &leases {
        assert!(
            holder == &a.state.node || holder == &b.state.node,
            "{leases:?}"
        );
    }

    // The objects are in the bucket; nothing was written below either node's data folder.
    let storage = Storage::open(&shared.storage_url).expect("open the bucket");
    let objects = storage.list("datasets/").await.expect("list");
    assert!(objects.len() >= 16, "{objects:?}");
    for target in [a, b] {
        let data_dir = target.stop().await;
        assert_eq!(
            files_below(data_dir.path()),
            Vec::<std::path::PathBuf>::new()
        );
    }
}

#[tokio::test]
async fn objects_on_s3_are_never_overwritten() {
    let Some(shared) = shared().await else {
        return;
    };
    let storage = Storage::open(&shared.storage_url).expect("open the bucket");
    storage
        .put_new("datasets/1/first.parquet", Bytes::from_static(b"first"))
        .await
        .expect("a new key is written");
    let again = storage
        .put_new("datasets/1/first.parquet", Bytes::from_static(b"second"))
        .await
        .expect_err("an existing key is refused");
    assert!(again.to_string().contains("first.parquet"), "{again}");
    let kept = storage.get("datasets/1/first.parquet").await.expect("read");
    assert_eq!(kept, Bytes::from_static(b"first"));
}

/// Polls `check` every 20 ms until it holds; answers how long that took (panics after 10 s).
async fn time_until<F, Fut>(mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others_cache_within_a_second() {
    let Some(shared) = shared().await else {
        return;
    };
    // Both nodes would poll the catalog only once a minute: what they learn within a second
    // they learn from PostgreSQL's notices.
    let slow_poll = |config: &mut cityhub_config::Config| {
        config.catalog.url = shared.catalog_url.clone();
        config.storage.url = shared.storage_url.clone();
        config.endpoints.poll_interval_ms = 60_000;
    };
    let a = TestServer::spawn_with(slow_poll).await;
    let b = TestServer::spawn_with(slow_poll).await;
    let dataset = a.events_dataset("gongan").await;
    let one_row = |id: i64| format!("{}\n", json!({"id": id, "kind": "patrol"}));
    push(&a, &a.admin, &dataset, "first".into(), one_row(1)).await;
    let (status, saved) = a
        .put_json(
            &a.admin,
            "/api/v1/endpoints/patrols",
            json!({"sql": format!("SELECT count(*) AS n FROM {dataset}"), "owner": "gongan"}),
        )
        .await;
    assert!(status == 200 || status == 201, "{saved}");
    let answer = |node: &TestServer| {
        let (client, url, token) = (
            node.client.clone(),
            node.url("/api/v1/endpoints/patrols"),
            node.admin.clone(),
        );
        async move {
            let response = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("call");
            support::split(response).await.1
        }
    };
    // B learns of the dataset's first commit and of the endpoint from the catalog's notices.
    let took = time_until(|| async { answer(&b).await == json!([{"n": 1}]) }).await;
    assert!(
        took < std::time::Duration::from_secs(1),
        "B served the endpoint after {took:?}"
    );

    // A commit on A: B's cached answer is replaced within a second.
    push(&a, &a.admin, &dataset, "second".into(), one_row(2)).await;
    let took = time_until(|| async { answer(&b).await == json!([{"n": 2}]) }).await;
    assert!(
        took < std::time::Duration::from_secs(1),
        "B saw the commit after {took:?}"
    );

    // A new version of the endpoint saved on A: B serves it within a second.
    let (status, saved) = a
        .put_json(
            &a.admin,
            "/api/v1/endpoints/patrols",
            json!({"sql": format!("SELECT count(*) AS patrols FROM {dataset}"), "owner": "gongan"}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let took = time_until(|| async { answer(&b).await == json!([{"patrols": 2}]) }).await;
    assert!(
        took < std::time::Duration::from_secs(1),
        "B saw the new version after {took:?}"
    );

    // A token revoked on A is refused by B within the principal cache's two seconds.
    let token = cityhub_catalog::token::Token::generate();
    let principal = a
        .state
        .catalog
        .create_principal(
            cityhub_catalog::NewPrincipal {
                name: "leaving".into(),
                department: "gongan".into(),
                role: Role::Analyst,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await
        .expect("principal");
    let (status, _) = b.get(&token.plaintext, "/api/v1/me").await;
    assert_eq!(status, 200);
    let (status, revoked) = a
        .delete(&a.admin, &format!("/api/v1/tokens/{}", principal.id))
        .await;
    assert_eq!(status, 200, "{revoked}");
    let took = time_until(|| async { b.get(&token.plaintext, "/api/v1/me").await.0 == 401 }).await;
    assert!(
        took <= std::time::Duration::from_millis(2_100),
        "B still accepted the revoked token after {took:?}"
    );
}

/// `deploy/cityhub.env.example` as (name, value) pairs.
fn example_environment() -> Vec<(String, String)> {
    std::fs::read_to_string("deploy/cityhub.env.example")
        .expect("deploy/cityhub.env.example")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

#[test]
fn the_deploy_files_configure_a_node_for_the_cluster() {
    let loaded = cityhub_config::Config::load(
        Some(std::path::Path::new("deploy/cityhub.toml")),
        example_environment(),
        &[],
    )
    .expect("deploy/cityhub.toml with the example environment is a valid configuration");
    let config = &loaded.config;
    assert!(config.catalog_url().starts_with("postgres://"));
    assert!(config.storage_url().starts_with("s3://"));
    assert_eq!(config.server.bind, "0.0.0.0:8080");
    assert_eq!(
        config.server.max_connections_per_client, 0,
        "behind a load balancer every client has its address"
    );
    assert!(!config.server.metrics_token.is_empty());
    let unit = std::fs::read_to_string("deploy/cityhub.service").expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/cityhub serve --config /etc/cityhub/cityhub.toml")
    );
    assert!(unit.contains("EnvironmentFile=/etc/cityhub/cityhub.env"));
}

/// `systemd-analyze verify` on `unit` (written to a temp folder): its complaints, empty
/// when systemd accepts every line.
fn systemd_complaints(program: &std::path::Path, unit: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cityhub.service");
    std::fs::write(&path, unit).expect("unit");
    let verified = std::process::Command::new(program)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let mut complaints = String::from_utf8_lossy(&verified.stderr).into_owned();
    if !verified.status.success() {
        complaints.push_str(&format!("(exit {})", verified.status));
    }
    complaints
}

/// systemd accepts `deploy/cityhub.service` without a single complaint (an unknown key or a
/// bad value is only a warning to systemd, and would go unnoticed until a node misbehaves).
/// The unit starts the binary this test was built with, since nothing is installed here.
#[test]
fn systemd_accepts_the_deploy_unit() {
    let Some(program) = support::program_on_path("systemd-analyze") else {
        assert!(
            std::env::var("CITYHUB_REQUIRE_SYSTEMD").as_deref() != Ok("1"),
            "CITYHUB_REQUIRE_SYSTEMD=1 but there is no systemd-analyze (Debian: systemd)"
        );
        eprintln!("skipped: no systemd-analyze on PATH");
        return;
    };
    let unit = std::fs::read_to_string("deploy/cityhub.service")
        .expect("unit")
        .replace("/usr/local/bin/cityhub", env!("CARGO_BIN_EXE_cityhub"));
    assert_eq!(systemd_complaints(&program, &unit), "");
    // The check itself catches a mistake.
    let broken = unit.replace("Restart=on-failure", "Restart=sometimes");
    assert!(
        systemd_complaints(&program, &broken)
            .to_lowercase()
            .contains("restart"),
        "systemd-analyze let a bad Restart= through"
    );
}

/// `deploy/haproxy.cfg` with its listeners on free loopback ports and its servers replaced
/// by `nodes` (HTTP address, PostgreSQL address, Flight address); answers the config and
/// the HTTP listener's address.
fn haproxy_config_for(nodes: &[&TestServer]) -> (String, std::net::SocketAddr) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("address")
    };
    let template = std::fs::read_to_string("deploy/haproxy.cfg").expect("deploy/haproxy.cfg");
    let mut http = None;
    let mut backend = String::new();
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("backend ") {
            backend = name.to_string();
        }
        if trimmed.starts_with("bind :") {
            let address = free();
            if http.is_none() {
                http = Some(address);
            }
            out.push_str(&format!("    bind {address}\n"));
        } else if let Some(rest) = trimmed.strip_prefix("server node") {
            // node1..nodeN of the template become the test's nodes; the rest are dropped.
            let index: usize = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("server nodeN");
            let Some(node) = nodes.get(index - 1) else {
                continue;
            };
            let (address, check) = match backend.as_str() {
                "cityhub_nodes" => (node.address, String::new()),
                "cityhub_postgres_nodes" => {
                    (node.pg_address, format!(" port {}", node.address.port()))
                }
                _ => (
                    node.flight_address,
                    format!(" port {}", node.address.port()),
                ),
            };
            out.push_str(&format!("    server node{index} {address} check{check}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, http.expect("an HTTP listener"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_from_the_deploy_folder_keeps_serving_when_a_node_stops() {
    let Some(shared) = shared().await else {
        return;
    };
    let haproxy = match support::program_on_path("haproxy") {
        Some(path) => path,
        None => {
            assert!(
                std::env::var("CITYHUB_REQUIRE_HAPROXY").as_deref() != Ok("1"),
                "CITYHUB_REQUIRE_HAPROXY=1 but haproxy is not installed"
            );
            eprintln!("skipped: install haproxy to run the load balancer test");
            return;
        }
    };
    let (a, b) = (node(&shared).await, node(&shared).await);
    let dataset = a.events_dataset("gongan").await;
    let (config, front) = haproxy_config_for(&[&a, &b]);
    let folder = tempfile::tempdir().expect("temp dir");
    let config_path = folder.path().join("haproxy.cfg");
    std::fs::write(&config_path, config).expect("write haproxy.cfg");
    let checked = std::process::Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&config_path)
        .output()
        .expect("haproxy -c");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mut proxy = tokio::process::Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&config_path)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    let client = reqwest::Client::new();
    let push_through = |id: i64| {
        let client = client.clone();
        let url = format!("http://{front}/api/v1/datasets/{dataset}/rows");
        let token = a.admin.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", NDJSON)
                .header("idempotency-key", format!("through-haproxy-{id}"))
                .body(format!("{}\n", json!({"id": id, "kind": "patrol"})))
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
    };
    // Both nodes pass their checks (rise 2 at 1 s) before HAProxy sends them anything.
    time_until(|| async { push_through(0).await == 201 }).await;
    for id in 1..=20 {
        assert_eq!(push_through(id).await, 201, "push {id} through both nodes");
    }
    // One node stops: after its checks fail, every push lands on the other.
    let _ = b.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    for id in 21..=40 {
        assert_eq!(
            push_through(id).await,
            201,
            "push {id} with one node stopped"
        );
    }
    let rows = support::sql_ok(
        &a,
        &a.admin,
        &format!("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM {dataset}"),
    )
    .await;
    assert_eq!(rows, json!([{"n": 41, "ids": 41}]));
    proxy.kill().await.expect("stop haproxy");
}

/// The operator's commands (`token create`, `import`, `sql`, `gc`) with `--config` work on
/// the nodes' PostgreSQL catalog and S3 bucket: a token made there opens a node, rows
/// imported there are read through it, and the machine running them keeps no catalog or
/// objects of its own.
#[tokio::test]
async fn cli_commands_with_config_work_on_the_shared_catalog_and_bucket() {
    let Some(shared) = shared().await else {
        return;
    };
    let node = node(&shared).await;
    node.department("gongan").await;
    let folder = tempfile::tempdir().expect("tempdir");
    let local = folder.path().join("local");
    let config = folder.path().join("cityhub.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\nurl = {:?}\n\n[storage]\nurl = {:?}\ndata_dir = {:?}\n",
            shared.catalog_url,
            shared.storage_url,
            local.display().to_string()
        ),
    )
    .expect("write the configuration");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cityhub"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .expect("run cityhub");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stderr}");
        stdout
    };

    let token = run(&[
        "token",
        "create",
        "--department",
        "gongan",
        "--role",
        "analyst",
    ]);
    let token = token.trim();
    let rows = folder.path().join("rows.csv");
    std::fs::write(&rows, "id,kind\n1,fire\n2,flood\n3,fire\n").expect("write rows");
    run(&[
        "import",
        "gongan.cli_rows",
        rows.to_str().expect("a UTF-8 path"),
        "--create",
    ]);

    let through_node = support::sql_ok(
        &node,
        token,
        "SELECT count(*) AS n FROM gongan.cli_rows WHERE kind = 'fire'",
    )
    .await;
    assert_eq!(through_node, json!([{"n": 2}]));
    let answer = run(&[
        "sql",
        "SELECT count(*) AS n FROM gongan.cli_rows",
        "--format",
        "json",
    ]);
    assert_eq!(answer.trim(), r#"[{"n":3}]"#);
    let dry_run = run(&["gc", "--dry-run"]);
    assert!(!dry_run.is_empty(), "gc says what it would do");

    let kept: Vec<_> = if local.exists() {
        files_below(&local)
    } else {
        Vec::new()
    };
    assert!(
        kept.iter()
            .all(|path| !path.to_string_lossy().contains("catalog.db")
                && !path.to_string_lossy().contains("objects")),
        "the operator's machine keeps no catalog or objects: {kept:?}"
    );
}

/// Camera platforms report to whichever node the load balancer picks: channels registered
/// through one node and kept alive through the other make one registry, and both nodes
/// answer the same status, over the API and in SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_registered_on_one_node_are_kept_alive_through_the_other() {
    let Some(shared) = shared().await else {
        return;
    };
    let a = node(&shared).await;
    let b = node(&shared).await;
    a.department("gongan").await;
    let producer = a.token("gongan", Role::Producer).await;
    let (nvr, live, quiet) = (
        "51102500001180000001",
        "51102500001320000001",
        "51102500001320000002",
    );
    let (status, body) = a
        .post_json(
            &producer,
            "/api/v1/cameras/batch",
            json!([
                {"id": nvr, "name": "资中 NVR", "department": "gongan"},
                {"id": live, "parent_id": nvr, "name": "北街口", "department": "gongan"},
                {"id": quiet, "parent_id": nvr, "name": "东街口", "department": "gongan"}
            ]),
        )
        .await;
    assert_eq!((status, &body["created"]), (200, &json!(3)), "{body}");
    let (status, body) = b
        .post_json(
            &producer,
            "/api/v1/cameras/keepalive",
            json!([{"id": live}]),
        )
        .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    for (name, node) in [("a", &a), ("b", &b)] {
        let (_, camera) = node
            .get(&producer, &format!("/api/v1/cameras/{live}"))
            .await;
        assert_eq!(camera["status"], "online", "node {name}: {camera}");
        let (_, camera) = node
            .get(&producer, &format!("/api/v1/cameras/{quiet}"))
            .await;
        assert_ne!(camera["status"], "online", "node {name}: {camera}");
        let rows = support::sql_ok(
            node,
            &node.admin,
            "SELECT id, status FROM hub.cameras WHERE status = 'online' ORDER BY id",
        )
        .await;
        assert_eq!(
            rows,
            json!([{"id": live, "status": "online"}]),
            "node {name}"
        );
    }
}
