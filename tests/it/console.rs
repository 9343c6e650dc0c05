//! The web console: its files and headers, the API parts it relies on (`/me`, the masked
//! and column headers of `/sql`, what dashboard tokens may call), and the console itself in
//! a real browser: `tests/browser/console.test.mjs` (Node's test runner, playwright-core
//! driving Debian's chromium-headless-shell; both installed by `.ci/run`) against this hub
//! with the full demo city. Screenshots land in `target/console-screenshots/`.

use std::path::Path;

use cityhub_catalog::Role;
use serde_json::{Value, json};

use crate::support::{TestServer, fixture, grant};

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let server = TestServer::spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let moved = client
        .get(server.url("/console"))
        .send()
        .await
        .expect("the hub answers");
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/console/");

    let page = client
        .get(server.url("/console/"))
        .send()
        .await
        .expect("the hub answers");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("a text header");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let etag = page.headers()["etag"].clone();
    let html = page.text().await.expect("a text body");
    assert!(html.contains(r#"<script type="module" src="app.js"></script>"#));
    assert!(!html.contains("<script>"), "no inline script");

    let script = client
        .get(server.url("/console/app.js"))
        .send()
        .await
        .expect("the hub answers");
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let again = client
        .get(server.url("/console/"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("the hub answers");
    assert_eq!(again.status(), 304);

    for missing in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
    ] {
        let answer = client
            .get(server.url(missing))
            .send()
            .await
            .expect("the hub answers");
        assert_eq!(answer.status(), 404, "{missing}");
    }
    // Everything the console needs ships in the binary: the county outlines too.
    let outlines: Value = client
        .get(server.url("/console/neijiang-counties.json"))
        .send()
        .await
        .expect("the hub answers")
        .json()
        .await
        .expect("a JSON body");
    let codes: Vec<&str> = outlines["features"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|f| f["properties"]["code"].as_str().expect("a string"))
        .collect();
    assert_eq!(codes.len(), 5);
    for county in cityhub_catalog::region::counties_of(cityhub_catalog::region::CITY) {
        assert!(
            codes.contains(&county.code),
            "{} has an outline",
            county.code
        );
    }
}

#[tokio::test]
async fn me_says_who_a_token_is_and_what_its_role_may_do() {
    let server = TestServer::spawn().await;
    server.department("gongan").await;
    let (status, me) = server.get(&server.admin, "/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["department"], "admin");
    assert!(
        me["can"]
            .as_array()
            .expect("an array")
            .contains(&json!("audit"))
    );
    assert!(me.get("token_hash").is_none() && !me.to_string().contains("chub_"));

    let producer = server.token("gongan", Role::Producer).await;
    let (_, me) = server.get(&producer, "/api/v1/me").await;
    assert_eq!(me["can"], json!(["catalogue", "decide", "kpi"]));

    // A wall screen's token: who it is, endpoints and camera statistics; nothing else.
    let dashboard = server.token("gongan", Role::Dashboard).await;
    let (status, me) = server.get(&dashboard, "/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["can"], json!(["kpi"]));
    let (status, stats) = server.get(&dashboard, "/api/v1/cameras/stats").await;
    assert_eq!(status, 200, "{stats}");
    for refused in [
        "/api/v1/datasets",
        "/api/v1/cameras",
        "/api/v1/share-requests",
    ] {
        let (status, _) = server.get(&dashboard, refused).await;
        assert_eq!(status, 403, "{refused}");
    }
    let (status, _) = server.get("chub_wrong", "/api/v1/me").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sql_answers_name_their_columns_and_mark_the_masked_ones() {
    let fixture = fixture().await;
    let server = &fixture.server;
    // With a grant of every column but no unmasking, minzheng reads gongan's people with
    // names and phones masked.
    grant(
        server,
        &fixture.analyst,
        &server.admin,
        "gongan.people",
        "核对低保户联系方式",
    )
    .await;
    let ask = |sql: &str| {
        server
            .client
            .post(server.url("/api/v1/sql"))
            .bearer_auth(&fixture.analyst)
            .header("accept", "application/x-ndjson")
            .body(sql.to_string())
            .send()
    };
    let answer = ask("SELECT name AS 姓名, phone, id FROM gongan.people ORDER BY id")
        .await
        .expect("the hub answers");
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(
        headers["x-cityhub-columns"], "%E5%A7%93%E5%90%8D,phone,id",
        "names in order, percent-encoded"
    );
    let masked = headers["x-cityhub-masked-columns"]
        .to_str()
        .expect("a text header");
    let body = answer.text().await.expect("a text body");
    let first: Value =
        serde_json::from_str(body.lines().next().expect("a row")).expect("a JSON row");
    assert!(
        masked.split(',').any(|p| p == "1"),
        "phone is masked: {masked} {first}"
    );
    assert!(
        first["phone"].as_str().expect("a string").contains('*'),
        "{first}"
    );

    // The owner reads the same columns unmasked, and no header says otherwise.
    let plain = server
        .client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&server.admin)
        .body("SELECT phone FROM gongan.people")
        .send()
        .await
        .expect("the hub answers");
    assert!(plain.headers().get("x-cityhub-masked-columns").is_none());
}

/// The demo tokens the browser tests sign in with, by the names the script uses.
fn browser_tokens(city: &cityhub::demo::DemoCity) -> Value {
    let find = |department: &str, role: Role, region: Option<&str>| {
        city.tokens
            .iter()
            .find(|t| t.department == department && t.role == role && t.region.as_deref() == region)
            .map(|t| t.token.clone())
            .unwrap_or_else(|| panic!("the demo has a {department} {role} token"))
    };
    json!({
        "admin": find("admin", Role::Admin, None),
        "zhili_producer": find("zhili", Role::Producer, None),
        "gongan_producer": find("gongan", Role::Producer, None),
        "zhili_analyst": find("zhili", Role::Analyst, None),
        "jiaotong_analyst": find("jiaotong", Role::Analyst, None),
        "zhili_dashboard": find("zhili", Role::Dashboard, None),
        "county_analyst": find("zhili", Role::Analyst, Some("511025")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let server = TestServer::spawn().await;
    let city = cityhub::demo::load(&server.state)
        .await
        .expect("the demo city loads");
    // As `cityhub serve --demo` does: the demo platform keeps its cameras alive.
    let platform = tokio::spawn(cityhub::demo::cameras::simulate(server.state.clone()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let screenshots = root.join("target/console-screenshots");
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg(root.join("tests/browser/console.test.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("CITYHUB_URL", server.url(""))
        .env("CITYHUB_TOKENS", browser_tokens(&city).to_string())
        .env("SCREENSHOT_DIR", &screenshots)
        .output()
        .await
        .expect("node runs (Node.js 20; `npm ci` in tests/browser installs playwright-core)");
    platform.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser tests failed (screenshots in {}):\n{stdout}\n{stderr}",
        screenshots.display()
    );
    // Each scenario passed, none was skipped.
    assert!(stdout.contains("# pass 8"), "{stdout}");
    assert!(
        stdout.contains("# fail 0") && stdout.contains("# skipped 0"),
        "{stdout}"
    );
}
