//! Dashboard endpoints end to end: definitions and versions, typed parameters (and
//! injection attempts), ETag/304 across commits, precise invalidation, single flight,
//! server-sent events and who may call what.

use crate::support;
use std::time::Duration;

use crate::support::{EventReader, TestServer};
use cityhub_catalog::Role;
use futures::StreamExt;
use serde_json::{Value, json};

/// A hub with `zhili.events` and `zhili.other`, and a zhili analyst's token.
async fn hub() -> (TestServer, String) {
    let server = TestServer::spawn_with(|config| {
        config.endpoints.debounce_ms = 20;
        config.endpoints.heartbeat_secs = 1;
    })
    .await;
    server.events_dataset("zhili").await;
    server.department("jiaotong").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            support::events_spec("zhili.other"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let analyst = server.token("zhili", Role::Analyst).await;
    push(
        &server,
        "zhili.events",
        &[(1, "fire"), (2, "flood"), (3, "fire")],
    )
    .await;
    (server, analyst)
}

async fn push(server: &TestServer, dataset: &str, rows: &[(i64, &str)]) {
    let body: String = rows
        .iter()
        .map(|(id, kind)| {
            format!(
                "{}\n",
                json!({"id": id, "kind": kind, "phone": "18012341999"})
            )
        })
        .collect();
    let (status, answer) = server
        .push(&server.admin, dataset, "application/x-ndjson", body)
        .await;
    assert_eq!(status, 201, "{answer}");
}

/// Kinds with their counts, the kind optionally filtered by a text parameter.
fn by_kind() -> Value {
    json!({
        "sql": "SELECT kind, count(*) AS n FROM zhili.events WHERE id >= $min_id GROUP BY kind ORDER BY kind",
        "params": [{"name": "min_id", "type": "int", "default": 0, "min": 0, "max": 1000000}],
        "max_age_s": 7,
        "allowed_departments": ["jiaotong"]
    })
}

async fn save(server: &TestServer, token: &str, name: &str, spec: Value) -> (u16, Value) {
    server
        .put_json(token, &format!("/api/v1/endpoints/{name}"), spec)
        .await
}

struct Answer {
    status: u16,
    etag: Option<String>,
    cache_control: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(server: &TestServer, token: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = server.client.get(server.url(path)).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        status: response.status().as_u16(),
        etag: header("etag"),
        cache_control: header("cache-control"),
        content_type: header("content-type"),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

async fn executions(server: &TestServer, token: &str, name: &str) -> u64 {
    let (status, body) = server
        .get(token, &format!("/api/v1/endpoints/{name}/definition"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["executions"].as_u64().expect("executions")
}

#[tokio::test]
async fn definitions_are_checked_versioned_and_owned() {
    let (server, analyst) = hub().await;
    let (status, body) = save(&server, &analyst, "kinds", by_kind()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["owner"], "zhili");
    assert_eq!(body["sources"], json!(["zhili.events"]));
    let (status, body) = save(&server, &analyst, "kinds", by_kind()).await;
    assert_eq!((status, body["saved"].as_str()), (200, Some("unchanged")));
    let mut changed = by_kind();
    changed["max_age_s"] = json!(30);
    let (status, body) = save(&server, &analyst, "kinds", changed).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");

    // Each mistake is a 400 naming what is wrong, and nothing is saved.
    let bad = |patch: Value| {
        let mut spec = by_kind();
        for (key, value) in patch.as_object().expect("object") {
            spec[key] = value.clone();
        }
        spec
    };
    let cases = [
        (
            bad(json!({"params": []})),
            "$min_id is in the SQL but not declared",
        ),
        (
            bad(
                json!({"params": [{"name": "min_id", "type": "int"}, {"name": "unused", "type": "text"}]}),
            ),
            "params[1] (unused) is declared but the SQL has no $unused",
        ),
        (
            bad(json!({"params": [{"name": "min_id", "type": "integer"}]})),
            "params[0].type",
        ),
        (
            bad(json!({"params": [{"name": "min_id", "type": "int", "default": "zero"}]})),
            "params[0].default",
        ),
        (
            bad(json!({"params": [{"name": "min_id", "type": "int", "min": 5, "default": 1}]})),
            "params[0].default: must be at least 5",
        ),
        (bad(json!({"max_age_s": 100000})), "max_age_s"),
        (
            bad(json!({"stale_while_revalidate_s": 0})),
            "stale_while_revalidate_s",
        ),
        (bad(json!({"colour": "red"})), "colour"),
        (
            bad(json!({"allowed_departments": ["nobody"]})),
            "allowed_departments[0]",
        ),
        (
            bad(json!({"sql": "SELECT * FROM zhili.events WHERE id = $1", "params": []})),
            "name their parameters",
        ),
        (
            bad(json!({"sql": "SELECT * FROM zhili.nothing_here", "params": []})),
            "nothing_here",
        ),
        (bad(json!({"sql": "", "params": []})), "sql"),
    ];
    for (spec, expected) in cases {
        let (status, body) = save(&server, &analyst, "broken", spec.clone()).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            (400..500).contains(&status) && message.contains(expected),
            "{spec}: {status} {body}"
        );
    }
    let (status, body) = save(
        &server,
        &analyst,
        "broken",
        json!({"sql": "DROP TABLE zhili.events"}),
    )
    .await;
    assert!(status == 400 || status == 403, "{status} {body}");
    let (status, _) = server
        .get(&analyst, "/api/v1/endpoints/broken/definition")
        .await;
    assert_eq!(status, 404);
    let (status, body) = save(&server, &analyst, "Bad Name", by_kind()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = save(&server, &analyst, "bad.name", by_kind()).await;
    assert_eq!(status, 400, "{body}");
    let response = server
        .client
        .put(server.url("/api/v1/endpoints/plain"))
        .bearer_auth(&analyst)
        .body(by_kind().to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 415, "the definition is JSON");
    let (status, body) = save(&server, &analyst, "array", json!([by_kind()])).await;
    assert_eq!(status, 400, "{body}");

    // Owners: another department cannot change it, a dashboard token cannot save, an
    // admin must name the owner of a new endpoint and may hand one over.
    server.department("gongan").await;
    let stranger = server.token("gongan", Role::Analyst).await;
    let (status, body) = save(&server, &stranger, "kinds", by_kind()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to department zhili")
    );
    let screen = server.token("zhili", Role::Dashboard).await;
    let (status, _) = save(&server, &screen, "kinds2", by_kind()).await;
    assert_eq!(status, 403);
    let (status, body) = save(&server, &server.admin, "kinds3", by_kind()).await;
    assert_eq!(status, 400, "{body}");
    let mut owned = by_kind();
    owned["owner"] = json!("zhili");
    let (status, body) = save(&server, &server.admin, "kinds3", owned).await;
    assert_eq!(
        (status, body["owner"].as_str()),
        (201, Some("zhili")),
        "{body}"
    );

    let (status, body) = server
        .get(&analyst, "/api/v1/endpoints/kinds/definition")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["max_age_s"], 30);
    let (status, body) = server.get(&analyst, "/api/v1/endpoints").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["endpoints"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, vec!["kinds", "kinds3"]);
}

#[tokio::test]
async fn parameters_are_typed_values_never_sql_text() {
    let (server, analyst) = hub().await;
    let spec = json!({
        "sql": "SELECT id, kind FROM zhili.events WHERE kind = $kind AND id <= $max_id ORDER BY id",
        "params": [
            {"name": "kind", "type": "text"},
            {"name": "max_id", "type": "int", "default": 100, "min": 1, "max": 1000}
        ]
    });
    let (status, body) = save(&server, &analyst, "of_kind", spec).await;
    assert_eq!(status, 201, "{body}");

    let answer = call(
        &server,
        &analyst,
        "/api/v1/endpoints/of_kind?kind=fire",
        &[],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!([{"id": 1, "kind": "fire"}, {"id": 3, "kind": "fire"}])
    );
    let answer = call(
        &server,
        &analyst,
        "/api/v1/endpoints/of_kind?kind=fire&max_id=2",
        &[],
    )
    .await;
    assert_eq!(answer.json(), json!([{"id": 1, "kind": "fire"}]));

    // Injection attempts are values that match nothing.
    for attack in [
        "fire' OR '1'='1",
        "fire'; DROP TABLE zhili.events; --",
        "' UNION SELECT 1, name FROM hub.datasets --",
        "$max_id",
    ] {
        let encoded: String = attack
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let answer = server
            .client
            .get(server.url(&format!("/api/v1/endpoints/of_kind?kind={encoded}")))
            .bearer_auth(&analyst)
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status(), 200, "{attack}");
        let rows: Value = answer.json().await.expect("json");
        assert_eq!(rows, json!([]), "{attack}");
    }
    // Wrong types, bounds, unknown and repeated parameters are 400s naming the parameter.
    for (query, expected) in [
        (
            "kind=fire&max_id=1%20OR%201%3D1",
            "max_id (int): must be a whole number",
        ),
        ("kind=fire&max_id=0", "max_id (int): must be at least 1"),
        (
            "kind=fire&max_id=5000",
            "max_id (int): must be at most 1000",
        ),
        ("", "kind (text): is required"),
        (
            "kind=fire&colour=red",
            "colour: endpoint of_kind takes no such parameter",
        ),
        ("kind=fire&kind=flood", "kind: given more than once"),
    ] {
        let (status, body) = server
            .get(&analyst, &format!("/api/v1/endpoints/of_kind?{query}"))
            .await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 400 && message.contains(expected),
            "{query}: {status} {body}"
        );
    }
    // The data is intact.
    let answer = call(
        &server,
        &analyst,
        "/api/v1/endpoints/of_kind?kind=flood",
        &[],
    )
    .await;
    assert_eq!(answer.json(), json!([{"id": 2, "kind": "flood"}]));
}

#[tokio::test]
async fn etags_answer_304_until_a_source_commits() {
    let (server, analyst) = hub().await;
    let (status, body) = save(&server, &analyst, "kinds", by_kind()).await;
    assert_eq!(status, 201, "{body}");
    let path = "/api/v1/endpoints/kinds";
    let first = call(&server, &analyst, path, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.json(),
        json!([{"kind": "fire", "n": 2}, {"kind": "flood", "n": 1}])
    );
    assert_eq!(first.cache_control.as_deref(), Some("private, max-age=7"));
    let etag = first.etag.clone().expect("etag");
    assert!(etag.starts_with('"') && etag.ends_with("-json\""), "{etag}");

    let again = call(&server, &analyst, path, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
    let listed = format!("\"other\", W/{etag}");
    let again = call(&server, &analyst, path, &[("if-none-match", &listed)]).await;
    assert_eq!(again.status, 304);
    // Other parameter values are other results.
    let other = call(
        &server,
        &analyst,
        &format!("{path}?min_id=3"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.json(), json!([{"kind": "fire", "n": 1}]));

    // Formats: CSV and Arrow, each with its own ETag; Parquet is not offered.
    let csv = call(&server, &analyst, path, &[("accept", "text/csv")]).await;
    assert_eq!(csv.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&csv.body),
        "kind,n\nfire,2\nflood,1\n"
    );
    assert!(csv.etag.as_deref().is_some_and(|t| t.ends_with("-csv\"")));
    let arrow = call(
        &server,
        &analyst,
        path,
        &[("accept", "application/vnd.apache.arrow.stream")],
    )
    .await;
    assert_eq!(arrow.status, 200);
    assert_eq!(
        arrow.content_type.as_deref(),
        Some("application/vnd.apache.arrow.stream")
    );
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body), None)
        .expect("arrow stream");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 2);
    let parquet = call(
        &server,
        &analyst,
        path,
        &[("accept", "application/vnd.apache.parquet")],
    )
    .await;
    assert_eq!(parquet.status, 406);

    // A commit to the source: the old ETag is answered with the new result.
    push(&server, "zhili.events", &[(4, "flood")]).await;
    let after = call(&server, &analyst, path, &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, 200);
    assert_eq!(
        after.json(),
        json!([{"kind": "fire", "n": 2}, {"kind": "flood", "n": 2}])
    );
    let new_etag = after.etag.clone().expect("etag");
    assert_ne!(new_etag, etag);
    let again = call(&server, &analyst, path, &[("if-none-match", &new_etag)]).await;
    assert_eq!(again.status, 304);
}

