//! End-to-end: the OpenAPI document at `/api/v1/openapi.json` lists every route the README
//! documents, every operation it lists is routed and guarded as it says, its references
//! resolve, and it passes `openapi-spec-validator` (installed by `.ci/run`; without it the
//! check says so and passes, unless `CITYHUB_REQUIRE_VALIDATOR=1`).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::support::TestServer;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

async fn document(server: &TestServer) -> Value {
    let response = reqwest::get(server.url("/api/v1/openapi.json"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "the document needs no token");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    response.json().await.expect("the document is JSON")
}

/// `(METHOD, path)` of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut found = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                found.insert((method.to_string(), path.clone()));
            }
        }
    }
    found
}

/// `(METHOD, path)` of every route in the README's "HTTP API" table. A cell names routes
/// as `` `GET /a`, `GET /b` `` or `` `PUT`, `DELETE /a` `` (methods sharing the path after
/// them); query strings are left out.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = readme
        .split("## HTTP API")
        .nth(1)
        .expect("the README has an \"HTTP API\" section");
    let mut routes = BTreeSet::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cell = line
            .split(" | ")
            .next()
            .unwrap_or("")
            .trim_start_matches("| ");
        let mut waiting = Vec::new();
        for (index, part) in cell.split('`').enumerate() {
            if index % 2 == 0 {
                continue;
            }
            let (method, path) = part.split_once(' ').unwrap_or((part, ""));
            if !METHODS.contains(&method) {
                continue;
            }
            waiting.push(method.to_string());
            if !path.is_empty() {
                let path = path.split('?').next().unwrap_or(path);
                for method in waiting.drain(..) {
                    routes.insert((method, path.to_string()));
                }
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_document_lists_every_route_of_the_readme() {
    let server = TestServer::spawn().await;
    let document = document(&server).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let documented = operations(&document);
    let readme = readme_routes();
    assert!(
        readme.len() >= 40,
        "the README's table was read: {readme:?}"
    );
    let missing: Vec<_> = readme.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of the README missing from the OpenAPI document: {missing:?}"
    );
    let undocumented: Vec<_> = documented.difference(&readme).collect();
    assert!(
        undocumented.is_empty(),
        "routes of the OpenAPI document missing from the README's table: {undocumented:?}"
    );
    server.stop().await;
}

/// A well-formed value for a path parameter of `path`.
fn sample(path: &str, name: &str) -> &'static str {
    match name {
        "name" if path.starts_with("/api/v1/endpoints") => "camera-online-rate",
        "name" => "zhili.hotline_cases",
        "id" if path.starts_with("/api/v1/cameras") => "51102500001320000017",
        "id" => "1",
        other => panic!("no sample for path parameter {other} of {path}"),
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_guarded_as_documented() {
    let server = TestServer::spawn().await;
    let document = document(&server).await;
    let mut operation_ids = BTreeSet::new();
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let operation_id = operation["operationId"].as_str().expect("an operationId");
        assert!(
            operation_ids.insert(operation_id.to_string()),
            "{method} {path}: operationId {operation_id} is used twice (client generators \
             name their functions by it)"
        );
        let mut url = path.clone();
        while let Some(start) = url.find('{') {
            let end = url[start..].find('}').expect("closing brace") + start;
            let value = sample(&path, &url[start + 1..end]);
            url.replace_range(start..=end, value);
        }
        let request = server
            .client
            .request(method.parse().expect("method"), server.url(&url));
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let (_, body) = crate::support::split(response).await;
        assert_ne!(status, 405, "{method} {path} is not routed for its method");
        assert!(
            !(status == 404
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no such route"))),
            "{method} {path} is not routed: {body}"
        );
        let secured = operation["security"].is_array();
        assert_eq!(
            secured,
            path.starts_with("/api/v1/") && path != "/api/v1/openapi.json",
            "{method} {path}: the bearer scheme is on every /api/v1 route but the document"
        );
        if secured {
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
            assert!(
                operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
                    == "#/components/schemas/ErrorAnswer",
                "{method} {path} documents its 401 in the error shape"
            );
        } else {
            assert_eq!(status, 200, "{method} {path} needs no token");
        }
        assert!(
            operation["responses"]["default"].is_object(),
            "{method} {path} documents its errors"
        );
    }
    server.stop().await;
}

fn references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.insert(target.clone());
            }
            object.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_resolves_and_bodies_name_their_fields() {
    let server = TestServer::spawn().await;
    let document = document(&server).await;
    let mut found = BTreeSet::new();
    references(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in &found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(
            document.pointer(pointer).is_some(),
            "{target} is referenced but not defined"
        );
    }
    let schemas = &document["components"]["schemas"];
    // The registration body, as the catalog reads it: required fields and closed objects.
    let new_dataset = &schemas["NewDataset"];
    let required: Vec<&str> = new_dataset["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["name", "columns"], "{new_dataset}");
    assert_eq!(new_dataset["additionalProperties"], false, "{new_dataset}");
    assert_eq!(
        schemas["Sharing"]["enum"],
        serde_json::json!(["unconditional", "conditional", "none"])
    );
    // The error shape is what errors look like.
    let (status, body) = server
        .get(&server.admin, "/api/v1/datasets/gongan.nosuch")
        .await;
    assert_eq!(status, 404);
    let shape = &schemas["ErrorDetail"]["required"];
    for field in shape.as_array().expect("required fields") {
        assert!(
            body["error"][field.as_str().expect("name")].is_string(),
            "{body} has {field}"
        );
    }
    // A typed answer: the listing's `access` is in the schema and in the answer.
    let (_, datasets) = server.get(&server.admin, "/api/v1/datasets").await;
    let listed = &schemas["ListedDataset"];
    let text = listed.to_string();
    assert!(text.contains("\"access\""), "{listed}");
    for dataset in datasets.as_array().expect("datasets") {
        assert!(dataset["access"].is_string(), "{dataset}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_document_passes_openapi_spec_validator() {
    let server = TestServer::spawn().await;
    let document = document(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write");
    let run = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output();
    let installed = run
        .as_ref()
        .is_ok_and(|out| !String::from_utf8_lossy(&out.stderr).contains("No module named"));
    if !installed {
        assert!(
            std::env::var("CITYHUB_REQUIRE_VALIDATOR").as_deref() != Ok("1"),
            "CITYHUB_REQUIRE_VALIDATOR=1 but openapi-spec-validator is missing (pip install \
             openapi-spec-validator)"
        );
        eprintln!("skipped: pip install openapi-spec-validator to validate the document");
        server.stop().await;
        return;
    }
    let out = run.expect("ran");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}
