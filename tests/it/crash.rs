//! The kill -9 harness: the real `cityhub serve` binary, killed with SIGKILL at random
//! moments while six clients push with `Idempotency-Key`, a cleaner pushes and deletes junk
//! rows, and compaction runs (by policy every second, and on demand). After each restart:
//! every acknowledged row is there exactly once, every push is all or nothing, and a keyed
//! retry of a push whose answer was lost lands exactly once. A corrector upserts into a
//! keyed dataset meanwhile: after each restart every key is there once, holding the value of
//! the last push that touched it. At the end, garbage collection past the orphan grace
//! leaves no orphan file and no committed file missing.
//!
//! `CITYHUB_CRASH_CYCLES` sets the number of kills (10 by default; the benchmark run uses
//! 100). The kill moments come from a fixed seed, so a failure can be replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cityhub_catalog::token::Token;
use cityhub_catalog::{NewPrincipal, Role};
use cityhub_config::Config;
use cityhub_server::AppState;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ROWS_PER_PUSH: i64 = 10;
const CLIENTS: i64 = 6;

/// What the clients know: pushes acknowledged, and pushes whose answer was lost.
#[derive(Default)]
struct Ledger {
    acknowledged: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
}

/// What the corrector knows: per key of `gongan.crash_keyed`, the last acknowledged push
/// that wrote it; and the push whose answer was lost (it stops at the first).
#[derive(Default)]
struct Corrections {
    last: BTreeMap<i64, i64>,
    lost: Option<i64>,
    acknowledged: usize,
}

const KEYS: i64 = 40;

/// Correction `c` writes keys 7c .. 7c + 4 (mod 40) with version `c`.
fn correction_keys(c: i64) -> impl Iterator<Item = i64> {
    (0..5).map(move |j| (c * 7 + j) % KEYS)
}

