//! The access model end to end over HTTP: tokens, share requests from application to
//! expiry and revocation, masking in SQL answers, rate limits, and a complete audit trail.

use crate::support;
use std::time::Duration;

use crate::support::TestServer;
use cityhub_catalog::Role;
use cityhub_catalog::sharing::NewShareRequest;
use serde_json::{Value, json};

/// A hub with `gongan.people`, and tokens of its owner (a gongan producer) and of a
/// minzheng analyst who will apply for it.
async fn parties() -> (TestServer, String, String, String) {
    let server = TestServer::spawn().await;
    let dataset = support::people(&server).await;
    let owner = server.token("gongan", Role::Producer).await;
    let analyst = server.token("minzheng", Role::Analyst).await;
    (server, dataset, owner, analyst)
}

/// Files a share request for every column and returns its id.
async fn apply(server: &TestServer, token: &str, dataset: &str, purpose: &str) -> i64 {
    let (status, request) = server
        .post_json(
            token,
            &format!("/api/v1/datasets/{dataset}/share-requests"),
            json!({ "purpose": purpose }),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    request["id"].as_i64().expect("id")
}

async fn sql(server: &TestServer, token: &str, sql: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(sql.to_string())
        .send()
        .await
        .expect("request");
    support::split(response).await
}

fn access_of(catalogue: &Value, name: &str) -> String {
    catalogue
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["name"] == name)
        .map(|d| d["access"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "absent".into())
}

#[tokio::test]
async fn a_share_request_goes_from_application_to_approval_to_revocation() {
    let (server, dataset, owner, analyst) = parties().await;

    // Before: in the catalogue to apply for, refused in SQL with how to apply.
    let (_, catalogue) = server.get(&analyst, "/api/v1/datasets").await;
    assert_eq!(access_of(&catalogue, &dataset), "apply");
    let (status, body) = sql(&server, &analyst, "SELECT * FROM gongan.people").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/api/v1/datasets/gongan.people/share-requests")),
        "{body}"
    );

    // Bad applications name the field.
    let apply = format!("/api/v1/datasets/{dataset}/share-requests");
    for (bad, field) in [
        (json!({"purpose": ""}), "purpose"),
        (
            json!({"purpose": "流动人口核查", "columns": ["id", "nope"]}),
            "columns[1]",
        ),
        (
            json!({"purpose": "流动人口核查", "unmasked": ["town"]}),
            "unmasked[0]",
        ),
        (
            json!({"purpose": "流动人口核查", "until": "2001-01-01T00:00:00Z"}),
            "until",
        ),
    ] {
        let (status, body) = server.post_json(&analyst, &apply, bad).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{field}: {body}");
    }
    let (status, _) = server
        .post_json(&owner, &apply, json!({"purpose": "自己的数据"}))
        .await;
    assert_eq!(status, 400, "the owner has nothing to apply for");

    let (status, request) = server
        .post_json(
            &analyst,
            &apply,
            json!({"purpose": "低保对象核查", "columns": ["id", "name", "phone"], "unmasked": ["name"]}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["status"], "pending");
    assert_eq!(request["overdue"], false);
    let id = request["id"].as_i64().expect("id");

    // The owner sees it among pending requests; the applicant cannot answer it.
    let (_, pending) = server
        .get(&owner, "/api/v1/share-requests?status=pending")
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    let (status, _) = server
        .post_json(
            &analyst,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
    // Widening what was asked for is refused.
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({"columns": ["id", "town"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Approved, narrowed to id and name.
    let (status, decided) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({"columns": ["id", "name"], "reason": "同意"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    let grant = decided["grant"]["id"].as_i64().expect("grant id");
    let (status, _) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "a decided request cannot be decided again");

    let (_, catalogue) = server.get(&analyst, "/api/v1/datasets").await;
    assert_eq!(access_of(&catalogue, &dataset), "granted");
    let (status, rows) = sql(&server, &analyst, "SELECT * FROM gongan.people ORDER BY id").await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(
        rows,
        json!([{"id": 1, "name": "张小明"}, {"id": 2, "name": "李四"}]),
        "only the granted columns, the name unmasked as asked"
    );
    let (status, _) = sql(&server, &analyst, "SELECT phone FROM gongan.people").await;
    assert_eq!(status, 400, "phone is outside the grant");

    // Revoked: refused again at once.
    let (status, body) = server
        .post_json(
            &analyst,
            &format!("/api/v1/grants/{grant}/revoke"),
            json!({"reason": "不要了"}),
        )
        .await;
    assert_eq!(status, 403, "only the owner revokes: {body}");
    let (status, revoked) = server
        .post_json(
            &owner,
            &format!("/api/v1/grants/{grant}/revoke"),
            json!({"reason": "核查结束"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let (status, _) = sql(&server, &analyst, "SELECT id FROM gongan.people").await;
    assert_eq!(status, 403);
    let (_, grants) = server.get(&analyst, "/api/v1/grants").await;
    assert_eq!(grants[0]["active"], false, "{grants}");
    assert_eq!(grants[0]["revoke_reason"], "核查结束");

    // A second application is rejected, with its reason, which the applicant reads.
    let (_, second) = server
        .post_json(&analyst, &apply, json!({"purpose": "再次申请核查"}))
        .await;
    let second = second["id"].as_i64().expect("id");
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{second}/reject"),
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "a rejection needs a reason: {body}");
    let (status, _) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{second}/reject"),
            json!({"reason": "用途与职责不符"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, seen) = server
        .get(&analyst, &format!("/api/v1/share-requests/{second}"))
        .await;
    assert_eq!(seen["status"], "rejected");
    assert_eq!(seen["reason"], "用途与职责不符");
    // A department that is no party to the request cannot see it.
    server.department("jiaotong").await;
    let stranger = server.token("jiaotong", Role::Analyst).await;
    let (status, _) = server
        .get(&stranger, &format!("/api/v1/share-requests/{second}"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn grants_lapse_at_their_expiry() {
    let (server, dataset, owner, analyst) = parties().await;
    let id = apply(&server, &analyst, &dataset, "临时核查").await;
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{id}/approve"),
            json!({"expires_at": expires}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, rows) = sql(
        &server,
        &analyst,
        "SELECT phone FROM gongan.people WHERE id = 1",
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows, json!([{"phone": "180****1999"}]));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (status, _) = sql(&server, &analyst, "SELECT phone FROM gongan.people").await;
    assert_eq!(status, 403, "the grant has expired");
}

#[tokio::test]
async fn overdue_requests_are_flagged_in_the_listing_and_in_metrics() {
    // A Monday morning in Beijing: five working days end the next Monday, whatever day the
    // test runs on.
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00+08:00")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let server =
        TestServer::spawn_with_clock(|_| {}, cityhub_catalog::clock::Clock::starting_at(start))
            .await;
    let dataset = support::people(&server).await;
    let analyst = server.token("minzheng", Role::Analyst).await;
    let (_, request) = server
        .post_json(
            &analyst,
            &format!("/api/v1/datasets/{dataset}/share-requests"),
            json!({"purpose": "按时答复的申请"}),
        )
        .await;
    // Five working days from now, by the default setting.
    let due = chrono::DateTime::parse_from_rfc3339(request["answer_due_at"].as_str().expect("due"))
        .expect("time");
    let days = (due.with_timezone(&chrono::Utc) - start).num_days();
    assert!((5..=7).contains(&days), "due in {days} days");

    // One request whose deadline has passed (filed long ago).
    let people = server
        .state
        .catalog
        .dataset(&cityhub_catalog::DatasetName::parse(&dataset).expect("name"))
        .await
        .expect("lookup")
        .expect("dataset");
    let applicant = server
        .state
        .catalog
        .list_principals()
        .await
        .expect("principals")
        .into_iter()
        .find(|p| p.department == "minzheng")
        .expect("applicant");
    server
        .state
        .catalog
        .create_share_request(NewShareRequest {
            dataset_id: people.id,
            department: "minzheng".into(),
            requested_by: applicant.id,
            purpose: "逾期未答复".into(),
            columns: None,
            unmasked: vec![],
            until: None,
            answer_due_at: start - chrono::Duration::days(1),
            rows: None,
        })
        .await
        .expect("request");
    let (_, listed) = server.get(&analyst, "/api/v1/share-requests").await;
    let overdue: Vec<bool> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["overdue"].as_bool().expect("flag"))
        .collect();
    assert_eq!(overdue, [true, false], "{listed}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cityhub_share_requests_overdue 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cityhub_share_requests_pending 2"));
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_with_immediate_effect() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let (status, created) = server
        .post_json(
            &server.admin,
            "/api/v1/tokens",
            json!({"department": "gongan", "role": "analyst", "name": "张警官"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["id"].as_i64().expect("id");
    let (status, _) = server.get(&token, "/api/v1/datasets").await;
    assert_eq!(status, 200);

    // Listing shows metadata, never a token or its hash.
    let (_, listed) = server.get(&server.admin, "/api/v1/tokens").await;
    let text = listed.to_string();
    assert!(
        !text.contains(&token) && !text.contains("token_hash"),
        "{text}"
    );
    assert!(text.contains("张警官"));
    let (status, _) = server.get(&token, "/api/v1/tokens").await;
    assert_eq!(status, 403, "only admins list tokens");
    let (status, _) = server
        .post_json(
            &token,
            "/api/v1/tokens",
            json!({"department": "gongan", "role": "admin"}),
        )
        .await;
    assert_eq!(status, 403, "only admins create tokens");
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/tokens",
            json!({"department": "gongan", "role": "boss"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, _) = server
        .delete(&server.admin, &format!("/api/v1/tokens/{id}"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server.get(&token, "/api/v1/datasets").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked"))
    );
    let (status, _) = server
        .delete(&server.admin, &format!("/api/v1/tokens/{id}"))
        .await;
    assert_eq!(status, 409, "already revoked");

    // A token that expires is refused from that moment.
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    let (_, short) = server
        .post_json(
            &server.admin,
            "/api/v1/tokens",
            json!({"department": "gongan", "role": "analyst", "expires_at": expires}),
        )
        .await;
    let short = short["token"].as_str().expect("token").to_string();
    assert_eq!(server.get(&short, "/api/v1/datasets").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let (status, body) = server.get(&short, "/api/v1/datasets").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired"))
    );
}

#[tokio::test]
async fn masked_values_cannot_be_probed_through_parameters_or_explain() {
    let server = TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    server.department("minzheng").await;
    let (status, _) = server
        .push(
            &server.admin,
            &dataset,
            "application/x-ndjson",
            "{\"id\":1,\"phone\":\"13800001111\"}\n{\"id\":2,\"phone\":\"13900002222\"}\n",
        )
        .await;
    assert_eq!(status, 201);
    let analyst = server.token("minzheng", Role::Analyst).await;
    let (status, rows) = server
        .post_json(
            &analyst,
            "/api/v1/sql",
            json!({"sql": "SELECT count(*) AS n FROM gongan.events WHERE phone = $1", "params": ["13800001111"]}),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows, json!([{"n": 0}]));

    for explain in [
        "EXPLAIN VERBOSE SELECT min(phone), max(phone) FROM gongan.events",
        "EXPLAIN ANALYZE SELECT min(phone), max(phone) FROM gongan.events",
    ] {
        let (status, plan) = sql(&server, &analyst, explain).await;
        assert_eq!(status, 200, "{plan}");
        let text = plan.to_string();
        assert!(text.contains("MaskExec: phone=phone"), "{text}");
        for raw in ["13800001111", "13900002222"] {
            assert!(!text.contains(raw), "{explain} leaks {raw}: {text}");
        }
    }
    // The owner's plan has no mask, and its statistics may show the values.
    let (_, plan) = sql(
        &server,
        &server.admin,
        "EXPLAIN SELECT phone FROM gongan.events",
    )
    .await;
    assert!(!plan.to_string().contains("MaskExec"), "{plan}");
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_with_retry_after() {
    let server = TestServer::spawn_with(|config| {
        config.server.rate_limit_per_second = 1;
        config.server.rate_limit_burst = 3;
    })
    .await;
    server.department("gongan").await;
    let token = server.token("gongan", Role::Analyst).await;
    let other = server.token("gongan", Role::Analyst).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = server
            .client
            .get(server.url("/api/v1/departments"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        if response.status() == 429 {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(wait, Some(1));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(server.get(&other, "/api/v1/departments").await.0, 200);
}

/// Every audited action of a short session appears exactly once, with what it did.
#[tokio::test]
async fn the_audit_log_records_every_action_exactly_once() {
    let (server, dataset, owner, analyst) = parties().await;
    let decided = support::grant(&server, &analyst, &owner, &dataset, "审计测试申请").await;
    let grant = decided["grant"]["id"].as_i64().expect("grant");
    let (status, _) = sql(&server, &analyst, "SELECT name, phone FROM gongan.people").await;
    assert_eq!(status, 200);
    let (status, _) = sql(&server, &analyst, "SELECT * FROM nowhere.nothing").await;
    assert_eq!(status, 400);
    server
        .post_json(
            &owner,
            &format!("/api/v1/grants/{grant}/revoke"),
            json!({"reason": "测试结束"}),
        )
        .await;
    let (status, _) = sql(&server, &analyst, "SELECT name FROM gongan.people").await;
    assert_eq!(status, 403);
    let (_, created) = server
        .post_json(
            &server.admin,
            "/api/v1/tokens",
            json!({"department": "minzheng", "role": "dashboard"}),
        )
        .await;
    let token_id = created["id"].as_i64().expect("id");
    server
        .delete(&server.admin, &format!("/api/v1/tokens/{token_id}"))
        .await;

    let (status, _) = server.get(&analyst, "/api/v1/audit").await;
    assert_eq!(status, 403, "the audit log is for admins");
    let (status, entries) = server.get(&server.admin, "/api/v1/audit").await;
    assert_eq!(status, 200, "{entries}");
    let entries = entries.as_array().expect("entries").clone();
    let actions: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("department_create", "ok"),
        ("department_create", "ok"),
        ("dataset_create", "ok"),
        ("push", "ok"),
        ("share_request", "ok"),
        ("share_decision", "ok"),
        ("query", "ok"),
        ("query", "failed"),
        ("grant_revoke", "ok"),
        ("query", "refused"),
        ("token_create", "ok"),
        ("token_revoke", "ok"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(actions, expected);

    // The read of personal data names the columns and that they were masked.
    let read = &entries[6];
    assert_eq!(read["principal"], "test-minzheng-analyst");
    assert_eq!(read["dataset"], "gongan.people");
    assert_eq!(read["detail"]["rows"], 2);
    assert_eq!(read["detail"]["datasets"], json!(["gongan.people"]));
    let columns = read["detail"]["sensitive_columns"]
        .as_array()
        .expect("columns");
    assert_eq!(columns.len(), 2, "{read}");
    assert!(columns.iter().all(|c| c["masked"] == true), "{read}");
    assert!(
        entries[9]["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("shared on condition"))
    );
    assert_eq!(
        entries[9]["dataset"], "gongan.people",
        "a refused read names its dataset"
    );

    // Filters: by dataset (also matching queries that read it) and by principal.
    let (_, about) = server
        .get(
            &server.admin,
            "/api/v1/audit?dataset=gongan.people&action=query",
        )
        .await;
    assert_eq!(about.as_array().map(Vec::len), Some(2), "{about}");
    let (_, by) = server
        .get(
            &server.admin,
            "/api/v1/audit?principal=test-gongan-producer",
        )
        .await;
    assert_eq!(by.as_array().map(Vec::len), Some(2), "{by}");

    // The same log in SQL, for admins; no route changes it.
    let (status, counted) = sql(
        &server,
        &server.admin,
        "SELECT count(*) AS n FROM hub.audit_log WHERE action <> 'query' OR principal <> 'test-admin-admin'",
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted, json!([{"n": 12}]));
    for method in [
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
        reqwest::Method::POST,
    ] {
        let response = server
            .client
            .request(method.clone(), server.url("/api/v1/audit"))
            .bearer_auth(&server.admin)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 405, "{method} /api/v1/audit");
    }
}

/// Each role reaches what it needs and nothing else.
#[tokio::test]
async fn roles_are_enforced_on_every_route() {
    let (server, dataset, _owner, _analyst) = parties().await;
    let push_body = "{\"id\":9,\"name\":\"赵六\"}\n";
    let cases: [(Role, &str, &str, u16); 18] = [
        // (role of a gongan token, method, path, expected status)
        (Role::Admin, "POST", "/api/v1/departments", 201),
        (Role::Producer, "POST", "/api/v1/departments", 403),
        (Role::Analyst, "POST", "/api/v1/departments", 403),
        (Role::Dashboard, "GET", "/api/v1/departments", 403),
        (Role::Producer, "PUSH", "", 201),
        (Role::Analyst, "PUSH", "", 403),
        (Role::Dashboard, "PUSH", "", 403),
        (Role::Admin, "SQL", "", 200),
        (Role::Analyst, "SQL", "", 200),
        (Role::Producer, "SQL", "", 403),
        (Role::Dashboard, "SQL", "", 403),
        (Role::Producer, "GET", "/api/v1/tokens", 403),
        (Role::Analyst, "GET", "/api/v1/audit", 403),
        (Role::Admin, "GET", "/api/v1/audit", 200),
        (Role::Dashboard, "GET", "/api/v1/datasets", 403),
        (Role::Analyst, "GET", "/api/v1/datasets", 200),
        (Role::Producer, "GET", "/api/v1/share-requests", 200),
        (Role::Dashboard, "GET", "/api/v1/share-requests", 403),
    ];
    for (index, (role, method, path, expected)) in cases.into_iter().enumerate() {
        let token = server.token("gongan", role).await;
        let status = match method {
            "PUSH" => {
                server
                    .push(&token, &dataset, "application/x-ndjson", push_body)
                    .await
                    .0
            }
            "SQL" => {
                sql(&server, &token, "SELECT count(*) FROM gongan.people")
                    .await
                    .0
            }
            "POST" => {
                let code = format!("dept{index}");
                server
                    .post_json(&token, path, json!({"code": code, "name": "新部门"}))
                    .await
                    .0
            }
            _ => server.get(&token, path).await.0,
        };
        assert_eq!(status, expected, "{role} {method} {path}");
    }
}

#[tokio::test]
async fn audit_entries_past_retention_are_purged_and_the_purge_is_recorded() {
    let server = TestServer::spawn_with(|config| config.audit.retention_days = 30).await;
    let old = cityhub_catalog::AuditEvent {
        at: chrono::Utc::now() - chrono::Duration::days(31),
        principal_id: None,
        principal: Some("someone".into()),
        department: None,
        action: cityhub_catalog::Action::Query,
        outcome: cityhub_catalog::Outcome::Ok,
        dataset: None,
        detail: json!({}),
    };
    server
        .state
        .catalog
        .append_audit(vec![old])
        .await
        .expect("append");
    let deleted = server
        .state
        .sharing
        .purge_expired_audit(server.state.config.audit.retention_days)
        .await
        .expect("purge");
    assert_eq!(deleted, 1);
    let (_, entries) = server
        .get(&server.admin, "/api/v1/audit?action=audit_purge")
        .await;
    assert_eq!(entries[0]["detail"]["deleted"], 1, "{entries}");
    assert_eq!(entries[0]["detail"]["retention_days"], 30);
    let (_, old) = server
        .get(&server.admin, "/api/v1/audit?principal=someone")
        .await;
    assert_eq!(old, json!([]));
}
