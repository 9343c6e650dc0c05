//! The PostgreSQL door end to end, with real clients: psql (Debian's postgresql-client)
//! and psycopg 3 (PyPI), both installed by `.ci/run`. The psycopg side lives in
//! `pg_client.py`; each scenario asserts what it expects and prints what it saw.

use std::path::Path;

use cityhub_catalog::Role;
use serde_json::{Value, json};

use crate::support::{
    Fixture, TestServer, audit_entries, fixture, fixture_with, listed_only_readable, sql_ok,
};

/// Runs one scenario of `pg_client.py` as `token`; its JSON line, or the test fails with
/// the script's words.
async fn psycopg(
    server: &TestServer,
    scenario: &str,
    token: &str,
    env: &[(&str, String)],
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/pg_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(scenario)
        .env("PGHOST", server.pg_address.ip().to_string())
        .env("PGPORT", server.pg_address.port().to_string())
        .env("CITYHUB_TOKEN", token)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .await
        .expect("python3 runs (psycopg 3: pip install 'psycopg[binary]')");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pg_client.py {scenario} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("pg_client.py {scenario} printed no JSON ({err}): {stdout}"))
}

/// Runs psql with `commands` (each a `-c`), unaligned and tuples-only; stdout and stderr.
async fn psql(
    server: &TestServer,
    token: &str,
    commands: &[&str],
    extra: &[&str],
) -> (bool, String, String) {
    let mut command = tokio::process::Command::new("psql");
    command
        .arg(format!(
            "host={} port={} dbname=cityhub user=psql-user sslmode=disable",
            server.pg_address.ip(),
            server.pg_address.port()
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .args(extra)
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "10");
    for sql in commands {
        command.arg("-c").arg(sql);
    }
    let output = command
        .output()
        .await
        .expect("psql runs (Debian: apt-get install postgresql-client)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What HTTP answers, as rows of the named columns.
async fn http_rows(
    server: &TestServer,
    token: &str,
    sql: &str,
    columns: &[&str],
) -> Vec<Vec<Value>> {
    sql_ok(server, token, sql)
        .await
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| columns.iter().map(|column| row[*column].clone()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_answers_equal_http_with_the_same_masks_and_refusals() {
    let Fixture { server, analyst } = fixture().await;
    let from_2 = http_rows(
        &server,
        &analyst,
        "SELECT id, kind, phone FROM gongan.events WHERE id >= 2 ORDER BY id",
        &["id", "kind", "phone"],
    )
    .await;
    let patrol = http_rows(
        &server,
        &analyst,
        "SELECT id, phone FROM gongan.events WHERE kind = 'patrol' ORDER BY id",
        &["id", "phone"],
    )
    .await;
    // The analyst's department does not own the phones: HTTP shows them masked.
    assert_eq!(patrol[0][1], json!("180****1999"), "{patrol:?}");
    let expected = json!({
        "from_2": from_2,
        "patrol_ids": patrol.iter().map(|row| row[0].clone()).collect::<Vec<_>>(),
        "patrol_phones": patrol.iter().map(|row| row[1].clone()).collect::<Vec<_>>(),
        "total": 4,
    });
    let seen = psycopg(
        &server,
        "queries",
        &analyst,
        &[("CITYHUB_EXPECTED", expected.to_string())],
    )
    .await;
    // The refusal is HTTP's, word for word.
    let (status, http) =
        crate::support::sql_status(&server, &analyst, "SELECT * FROM gongan.people").await;
    assert_eq!(status, 403);
    assert_eq!(
        seen["refused"], http["error"]["message"],
        "{seen} vs {http}"
    );

    // Audited like HTTP, with the door and the client's user name.
    let entries = audit_entries(&server).await;
    let pg_queries: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "query" && entry["detail"]["via"] == "pg")
        .collect();
    assert!(
        pg_queries.iter().any(|entry| entry["outcome"] == "ok"
            && entry["detail"]["client_user"] == "pytest-analyst"
            && entry["detail"]["sql"]
                .as_str()
                .unwrap_or("")
                .contains("gongan.events")),
        "{pg_queries:?}"
    );
    assert!(
        pg_queries.iter().any(|entry| entry["outcome"] == "refused"
            && entry["detail"]["sql"]
                .as_str()
                .unwrap_or("")
                .contains("gongan.people")),
        "{pg_queries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|entry| entry["action"] == "query" && entry["detail"]["via"] == "http"),
        "HTTP queries say so too"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_queries_total{via=\"pg\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cityhub_queries_total{via=\"http\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_and_describes_only_what_the_caller_may_read() {
    let Fixture { server, analyst } = fixture().await;
    let (ok, tables, stderr) = psql(&server, &analyst, &["\\dt gongan.*"], &[]).await;
    assert!(ok, "{stderr}");
    assert!(tables.contains("gongan|events|table"), "{tables}");
    // Conditional without a grant and shared with nobody: not listed.
    assert!(!tables.contains("people"), "{tables}");
    assert!(!tables.contains("informants"), "{tables}");

    let (ok, described, stderr) = psql(&server, &analyst, &["\\d gongan.events"], &[]).await;
    assert!(ok, "{stderr}");
    for column in ["id|bigint", "kind|text", "phone|text", "at|timestamp"] {
        assert!(described.contains(column), "{column} in:\n{described}");
    }

    let (ok, schemas, stderr) = psql(&server, &analyst, &["\\dn"], &[]).await;
    assert!(ok, "{stderr}");
    assert!(schemas.contains("gongan"), "{schemas}");
    assert!(schemas.contains("hub"), "{schemas}");

    // A query's rows equal HTTP's, masks included.
    let (ok, rows, stderr) = psql(
        &server,
        &analyst,
        &["SELECT id, phone FROM gongan.events ORDER BY id"],
        &[],
    )
    .await;
    assert!(ok, "{stderr}");
    let http: Vec<String> = http_rows(
        &server,
        &analyst,
        "SELECT id, phone FROM gongan.events ORDER BY id",
        &["id", "phone"],
    )
    .await
    .iter()
    .map(|row| format!("{}|{}", row[0], row[1].as_str().unwrap_or("")))
    .collect();
    assert_eq!(rows.lines().collect::<Vec<_>>(), http, "{rows}");

    // Refusals carry their SQLSTATE and HTTP's message.
    let (ok, _, stderr) = psql(&server, &analyst, &["SELECT * FROM gongan.people"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("42501"), "{stderr}");
    assert!(stderr.contains("share-requests"), "{stderr}");
    let (ok, _, stderr) = psql(&server, &analyst, &["DROP TABLE gongan.events"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("0A000"), "{stderr}");
    let (ok, _, stderr) = psql(&server, &analyst, &["SELECT * FROM gongan.informants"], &[]).await;
    assert!(!ok, "a dataset shared with nobody was read");
    assert!(
        !stderr.contains("42501"),
        "its existence must not show: {stderr}"
    );

    // A wrong password ends the login with 28P01.
    let (ok, _, stderr) = psql(&server, "wrong-token", &["SELECT 1"], &[]).await;
    assert!(!ok);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_through_a_server_side_cursor() {
    let Fixture { server, analyst } = fixture().await;
    let seen = psycopg(&server, "big_cursor", &analyst, &[]).await;
    assert_eq!(seen["rows"], 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_statement_and_is_audited() {
    let Fixture { server, analyst } = fixture().await;
    let seen = psycopg(&server, "cancel", &analyst, &[]).await;
    assert!(
        seen["cancelled"]
            .as_str()
            .unwrap_or("")
            .contains("user request"),
        "{seen}"
    );
    // The engine's stream was dropped: nothing keeps running, and the audit says so.
    assert_eq!(server.state.query.running_queries(), 0);
    let entries = audit_entries(&server).await;
    assert!(
        entries.iter().any(|entry| entry["action"] == "query"
            && entry["outcome"] == "cancelled"
            && entry["detail"]["via"] == "pg"),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_time_limit_holds_on_the_postgresql_door() {
    let Fixture { server, analyst } = fixture_with(|config| config.query.timeout_secs = 1).await;
    let seen = psycopg(&server, "timeout", &analyst, &[]).await;
    assert!(
        seen["timeout"].as_str().unwrap_or("").contains("1 s"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_holds_on_the_postgresql_door() {
    let Fixture { server, analyst } =
        fixture_with(|config| config.query.memory_limit_bytes = 1024 * 1024).await;
    let seen = psycopg(&server, "memory", &analyst, &[]).await;
    assert!(
        seen["memory"]
            .as_str()
            .unwrap_or("")
            .contains("more memory"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_say_why_and_close() {
    let Fixture { server, analyst } = fixture().await;
    let producer = server.token("gongan", Role::Producer).await;
    let revoked = server.token("minzheng", Role::Analyst).await;
    let id = server
        .state
        .sharing
        .authenticate(&revoked)
        .await
        .expect("a valid token")
        .id;
    let (status, body) = server
        .delete(&server.admin, &format!("/api/v1/tokens/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = psycopg(
        &server,
        "refused_logins",
        &analyst,
        &[
            ("CITYHUB_OTHER_TOKEN", producer),
            ("CITYHUB_REVOKED_TOKEN", revoked),
        ],
    )
    .await;
    assert!(
        seen["wrong_token"]
            .as_str()
            .unwrap_or("")
            .contains("cityhub token"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_and_superset_probes_answer_over_the_wire() {
    let Fixture { server, analyst } = fixture().await;
    let seen = psycopg(&server, "probes", &analyst, &[]).await;
    let schemas = seen["schemas"].as_array().expect("schemas");
    assert!(schemas.contains(&json!("gongan")), "{seen}");
    let tables = seen["tables"].as_array().expect("tables");
    assert_eq!(tables, &vec![json!("events")], "{seen}");
    listed_only_readable(&seen["listed"]);
    assert_eq!(seen["show"], json!([["read committed"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_configured_certificate() {
    let folder = tempfile::tempdir().expect("temp dir");
    let cert = folder.path().join("server.crt");
    let key = folder.path().join("server.key");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
    let Fixture { server, analyst } = fixture_with(move |config| {
        config.server.pg_tls_cert = cert_path;
        config.server.pg_tls_key = key_path;
    })
    .await;
    let mut command = tokio::process::Command::new("psql");
    let output = command
        .arg(format!(
            "host={} port={} dbname=cityhub user=tls sslmode=require",
            server.pg_address.ip(),
            server.pg_address.port()
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM gongan.events"])
        .env("PGPASSWORD", &analyst)
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_rate_limit_holds_on_the_postgresql_door() {
    let Fixture { server, .. } = fixture_with(|config| {
        config.server.rate_limit_per_second = 1000;
        config.server.rate_limit_burst = 3;
    })
    .await;
    // A token of its own rate: one statement a second, three at once.
    let token = server
        .token_with_rate("minzheng", Role::Analyst, Some(1))
        .await;
    let seen = psycopg(&server, "rate_limited", &token, &[]).await;
    let answered = seen["answered"].as_u64().expect("answered");
    assert!((1..=4).contains(&answered), "{seen}");
}