async fn correct(client: &reqwest::Client, base: &str, token: &str, c: i64) -> Option<u16> {
    let body: String = correction_keys(c)
        .map(|id| format!("{{\"id\": {id}, \"version\": {c}}}\n"))
        .collect();
    let response = client
        .post(format!("{base}/api/v1/datasets/gongan.crash_keyed/rows"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", format!("fix-{c}"))
        .body(body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok()?;
    Some(status)
}

/// Retries the lost correction with its key, then checks: one row per key, each holding the
/// version of the last push that wrote it.
async fn check_corrections(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    admin: &str,
    corrections: &Mutex<Corrections>,
) {
    let lost = corrections.lock().expect("corrections").lost.take();
    if let Some(c) = lost {
        let status = correct(client, base, token, c).await;
        assert!(
            acknowledged(status),
            "the keyed retry of correction {c}: {status:?}"
        );
        let mut known = corrections.lock().expect("corrections");
        known.acknowledged += 1;
        for id in correction_keys(c) {
            known.last.insert(id, c);
        }
    }
    let rows = sql(
        client,
        base,
        admin,
        "SELECT id, count(*) AS n, max(version) AS version FROM gongan.crash_keyed GROUP BY id",
    )
    .await;
    let mut stored = BTreeMap::new();
    for row in rows.as_array().expect("rows") {
        let id = row["id"].as_i64().expect("id");
        assert_eq!(row["n"], 1, "key {id} is there {} times", row["n"]);
        stored.insert(id, row["version"].as_i64().expect("version"));
    }
    assert_eq!(stored, corrections.lock().expect("corrections").last);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The shared catalog and bucket of a multi-node hub (PostgreSQL and S3), or `None` for
/// the embedded default (SQLite and the data folder).
type Backend = Option<crate::cluster::Shared>;

fn serve(data: &std::path::Path, port: u16, backend: &Backend) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cityhub"));
    if let Some(shared) = backend {
        command
            .env("CITYHUB__CATALOG__URL", &shared.catalog_url)
            .env("CITYHUB__STORAGE__URL", &shared.storage_url);
    }
    command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("CITYHUB__COMPACTION__INTERVAL_SECS", "1")
        .env("CITYHUB__COMPACTION__MIN_SMALL_FILES", "4")
        .env("CITYHUB__RETENTION__GC_INTERVAL_SECS", "1")
        .env("CITYHUB__RETENTION__ORPHAN_GRACE_SECS", "60")
        .env("CITYHUB__LOG__LEVEL", "error")
        // Only the HTTP door: the other doors' fixed default ports may be taken by a test
        // running beside this one.
        .env("CITYHUB__SERVER__PG_BIND", "")
        .env("CITYHUB__SERVER__FLIGHT_BIND", "")
        // Six clients push as fast as they can: the per-token limit would answer 429.
        .env("CITYHUB__SERVER__RATE_LIMIT_PER_SECOND", "0")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cityhub serve")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..1200 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the hub did not come up at {base}");
}

/// The body of push `push`: ids push*10 .. push*10+9.
fn body_of(push: i64) -> String {
    (0..ROWS_PER_PUSH)
        .map(|i| {
            format!(
                "{{\"id\": {}, \"kind\": \"data\"}}\n",
                push * ROWS_PER_PUSH + i
            )
        })
        .collect()
}

/// One keyed push: its status (200 replayed, 201 committed, anything else a test failure),
/// `None` when the answer was lost.
async fn push(client: &reqwest::Client, base: &str, token: &str, push: i64) -> Option<u16> {
    let response = client
        .post(format!("{base}/api/v1/datasets/gongan.crash/rows"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", format!("push-{push}"))
        .body(body_of(push))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok()?;
    Some(status)
}

fn acknowledged(status: Option<u16>) -> bool {
    matches!(status, Some(200 | 201))
}

async fn sql(client: &reqwest::Client, base: &str, token: &str, sql: &str) -> Value {
    let response = client
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(sql.to_string())
        .send()
        .await
        .expect("sql");
    assert!(response.status().is_success(), "{sql}");
    response.json().await.expect("json")
}

/// Every acknowledged push is there whole and once; any other push whole or not at all.
async fn check_rows(client: &reqwest::Client, base: &str, token: &str, ledger: &Mutex<Ledger>) {
    let acknowledged = ledger.lock().expect("ledger").acknowledged.clone();
    let rows = sql(
        client,
        base,
        token,
        "SELECT id, count(*) AS n FROM gongan.crash WHERE kind = 'data' GROUP BY id",
    )
    .await;
    let mut per_push: BTreeMap<i64, i64> = BTreeMap::new();
    for row in rows.as_array().expect("rows") {
        let (id, n) = (
            row["id"].as_i64().expect("id"),
            row["n"].as_i64().expect("n"),
        );
        assert_eq!(n, 1, "id {id} is there {n} times");
        *per_push.entry(id / ROWS_PER_PUSH).or_default() += 1;
    }
    for (push, rows) in &per_push {
        assert_eq!(
            *rows, ROWS_PER_PUSH,
            "push {push} is there in part: {rows} rows"
        );
    }
    for push in &acknowledged {
        assert!(
            per_push.contains_key(push),
            "acknowledged push {push} is lost"
        );
    }
}

fn cycles(default: usize) -> usize {
    std::env::var("CITYHUB_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_survive_kill_9_exactly_once() {
    kill_9_harness(cycles(10), None).await;
}

/// The same on a PostgreSQL catalog and an S3 bucket, as the nodes of a cluster run: what a
/// node acknowledged is committed in PostgreSQL and its files are in the bucket, whatever
/// moment it dies at. Fewer kills than on SQLite: the harness is the same, the durability
/// is PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_survive_kill_9_on_postgres_and_s3() {
    let Some(shared) = crate::cluster::shared().await else {
        return;
    };
    kill_9_harness(cycles(4), Some(shared)).await;
}

async fn kill_9_harness(cycles: usize, backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut config = Config::default();
    config.storage.data_dir = data.display().to_string();
    if let Some(shared) = &backend {
        config.catalog.url = shared.catalog_url.clone();
        config.storage.url = shared.storage_url.clone();
    }
    let token = Token::generate();
    let admin = Token::generate();
    {
        let state = AppState::open(config.clone()).await.expect("open");
        state
            .catalog
            .create_department("gongan", "公安局")
            .await
            .expect("dept");
        state
            .catalog
            .create_principal(
                NewPrincipal {
                    name: "crash-producer".into(),
                    department: "gongan".into(),
                    role: Role::Producer,
                    expires_at: None,
                    rate_limit_per_second: None,
                    region: None,
                },
                &token.hash,
            )
            .await
            .expect("principal");
        state
            .catalog
            .create_principal(
                NewPrincipal {
                    name: "crash-checker".into(),
                    department: "admin".into(),
                    role: Role::Admin,
                    expires_at: None,
                    rate_limit_per_second: None,
                    region: None,
                },
                &admin.hash,
            )
            .await
            .expect("principal");
        let spec = json!({"name": "gongan.crash", "sharing": "none", "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "kind", "type": "string", "nullable": false}]});
        let new = serde_json::from_value(spec).expect("spec");
        state.catalog.create_dataset(new).await.expect("dataset");
        let spec = json!({"name": "gongan.crash_keyed", "sharing": "none",
            "primary_key": ["id"], "columns": [
            {"name": "id", "type": "int64", "nullable": false},
            {"name": "version", "type": "int64", "nullable": false}]});
        let new = serde_json::from_value(spec).expect("spec");
        state
            .catalog
            .create_dataset(new)
            .await
            .expect("keyed dataset");
    }
    let (token, admin) = (token.plaintext, admin.plaintext);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(28181);
    let mut next_push = vec![0i64; CLIENTS as usize];
    let mut retried = 0;
    let corrections = Arc::new(Mutex::new(Corrections::default()));
    let mut next_correction = 0i64;
    for cycle in 0..cycles {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = serve(&data, port, &backend);
        wait_ready(&client, &base).await;
        // Pushes whose answer was lost are retried first, with their key: exactly once.
        let unknown: Vec<i64> = std::mem::take(&mut ledger.lock().expect("ledger").unknown)
            .into_iter()
            .collect();
        retried += unknown.len();
        for lost in unknown {
            let status = push(&client, &base, &token, lost).await;
            assert!(
                acknowledged(status),
                "the keyed retry of push {lost} after restart {cycle}: {status:?}"
            );
            ledger.lock().expect("ledger").acknowledged.insert(lost);
        }
        check_rows(&client, &base, &admin, &ledger).await;
        check_corrections(&client, &base, &token, &admin, &corrections).await;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for writer in 0..CLIENTS {
            let (client, base, token, ledger, stop) = (
                client.clone(),
                base.clone(),
                token.clone(),
                ledger.clone(),
                stop.clone(),
            );
            let mut next = next_push[writer as usize];
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Client w pushes w, w + 6, w + 12...: keys never collide.
                    let id = next * CLIENTS + writer;
                    next += 1;
                    match push(&client, &base, &token, id).await {
                        Some(200 | 201) => ledger.lock().expect("ledger").acknowledged.insert(id),
                        Some(status) => panic!("push {id} was answered {status}"),
                        None => {
                            ledger.lock().expect("ledger").unknown.insert(id);
                            break;
                        }
                    };
                }
                next
            }));
        }
        // The corrector: upserts into the keyed dataset until an answer is lost.
        let corrector = {
            let (client, base, token, stop, corrections) = (
                client.clone(),
                base.clone(),
                token.clone(),
                stop.clone(),
                corrections.clone(),
            );
            let mut next = next_correction;
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = next;
                    next += 1;
                    match correct(&client, &base, &token, c).await {
                        Some(200 | 201) => {
                            let mut known = corrections.lock().expect("corrections");
                            known.acknowledged += 1;
                            for id in correction_keys(c) {
                                known.last.insert(id, c);
                            }
                        }
                        Some(status) => panic!("correction {c} was answered {status}"),
                        None => {
                            corrections.lock().expect("corrections").lost = Some(c);
                            break;
                        }
                    }
                }
                next
            })
        };
        // The cleaner: junk rows pushed and deleted again; compactions on demand.
        let cleaner = {
            let (client, base, token, stop) =
                (client.clone(), base.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut round = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    round += 1;
                    let url = format!("{base}/api/v1/datasets/gongan.crash");
                    let _ = client
                        .post(format!("{url}/rows"))
                        .bearer_auth(&token)
                        .header("content-type", "application/x-ndjson")
                        .body(format!("{{\"id\": {}, \"kind\": \"junk\"}}\n", -round))
                        .send()
                        .await;
                    let _ = client
                        .post(format!("{url}/deletes"))
                        .bearer_auth(&token)
                        .json(&json!({"where": "kind = 'junk'"}))
                        .send()
                        .await;
                    let _ = client
                        .post(format!("{url}/compact"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (writer, task) in tasks.into_iter().enumerate() {
            next_push[writer] = task.await.expect("writer");
        }
        cleaner.await.expect("cleaner");
        next_correction = corrector.await.expect("corrector");
    }

    // A last start: retries, checks, then garbage collection as of two hours later.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(&data, port, &backend);
    wait_ready(&client, &base).await;
    let unknown: Vec<i64> = std::mem::take(&mut ledger.lock().expect("ledger").unknown)
        .into_iter()
        .collect();
    for lost in unknown {
        let status = push(&client, &base, &token, lost).await;
        assert!(
            acknowledged(status),
            "the keyed retry of push {lost}: {status:?}"
        );
        ledger.lock().expect("ledger").acknowledged.insert(lost);
    }
    check_rows(&client, &base, &admin, &ledger).await;
    check_corrections(&client, &base, &token, &admin, &corrections).await;
    let acknowledged = ledger.lock().expect("ledger").acknowledged.len();
    assert!(
        acknowledged >= cycles,
        "only {acknowledged} pushes acknowledged in {cycles} cycles"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let state = AppState::open(config).await.expect("open");
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let retention = state.retention.clone();
    state
        .ingest
        .collect_garbage(None, &retention, later, false)
        .await
        .expect("gc");
    let mut known_files = 0;
    for name in ["gongan.crash", "gongan.crash_keyed"] {
        known_files += check_files(&state, name).await;
    }
    println!(
        "crash harness: {cycles} kills, {acknowledged} acknowledged pushes ({retried} retried \
         with their key after a kill), {} keyed corrections, {known_files} files known",
        corrections.lock().expect("corrections").acknowledged
    );
}

/// After garbage collection: the objects under `name`'s folder are exactly the files its
/// catalog entry knows (no orphan, nothing committed missing). Returns how many.
async fn check_files(state: &AppState, name: &str) -> usize {
    let name = cityhub_catalog::DatasetName::parse(name).expect("name");
    let dataset = state
        .catalog
        .dataset(&name)
        .await
        .expect("q")
        .expect("dataset");
    let known: BTreeSet<String> = state
        .catalog
        .file_paths(dataset.id)
        .await
        .expect("paths")
        .into_iter()
        .collect();
    let stored: BTreeSet<String> = state
        .ingest
        .storage()
        .list(&format!("datasets/{}/", dataset.id))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    let orphans: Vec<_> = stored.difference(&known).collect();
    assert!(orphans.is_empty(), "{name}: orphans after gc: {orphans:?}");
    let missing: Vec<_> = known.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{name}: committed files missing: {missing:?}"
    );
    known.len()
}