#[tokio::test]
async fn a_commit_invalidates_exactly_the_entries_that_read_it() {
    let (server, analyst) = hub().await;
    save(&server, &analyst, "kinds", by_kind()).await;
    let other = json!({"sql": "SELECT count(*) AS n FROM zhili.other"});
    let (status, body) = save(&server, &analyst, "others", other).await;
    assert_eq!(status, 201, "{body}");
    let kinds = call(&server, &analyst, "/api/v1/endpoints/kinds", &[]).await;
    let others = call(&server, &analyst, "/api/v1/endpoints/others", &[]).await;
    assert_eq!(others.json(), json!([{"n": 0}]));
    let (entries, _) = server.state.endpoints.cache_usage().await;
    assert_eq!(entries, 2);
    assert_eq!(executions(&server, &analyst, "kinds").await, 1);

    // A commit to zhili.other keeps the kinds entry: same ETag, no new execution.
    push(&server, "zhili.other", &[(1, "x")]).await;
    let etag = kinds.etag.expect("etag");
    let again = call(
        &server,
        &analyst,
        "/api/v1/endpoints/kinds",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    let full = call(&server, &analyst, "/api/v1/endpoints/kinds", &[]).await;
    assert_eq!(full.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(executions(&server, &analyst, "kinds").await, 1);
    // ... and drops the others entry, whose answer changed.
    assert_eq!(server.state.endpoints.cache_usage().await.0, 1);
    let others_now = call(&server, &analyst, "/api/v1/endpoints/others", &[]).await;
    assert_eq!(others_now.json(), json!([{"n": 1}]));
    assert_ne!(others_now.etag, others.etag);
    assert_eq!(executions(&server, &analyst, "others").await, 2);
}

#[tokio::test]
async fn concurrent_misses_run_the_query_once() {
    let (server, analyst) = hub().await;
    save(&server, &analyst, "kinds", by_kind()).await;
    for round in 1..=3u64 {
        let requests = (0..64).map(|_| call(&server, &analyst, "/api/v1/endpoints/kinds", &[]));
        let answers = futures::future::join_all(requests).await;
        let etags: std::collections::BTreeSet<_> = answers
            .iter()
            .map(|a| a.etag.clone().expect("etag"))
            .collect();
        assert!(answers.iter().all(|a| a.status == 200));
        assert_eq!(etags.len(), 1, "one result for everyone");
        assert_eq!(executions(&server, &analyst, "kinds").await, round);
        // The burst right after a commit is a burst of misses: still one execution.
        push(&server, "zhili.events", &[(10 + round as i64, "fire")]).await;
    }
}

#[tokio::test]
async fn events_carry_the_result_then_each_change() {
    let (server, analyst) = hub().await;
    save(&server, &analyst, "kinds", by_kind()).await;
    let path = "/api/v1/endpoints/kinds/events";
    let mut events = EventReader::open(&server, &analyst, path, None).await;
    let (event, first_id, data) = events.next(Duration::from_secs(10)).await.expect("first");
    assert_eq!(event, "result");
    assert_eq!(
        serde_json::from_str::<Value>(&data).expect("json"),
        json!([{"kind": "fire", "n": 2}, {"kind": "flood", "n": 1}])
    );

    // An unrelated commit sends nothing; a commit to the source sends the new result.
    push(&server, "zhili.other", &[(1, "x")]).await;
    assert!(events.next(Duration::from_millis(500)).await.is_none());
    push(&server, "zhili.events", &[(4, "storm")]).await;
    let (event, id, data) = events.next(Duration::from_secs(5)).await.expect("update");
    assert_eq!(event, "result");
    assert_ne!(id, first_id);
    assert_eq!(
        serde_json::from_str::<Value>(&data).expect("json"),
        json!([{"kind": "fire", "n": 2}, {"kind": "flood", "n": 1}, {"kind": "storm", "n": 1}])
    );
    // The same ETag key is what a poller would get.
    let polled = call(&server, &analyst, "/api/v1/endpoints/kinds", &[]).await;
    assert_eq!(polled.etag, Some(format!("\"{id}-json\"")));

    // A client reconnecting with the id it has gets nothing until the next change.
    let mut again = EventReader::open(&server, &analyst, path, Some(&id)).await;
    assert!(again.next(Duration::from_millis(300)).await.is_none());
    push(&server, "zhili.events", &[(5, "storm")]).await;
    let (_, _, data) = again.next(Duration::from_secs(5)).await.expect("update");
    assert!(data.contains(r#""kind":"storm","n":2"#), "{data}");

    // A change of a source that leaves the result as it was sends nothing; heartbeats
    // (every second here) keep the stream open meanwhile.
    let none = json!({"sql": "SELECT count(*) AS n FROM zhili.other WHERE id > 100"});
    let (status, body) = save(&server, &analyst, "none_yet", none).await;
    assert_eq!(status, 201, "{body}");
    let mut quiet =
        EventReader::open(&server, &analyst, "/api/v1/endpoints/none_yet/events", None).await;
    let (_, first_id, data) = quiet.next(Duration::from_secs(5)).await.expect("first");
    assert_eq!(data, r#"[{"n":0}]"#);
    push(&server, "zhili.other", &[(7, "storm")]).await;
    let polled = call(&server, &analyst, "/api/v1/endpoints/none_yet", &[]).await;
    assert_ne!(
        polled.etag,
        Some(format!("\"{first_id}-json\"")),
        "the key moved"
    );
    assert!(quiet.next(Duration::from_millis(1500)).await.is_none());
    assert!(quiet.comments >= 1, "a heartbeat within 1.5 s");

    // Bad parameters are refused before the stream opens.
    let (status, body) = server.get(&analyst, &format!("{path}?min_id=-1")).await;
    assert_eq!(status, 400, "{body}");

    // Shutting down ends open streams instead of waiting out the grace period (30 s).
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the hub stops with streams open");
    assert!(again.next(Duration::from_secs(2)).await.is_none());
}

#[tokio::test]
async fn callers_are_the_owner_the_allowed_departments_and_admins() {
    let (server, analyst) = hub().await;
    save(&server, &analyst, "kinds", by_kind()).await;
    server.department("jiaotong").await;
    server.department("gongan").await;
    let path = "/api/v1/endpoints/kinds";
    let owner_screen = server.token("zhili", Role::Dashboard).await;
    let allowed_screen = server.token("jiaotong", Role::Dashboard).await;
    let other_screen = server.token("gongan", Role::Dashboard).await;
    let other_analyst = server.token("gongan", Role::Analyst).await;
    for (token, expected) in [
        (&owner_screen, 200),
        (&allowed_screen, 200),
        (&server.admin, 200),
        (&other_screen, 403),
        (&other_analyst, 403),
    ] {
        let answer = call(&server, token, path, &[]).await;
        assert_eq!(
            answer.status,
            expected,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let (status, _) = server.get(token, &format!("{path}/definition")).await;
        assert_eq!(status, expected);
    }
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let answer = call(&server, &allowed_screen, "/api/v1/endpoints/nothing", &[]).await;
    assert_eq!(answer.status, 404);
    // Dashboard tokens still read nothing but endpoints.
    let (status, _) = server.get(&allowed_screen, "/api/v1/datasets").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn endpoints_run_with_the_owners_rights_and_follow_its_grants() {
    let (server, _) = hub().await;
    support::people(&server).await;
    let zhili = server.token("zhili", Role::Analyst).await;
    let gongan = server.token("gongan", Role::Producer).await;
    let screen = server.token("zhili", Role::Dashboard).await;
    let spec = json!({"sql": "SELECT id, phone FROM gongan.people ORDER BY id"});
    // zhili cannot save what it cannot read.
    let (status, body) = save(&server, &zhili, "people", spec.clone()).await;
    assert_eq!(status, 403, "{body}");

    // With a grant (phone masked), it can; the screen sees what zhili may see.
    let decided = support::grant(&server, &zhili, &gongan, "gongan.people", "wall screen").await;
    let (status, body) = save(&server, &zhili, "people", spec).await;
    assert_eq!(status, 201, "{body}");
    let answer = call(&server, &screen, "/api/v1/endpoints/people", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!([{"id": 1, "phone": "180****1999"}, {"id": 2, "phone": "137****3333"}])
    );
    let etag = answer.etag.expect("etag");

    // Each delivery of personal data is audited with the screen's principal.
    server.state.audit.flush().await;
    let (_, audit) = server.get(&server.admin, "/api/v1/audit").await;
    let deliveries = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "endpoint_read" && e["principal"] == "test-zhili-dashboard")
        .count();
    assert_eq!(deliveries, 1, "{audit}");

    // Revoking the grant takes effect at once: the old ETag is not confirmed, the query
    // is refused.
    let grant = decided["grant"]["id"].as_i64().expect("grant");
    let (status, body) = server
        .post_json(
            &gongan,
            &format!("/api/v1/grants/{grant}/revoke"),
            json!({"reason": "screen removed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut refused = None;
    for _ in 0..50 {
        let answer = call(
            &server,
            &screen,
            "/api/v1/endpoints/people",
            &[("if-none-match", &etag)],
        )
        .await;
        if answer.status != 304 {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the revocation reached the cache");
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
}

#[tokio::test]
async fn live_tables_refresh_on_a_timer_and_other_processes_commits_are_seen() {
    let server = TestServer::spawn_with(|config| config.endpoints.poll_interval_ms = 50).await;
    server.events_dataset("zhili").await;
    let analyst = server.token("zhili", Role::Analyst).await;
    let spec = json!({
        "sql": "SELECT count(*) AS cameras, (SELECT count(*) FROM zhili.events) AS events FROM hub.cameras",
        "refresh_s": 1
    });
    let (status, body) = save(&server, &analyst, "live", spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["sources"],
        json!(["zhili.events", "live: hub.cameras"])
    );
    let path = "/api/v1/endpoints/live";
    let first = call(&server, &analyst, path, &[]).await;
    let etag = first.etag.expect("etag");
    // Without any commit, the live table's result is recomputed once its second is over.
    let mut changed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = call(&server, &analyst, path, &[("if-none-match", &etag)]).await;
        if answer.status == 200 {
            changed = true;
            break;
        }
    }
    assert!(changed, "a live source refreshes after refresh_s");

    // A commit by another process on the same catalog (its own ingest, its own news) is
    // seen by the poller.
    let other_process = cityhub_ingest::Ingest::new(
        server.state.catalog.clone(),
        server.state.ingest.storage().clone(),
        server.state.config.ingest.clone(),
        cityhub_catalog::AuditLog::start(server.state.catalog.clone()),
        std::sync::Arc::default(),
    );
    let admin = server
        .state
        .catalog
        .list_principals()
        .await
        .expect("principals")
        .into_iter()
        .find(|p| p.role == Role::Admin)
        .expect("admin");
    other_process
        .push(
            &admin,
            "zhili.events",
            cityhub_ingest::PushRequest {
                format: cityhub_ingest::Format::NdJson,
                body: bytes::Bytes::from_static(b"{\"id\": 1}\n{\"id\": 2}\n"),
                partial: false,
                idempotency_key: None,
            },
        )
        .await
        .expect("push from another process");
    let mut seen = false;
    for _ in 0..40 {
        let answer = call(&server, &analyst, path, &[]).await;
        if answer.json()[0]["events"] == 2 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "the poller saw the other process's commit");
}

#[tokio::test]
async fn stale_while_revalidate_answers_the_previous_result_while_recomputing() {
    let (server, analyst) = hub().await;
    let spec = json!({
        "sql": "SELECT count(*) AS n FROM zhili.events",
        "max_age_s": 2,
        "stale_while_revalidate_s": 60
    });
    let (status, body) = save(&server, &analyst, "count", spec).await;
    assert_eq!(status, 201, "{body}");
    let path = "/api/v1/endpoints/count";
    let first = call(&server, &analyst, path, &[]).await;
    assert_eq!(first.json(), json!([{"n": 3}]));
    assert_eq!(
        first.cache_control.as_deref(),
        Some("private, max-age=2, stale-while-revalidate=60")
    );
    let etag1 = first.etag.expect("etag");

    // The first call after a commit gets the previous result at once, with its own ETag.
    push(&server, "zhili.events", &[(4, "fire")]).await;
    let stale = call(&server, &analyst, path, &[]).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.json(), json!([{"n": 3}]));
    assert_eq!(stale.etag.as_deref(), Some(etag1.as_str()));
    // ... while the new one is computed in the background, once.
    let fresh = wait_for(&server, &analyst, path, json!([{"n": 4}])).await;
    let etag2 = fresh.etag.expect("etag");
    assert_ne!(etag2, etag1);
    assert_eq!(executions(&server, &analyst, "count").await, 2);

    // A client holding the previous ETag is told 304 while the new result is computed.
    push(&server, "zhili.events", &[(5, "fire")]).await;
    let held = call(&server, &analyst, path, &[("if-none-match", &etag2)]).await;
    assert_eq!(held.status, 304);
    assert_eq!(held.etag.as_deref(), Some(etag2.as_str()));
    wait_for(&server, &analyst, path, json!([{"n": 5}])).await;
    assert_eq!(executions(&server, &analyst, "count").await, 3);

    // Event streams never get stale results: they wait for the new one.
    let mut events = EventReader::open(&server, &analyst, &format!("{path}/events"), None).await;
    let (_, _, data) = events.next(Duration::from_secs(5)).await.expect("first");
    assert_eq!(data, r#"[{"n":5}]"#);
    push(&server, "zhili.events", &[(6, "fire")]).await;
    let (_, _, data) = events.next(Duration::from_secs(5)).await.expect("update");
    assert_eq!(data, r#"[{"n":6}]"#);
}

/// Polls an endpoint until it answers `expected` (at most 5 s).
async fn wait_for(server: &TestServer, token: &str, path: &str, expected: Value) -> Answer {
    for _ in 0..100 {
        let answer = call(server, token, path, &[]).await;
        if answer.json() == expected {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {expected}");
}

#[tokio::test]
async fn a_result_reads_exactly_the_snapshots_its_key_names() {
    let (server, _) = hub().await;
    let name = cityhub_catalog::DatasetName::parse("zhili.events").expect("name");
    let catalog = &server.state.catalog;
    let dataset = catalog
        .dataset(&name)
        .await
        .expect("read")
        .expect("dataset");
    let first = dataset.snapshot_id.expect("a snapshot");
    push(&server, "zhili.events", &[(4, "storm")]).await;
    let second = catalog
        .dataset(&name)
        .await
        .expect("read")
        .expect("dataset")
        .snapshot_id
        .expect("a snapshot");
    assert_ne!(first, second);
    let owner = catalog
        .list_principals()
        .await
        .expect("principals")
        .into_iter()
        .find(|p| p.department == "zhili")
        .expect("a zhili principal");
    let count = |pinned: Option<i64>| {
        let query = server.state.query.clone();
        let owner = owner.clone();
        async move {
            let pins = std::collections::HashMap::from([(dataset.id, pinned)]);
            let result = query
                .execute_endpoint(&owner, "SELECT count(*) AS n FROM zhili.events", &[], &pins)
                .await
                .expect("query");
            let batches: Vec<_> = result.batches.collect().await;
            let batch = batches[0].as_ref().expect("batch");
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batch.column(0))
                .value(0)
        }
    };
    assert_eq!(count(Some(first)).await, 3);
    assert_eq!(count(Some(second)).await, 4);
    assert_eq!(
        count(None).await,
        0,
        "before the first commit the table is empty"
    );
}
