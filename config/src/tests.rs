use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

#[test]
fn defaults_need_no_file() {
    let loaded = Config::load(None, env(&[]), &[]).expect("defaults load");
    assert_eq!(loaded.config, Config::default());
    assert_eq!(loaded.config.server.bind, "127.0.0.1:8080");
    assert_eq!(loaded.config.storage.data_dir, "./cityhub-data");
    assert!(loaded.config.storage_url().starts_with("file:///"));
    assert!(
        loaded
            .config
            .storage_url()
            .ends_with("cityhub-data/objects")
    );
    assert!(
        loaded
            .config
            .catalog_url()
            .ends_with("cityhub-data/catalog.db")
    );
    assert_eq!(loaded.source_of("server.bind"), &Source::Default);
}

#[test]
fn layers_apply_in_order_and_remember_their_source() {
    let file = toml_file(
        "[server]\nbind = \"0.0.0.0:9000\"\nmax_body_bytes = 1000\n[log]\nlevel = \"debug\"\n",
    );
    let loaded = Config::load(
        Some(file.path()),
        env(&[
            ("CITYHUB__SERVER__MAX_BODY_BYTES", "2000"),
            ("CITYHUB__LOG__LEVEL", "warn"),
            ("PATH", "/usr/bin"),
        ]),
        &[("log.level", "trace".into(), "--log-level")],
    )
    .expect("loads");
    assert_eq!(loaded.config.server.bind, "0.0.0.0:9000");
    assert_eq!(loaded.config.server.max_body_bytes, 2000);
    assert_eq!(loaded.config.log.level, "trace");
    assert_eq!(
        loaded.source_of("server.bind"),
        &Source::File(file.path().to_path_buf())
    );
    assert_eq!(
        loaded.source_of("server.max_body_bytes"),
        &Source::Env("CITYHUB__SERVER__MAX_BODY_BYTES".into())
    );
    assert_eq!(
        loaded.source_of("log.level"),
        &Source::Flag("--log-level".into())
    );
    let rendered = loaded.render();
    assert!(rendered.contains("[server]"), "{rendered}");
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("bind = \"0.0.0.0:9000\"") && l.contains("# file ")),
        "{rendered}"
    );
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("max_body_bytes = 2000")
                && l.ends_with("# environment CITYHUB__SERVER__MAX_BODY_BYTES")),
        "{rendered}"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_origin() {
    let file = toml_file(
        "[server]\nbind = \"not an address\"\nport = 80\nmax_body_bytes = \"big\"\n[nosuch]\nx = 1\n",
    );
    let err = Config::load(
        Some(file.path()),
        env(&[
            ("CITYHUB__LOG__FORMAT", "xml"),
            ("CITYHUB__SERVER__SHUTDOWN_GRACE_SECS", "soon"),
            ("CITYHUB__STORAGE__BUCKET", "x"),
        ]),
        &[],
    )
    .expect_err("must fail");
    let text = err.to_string();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "server.bind",
        "server.port",
        "server.max_body_bytes",
        "nosuch",
        "log.format",
        "server.shutdown_grace_secs",
        "storage.bucket",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {text}");
    }
    assert_eq!(err.problems.len(), 7, "{text}");
    assert!(
        text.contains("expected an integer, found string \"big\""),
        "{text}"
    );
    assert!(text.contains("environment CITYHUB__LOG__FORMAT"), "{text}");
    assert!(text.contains("must be text or json"), "{text}");
}

#[test]
fn unknown_key_suggests_the_right_section() {
    let file = toml_file("[storage]\nbind = \"127.0.0.1:1\"\n");
    let err = Config::load(Some(file.path()), env(&[]), &[]).expect_err("must fail");
    assert!(
        err.to_string().contains("did you mean server.bind?"),
        "{err}"
    );
}

#[test]
fn broken_toml_names_the_line() {
    let file = toml_file("[server]\nbind = \"127.0.0.1:1\"\nmax_body_bytes = = 3\n");
    let err = Config::load(Some(file.path()), env(&[]), &[]).expect_err("must fail");
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Config::load(Some(Path::new("/nonexistent/cityhub.toml")), env(&[]), &[])
        .expect_err("must fail");
    assert!(err.to_string().contains("cannot read the file"), "{err}");
}

#[test]
fn negative_size_is_refused_not_wrapped() {
    let err = Config::load(None, env(&[("CITYHUB__SERVER__MAX_BODY_BYTES", "-5")]), &[])
        .expect_err("must fail");
    assert!(err.to_string().contains("invalid value"), "{err}");
}

