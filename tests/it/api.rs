//! End-to-end: departments, datasets, authentication and the operational routes.

use crate::support;
use crate::support::{TestServer, events_spec};
use cityhub_catalog::Role;
use serde_json::json;

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let server = TestServer::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(server.url(path)).await.expect("request");
        assert_eq!(response.status(), 200, "{path}");
    }
    // Make one API request so that request metrics exist.
    server.get(&server.admin, "/api/v1/departments").await;
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cityhub_http_requests_total{route=\"/api/v1/departments\",method=\"GET\",status=\"200\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_api_route_wants_a_valid_bearer_token() {
    let server = TestServer::spawn().await;
    let url = server.url("/api/v1/datasets");
    let missing = server.client.get(&url).send().await.expect("request");
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    let (_, body) = support::split(missing).await;
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, body) = server
        .get("chub_not-a-real-token", "/api/v1/datasets")
        .await;
    assert_eq!(status, 401, "{body}");
    let basic = server
        .client
        .get(&url)
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), 401);
    // A push to a missing dataset without a token is still 401, not 404: nothing leaks.
    let push = server
        .client
        .post(server.url("/api/v1/datasets/gongan.nosuch/rows"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(push.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = TestServer::spawn().await;
    let token = cityhub_catalog::token::Token::generate();
    server
        .state
        .catalog
        .create_principal(
            cityhub_catalog::NewPrincipal {
                name: "old".into(),
                department: "admin".into(),
                role: Role::Admin,
                expires_at: Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await
        .expect("principal");
    let (status, body) = server.get(&token.plaintext, "/api/v1/datasets").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn departments_are_managed_by_admins() {
    let server = TestServer::spawn().await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/departments",
            json!({"code": "gongan", "name": "公安局"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "公安局");
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/departments",
            json!({"code": "gongan", "name": "公安局"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_exists"))
    );
    for bad in ["Gong An", "hub", "x", "gong'an"] {
        let (status, body) = server
            .post_json(
                &server.admin,
                "/api/v1/departments",
                json!({"code": bad, "name": "x"}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = server
        .post_json(
            &server.admin,
            "/api/v1/departments",
            json!({"code": "x1", "nam": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    let producer = server.token("gongan", Role::Producer).await;
    let (status, _) = server
        .post_json(
            &producer,
            "/api/v1/departments",
            json!({"code": "jiaotong", "name": "交通局"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = server.get(&producer, "/api/v1/departments").await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert_eq!(codes, vec!["admin", "gongan"]);
    server.stop().await;
}

#[tokio::test]
async fn datasets_are_registered_by_their_own_department() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    let producer = server.token("gongan", Role::Producer).await;
    let analyst = server.token("gongan", Role::Analyst).await;

    let (status, body) = server
        .post_json(&producer, "/api/v1/datasets", events_spec("gongan.alarms"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["owner"], "gongan");
    assert_eq!(body["rows"], 0);
    assert_eq!(body["snapshot_id"], serde_json::Value::Null);
    assert_eq!(body["columns"][7]["sensitivity"], "phone");

    let (status, body) = server
        .post_json(&producer, "/api/v1/datasets", events_spec("gongan.alarms"))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server
        .post_json(&producer, "/api/v1/datasets", events_spec("jiaotong.flows"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .post_json(&analyst, "/api/v1/datasets", events_spec("gongan.more"))
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            events_spec("nosuch.flows"),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    let mut bad_type = events_spec("gongan.bad_type");
    bad_type["columns"][0]["type"] = json!("varchar");
    let (status, body) = server
        .post_json(&producer, "/api/v1/datasets", bad_type)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("varchar"),
        "{body}"
    );
    let mut duplicate_column = events_spec("gongan.dup");
    duplicate_column["columns"][1]["name"] = json!("id");
    let (status, body) = server
        .post_json(&producer, "/api/v1/datasets", duplicate_column)
        .await;
    assert_eq!(status, 400, "{body}");
    let mut unknown_field = events_spec("gongan.unknown_field");
    unknown_field["colour"] = json!("red");
    let (status, _) = server
        .post_json(&producer, "/api/v1/datasets", unknown_field)
        .await;
    assert_eq!(status, 400);

    for bad in [
        "gongan/alarms",
        "gongan..alarms",
        "../gongan.alarms",
        "gongan.'alarms'",
        "gongan.al arms",
        "gongan.alarms;drop table x",
        "hub.alarms",
    ] {
        let (status, body) = server
            .post_json(&producer, "/api/v1/datasets", events_spec(bad))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (status, body) = server.get(&analyst, "/api/v1/datasets/gongan.alarms").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema_versions"][0]["version"], 1);
    let (status, body) = server
        .get(&analyst, "/api/v1/datasets/gongan.alarms/snapshots")
        .await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = server.get(&analyst, "/api/v1/datasets/gongan.nosuch").await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get(&analyst, "/api/v1/datasets/gongan%2Falarms")
        .await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn datasets_shared_with_nobody_are_invisible_to_other_departments() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    server.department("jiaotong").await;
    let mut secret = events_spec("gongan.secret");
    secret["sharing"] = json!("none");
    let (status, _) = server
        .post_json(&server.admin, "/api/v1/datasets", secret)
        .await;
    assert_eq!(status, 201);
    let mut shared = events_spec("gongan.shared");
    shared["sharing"] = json!("conditional");
    server
        .post_json(&server.admin, "/api/v1/datasets", shared)
        .await;

    let outsider = server.token("jiaotong", Role::Analyst).await;
    let insider = server.token("gongan", Role::Analyst).await;
    let names = |body: &serde_json::Value| -> Vec<String> {
        body.as_array()
            .expect("array")
            .iter()
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect()
    };
    let (_, body) = server.get(&outsider, "/api/v1/datasets").await;
    assert_eq!(names(&body), vec!["gongan.shared"]);
    let (_, body) = server.get(&insider, "/api/v1/datasets").await;
    assert_eq!(names(&body), vec!["gongan.secret", "gongan.shared"]);

    let (hidden_status, hidden) = server
        .get(&outsider, "/api/v1/datasets/gongan.secret")
        .await;
    let (missing_status, missing) = server
        .get(&outsider, "/api/v1/datasets/gongan.nosecret")
        .await;
    assert_eq!(hidden_status, 404);
    assert_eq!(missing_status, 404);
    assert_eq!(
        hidden["error"]["message"]
            .as_str()
            .map(|m| m.replace("secret", "X")),
        missing["error"]["message"]
            .as_str()
            .map(|m| m.replace("nosecret", "X")),
        "a hidden dataset must answer exactly like a missing one"
    );
    let producer = server.token("jiaotong", Role::Producer).await;
    let (status, _) = server
        .push(
            &producer,
            "gongan.secret",
            "application/x-ndjson",
            "{\"id\": 1}\n",
        )
        .await;
    assert_eq!(
        status, 404,
        "pushing must not reveal a hidden dataset either"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let server = TestServer::spawn().await;
    let (status, body) = server.get(&server.admin, "/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = server.get(&server.admin, "/nothing").await;
    assert_eq!(status, 404);
    server.stop().await;
}
