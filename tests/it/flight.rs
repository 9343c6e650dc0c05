//! The Arrow Flight SQL door end to end, with real clients from PyPI (installed by
//! `.ci/run`): the ADBC Flight SQL driver, pandas over ADBC, and pyarrow.flight. The Python
//! side lives in `flight_client.py`; each scenario asserts and prints what it saw.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    Fixture, TestServer, audit_entries, fixture, listed_only_readable, sql_ok, sql_status,
};

async fn client(server: &TestServer, scenario: &str, token: &str, env: &[(&str, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/flight_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(scenario)
        .env("CITYHUB_FLIGHT", server.flight_address.to_string())
        .env("CITYHUB_TOKEN", token)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .await
        .expect("python3 runs (pip install pyarrow adbc-driver-flightsql pandas)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "flight_client.py {scenario} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|err| {
        panic!("flight_client.py {scenario} printed no JSON ({err}): {stdout}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_and_pandas_read_what_http_reads() {
    let Fixture { server, analyst } = fixture().await;
    let expected = json!({
        "from_2": sql_ok(&server, &analyst, "SELECT id, kind, phone FROM gongan.events WHERE id >= 2 ORDER BY id").await,
        "patrol": sql_ok(&server, &analyst, "SELECT id, phone FROM gongan.events WHERE kind = 'patrol' ORDER BY id").await,
    });
    // Another department's phones are masked over HTTP, and so over Flight.
    assert_eq!(expected["patrol"][0]["phone"], "180****1999", "{expected}");
    let seen = client(
        &server,
        "adbc_queries",
        &analyst,
        &[("CITYHUB_EXPECTED", expected.to_string())],
    )
    .await;
    let (status, http) = sql_status(&server, &analyst, "SELECT * FROM gongan.people").await;
    assert_eq!(status, 403);
    let refusal = http["error"]["message"].as_str().expect("message");
    assert!(
        seen["refused"].as_str().unwrap_or("").contains(refusal),
        "{seen} does not carry {refusal}"
    );
    // GetTables lists what the caller may read: not the conditional dataset without a
    // grant, not the one shared with nobody.
    let listed = listed_only_readable(&seen["listed"]);
    assert!(
        listed.iter().any(|name| name == "hub.regions"),
        "{listed:?}"
    );
    assert_eq!(seen["columns"][0], "id", "{seen}");
    // GetSqlInfo, as ADBC and JDBC ask it.
    assert_eq!(seen["vendor"], "cityhub", "{seen}");
    assert_eq!(
        seen["frame"],
        json!([{"kind": "fire", "n": 1}, {"kind": "patrol", "n": 2}, {"kind": "traffic", "n": 1}]),
        "{seen}"
    );

    // Audited with the door it came through, counted per door.
    let entries = audit_entries(&server).await;
    let flight_queries: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "query" && entry["detail"]["via"] == "flight")
        .collect();
    assert!(
        flight_queries.iter().any(|e| e["outcome"] == "ok"),
        "{flight_queries:?}"
    );
    assert!(
        flight_queries.iter().any(|e| e["outcome"] == "refused"),
        "{flight_queries:?}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_queries_total{via=\"flight\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_shakes_hands_with_the_token_and_reads_masked_rows() {
    let Fixture { server, analyst } = fixture().await;
    let seen = client(&server, "pyarrow_direct", &analyst, &[]).await;
    let http = sql_ok(
        &server,
        &analyst,
        "SELECT id, phone FROM gongan.events ORDER BY id",
    )
    .await;
    assert_eq!(seen["rows"], http, "{seen}");
    assert!(
        seen["unauthenticated"]
            .as_str()
            .unwrap_or("")
            .contains("Bearer"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_the_statement() {
    let Fixture { server, analyst } = fixture().await;
    let seen = client(&server, "cancel", &analyst, &[]).await;
    assert!(
        seen["cancelled"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled"),
        "{seen}"
    );
    // Dropping the engine's stream ended the work, and the audit says so.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(server.state.query.running_queries(), 0);
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|entry| entry["action"] == "query"
                && entry["outcome"] == "cancelled"
                && entry["detail"]["via"] == "flight"),
        "{audit}"
    );
}