#[test]
fn kafka_feeds_load_with_defaults_and_each_problem_names_its_feed() {
    let file = toml_file(
        r#"
[[ingest.kafka]]
bootstrap_servers = "127.0.0.1:9092"
topic = "gongan.alarms"
dataset = "gongan.alarms"
flush_rows = 5000
[ingest.kafka.properties]
"security.protocol" = "plaintext"

[[ingest.kafka]]
bootstrap_servers = "127.0.0.1:9092"
topic = "zhili.events"
dataset = "zhili.events"
format = "xml"
start = "middle"
"#,
    );
    let problems = Config::load(Some(file.path()), env(&[]), &[])
        .expect_err("bad second feed")
        .problems;
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["ingest.kafka[1].format", "ingest.kafka[1].start"]);

    let file = toml_file(
        r#"
[[ingest.kafka]]
bootstrap_servers = "127.0.0.1:9092"
topic = "gongan.alarms"
dataset = "gongan.alarms"
flush_rows = 5000
[ingest.kafka.properties]
"security.protocol" = "plaintext"
"#,
    );
    let loaded = Config::load(Some(file.path()), env(&[]), &[]).expect("valid feed");
    let feed = &loaded.config.ingest.kafka[0];
    assert_eq!(feed.flush_rows, 5000);
    assert_eq!(feed.flush_age_ms, 1000);
    assert_eq!(feed.group_id, "cityhub");
    assert_eq!(feed.start, "earliest");
    assert_eq!(feed.properties["security.protocol"], "plaintext");

    let file = toml_file(
        r#"
[[ingest.kafka]]
bootstrap_servers = "127.0.0.1:9092"
topci = "gongan.alarms"
dataset = "gongan.alarms"
"#,
    );
    let problems = Config::load(Some(file.path()), env(&[]), &[])
        .expect_err("misspelt key")
        .problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "ingest.kafka[0]");
    assert!(problems[0].message.contains("topci"), "{}", problems[0]);
}

#[test]
fn compaction_settings_load_and_a_small_file_larger_than_the_target_is_refused() {
    let file = toml_file(
        "[storage]\ntarget_file_bytes = 4194304\n[compaction]\nenabled = false\nmin_small_files = 8\nsmall_file_bytes = 1048576\n",
    );
    let loaded = Config::load(Some(file.path()), env(&[]), &[]).expect("valid");
    assert_eq!(loaded.config.storage.target_file_bytes, 4 * 1024 * 1024);
    assert!(!loaded.config.compaction.enabled);
    assert_eq!(loaded.config.compaction.min_small_files, 8);
    // The default small-file size (32 MiB) is now above the 4 MiB target: refused, by name.
    let file = toml_file("[storage]\ntarget_file_bytes = 4194304\n");
    let err = Config::load(
        Some(file.path()),
        env(&[
            ("CITYHUB__COMPACTION__MEMORY_BYTES", "1000"),
            ("CITYHUB__COMPACTION__CPU_SHARE", "0"),
        ]),
        &[],
    )
    .expect_err("must fail");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "compaction.small_file_bytes",
            "compaction.cpu_share",
            "compaction.memory_bytes"
        ],
        "{err}"
    );
}

#[test]
fn a_ballista_engine_needs_its_scheduler_as_a_df_url() {
    let loaded = Config::load(
        None,
        env(&[
            ("CITYHUB__QUERY__ENGINE", "ballista"),
            ("CITYHUB__QUERY__BALLISTA_SCHEDULER", "df://10.0.0.5:50050"),
        ]),
        &[],
    )
    .expect("valid");
    assert_eq!(loaded.config.query.engine, QueryEngineKind::Ballista);
    assert_eq!(
        loaded.config.query.ballista_scheduler_url().as_deref(),
        Some("http://10.0.0.5:50050")
    );
    for scheduler in [
        "",
        "10.0.0.5:50050",
        "df://10.0.0.5",
        "df://:50050",
        "df://h:0",
    ] {
        let err = Config::load(
            None,
            env(&[
                ("CITYHUB__QUERY__ENGINE", "ballista"),
                ("CITYHUB__QUERY__BALLISTA_SCHEDULER", scheduler),
            ]),
            &[],
        )
        .expect_err("not a scheduler URL");
        let text = err.to_string();
        assert!(
            text.contains("query.ballista_scheduler") && text.contains("df://host:port"),
            "{scheduler:?}: {text}"
        );
    }
    let err = Config::load(None, env(&[("CITYHUB__QUERY__ENGINE", "spark")]), &[])
        .expect_err("an unknown engine");
    assert!(err.to_string().contains("query.engine"), "{err}");
}

#[test]
fn the_file_layout_settings_load_and_bad_ones_are_named() {
    let file = toml_file(
        "[ingest]\ndata_page_bytes = 65536\nstatistics = \"chunk\"\ndictionary = false\n",
    );
    let loaded = Config::load(Some(file.path()), env(&[]), &[]).expect("loads");
    let ingest = &loaded.config.ingest;
    assert_eq!(
        (
            ingest.data_page_bytes,
            ingest.statistics.as_str(),
            ingest.dictionary
        ),
        (65536, "chunk", false)
    );
    let err = Config::load(
        None,
        env(&[
            ("CITYHUB__INGEST__DATA_PAGE_BYTES", "100"),
            ("CITYHUB__INGEST__STATISTICS", "column"),
        ]),
        &[],
    )
    .expect_err("must fail");
    let text = err.to_string();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["ingest.data_page_bytes", "ingest.statistics"],
        "{text}"
    );
    assert!(text.contains("must be one of page, chunk, none"), "{text}");
}
