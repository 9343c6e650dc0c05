//! Three-level governance end to end: region-scoped tokens, row-level security through the
//! SQL door, the catalogue, cameras and endpoints, and grants limited to rows.

use crate::support::{self, TestServer, sql_ok as sql, sql_status};
use cityhub_catalog::Role;
use cityhub_catalog::region::Scope;
use proptest::prelude::*;
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

/// `zhili.cases`: conditional, region-tagged, with a time column; rows in three counties,
/// two towns of 资中县 and a 隆昌 row still carrying the retired code.
async fn cases(server: &TestServer) {
    server.department("zhili").await;
    server.department("minzheng").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/datasets",
            json!({
                "name": "zhili.cases",
                "sharing": "conditional",
                "region_column": "region_code",
                "columns": [
                    {"name": "id", "type": "int64", "nullable": false},
                    {"name": "at", "type": "timestamp", "nullable": false},
                    {"name": "region_code", "type": "string"},
                    {"name": "category", "type": "string"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let rows = [
        (1, "2026-11-01T08:00:00Z", Some("511025")),
        (2, "2026-11-02T08:00:00Z", Some("511025100")),
        (3, "2026-11-03T08:00:00Z", Some("511025100017")),
        (4, "2026-11-04T08:00:00Z", Some("511025001")),
        (5, "2026-11-05T08:00:00Z", Some("511024")),
        (6, "2026-11-06T08:00:00Z", Some("511002")),
        (7, "2026-11-07T08:00:00Z", Some("51102801")),
        (8, "2026-11-08T08:00:00Z", None),
    ];
    let body: String = rows
        .iter()
        .map(|(id, at, region)| {
            format!(
                "{}\n",
                json!({"id": id, "at": at, "region_code": region, "category": "环境"})
            )
        })
        .collect();
    let (status, answer) = server
        .push(&server.admin, "zhili.cases", NDJSON, body)
        .await;
    assert_eq!(status, 201, "{answer}");
}

/// `POST /api/v1/tokens` as the admin.
async fn token(server: &TestServer, body: Value) -> (u16, Value) {
    server
        .post_json(&server.admin, "/api/v1/tokens", body)
        .await
}

async fn scoped(server: &TestServer, department: &str, role: &str, region: &str) -> String {
    let (status, body) = token(
        server,
        json!({"department": department, "role": role, "region": region}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_string()
}

fn ids(rows: &Value) -> Vec<i64> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|row| row["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn scoped_tokens_are_checked_listed_and_retired_codes_become_their_successors() {
    let server = TestServer::spawn().await;
    server.department("zhili").await;
    let (status, body) = token(
        &server,
        json!({"department": "zhili", "role": "analyst", "region": "511028"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["region"], "511083", "隆昌县 became 隆昌市");
    let (status, listed) = server.get(&server.admin, "/api/v1/tokens").await;
    assert_eq!(status, 200);
    assert!(
        listed
            .as_array()
            .expect("tokens")
            .iter()
            .any(|t| t["id"] == body["id"] && t["region"] == "511083"),
        "{listed}"
    );
    for (region, role, says) in [
        (
            "511099",
            "analyst",
            "\"511099\" is not a region the hub knows",
        ),
        ("510000", "analyst", "lies outside the city 511000"),
        (
            "5110",
            "dashboard",
            "\"5110\" is not a region the hub knows",
        ),
        ("511025", "admin", "not admin tokens"),
        ("511025", "producer", "not producer tokens"),
    ] {
        let (status, body) = token(
            &server,
            json!({"department": "zhili", "role": role, "region": region}),
        )
        .await;
        assert_eq!(status, 400, "{region} {role}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{region}: {body}");
        assert!(message.starts_with("region"), "names the field: {body}");
    }
}

#[tokio::test]
async fn a_county_and_a_town_see_their_rows_through_sql_the_catalogue_and_explain_analyze() {
    let server = TestServer::spawn().await;
    cases(&server).await;
    let county = scoped(&server, "zhili", "analyst", "511025").await;
    let town = scoped(&server, "zhili", "analyst", "511025100").await;
    let longchang = scoped(&server, "zhili", "analyst", "511083").await;
    let all = "SELECT id FROM zhili.cases ORDER BY id";
    assert_eq!(ids(&sql(&server, &county, all).await), vec![1, 2, 3, 4]);
    assert_eq!(ids(&sql(&server, &town, all).await), vec![2, 3]);
    assert_eq!(ids(&sql(&server, &longchang, all).await), vec![7]);
    assert_eq!(ids(&sql(&server, &server.admin, all).await).len(), 8);

    // EXPLAIN ANALYZE shows the sealed scan's own rows, never the scan under it.
    let plan = sql(
        &server,
        &county,
        "EXPLAIN ANALYZE SELECT count(*) FROM zhili.cases",
    )
    .await;
    let text = plan.to_string();
    assert!(
        text.contains("RowScopeExec: region_code in region 511025"),
        "{text}"
    );
    assert!(text.contains("output_rows=4"), "{text}");
    for leak in [
        "DataSourceExec",
        "output_rows=8",
        "row_groups",
        "files_ranges",
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }

    // The catalogue and the snapshot log do not count other counties' rows.
    let (_, dataset) = server.get(&county, "/api/v1/datasets/zhili.cases").await;
    assert_eq!(
        (dataset["rows"].clone(), dataset["files"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(dataset.get("storage").is_none(), "{dataset}");
    let (_, listed) = server.get(&county, "/api/v1/datasets").await;
    let entry = listed
        .as_array()
        .expect("datasets")
        .iter()
        .find(|d| d["name"] == "zhili.cases")
        .cloned()
        .expect("listed");
    assert_eq!(entry["rows"], Value::Null, "{entry}");
    let (_, snapshots) = server
        .get(&county, "/api/v1/datasets/zhili.cases/snapshots")
        .await;
    assert_eq!(snapshots[0]["rows"], Value::Null, "{snapshots}");
    assert_eq!(snapshots[0]["added_rows"], Value::Null, "{snapshots}");
    let (_, admin_view) = server
        .get(&server.admin, "/api/v1/datasets/zhili.cases")
        .await;
    assert_eq!(admin_view["rows"], 8);

    // Without a region column the dataset is refused to scoped tokens, saying why; marked
    // region-free it is read whole; with the column again it is scoped again.
    let patch = |body: Value| {
        let server = &server;
        async move {
            let response = server
                .client
                .patch(server.url("/api/v1/datasets/zhili.cases"))
                .bearer_auth(&server.admin)
                .json(&body)
                .send()
                .await
                .expect("patch");
            support::split(response).await
        }
    };
    let (status, body) = patch(json!({"region_column": null})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sql_status(&server, &county, all).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not say where its rows lie")),
        "{body}"
    );
    let (status, body) = patch(json!({"region_free": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&sql(&server, &county, all).await).len(), 8);
    let (status, body) = patch(json!({"region_column": "category"})).await;
    assert_eq!(
        status, 400,
        "region_free and a region column exclude each other: {body}"
    );
    let (status, body) = patch(json!({"region_column": "id", "region_free": false})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("region_column"), "{body}");
    let (status, body) = patch(json!({"region_column": "region_code", "region_free": false})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&sql(&server, &county, all).await), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn grants_limited_to_rows_only_narrow_and_end_with_expiry_and_revocation() {
    let server = TestServer::spawn().await;
    cases(&server).await;
    let owner = server.token("zhili", Role::Producer).await;
    let reader = server.token("minzheng", Role::Analyst).await;
    let apply = |rows: Value| {
        let (server, reader) = (&server, &reader);
        async move {
            server
                .post_json(
                    reader,
                    "/api/v1/datasets/zhili.cases/share-requests",
                    json!({"purpose": "低保核查 by county", "rows": rows}),
                )
                .await
        }
    };
    let (status, body) = apply(json!({"regions": ["511099"]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("rows.regions[0]"), "{body}");
    let (status, body) = apply(json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, request) =
        apply(json!({"regions": ["511025", "511002"], "since": "2026-11-02T00:00:00Z"})).await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(
        request["rows"],
        json!({"regions": ["511025", "511002"], "since": "2026-11-02T00:00:00Z"})
    );
    let id = request["id"].as_i64().expect("id");
    let approve = |body: Value| {
        let (server, owner) = (&server, &owner);
        async move {
            server
                .post_json(owner, &format!("/api/v1/share-requests/{id}/approve"), body)
                .await
        }
    };
    // Widening is refused: another county, an earlier start, no time limit at all.
    for (rows, field) in [
        (
            json!({"regions": ["511024"], "since": "2026-11-02T00:00:00Z"}),
            "rows.regions[0]",
        ),
        (
            json!({"regions": ["511025"], "since": "2026-11-01T00:00:00Z"}),
            "rows.since",
        ),
        (json!({"regions": ["511025"]}), "rows.since"),
    ] {
        let (status, body) = approve(json!({"rows": rows})).await;
        assert_eq!(status, 400, "{rows}: {body}");
        assert!(body.to_string().contains(field), "{rows}: {body}");
    }
    // Narrowing to one town from the 2nd: rows 2 and 3 (row 1 is older, row 4 elsewhere).
    let (status, decided) = approve(json!({
        "rows": {"regions": ["511025100"], "since": "2026-11-02T00:00:00Z"}
    }))
    .await;
    assert_eq!(status, 200, "{decided}");
    let grant_id = decided["grant"]["id"].as_i64().expect("grant");
    assert_eq!(decided["grant"]["rows"]["regions"], json!(["511025100"]));
    let all = "SELECT id FROM zhili.cases ORDER BY id";
    assert_eq!(ids(&sql(&server, &reader, all).await), vec![2, 3]);
    let (_, audit) = server
        .get(&server.admin, "/api/v1/audit?action=share_decision")
        .await;
    assert!(
        audit.to_string().contains("511025100"),
        "audited with its rows: {audit}"
    );

    // A second grant adds its rows; revoking the first leaves the second's.
    let (_, second) = apply(json!({"regions": ["511002"]})).await;
    let second_id = second["id"].as_i64().expect("id");
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{second_id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&sql(&server, &reader, all).await), vec![2, 3, 6]);
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/grants/{grant_id}/revoke"),
            json!({"reason": "核查结束"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&sql(&server, &reader, all).await), vec![6]);

    // A grant limited to rows expires like any other.
    let (_, third) = apply(json!({"regions": ["511024"]})).await;
    let third_id = third["id"].as_i64().expect("id");
    // Far enough ahead that the approval and the first read happen before it even on a
    // loaded machine; the test then waits until just past it.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(4);
    let soon = expires.to_rfc3339();
    let (status, body) = server
        .post_json(
            &owner,
            &format!("/api/v1/share-requests/{third_id}/approve"),
            json!({"expires_at": soon}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&sql(&server, &reader, all).await), vec![5, 6]);
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(300)).await;
    assert_eq!(ids(&sql(&server, &reader, all).await), vec![6]);
}

/// Three cameras in 资中县 (one in town 511025100 by its civil code), one in 威远县.
async fn cameras(server: &TestServer) {
    server.department("gongan").await;
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/cameras/batch",
            json!([
                {"id": "51102500001320000001", "department": "gongan", "civil_code": "511025100"},
                {"id": "51102500001320000002", "department": "gongan", "civil_code": "511025001"},
                {"id": "51102500001320000003", "department": "gongan"},
                {"id": "51102400001320000004", "department": "gongan"}
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json(
            &server.admin,
            "/api/v1/cameras/keepalive",
            json!([{"id": "51102500001320000001"}, {"id": "51102400001320000004"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn camera_statistics_and_searches_of_a_scope_are_the_admins_for_its_region() {
    let server = TestServer::spawn().await;
    cameras(&server).await;
    let county = scoped(&server, "gongan", "analyst", "511025").await;
    let town = scoped(&server, "gongan", "analyst", "511025100").await;
    let stats = "/api/v1/cameras/stats?group_by=region&window_hours=24";
    let (_, admin) = server.get(&server.admin, stats).await;
    let (_, mine) = server.get(&county, stats).await;
    let admin_group = admin["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["key"] == "511025")
        .cloned()
        .expect("511025");
    let mine_groups = mine["groups"].as_array().expect("groups");
    assert_eq!(mine_groups.len(), 1, "{mine}");
    for figure in [
        "total",
        "online",
        "offline",
        "unknown",
        "online_rate",
        "complete",
    ] {
        assert_eq!(
            mine_groups[0][figure], admin_group[figure],
            "{figure}: {mine} {admin}"
        );
        assert_eq!(mine["overall"][figure], admin_group[figure], "{figure}");
    }
    assert_eq!(mine["overall"]["total"], 3);
    let (_, town_stats) = server.get(&town, stats).await;
    assert_eq!(town_stats["overall"]["total"], 1, "{town_stats}");
    assert_eq!(town_stats["overall"]["online"], 1, "{town_stats}");
    // Whole-day statistics take the same scopes (a town's through its channels' daily rows,
    // the county's through the daily group totals).
    let daily = "/api/v1/cameras/stats?group_by=region&days=7";
    for (token, total) in [(&town, 1), (&county, 3)] {
        let (status, body) = server.get(token, daily).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["overall"]["total"], total, "{body}");
        assert_eq!(body["window"]["days"], 7, "{body}");
    }

    let listed = |body: &Value| -> Vec<String> {
        body["cameras"]
            .as_array()
            .expect("cameras")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    };
    let (_, found) = server.get(&county, "/api/v1/cameras").await;
    assert_eq!(listed(&found).len(), 3, "{found}");
    let (_, found) = server.get(&county, "/api/v1/cameras?region=511024").await;
    assert!(
        listed(&found).is_empty(),
        "a filter cannot widen the scope: {found}"
    );
    let (_, found) = server.get(&town, "/api/v1/cameras").await;
    assert_eq!(listed(&found), vec!["51102500001320000001"]);
    let (status, _) = server
        .get(&county, "/api/v1/cameras/51102400001320000004")
        .await;
    assert_eq!(status, 404, "another county's camera is not found");
    let (status, _) = server
        .get(&county, "/api/v1/cameras/51102500001320000003")
        .await;
    assert_eq!(status, 200);
    let rows = sql(&server, &town, "SELECT id FROM hub.cameras").await;
    assert_eq!(rows, json!([{"id": "51102500001320000001"}]));
}

#[tokio::test]
async fn an_endpoint_answers_each_level_its_own_and_no_etag_crosses_scopes() {
    let server = TestServer::spawn().await;
    cases(&server).await;
    let owner = server.token("zhili", Role::Analyst).await;
    let (status, body) = server
        .put_json(
            &owner,
            "/api/v1/endpoints/centre-cases",
            json!({
                "sql": "SELECT r.name AS region, count(c.id) AS cases FROM hub.regions r \
                        CROSS JOIN zhili.cases c WHERE r.code = $caller_region \
                        GROUP BY r.name",
                "max_age_s": 5
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["sources"].to_string().contains("caller region"),
        "{body}"
    );
    let (status, body) = server
        .put_json(
            &owner,
            "/api/v1/endpoints/declared",
            json!({"sql": "SELECT $caller_region AS r",
                   "params": [{"name": "caller_region", "type": "text"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("params[0].name"), "{body}");

    let city = scoped(&server, "zhili", "dashboard", "511000").await;
    let county = scoped(&server, "zhili", "dashboard", "511025").await;
    let unscoped = server.token("zhili", Role::Dashboard).await;
    let call = |token: String, etag: Option<String>| {
        let server = &server;
        async move {
            let mut request = server
                .client
                .get(server.url("/api/v1/endpoints/centre-cases"))
                .bearer_auth(&token);
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            let response = request.send().await.expect("call");
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: Value = serde_json::from_slice(&response.bytes().await.expect("body"))
                .unwrap_or(Value::Null);
            (status, etag, body)
        }
    };
    let (_, city_tag, city_body) = call(city.clone(), None).await;
    let (_, _, unscoped_body) = call(unscoped, None).await;
    let (status, county_tag, county_body) = call(county.clone(), city_tag.clone()).await;
    assert_eq!(status, 200, "the city's ETag is not the county's answer");
    // The city's own rows: all but the NULL one; the county's: its four.
    assert_eq!(city_body, json!([{"region": "内江市", "cases": 7}]));
    assert_eq!(unscoped_body, json!([{"region": "内江市", "cases": 8}]));
    assert_eq!(county_body, json!([{"region": "资中县", "cases": 4}]));
    assert_ne!(city_tag, county_tag);
    let (status, _, _) = call(county, county_tag).await;
    assert_eq!(status, 304, "the county's own ETag still holds");
}

/// Region codes rows may carry: every level inside the city, a retired code, another city,
/// nothing and nonsense.
fn region_code() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("abc".to_string())),
        Just(Some("511102".to_string())),
        Just(Some("5110".to_string())),
        prop::sample::select(vec![
            "511000", "511002", "511011", "511024", "511025", "511083", "511028",
        ])
        .prop_map(|c| Some(c.to_string())),
        (
            prop::sample::select(vec!["511002", "511011", "511024", "511025", "511083"]),
            prop::sample::select(vec!["001", "002", "100", "101"]),
            prop::option::of(0u32..1000),
        )
            .prop_map(|(county, town, village)| Some(match village {
                Some(v) => format!("{county}{town}{v:03}"),
                None => format!("{county}{town}"),
            })),
    ]
}

#[test]
fn a_scoped_count_equals_the_admins_count_filtered_by_the_prefix_rule() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(async {
        let server = TestServer::spawn().await;
        server.department("zhili").await;
        server
    });
    let scopes: Vec<&str> = cityhub_catalog::region::regions()
        .iter()
        .map(|r| r.code)
        .filter(|code| Scope::of(code).is_ok())
        .collect();
    assert!(scopes.len() >= 20, "{scopes:?}");
    let case = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    };
    proptest!(config, |(codes in prop::collection::vec(region_code(), 1..120))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(async {
            let name = format!("zhili.rows_{n}");
            let (status, body) = server
                .post_json(&server.admin, "/api/v1/datasets", json!({
                    "name": name, "sharing": "unconditional", "region_column": "region_code",
                    "columns": [{"name": "id", "type": "int64", "nullable": false},
                                {"name": "region_code", "type": "string"}]}))
                .await;
            assert_eq!(status, 201, "{body}");
            // Two pushes, so that the rows lie in two files with their own statistics.
            let half = codes.len() / 2;
            for part in [&codes[..half], &codes[half..]] {
                if part.is_empty() {
                    continue;
                }
                let body: String = part
                    .iter()
                    .enumerate()
                    .map(|(i, code)| format!("{}\n", json!({"id": i, "region_code": code})))
                    .collect();
                let (status, answer) = server.push(&server.admin, &name, NDJSON, body).await;
                assert_eq!(status, 201, "{answer}");
            }
            for code in &scopes {
                let scope = Scope::of(code).expect("scope");
                let token = scoped(&server, "zhili", "analyst", code).await;
                let scoped_rows = sql(&server, &token, &format!("SELECT count(*) AS n FROM {name}")).await;
                let rule = scope
                    .prefixes
                    .iter()
                    .map(|p| format!("starts_with(region_code, '{p}')"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let admin_rows = sql(
                    &server,
                    &server.admin,
                    &format!("SELECT count(*) AS n FROM {name} WHERE {rule}"),
                )
                .await;
                let expected = codes
                    .iter()
                    .flatten()
                    .filter(|c| scope.contains(c))
                    .count();
                assert_eq!(scoped_rows, admin_rows, "{code}: {codes:?}");
                assert_eq!(scoped_rows[0]["n"], expected, "{code}");
            }
        });
    });
}
