//! End-to-end: the `cityhub` binary's commands, and the demo city.

use crate::support;
use cityhub_server::AppState;
use std::io::Write;
use std::process::{Command, Output};

use cityhub_catalog::{DatasetName, token::hash_token};
use cityhub_config::Config;

fn cityhub(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cityhub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A hub on `data_dir` whose clock reads the last 17:58 UTC: an hour at which the demo
/// once had no "today" (its Beijing midnight was a day late from 16:00 to 24:00 UTC).
async fn state_for(data_dir: &std::path::Path) -> AppState {
    let mut config = Config::default();
    config.storage.data_dir = data_dir.display().to_string();
    AppState::open_with_clock(config, support::evening_clock())
        .await
        .expect("open")
}

#[tokio::test]
async fn token_create_prints_only_a_working_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = cityhub(
        dir.path(),
        &[
            "token",
            "create",
            "--department",
            "admin",
            "--role",
            "admin",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must hold the token and nothing else: {stdout:?}"
    );
    let token = lines[0];
    assert!(token.starts_with("chub_"));
    let state = state_for(dir.path()).await;
    let principal = state
        .catalog
        .principal_by_token_hash(&hash_token(token))
        .await
        .expect("lookup")
        .expect("stored");
    assert_eq!(principal.department, "admin");

    let bad_role = cityhub(
        dir.path(),
        &["token", "create", "--department", "admin", "--role", "king"],
    );
    assert!(!bad_role.status.success());
    assert!(text(&bad_role.stderr).contains("admin, producer, analyst or dashboard"));
    let bad_department = cityhub(
        dir.path(),
        &[
            "token",
            "create",
            "--department",
            "nosuch",
            "--role",
            "analyst",
        ],
    );
    assert!(!bad_department.status.success());
    assert!(text(&bad_department.stderr).contains("nosuch"));
}

#[tokio::test]
async fn viid_account_create_prints_only_a_password_that_answers_the_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = "51100000001190000001";
    let args = [
        "viid",
        "account",
        "create",
        "--id",
        id,
        "--department",
        "admin",
    ];
    let output = cityhub(dir.path(), &args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout holds the password alone: {stdout:?}"
    );
    let password = lines[0];
    assert!(password.len() >= 32, "{password}");
    let state = state_for(dir.path()).await;
    let account = state
        .catalog
        .viid_account(id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(account.department, "admin");
    assert_eq!(account.ha1, cityhub_catalog::viid::ha1(id, password));
    assert!(!account.ha1.contains(password), "only the digest is kept");
    drop(state);

    let again = cityhub(dir.path(), &args);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let bad = cityhub(
        dir.path(),
        &[
            "viid",
            "account",
            "create",
            "--id",
            "123",
            "--department",
            "admin",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("20-digit"),
        "{}",
        text(&bad.stderr)
    );
    let listed = cityhub(dir.path(), &["viid", "account", "list"]);
    assert!(listed.status.success());
    assert!(
        text(&listed.stdout).contains(id),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn config_prints_values_with_their_sources_and_reports_all_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cityhub.toml");
    std::fs::write(&file, "[server]\nmax_body_bytes = 4096\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args(["config", "--config"])
        .arg(&file)
        .args(["--bind", "0.0.0.0:9999"])
        .env("CITYHUB__LOG__LEVEL", "debug")
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("bind = \"0.0.0.0:9999\"") && l.ends_with("# flag --bind")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("max_body_bytes = 4096") && l.contains("# file ")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("level = \"debug\"")
            && l.ends_with("# environment CITYHUB__LOG__LEVEL")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("compression = \"zstd\"") && l.ends_with("# default")),
        "{stdout}"
    );

    std::fs::write(&file, "[server]\nbind = 8080\nmax_body = 1\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args(["config", "--config"])
        .arg(&file)
        .env("CITYHUB__INGEST__COMPRESSION", "lz77")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(stderr.contains("server.bind"), "{stderr}");
    assert!(stderr.contains("server.max_body"), "{stderr}");
    assert!(
        stderr.contains("ingest.compression (from environment CITYHUB__INGEST__COMPRESSION)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn import_creates_a_dataset_from_a_csv_and_refuses_bad_files_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let state = state_for(&data).await;
    state
        .catalog
        .create_department("zhili", "社会治理中心")
        .await
        .expect("dept");
    drop(state);

    let csv = dir.path().join("cases.csv");
    let mut file = std::fs::File::create(&csv).expect("create");
    writeln!(file, "case_id,received_at,region,score").expect("write");
    for i in 0..5000 {
        writeln!(file, "{i},2024-05-01T08:00:00+08:00,511011,{}.5", i % 7).expect("write");
    }
    drop(file);
    let output = cityhub(
        &data,
        &[
            "import",
            "zhili.cases",
            csv.to_str().expect("utf8"),
            "--create",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Registered zhili.cases"), "{stdout}");
    assert!(stdout.contains("received_at timestamp"), "{stdout}");
    assert!(
        stdout.contains("Imported 5000 rows into zhili.cases"),
        "{stdout}"
    );

    let state = state_for(&data).await;
    let name = DatasetName::parse("zhili.cases").expect("name");
    let dataset = state
        .catalog
        .dataset(&name)
        .await
        .expect("q")
        .expect("created");
    assert_eq!(dataset.rows, 5000);
    assert_eq!(
        support::row_count(&support::read_rows(&state, "zhili.cases").await),
        5000
    );

    // A bad row anywhere refuses the whole file, and says where.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "case_id,received_at,region,score\n1,2024-05-01T08:00:00Z,511011,1\n2,yesterday,511011,2\n",
    )
    .expect("write");
    let output = cityhub(
        &data,
        &["import", "zhili.cases", bad.to_str().expect("utf8")],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 3, column received_at"), "{stderr}");
    let dataset = state
        .catalog
        .dataset(&name)
        .await
        .expect("q")
        .expect("present");
    assert_eq!(dataset.rows, 5000, "a refused import commits nothing");

    let missing = cityhub(
        &data,
        &["import", "zhili.other", csv.to_str().expect("utf8")],
    );
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("--create"));
}

#[tokio::test]
async fn the_demo_city_loads_once_and_keeps_its_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_for(dir.path()).await;
    let first = cityhub::demo::load_scaled(&state, 0.01)
        .await
        .expect("demo");
    assert!(first.fresh);
    assert!(first.rows_loaded >= 10_000);
    let datasets = state.catalog.list_datasets().await.expect("list");
    let names: Vec<String> = datasets.iter().map(|d| d.name.to_string()).collect();
    for expected in [
        "gongan.traffic_violations",
        "yingji.incidents",
        "zhili.grid_events",
        "zhili.hotline_cases",
    ] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    for dataset in &datasets {
        assert!(dataset.rows > 0, "{} is empty", dataset.name);
        assert!(
            dataset.description.contains("synthetic"),
            "{} is not labelled synthetic",
            dataset.name
        );
    }
    let hotline = datasets
        .iter()
        .find(|d| d.name.table() == "hotline_cases")
        .expect("hotline");
    assert!(
        hotline
            .columns
            .iter()
            .any(|c| c.name == "caller_phone" && c.sensitivity.is_some())
    );
    let regions = support::read_rows(&state, "zhili.hotline_cases").await;
    let codes: std::collections::BTreeSet<String> = regions
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("region_code").expect("region_code");
            let strings = arrow::array::AsArray::as_string::<i32>(column);
            strings
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        vec!["511002", "511011", "511024", "511025", "511083"]
    );

    // The video network: channels in all five counties, a few percent offline, a week of
    // history, and checkpoints whose ids the traffic violations carry.
    assert!(first.cameras_loaded >= 940, "{}", first.cameras_loaded);
    // The hub's clock, which the demo loaded its history on.
    let now = state.clock.now().timestamp_millis();
    let liveness = cityhub_catalog::camera::status::Liveness::default();
    let (counties, overall) = state
        .catalog
        .camera_stats(
            cityhub_catalog::camera::StatsGroup::Region,
            now - 7 * 86_400_000,
            now,
            liveness,
            None,
        )
        .await
        .expect("stats");
    let keys: Vec<&str> = counties.iter().filter_map(|c| c.key.as_deref()).collect();
    assert_eq!(keys, vec!["511002", "511011", "511024", "511025", "511083"]);
    assert!(
        (0.9..0.995).contains(&overall.online_rate),
        "{}",
        overall.online_rate
    );
    assert!(
        (0.9..0.999).contains(&overall.availability),
        "{}",
        overall.availability
    );
    assert!(
        (0.85..1.0).contains(&overall.completeness),
        "{}",
        overall.completeness
    );
    let history = state
        .catalog
        .camera_status_events(0, 100_000)
        .await
        .expect("history");
    assert!(history.iter().any(|e| e.at < now - 6 * 86_400_000));
    assert!(
        state
            .catalog
            .camera("51102500051210000001")
            .await
            .expect("read")
            .is_some(),
        "checkpoint 1 of 资中 exists"
    );

    // The demo platform's round: NVRs that are up refresh their channels, down ones do not.
    let before = state.clock.now().timestamp_millis();
    let settings = state.cameras.settings().clone();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    cityhub::demo::cameras::tick(&state, &settings, &mut rng)
        .await
        .expect("tick");
    let nvrs = state
        .catalog
        .search_cameras(
            cityhub_catalog::camera::CameraQuery {
                type_code: Some(118),
                limit: 10_000,
                ..Default::default()
            },
            before,
            liveness,
        )
        .await
        .expect("nvrs");
    let (down, up): (Vec<_>, Vec<_>) = nvrs
        .iter()
        .partition(|nvr| cityhub::demo::cameras::nvr_is_down(&nvr.id.id));
    assert!(!up.is_empty());
    for nvr in &up {
        assert!(
            nvr.live.last_seen_at.is_some_and(|seen| seen >= before),
            "{nvr:?}"
        );
    }
    for nvr in &down {
        assert!(
            nvr.live.last_seen_at.is_none_or(|seen| seen < before),
            "{nvr:?}"
        );
    }

    // The governance centre's dashboard endpoints answer on the demo data.
    let demo_endpoint_as =
        |name: &'static str, query: Vec<(String, String)>, region: Option<&'static str>| {
            let endpoints = state.endpoints.clone();
            async move {
                let loaded = endpoints.get(name).await.expect("read").expect(name);
                assert_eq!(loaded.endpoint.owner, "zhili");
                let caller = cityhub_catalog::Principal {
                    region: region.map(String::from),
                    ..cityhub_catalog::Principal::local_operator()
                };
                let call = endpoints.call(loaded, &query, &caller).expect("call");
                let result = endpoints.result(&call).await.expect(name);
                serde_json::from_slice::<serde_json::Value>(result.json()).expect("json")
            }
        };
    let demo_endpoint =
        |name: &'static str, query: Vec<(String, String)>| demo_endpoint_as(name, query, None);
    let rates = demo_endpoint("camera-online-rate", vec![]).await;
    let rates = rates.as_array().expect("rows");
    assert_eq!(rates.len(), 5, "{rates:?}");
    let channels: u64 = rates.iter().filter_map(|r| r["channels"].as_u64()).sum();
    assert!((900..=94_000).contains(&channels), "{channels}");
    for rate in rates {
        let online = rate["online_rate"].as_f64().expect("rate");
        assert!((0.5..1.0).contains(&online), "{rate}");
    }
    let today = demo_endpoint("hotline-today", vec![]).await;
    assert!(!today.as_array().expect("rows").is_empty(), "{today}");
    let old_day = demo_endpoint("hotline-today", vec![("day".into(), "2020-01-01".into())]).await;
    assert_eq!(old_day, serde_json::json!([]));
    let hours = demo_endpoint("violations-per-hour", vec![("hours".into(), "48".into())]).await;
    let hours = hours.as_array().expect("rows");
    assert!((40..=49).contains(&hours.len()), "{}", hours.len());
    let county = demo_endpoint(
        "violations-per-hour",
        vec![("region".into(), "511025".into())],
    )
    .await;
    let total = |rows: &serde_json::Value| -> u64 {
        rows.as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["violations"].as_u64())
            .sum()
    };
    let all = demo_endpoint("violations-per-hour", vec![]).await;
    assert!(0 < total(&county) && total(&county) < total(&all));
    let grid = demo_endpoint("grid-events-open", vec![]).await;
    let grid = grid.as_array().expect("rows");
    assert!(
        !grid.is_empty() && grid.iter().all(|r| r["region_name"].is_string()),
        "{grid:?}"
    );
    // One definition for every level: the city's centre and 资中县's see their own area,
    // and the county's figures are its share of the city's.
    let city = demo_endpoint("centre-overview", vec![]).await;
    let zizhong = demo_endpoint_as("centre-overview", vec![], Some("511025")).await;
    assert_eq!(city[0]["region"], "511000", "{city}");
    assert_eq!(zizhong[0]["region"], "511025", "{zizhong}");
    let open = |rows: &serde_json::Value| rows[0]["open_events"].as_u64().expect("count");
    assert!(
        0 < open(&zizhong) && open(&zizhong) < open(&city),
        "{zizhong} {city}"
    );
    let zizhong_grid = demo_endpoint_as("grid-events-open", vec![], Some("511025")).await;
    assert_eq!(
        zizhong_grid
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["region_code"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["511025"],
        "a county's screen counts its county only"
    );
    let zizhong_rates = demo_endpoint_as("camera-online-rate", vec![], Some("511025")).await;
    assert_eq!(
        zizhong_rates.as_array().map(Vec::len),
        Some(1),
        "{zizhong_rates}"
    );
    let scoped: Vec<_> = first.tokens.iter().filter(|t| t.region.is_some()).collect();
    assert_eq!(
        scoped.len(),
        12,
        "the city's and five counties' analyst and dashboard"
    );

    let second = cityhub::demo::load_scaled(&state, 0.01)
        .await
        .expect("demo again");
    for (name, _) in cityhub::demo::endpoints::definitions() {
        let loaded = state.endpoints.get(name).await.expect("read").expect(name);
        assert_eq!(
            loaded.endpoint.version, 1,
            "a second load keeps {name} as it is"
        );
    }
    assert!(!second.fresh);
    assert_eq!(second.rows_loaded, 0);
    assert_eq!(second.cameras_loaded, 0);
    let tokens = |city: &cityhub::demo::DemoCity| {
        city.tokens
            .iter()
            .map(|t| t.token.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(tokens(&first), tokens(&second));
    let after = state.catalog.list_datasets().await.expect("list");
    for (before, after) in datasets.iter().zip(&after) {
        assert_eq!(
            before.snapshot_id, after.snapshot_id,
            "a second load must not add data"
        );
    }
    let admin = &first.tokens[0];
    let principal = state
        .catalog
        .principal_by_token_hash(&hash_token(&admin.token))
        .await
        .expect("q")
        .expect("token works");
    assert_eq!(principal.role, cityhub_catalog::Role::Admin);
}

#[tokio::test]
async fn import_reads_ndjson_and_parquet_and_a_failed_create_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let state = state_for(&data).await;
    state
        .catalog
        .create_department("yingji", "应急管理局")
        .await
        .expect("dept");

    let ndjson = dir.path().join("incidents.ndjson");
    let lines: String = (0..300)
        .map(|i| format!("{{\"incident_id\": {i}, \"kind\": \"火灾\", \"at\": \"2026-11-01T10:00:00+08:00\"}}\n"))
        .collect();
    std::fs::write(&ndjson, lines).expect("write");
    let output = cityhub(
        &data,
        &[
            "import",
            "yingji.incidents",
            ndjson.to_str().expect("utf8"),
            "--create",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("incident_id int64"));

    // Export what was imported as Parquet and import it into a second dataset.
    let batches = support::read_rows(&state, "yingji.incidents").await;
    let parquet_path = dir.path().join("incidents.parquet");
    let file = std::fs::File::create(&parquet_path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).expect("writer");
    for batch in &batches {
        writer.write(batch).expect("write");
    }
    writer.close().expect("close");
    let output = cityhub(
        &data,
        &[
            "import",
            "yingji.copy",
            parquet_path.to_str().expect("utf8"),
            "--create",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        support::row_count(&support::read_rows(&state, "yingji.copy").await),
        300
    );

    // A --create import that fails must not leave an empty dataset registered.
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, "{\"n\": 1}\n{\"n\": \"x\"}\n").expect("write");
    let output = cityhub(
        &data,
        &[
            "import",
            "yingji.broken",
            broken.to_str().expect("utf8"),
            "--create",
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(", column n: expected"),
        "{}",
        text(&output.stderr)
    );
    let name = DatasetName::parse("yingji.broken").expect("name");
    assert!(state.catalog.dataset(&name).await.expect("q").is_none());
}

#[tokio::test]
async fn compact_merges_a_datasets_files_and_names_what_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let state = state_for(&data).await;
    state
        .catalog
        .create_department("yingji", "应急管理局")
        .await
        .expect("dept");
    // Three imports: three small files.
    for part in 0..3 {
        let file = dir.path().join(format!("part{part}.ndjson"));
        let lines: String = (0..50)
            .map(|i| {
                format!(
                    "{{\"incident_id\": {}, \"kind\": \"火灾\"}}\n",
                    part * 50 + i
                )
            })
            .collect();
        std::fs::write(&file, lines).expect("write");
        let mut args = vec!["import", "yingji.incidents", file.to_str().expect("utf8")];
        if part == 0 {
            args.push("--create");
        }
        let output = cityhub(&data, &args);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let output = cityhub(&data, &["compact", "yingji.incidents"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.contains("3 small file(s)") && said.contains("150 rows"),
        "{said}"
    );
    assert!(said.contains("now has 1 file(s) (was 3)"), "{said}");
    assert_eq!(
        support::row_count(&support::read_rows(&state, "yingji.incidents").await),
        150
    );
    // Again: nothing to do, said so, success.
    let output = cityhub(&data, &["compact", "yingji.incidents"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("Nothing to compact"));
    // An unknown dataset is an error naming it.
    let output = cityhub(&data, &["compact", "yingji.nothing"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("yingji.nothing"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn gc_dry_run_lists_orphans_with_sizes_and_gc_deletes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let state = state_for(&data).await;
    state
        .catalog
        .create_department("yingji", "应急管理局")
        .await
        .expect("dept");
    let file = dir.path().join("part.ndjson");
    std::fs::write(&file, "{\"incident_id\": 1}\n").expect("write");
    let output = cityhub(
        &data,
        &[
            "import",
            "yingji.incidents",
            file.to_str().expect("utf8"),
            "--create",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    // A file a crash left behind two hours ago in the dataset's folder.
    let name = DatasetName::parse("yingji.incidents").expect("name");
    let id = state
        .catalog
        .dataset(&name)
        .await
        .expect("q")
        .expect("dataset")
        .id;
    let key = format!("datasets/{id}/2026-11-27/crashed.parquet");
    let path = data.join("objects").join(&key);
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    std::fs::write(&path, vec![0u8; 1234]).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open")
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .expect("mtime");

    let output = cityhub(&data, &["gc", "--dry-run"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.contains(&format!(
            "would delete {key} (yingji.incidents, 1234 bytes): no snapshot names it"
        )),
        "{said}"
    );
    assert!(path.exists(), "a dry run deletes nothing");
    let output = cityhub(&data, &["gc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("deleted 0 expired file(s) and 1 orphan(s), 1234 bytes"),
        "{}",
        text(&output.stdout)
    );
    assert!(!path.exists());
    assert_eq!(
        support::row_count(&support::read_rows(&state, "yingji.incidents").await),
        1,
        "committed data is untouched"
    );
}

// Multi-threaded: the CLI child process blocks this thread while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_runs_locally_and_against_a_server() {
    let server = support::TestServer::spawn().await;
    let dataset = server.events_dataset("gongan").await;
    let (status, _) = server
        .push(
            &server.admin,
            &dataset,
            "application/x-ndjson",
            "{\"id\": 7, \"kind\": \"x\"}\n",
        )
        .await;
    assert_eq!(status, 201);

    let remote = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args([
            "sql",
            "SELECT id, kind FROM gongan.events",
            "--format",
            "csv",
            "--server",
        ])
        .arg(server.url(""))
        .args(["--token", &server.admin])
        .output()
        .expect("run");
    assert!(remote.status.success(), "{}", text(&remote.stderr));
    assert_eq!(text(&remote.stdout), "id,kind\n7,x\n");

    let table = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args([
            "sql",
            "SELECT count(*) AS n FROM hub.regions WHERE level <> 'town'",
            "--server",
        ])
        .arg(server.url(""))
        .args(["--token", &server.admin])
        .output()
        .expect("run");
    let stdout = text(&table.stdout);
    assert!(
        stdout.contains("| n |") && stdout.contains("| 8 |") && stdout.contains("1 row"),
        "{stdout}"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_cityhub"))
        .args(["sql", "DROP TABLE gongan.events", "--server"])
        .arg(server.url(""))
        .args(["--token", &server.admin])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("403"),
        "{}",
        text(&refused.stderr)
    );

    let data_dir = server.stop().await;
    let local = cityhub(
        data_dir.path(),
        &["sql", "SELECT id FROM gongan.events", "--format", "json"],
    );
    assert!(local.status.success(), "{}", text(&local.stderr));
    assert_eq!(text(&local.stdout).trim(), "[{\"id\":7}]");
}

#[tokio::test]
async fn import_cameras_reports_every_bad_line_and_loads_a_clean_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_for(dir.path()).await;
    state
        .catalog
        .create_department("gongan", "公安局")
        .await
        .expect("department");
    drop(state);
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        concat!(
            "id,parent_id,name,department,longitude,latitude,ptz_type,rtsp,tags\n",
            "51102500001320000001,51102500001180000001,北街口,gongan,104.85,29.77,1,rtsp://nvr/1,卡口;重点\n",
            "5110250000132000000,,短,gongan,,,,,\n",
            "51102500001320000003,,经度错,gongan,200,29.7,,,\n",
            "51102500001320000004,,类型错,gongan,104.8,29.7,dome,,\n",
            "51102500001320000001,,重复,gongan,,,,,\n",
            "51102500001320000005,,无此部门,nosuch,,,,,\n",
            "51102500001320000006,,列少\n",
            "99999900001320000007,,区划错,gongan,,,,,\n",
        ),
    )
    .expect("write");
    let output = cityhub(
        dir.path(),
        &["import", "cameras", bad.to_str().expect("path")],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    for expected in [
        "Nothing was imported: 7 of 8 line(s) are bad",
        "line 3, id:",
        "line 4, longitude:",
        "line 5, ptz_type:",
        "line 6, id: duplicate of line 2",
        "line 7, department:",
        "line 8, line:",
        "line 9, id: centre code",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    let state = state_for(dir.path()).await;
    assert!(
        state
            .catalog
            .camera("51102500001320000001")
            .await
            .expect("read")
            .is_none()
    );
    drop(state);

    // With --skip-bad the good line goes in and the bad ones are listed.
    let output = cityhub(
        dir.path(),
        &[
            "import",
            "cameras",
            bad.to_str().expect("path"),
            "--skip-bad",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("Registered 1 channel(s)"),
        "{}",
        text(&output.stdout)
    );
    assert!(text(&output.stderr).contains("Skipped 7 bad line(s)"));
    let state = state_for(dir.path()).await;
    let (camera, _) = state
        .catalog
        .camera("51102500001320000001")
        .await
        .expect("read")
        .expect("imported");
    assert_eq!(
        camera.fields.tags,
        Some(vec!["卡口".to_string(), "重点".to_string()])
    );
    assert_eq!(
        camera.fields.streams.and_then(|s| s.rtsp).as_deref(),
        Some("rtsp://nvr/1")
    );
    let audit = state
        .catalog
        .audit_entries(cityhub_catalog::AuditFilter {
            action: Some("camera_import".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    drop(state);

    // An unknown column is refused before anything is read.
    let odd = dir.path().join("odd.csv");
    std::fs::write(&odd, "id,colour\n51102500001320000009,red\n").expect("write");
    let output = cityhub(
        dir.path(),
        &["import", "cameras", odd.to_str().expect("path")],
    );
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("\"colour\" is not a camera field"));
}
