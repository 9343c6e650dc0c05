use std::collections::BTreeMap;

use super::{Backend, TestCatalog, on_both_backends};
use crate::*;

async fn store(backend: Backend) -> Option<(TestCatalog, Catalog)> {
    super::open(backend).await
}

fn new_dataset(name: &str) -> NewDataset {
    NewDataset {
        name: DatasetName::parse(name).expect("valid name"),
        description: "test".into(),
        columns: vec![
            Column::new("id", ColumnType::Int64, false),
            Column::new("phone", ColumnType::String, true).sensitive(Sensitivity::Phone),
        ],
        classification: Classification::Important,
        sharing: Sharing::Conditional,
        resource_code: Some("511000-GA-0001".into()),
        update_cycle: Some("daily".into()),
        tags: vec!["test".into()],
        sort_key: vec![],
        primary_key: vec![],
        snapshot_retention_days: None,
        row_retention: None,
        region_column: None,
        region_free: false,
    }
}

fn compaction(
    dataset: &Dataset,
    read_at: Option<i64>,
    removed: &[&str],
    added: DataFile,
) -> Commit {
    Commit {
        operation: Operation::Compact,
        removed: removed.iter().map(|p| p.to_string()).collect(),
        ..append(dataset, read_at, vec![added])
    }
}

fn live_paths(files: Vec<DataFile>) -> Vec<String> {
    files.into_iter().map(|f| f.path).collect()
}

fn file(path: &str, rows: i64) -> DataFile {
    DataFile {
        path: path.into(),
        rows,
        bytes: rows * 10,
        stats: BTreeMap::new(),
    }
}

fn append(dataset: &Dataset, parent: Option<i64>, files: Vec<DataFile>) -> Commit {
    Commit {
        dataset_id: dataset.id,
        expected_parent: parent,
        operation: Operation::Append,
        added: files,
        removed: vec![],
        idempotency: None,
        stream: None,
    }
}

fn committed(outcome: CommitOutcome) -> Snapshot {
    match outcome {
        CommitOutcome::Committed(snapshot) => snapshot,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn admin_department_exists_after_migration(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let admin = store.department(ADMIN_DEPARTMENT).await.expect("query");
    assert!(admin.is_some());
}

async fn departments_are_validated_and_unique(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("create");
    let again = store.create_department("gongan", "公安局").await;
    assert!(matches!(again, Err(CatalogError::AlreadyExists { .. })));
    for bad in [
        "GongAn",
        "g",
        "hub",
        "gong an",
        "gong-an",
        "x'; DROP TABLE x;--",
    ] {
        let err = store.create_department(bad, "x").await.expect_err(bad);
        assert!(matches!(err, CatalogError::Invalid { .. }), "{bad}: {err}");
    }
    let codes: Vec<String> = store
        .list_departments()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.code)
        .collect();
    assert_eq!(codes, vec!["admin", "gongan"]);
}

async fn principals_are_found_by_token_hash_only(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let token = token::Token::generate();
    let principal = store
        .create_principal(
            NewPrincipal {
                name: "ops".into(),
                department: "admin".into(),
                role: Role::Admin,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await
        .expect("create");
    let found = store
        .principal_by_token_hash(&token::hash_token(&token.plaintext))
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(found, principal);
    let missing = store
        .principal_by_token_hash(&token.plaintext)
        .await
        .expect("lookup");
    assert!(
        missing.is_none(),
        "the plaintext must not be what is stored"
    );
    let no_department = store
        .create_principal(
            NewPrincipal {
                name: "x".into(),
                department: "nosuch".into(),
                role: Role::Analyst,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            "hash",
        )
        .await;
    assert!(matches!(no_department, Err(CatalogError::NotFound { .. })));
}

async fn datasets_round_trip_and_refuse_duplicates(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let created = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    assert_eq!(created.name.to_string(), "gongan.alarms");
    assert_eq!(created.owner, "gongan");
    assert_eq!(created.schema_version, 1);
    assert_eq!(created.snapshot_id, None);
    assert_eq!(created.columns[1].sensitivity, Some(Sensitivity::Phone));
    let again = store.create_dataset(new_dataset("gongan.alarms")).await;
    assert!(matches!(again, Err(CatalogError::AlreadyExists { .. })));
    let orphan = store.create_dataset(new_dataset("nosuch.alarms")).await;
    assert!(matches!(orphan, Err(CatalogError::NotFound { .. })));
    let versions = store.schema_versions(created.id).await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].columns, created.columns);
}

#[test]
fn dataset_names_refuse_hostile_text() {
    for bad in [
        "gongan",
        "gongan.",
        ".alarms",
        "gongan/alarms",
        "gongan.al/arms",
        "../etc.passwd",
        "gongan..alarms",
        "gongan.alarms.x",
        "gongan.\"alarms\"",
        "gongan.alarms;drop",
        "gongan.al arms",
        "hub.cameras",
        "Gongan.alarms",
    ] {
        assert!(DatasetName::parse(bad).is_err(), "{bad} must be refused");
    }
    let name = DatasetName::parse("gongan.alarms_2024").expect("valid");
    assert_eq!(name.department(), "gongan");
    assert_eq!(name.table(), "alarms_2024");
}

#[test]
fn column_types_parse_and_print() {
    for text in [
        "bool",
        "int32",
        "int64",
        "float64",
        "string",
        "date",
        "timestamp",
        "binary",
        "decimal(10,2)",
    ] {
        let parsed: ColumnType = text.parse().expect(text);
        assert_eq!(parsed.to_string(), text);
    }
    for bad in [
        "decimal(0,0)",
        "decimal(39,2)",
        "decimal(5,6)",
        "varchar",
        "decimal(5)",
    ] {
        assert!(bad.parse::<ColumnType>().is_err(), "{bad}");
    }
}

async fn commits_chain_snapshots_and_track_live_files(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");

    let first = committed(
        store
            .commit(append(&dataset, None, vec![file("a", 10)]))
            .await
            .expect("first"),
    );
    assert_eq!(
        (first.seq, first.parent_id, first.rows, first.files),
        (1, None, 10, 1)
    );
    let second = committed(
        store
            .commit(append(
                &dataset,
                Some(first.id),
                vec![file("b", 5), file("c", 1)],
            ))
            .await
            .expect("second"),
    );
    assert_eq!(
        (second.seq, second.parent_id, second.rows, second.files),
        (2, Some(first.id), 16, 3)
    );

    // A compaction replaces a and b with d; old snapshots still list their own files.
    let compact = Commit {
        operation: Operation::Compact,
        removed: vec!["a".into(), "b".into()],
        ..append(&dataset, Some(second.id), vec![file("d", 15)])
    };
    let third = committed(store.commit(compact).await.expect("compact"));
    assert_eq!((third.rows, third.files), (16, 2));
    let paths = |files: Vec<DataFile>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
    assert_eq!(
        paths(store.snapshot_files(dataset.id, None).await.expect("files")),
        vec!["c", "d"]
    );
    assert_eq!(
        paths(
            store
                .snapshot_files(dataset.id, Some(second.id))
                .await
                .expect("files")
        ),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        paths(
            store
                .snapshot_files(dataset.id, Some(first.id))
                .await
                .expect("files")
        ),
        vec!["a"]
    );

    let log = store.snapshots(dataset.id).await.expect("log");
    assert_eq!(log.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
    let reloaded = store
        .dataset(&dataset.name)
        .await
        .expect("q")
        .expect("present");
    assert_eq!(
        (reloaded.snapshot_id, reloaded.rows, reloaded.files),
        (Some(third.id), 16, 2)
    );
}

async fn a_stale_parent_is_a_conflict_and_changes_nothing(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let first = committed(
        store
            .commit(append(&dataset, None, vec![file("a", 1)]))
            .await
            .expect("c"),
    );
    let stale = store
        .commit(append(&dataset, None, vec![file("b", 1)]))
        .await;
    match stale {
        Err(CatalogError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (None, Some(first.id)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let files = store.snapshot_files(dataset.id, None).await.expect("files");
    assert_eq!(
        files.len(),
        1,
        "the losing commit must leave nothing behind"
    );
    let bad_remove = Commit {
        removed: vec!["nosuch".into()],
        ..append(&dataset, Some(first.id), vec![file("z", 1)])
    };
    assert!(store.commit(bad_remove).await.is_err());
    assert_eq!(store.snapshots(dataset.id).await.expect("log").len(), 1);
}

async fn a_compaction_rebases_over_appends_that_committed_while_it_ran(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let first = committed(
        store
            .commit(append(&dataset, None, vec![file("a", 10), file("b", 5)]))
            .await
            .expect("first"),
    );
    // The compaction reads at `first`; meanwhile two pushes commit.
    let push1 = committed(
        store
            .commit(append(&dataset, Some(first.id), vec![file("c", 1)]))
            .await
            .expect("push"),
    );
    let push2 = committed(
        store
            .commit(append(&dataset, Some(push1.id), vec![file("d", 2)]))
            .await
            .expect("push"),
    );
    let merged = committed(
        store
            .commit(compaction(
                &dataset,
                Some(first.id),
                &["a", "b"],
                file("ab", 15),
            ))
            .await
            .expect("a compaction rebases instead of conflicting"),
    );
    assert_eq!(
        merged.parent_id,
        Some(push2.id),
        "rebased onto the newest append"
    );
    assert_eq!(
        (merged.rows, merged.files),
        (18, 3),
        "the appended rows are kept"
    );
    assert_eq!(
        live_paths(store.snapshot_files(dataset.id, None).await.expect("files")),
        vec!["c", "d", "ab"]
    );
    // An append prepared against the old parent still conflicts: only a compaction rebases.
    assert!(matches!(
        store
            .commit(append(&dataset, Some(push2.id), vec![file("e", 1)]))
            .await,
        Err(CatalogError::Conflict { .. })
    ));
}

async fn a_compaction_loses_cleanly_to_a_change_that_removed_its_files(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let first = committed(
        store
            .commit(append(
                &dataset,
                None,
                vec![file("a", 10), file("b", 5), file("c", 3)],
            ))
            .await
            .expect("first"),
    );
    // A delete rewrote b (removing it) while a compaction of a and b ran.
    let delete = Commit {
        operation: Operation::Delete,
        removed: vec!["b".into()],
        ..append(&dataset, Some(first.id), vec![file("b2", 4)])
    };
    let deleted = committed(store.commit(delete).await.expect("delete"));
    let lost = store
        .commit(compaction(
            &dataset,
            Some(first.id),
            &["a", "b"],
            file("ab", 15),
        ))
        .await;
    match lost {
        Err(CatalogError::FilesGone { paths, .. }) => assert_eq!(paths, vec!["b"]),
        other => panic!("expected the compaction to lose, got {other:?}"),
    }
    // Nothing of the losing commit is left: a is still live, no snapshot was added.
    let reloaded = store
        .dataset(&dataset.name)
        .await
        .expect("q")
        .expect("present");
    assert_eq!(reloaded.snapshot_id, Some(deleted.id));
    assert_eq!((reloaded.rows, reloaded.files), (17, 3));
    assert_eq!(
        live_paths(store.snapshot_files(dataset.id, None).await.expect("files")),
        vec!["a", "c", "b2"]
    );
}

async fn expired_snapshots_go_with_the_files_only_they_named(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let s1 = committed(
        store
            .commit(append(&dataset, None, vec![file("a", 1)]))
            .await
            .expect("s1"),
    );
    let s2 = committed(
        store
            .commit(append(&dataset, Some(s1.id), vec![file("b", 1)]))
            .await
            .expect("s2"),
    );
    let s3 = committed(
        store
            .commit(compaction(
                &dataset,
                Some(s2.id),
                &["a", "b"],
                file("ab", 2),
            ))
            .await
            .expect("s3"),
    );
    let s4 = committed(
        store
            .commit(append(&dataset, Some(s3.id), vec![file("d", 1)]))
            .await
            .expect("s4"),
    );
    // s1 and s2 were replaced before this instant, s3 only after it.
    let cutoff = s3.created_at + chrono::Duration::microseconds(1);
    let at = s4.created_at;
    let dry = store
        .expire_snapshots(dataset.id, cutoff, true, at)
        .await
        .expect("dry run");
    assert_eq!(dry.snapshots, vec![s1.id, s2.id]);
    assert_eq!(live_paths(dry.files.clone()), vec!["a", "b"]);
    assert_eq!(
        store.snapshots(dataset.id).await.expect("log").len(),
        4,
        "a dry run keeps all"
    );

    let expired = store
        .expire_snapshots(dataset.id, cutoff, false, at)
        .await
        .expect("expire");
    assert_eq!(expired, dry, "the run does what the dry run said");
    let log = store.snapshots(dataset.id).await.expect("log");
    assert_eq!(
        log.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![s4.id, s3.id]
    );
    assert_eq!(
        log[1].parent_id, None,
        "the oldest kept snapshot has no parent now"
    );
    assert!(
        store
            .snapshot(dataset.id, s2.id)
            .await
            .expect("q")
            .is_none()
    );
    let mut known = store.file_paths(dataset.id).await.expect("paths");
    known.sort();
    assert_eq!(known, vec!["ab", "d"]);
    assert_eq!(
        live_paths(
            store
                .snapshot_files(dataset.id, Some(s3.id))
                .await
                .expect("files")
        ),
        vec!["ab"],
        "a kept snapshot still reads its files"
    );
    let reloaded = store
        .dataset(&dataset.name)
        .await
        .expect("q")
        .expect("present");
    assert_eq!(reloaded.last_gc_at, Some(at));
    assert_eq!((reloaded.rows, reloaded.files), (3, 2));

    // Far in the future everything replaced expires, never the current snapshot.
    let later = at + chrono::Duration::days(365);
    let expired = store
        .expire_snapshots(dataset.id, later, false, later)
        .await
        .expect("expire");
    assert_eq!(expired.snapshots, vec![s3.id]);
    assert!(expired.files.is_empty(), "ab and d are live in s4");
    let log = store.snapshots(dataset.id).await.expect("log");
    assert_eq!(log.iter().map(|s| s.id).collect::<Vec<_>>(), vec![s4.id]);
    // Appends continue on the kept snapshot.
    committed(
        store
            .commit(append(&dataset, Some(s4.id), vec![file("e", 1)]))
            .await
            .expect("append after gc"),
    );
}

async fn a_sort_key_is_kept_and_checked_against_the_columns(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let keyed = NewDataset {
        sort_key: vec!["phone".into(), "id".into()],
        ..new_dataset("gongan.keyed")
    };
    let dataset = store.create_dataset(keyed).await.expect("create");
    assert_eq!(dataset.sort_key, vec!["phone", "id"]);
    assert_eq!(dataset.compaction_order(), vec!["phone", "id"]);
    let plain = store
        .create_dataset(new_dataset("gongan.plain"))
        .await
        .expect("create");
    assert!(
        plain.compaction_order().is_empty(),
        "no timestamp column: commit order"
    );
    for (sort_key, field) in [
        (vec!["nope".to_string()], "sort_key[0]"),
        (vec!["id".to_string(), "id".to_string()], "sort_key[1]"),
    ] {
        let bad = NewDataset {
            sort_key,
            ..new_dataset("gongan.bad")
        };
        match store.create_dataset(bad).await {
            Err(CatalogError::Invalid { field: named, .. }) => assert_eq!(named, field),
            other => panic!("expected {field} to be refused, got {other:?}"),
        }
    }
}

async fn idempotency_keys_replay_and_refuse_different_bodies(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let record = IdempotencyRecord {
        key: "k1".into(),
        request_hash: "h1".into(),
        response: "{\"rows_accepted\":1}".into(),
        snapshot_id: None,
    };
    let first = committed(
        store
            .commit(Commit {
                idempotency: Some(record.clone()),
                ..append(&dataset, None, vec![file("a", 1)])
            })
            .await
            .expect("first"),
    );
    // The retry was prepared against an old parent: still answered from the record.
    let replay = store
        .commit(Commit {
            idempotency: Some(record.clone()),
            ..append(&dataset, None, vec![file("b", 1)])
        })
        .await
        .expect("replay");
    match replay {
        CommitOutcome::Replayed(stored) => {
            assert_eq!(stored.snapshot_id, Some(first.id));
            assert_eq!(stored.response, record.response);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    let different = store
        .commit(Commit {
            idempotency: Some(IdempotencyRecord {
                request_hash: "h2".into(),
                ..record
            }),
            ..append(&dataset, Some(first.id), vec![file("c", 1)])
        })
        .await;
    assert!(matches!(
        different,
        Err(CatalogError::IdempotencyMismatch { .. })
    ));
    assert_eq!(store.snapshots(dataset.id).await.expect("log").len(), 1);
}

async fn concurrent_writers_never_lose_a_commit(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        let name = dataset.name.clone();
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let current = store.dataset(&name).await.expect("q").expect("present");
                let commit = append(
                    &current,
                    current.snapshot_id,
                    vec![file(&format!("w{writer}"), 1)],
                );
                match store.commit(commit).await {
                    Ok(_) => return attempts,
                    Err(CatalogError::Conflict { .. }) => continue,
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let files = store.snapshot_files(dataset.id, None).await.expect("files");
    assert_eq!(files.len(), 16);
    let log = store.snapshots(dataset.id).await.expect("log");
    assert_eq!(log.len(), 16);
    assert_eq!(log[0].rows, 16);
}

/// Two stores on one catalog (two hub nodes on one PostgreSQL, or a server and an `import`
/// on one SQLite file): commits from both to one dataset all land, each exactly once, and
/// the same idempotency key sent to both at once commits once and replays once.
async fn two_nodes_commit_to_one_dataset_exactly_once(backend: Backend) {
    let Some((database, first)) = store(backend).await else {
        return;
    };
    let second = database.reopen().await;
    first
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = first
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for writer in 0..12 {
        let node = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let name = dataset.name.clone();
        tasks.push(tokio::spawn(async move {
            // Each writer sends its push under its own key, and retries after a conflict
            // the way the ingest path does: re-read, commit again with the same key.
            let record = IdempotencyRecord {
                key: format!("push-{writer}"),
                request_hash: format!("body-{writer}"),
                response: "{}".into(),
                snapshot_id: None,
            };
            loop {
                let current = node.dataset(&name).await.expect("q").expect("present");
                let commit = Commit {
                    idempotency: Some(record.clone()),
                    ..append(
                        &current,
                        current.snapshot_id,
                        vec![file(&format!("w{writer}"), 1)],
                    )
                };
                match node.commit(commit).await {
                    Ok(_) => return,
                    Err(CatalogError::Conflict { .. }) => continue,
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let files = second
        .snapshot_files(dataset.id, None)
        .await
        .expect("files");
    assert_eq!(files.len(), 12);
    assert_eq!(first.snapshots(dataset.id).await.expect("log").len(), 12);

    // One key, sent to both nodes at once (a client retrying through the load balancer).
    let current = first
        .dataset(&dataset.name)
        .await
        .expect("q")
        .expect("present");
    let record = IdempotencyRecord {
        key: "retried".into(),
        request_hash: "same body".into(),
        response: "{}".into(),
        snapshot_id: None,
    };
    let send = |node: Catalog, path: &'static str| {
        let commit = Commit {
            idempotency: Some(record.clone()),
            ..append(&current, current.snapshot_id, vec![file(path, 1)])
        };
        tokio::spawn(async move { node.commit(commit).await })
    };
    let (a, b) = (send(first.clone(), "a"), send(second.clone(), "b"));
    let outcomes = [a.await.expect("join"), b.await.expect("join")];
    let committed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CommitOutcome::Committed(_))))
        .count();
    let replayed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CommitOutcome::Replayed(_))))
        .count();
    assert_eq!((committed, replayed), (1, 1), "{outcomes:?}");
    let after = first.snapshot_files(dataset.id, None).await.expect("files");
    assert_eq!(after.len(), 13);
}

/// A commit, a schema change and an endpoint saved through one store are heard by another
/// store on the same PostgreSQL catalog at once (LISTEN/NOTIFY); SQLite offers no notices
/// (its readers poll), and a failed commit sends none.
async fn other_nodes_hear_of_changes(backend: Backend) {
    let Some((database, first)) = store(backend).await else {
        return;
    };
    let second = database.reopen().await;
    let Some(mut notices) = second.change_notices() else {
        assert!(matches!(backend, Backend::Sqlite));
        return;
    };
    let heard = async |notices: &mut tokio::sync::watch::Receiver<u64>| {
        tokio::time::timeout(std::time::Duration::from_secs(1), notices.changed())
            .await
            .is_ok()
    };
    // The listener says it is connected (a first notice) before anything is sent.
    assert!(heard(&mut notices).await, "the listener did not connect");
    notices.mark_unchanged();
    // The writer's listener connected when it opened, before the other store did.
    let mut own = first.change_notices().expect("notices");
    own.mark_unchanged();
    first
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = first
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("create");
    assert!(heard(&mut notices).await, "a new dataset was not heard");
    notices.mark_unchanged();
    committed(
        first
            .commit(append(&dataset, None, vec![file("a", 1)]))
            .await
            .expect("commit"),
    );
    assert!(heard(&mut notices).await, "a commit was not heard");
    notices.mark_unchanged();
    // The writer already knows its own changes: they are not news to it.
    assert!(
        !own.has_changed().expect("open"),
        "a store heard its own changes"
    );
    // A commit that loses (stale parent) changes nothing and tells nobody.
    let stale = first
        .commit(append(&dataset, None, vec![file("b", 1)]))
        .await;
    assert!(matches!(stale, Err(CatalogError::Conflict { .. })));
    assert!(!heard(&mut notices).await, "a refused commit was heard");
}

/// A cluster-wide job's lease: one holder at a time, renewed by its holder, taken over only
/// once expired; two nodes racing for a free lease never both get it.
async fn a_job_lease_has_one_holder_at_a_time(backend: Backend) {
    let Some((database, first)) = store(backend).await else {
        return;
    };
    let second = database.reopen().await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let minutes = move |n: i64| t0 + chrono::Duration::minutes(n);
    let take = |store: &Catalog, holder: &'static str, now, until| {
        let store = store.clone();
        async move {
            store
                .take_job_lease("sweep", holder, now, until)
                .await
                .expect("lease")
        }
    };
    assert!(take(&first, "node-a", t0, minutes(3)).await);
    assert!(
        !take(&second, "node-b", minutes(1), minutes(4)).await,
        "held by node-a"
    );
    assert!(
        take(&first, "node-a", minutes(2), minutes(5)).await,
        "renewed"
    );
    assert!(
        !take(&second, "node-b", minutes(4), minutes(7)).await,
        "renewed until 5"
    );
    assert!(
        take(&second, "node-b", minutes(5), minutes(8)).await,
        "expired: taken over"
    );
    assert!(
        !take(&first, "node-a", minutes(6), minutes(9)).await,
        "node-b holds it now"
    );
    // Other jobs have their own leases.
    assert!(
        first
            .take_job_lease("gc", "node-a", minutes(6), minutes(9))
            .await
            .expect("lease")
    );

    // Sixteen nodes race for one expired lease: exactly one wins.
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move {
                store
                    .take_job_lease("compact", &format!("racer-{n}"), minutes(10), minutes(13))
                    .await
                    .expect("lease")
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.expect("join"));
    }
    assert_eq!(winners, 1);
}

async fn reopening_keeps_everything_and_does_not_remigrate(backend: Backend) {
    let Some((database, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    drop(store);
    let store = database.reopen().await;
    assert!(store.department("gongan").await.expect("q").is_some());
    assert_eq!(store.list_departments().await.expect("q").len(), 2);
}

async fn only_datasets_without_data_can_be_dropped(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let empty = store
        .create_dataset(new_dataset("gongan.empty"))
        .await
        .expect("create");
    assert!(store.drop_unused_dataset(empty.id).await.expect("drop"));
    assert!(store.dataset(&empty.name).await.expect("q").is_none());
    assert!(!store.drop_unused_dataset(empty.id).await.expect("again"));
    let full = store
        .create_dataset(new_dataset("gongan.full"))
        .await
        .expect("create");
    store
        .commit(append(&full, None, vec![file("a", 1)]))
        .await
        .expect("commit");
    assert!(store.drop_unused_dataset(full.id).await.is_err());
    assert!(store.dataset(&full.name).await.expect("q").is_some());
}

fn stream_commit(
    dataset: &Dataset,
    parent: Option<i64>,
    files: Vec<DataFile>,
    expected: Option<i64>,
    next: i64,
    rejected: Vec<RejectedRecord>,
) -> Commit {
    Commit {
        stream: Some(StreamProgress {
            offsets: vec![OffsetAdvance {
                topic: "alarms".into(),
                partition: 0,
                expected,
                next,
            }],
            rejected,
        }),
        ..append(dataset, parent, files)
    }
}

async fn stream_offsets_advance_with_the_snapshot_and_refuse_a_zombie(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("dept");
    let dataset = store
        .create_dataset(new_dataset("gongan.alarms"))
        .await
        .expect("dataset");
    let bad = RejectedRecord {
        topic: "alarms".into(),
        partition: 0,
        offset: 3,
        key: Some(b"k".to_vec()),
        payload: b"{not json".to_vec(),
        error: "line 1: expected value".into(),
    };
    let first = committed(
        store
            .commit(stream_commit(
                &dataset,
                None,
                vec![file("a", 9)],
                None,
                10,
                vec![bad.clone()],
            ))
            .await
            .expect("first"),
    );
    let offsets = store.stream_offsets(dataset.id).await.expect("offsets");
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[0].next_offset, 10);
    assert_eq!(offsets[0].snapshot_id, Some(first.id));
    let dead = store
        .rejected_records(dataset.id, 0, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].record, bad);

    // A worker that still believes the partition is new (a zombie after a rebalance) cannot
    // commit, and leaves nothing behind.
    let zombie = store
        .commit(stream_commit(
            &dataset,
            Some(first.id),
            vec![file("z", 5)],
            None,
            15,
            vec![],
        ))
        .await;
    assert!(matches!(
        zombie,
        Err(CatalogError::OffsetConflict {
            actual: Some(10),
            ..
        })
    ));
    assert_eq!(store.snapshots(dataset.id).await.expect("log").len(), 1);

    // A batch of only bad messages advances the offset without a snapshot.
    let progressed = store
        .commit(stream_commit(
            &dataset,
            Some(first.id),
            vec![],
            Some(10),
            12,
            vec![RejectedRecord { offset: 11, ..bad }],
        ))
        .await
        .expect("progress");
    assert_eq!(progressed, CommitOutcome::Progressed);
    let offsets = store.stream_offsets(dataset.id).await.expect("offsets");
    assert_eq!(offsets[0].next_offset, 12);
    assert_eq!(offsets[0].snapshot_id, Some(first.id));
    assert_eq!(store.snapshots(dataset.id).await.expect("log").len(), 1);
    assert_eq!(
        store
            .rejected_records(dataset.id, dead[0].id, 10)
            .await
            .expect("dead letters")
            .len(),
        1
    );
}

async fn endpoints_are_versioned_and_owned(backend: Backend) {
    use crate::endpoint::{EndpointSpec, Saved};
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("zhili", "治理")
        .await
        .expect("dept");
    store
        .create_department("gongan", "公安")
        .await
        .expect("dept");
    let spec = |sql: &str| -> EndpointSpec {
        serde_json::from_value(serde_json::json!({"sql": sql, "allowed_departments": ["gongan"]}))
            .expect("spec")
    };
    let zhili = Some("zhili".to_string());
    let (first, saved) = store
        .save_endpoint("cases", "zhili", spec("SELECT 1"), None, zhili.clone())
        .await
        .expect("save");
    assert_eq!((first.version, saved), (1, Saved::Created));
    let (same, saved) = store
        .save_endpoint("cases", "zhili", spec("SELECT 1"), None, zhili.clone())
        .await
        .expect("save again");
    assert_eq!((same.version, saved), (1, Saved::Unchanged));
    let (second, saved) = store
        .save_endpoint("cases", "zhili", spec("SELECT 2"), None, zhili.clone())
        .await
        .expect("update");
    assert_eq!((second.version, saved), (2, Saved::Updated));

    // Another department cannot take it over; an admin can hand it on.
    let err = store
        .save_endpoint(
            "cases",
            "gongan",
            spec("SELECT 3"),
            None,
            Some("gongan".into()),
        )
        .await
        .expect_err("not the owner");
    assert!(matches!(err, CatalogError::WrongState(_)), "{err}");
    let (third, _) = store
        .save_endpoint("cases", "gongan", spec("SELECT 2"), None, None)
        .await
        .expect("admin");
    assert_eq!((third.version, third.owner.as_str()), (3, "gongan"));

    let err = store
        .save_endpoint(
            "other",
            "zhili",
            serde_json::from_value(
                serde_json::json!({"sql": "SELECT 1", "allowed_departments": ["nobody"]}),
            )
            .expect("spec"),
            None,
            zhili.clone(),
        )
        .await
        .expect_err("unknown department");
    assert!(
        matches!(&err, CatalogError::Invalid { field, .. } if field == "allowed_departments[0]"),
        "{err}"
    );
    assert!(store.endpoint("other").await.expect("read").is_none());

    let history = store.endpoint_history("cases").await.expect("history");
    assert_eq!(
        history.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(history[2].spec.sql, "SELECT 1");
    let current = store
        .endpoint("cases")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(current, third);
    assert_eq!(store.list_endpoints().await.expect("list"), vec![third]);
}

#[test]
fn schema_evolution_widens_and_adds_but_never_narrows_drops_or_reorders() {
    let decimal = |precision, scale| ColumnType::Decimal { precision, scale };
    let old = vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("n", ColumnType::Int32, false),
        Column::new("fee", decimal(8, 2), true),
    ];
    let widened = vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("n", ColumnType::Int64, true),
        Column::new("fee", decimal(12, 2), true),
        Column::new("note", ColumnType::String, true),
    ];
    check_evolution(&old, &widened, &[]).expect("widening and adding are allowed");
    check_evolution(&old, &old, &[]).expect("no change is a change allowed");
    let refused = |new: Vec<Column>| match check_evolution(&old, &new, &[]) {
        Err(CatalogError::SchemaChange(problems)) => problems,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let narrowed = refused(vec![
        Column::new("id", ColumnType::Int32, false),
        Column::new("n", ColumnType::Int32, false),
        Column::new("fee", decimal(6, 2), true),
    ]);
    assert_eq!(narrowed.len(), 2, "{narrowed:?}");
    assert!(narrowed[0].starts_with("column id: changing int64 to int32"));
    assert!(narrowed[1].starts_with("column fee: changing decimal(8,2) to decimal(6,2)"));
    let reordered = refused(vec![
        Column::new("n", ColumnType::Int32, false),
        Column::new("id", ColumnType::Int64, false),
        Column::new("fee", decimal(8, 2), true),
    ]);
    assert!(reordered[0].contains("keep their order"), "{reordered:?}");
    let inserted = refused(vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("note", ColumnType::String, true),
        Column::new("n", ColumnType::Int32, false),
        Column::new("fee", decimal(8, 2), true),
    ]);
    assert!(
        inserted.iter().any(|p| p.contains("new columns go after")),
        "{inserted:?}"
    );
    let renamed = refused(vec![
        Column::new("id", ColumnType::Int64, false),
        Column::new("count", ColumnType::Int32, true),
        Column::new("fee", decimal(8, 2), true),
    ]);
    assert!(
        renamed[0].starts_with("column n: dropping a column"),
        "{renamed:?}"
    );
}

async fn a_primary_key_is_kept_checked_and_an_upsert_never_rebases(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gongan", "公安局")
        .await
        .expect("department");
    for (primary_key, field) in [
        (vec!["phone"], "primary_key[0]"),
        (vec!["nope"], "primary_key[0]"),
        (vec!["id", "id"], "primary_key[1]"),
    ] {
        let mut new = new_dataset("gongan.keyed");
        new.primary_key = primary_key.iter().map(|s| s.to_string()).collect();
        match store.create_dataset(new).await {
            Err(CatalogError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{primary_key:?}: expected a refusal, got {other:?}"),
        }
    }
    let mut new = new_dataset("gongan.keyed");
    new.primary_key = vec!["id".into()];
    let dataset = store.create_dataset(new).await.expect("keyed dataset");
    assert_eq!(dataset.primary_key, vec!["id".to_string()]);
    assert_eq!(
        dataset.compaction_order(),
        vec!["id".to_string()],
        "sorted by key"
    );
    let read = store
        .dataset(&dataset.name)
        .await
        .expect("catalog")
        .expect("dataset");
    assert_eq!(read.primary_key, vec!["id".to_string()]);

    // The key column may not be widened or made nullable, where another column may.
    let widened = vec![
        Column::new("id", ColumnType::Int64, true),
        Column::new("phone", ColumnType::String, true).sensitive(Sensitivity::Phone),
    ];
    match check_evolution(&dataset.columns, &widened, &dataset.primary_key) {
        Err(CatalogError::SchemaChange(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with("column id: a primary-key column keeps its type"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // An upsert prepared against a snapshot that another write replaced conflicts, where a
    // compaction would have rebased: that write may have stored one of its keys.
    let first = committed(
        store
            .commit(append(&dataset, None, vec![file("a", 3)]))
            .await
            .expect("first"),
    );
    let second = committed(
        store
            .commit(append(&dataset, Some(first.id), vec![file("b", 2)]))
            .await
            .expect("second"),
    );
    let upsert = Commit {
        operation: Operation::Upsert,
        removed: vec!["a".into()],
        ..append(&dataset, Some(first.id), vec![file("a2", 2), file("c", 1)])
    };
    assert!(matches!(
        store.commit(upsert.clone()).await,
        Err(CatalogError::Conflict { actual: Some(actual), .. }) if actual == second.id
    ));
    let landed = committed(
        store
            .commit(Commit {
                expected_parent: Some(second.id),
                ..upsert
            })
            .await
            .expect("replanned upsert"),
    );
    assert_eq!(landed.operation, Operation::Upsert);
    assert_eq!((landed.rows, landed.files), (5, 3));
}

/// Each node replaces its own workers' reports, which every node reads back as written;
/// another node's reports stay, and a node silent for a week is forgotten.
async fn every_node_reads_every_nodes_feed_reports(backend: Backend) {
    use crate::feeds::{FeedState, FeedWorkerReport, HeldPartition};
    let Some((database, first)) = store(backend).await else {
        return;
    };
    let second = database.reopen().await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:00.123456Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let report = |node: &str, worker: &str, state, at| FeedWorkerReport {
        worker: format!("{node}#{worker}"),
        node: node.to_string(),
        dataset: "gongan.alarms".into(),
        topic: "alarms".into(),
        group_id: "cityhub".into(),
        state,
        state_since: t0,
        broker_unreachable_since: (state == FeedState::BrokerUnreachable).then_some(t0),
        last_error: (state == FeedState::BrokerUnreachable)
            .then(|| "all brokers down: 127.0.0.1:9 refused".to_string()),
        last_error_at: (state == FeedState::BrokerUnreachable).then_some(t0),
        partitions: if state == FeedState::Assigned {
            vec![HeldPartition {
                topic: "alarms".into(),
                partition: 3,
                high_watermark: Some(1_000),
                last_flush_at: Some(t0),
                rows_total: 900,
                rejected_total: 10,
                rows_per_second: 450.5,
            }]
        } else {
            Vec::new()
        },
        reported_at: at,
    };
    let a0 = report("node-a", "0.0", FeedState::Assigned, t0);
    let a1 = report("node-a", "1.0", FeedState::BrokerUnreachable, t0);
    let b0 = report("node-b", "0.0", FeedState::Joining, t0);
    first
        .replace_feed_reports("node-a", vec![a0.clone(), a1.clone()], t0)
        .await
        .expect("report a");
    second
        .replace_feed_reports("node-b", vec![b0.clone()], t0)
        .await
        .expect("report b");
    assert_eq!(
        second.feed_reports().await.expect("read"),
        vec![a0.clone(), a1.clone(), b0.clone()]
    );

    // node-a restarts without its second feed: that worker's row goes, node-b's stays.
    let later = t0 + chrono::Duration::seconds(4);
    let a0_later = FeedWorkerReport {
        state: FeedState::Stopped,
        reported_at: later,
        ..a0.clone()
    };
    first
        .replace_feed_reports("node-a", vec![a0_later.clone()], later)
        .await
        .expect("report a again");
    let read = first.feed_reports().await.expect("read");
    assert_eq!(read, vec![a0_later.clone(), b0.clone()]);
    assert!(
        !read[0].is_silent(later + chrono::Duration::hours(1)),
        "stopped, not silent"
    );
    assert!(b0.is_silent(later + chrono::Duration::seconds(11)));
    assert!(!b0.is_silent(later));

    // A week after node-b last reported, a report from node-a forgets it.
    let week = t0 + crate::feeds::FORGET_AFTER + chrono::Duration::seconds(1);
    first
        .replace_feed_reports("node-a", vec![], week)
        .await
        .expect("report a, no feeds");
    assert_eq!(first.feed_reports().await.expect("read"), vec![]);

    // A state the code does not know is an error naming the worker, not a guess.
    first
        .replace_feed_reports("node-a", vec![a0.clone()], t0)
        .await
        .expect("report");
    database
        .raw_execute("UPDATE feed_workers SET state = 'dancing'")
        .await
        .expect("raw update");
    let err = first.feed_reports().await.expect_err("unknown state");
    assert!(err.to_string().contains("node-a#0.0"), "{err}");
}

async fn commits_made_together_land_together_or_not_at_all(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let vehicles = store
        .create_dataset(new_dataset("admin.vehicles"))
        .await
        .expect("created");
    let images = store
        .create_dataset(new_dataset("admin.images"))
        .await
        .expect("created");
    let outcomes = store
        .commit_together(vec![
            append(&vehicles, None, vec![file("v1.parquet", 3)]),
            append(&images, None, vec![file("i1.parquet", 5)]),
        ])
        .await
        .expect("committed");
    let snapshots: Vec<Snapshot> = outcomes.into_iter().map(committed).collect();
    assert_eq!(
        (snapshots[0].dataset_id, snapshots[0].rows),
        (vehicles.id, 3)
    );
    assert_eq!((snapshots[1].dataset_id, snapshots[1].rows), (images.id, 5));

    // The second commit's parent is stale: neither lands, not even the first.
    let err = store
        .commit_together(vec![
            append(
                &vehicles,
                Some(snapshots[0].id),
                vec![file("v2.parquet", 1)],
            ),
            append(&images, None, vec![file("i2.parquet", 1)]),
        ])
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, CatalogError::Conflict { dataset_id, .. } if dataset_id == images.id),
        "{err:?}"
    );
    for (dataset, path) in [(&vehicles, "v1.parquet"), (&images, "i1.parquet")] {
        let now = store
            .dataset(&dataset.name)
            .await
            .expect("read")
            .expect("exists");
        let live = live_paths(store.snapshot_files(now.id, None).await.expect("files"));
        assert_eq!(live, vec![path.to_string()]);
    }

    // One dataset twice, or an idempotency key, is refused before anything is written.
    let twice = store
        .commit_together(vec![
            append(
                &vehicles,
                Some(snapshots[0].id),
                vec![file("v3.parquet", 1)],
            ),
            append(
                &vehicles,
                Some(snapshots[0].id),
                vec![file("v4.parquet", 1)],
            ),
        ])
        .await
        .expect_err("refused");
    assert!(twice.to_string().contains("appears twice"), "{twice}");
}

async fn viid_accounts_register_keep_alive_and_unregister(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gaj", "公安局")
        .await
        .expect("created");
    let id = "51100000001190000001";
    let ha1 = crate::viid::ha1(id, "secret");
    let account = store
        .create_viid_account(id, "gaj", &ha1)
        .await
        .expect("created");
    assert_eq!(
        (account.department.as_str(), account.registered_at),
        ("gaj", None)
    );
    let again = store.create_viid_account(id, "gaj", &ha1).await;
    assert!(
        matches!(again, Err(CatalogError::AlreadyExists { .. })),
        "{again:?}"
    );
    let unknown = store
        .create_viid_account("51100000001190000002", "nope", &ha1)
        .await;
    assert!(
        matches!(
            unknown,
            Err(CatalogError::NotFound {
                what: "department",
                ..
            })
        ),
        "{unknown:?}"
    );
    let bad = store.create_viid_account("123", "gaj", &ha1).await;
    assert!(matches!(bad, Err(CatalogError::Invalid { .. })), "{bad:?}");

    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    // A keepalive of an unregistered platform is refused.
    assert!(!store.viid_keepalive(id, at).await.expect("keepalive"));
    store
        .set_viid_registration(id, Some(at))
        .await
        .expect("registered");
    let later = at + chrono::Duration::seconds(60);
    assert!(store.viid_keepalive(id, later).await.expect("keepalive"));
    let stored = store.viid_account(id).await.expect("read").expect("exists");
    assert_eq!(
        (stored.registered_at, stored.last_seen_at),
        (Some(at), Some(later))
    );
    assert_eq!(stored.ha1, ha1);
    assert!(stored.registered(later));
    store
        .set_viid_registration(id, None)
        .await
        .expect("unregistered");
    let stored = store.viid_account(id).await.expect("read").expect("exists");
    assert_eq!(
        (stored.registered_at, stored.last_seen_at),
        (None, Some(later))
    );
    assert!(!stored.registered(later));
    assert_eq!(store.viid_accounts().await.expect("list").len(), 1);
    assert!(
        store
            .viid_account("51100000001190000009")
            .await
            .expect("read")
            .is_none()
    );
}

async fn viid_subscriptions_are_kept_whole_and_appended_files_skip_compactions(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    store
        .create_department("gaj", "公安局")
        .await
        .expect("created");
    for id in ["51100000001190000001", "51100000001190000002"] {
        store
            .create_viid_account(id, "gaj", "ha1")
            .await
            .expect("created");
    }
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let mut subscription = crate::viid::ViidSubscription {
        id: "510000000011900000012026120608300000001".into(),
        account_id: "51100000001190000001".into(),
        department: "gaj".into(),
        title: "过车".into(),
        details: vec!["13".into()],
        devices: vec![],
        receive_addr: "http://upper.example/VIID/SubscribeNotifications".into(),
        begin_at: at,
        end_at: None,
        status: crate::viid::SubscriptionStatus::Active,
        reason: None,
        cursors: [("gaj.viid_motor_vehicles".to_string(), 3)].into(),
        attempts: 0,
        next_attempt_at: at,
        delivered: 0,
        created_at: at,
    };
    store
        .save_viid_subscription(&subscription)
        .await
        .expect("saved");
    subscription.delivered = 120;
    subscription.status = crate::viid::SubscriptionStatus::Dropped;
    store
        .save_viid_subscription(&subscription)
        .await
        .expect("saved again");
    let mut theirs = subscription.clone();
    theirs.account_id = "51100000001190000002".into();
    let taken = store.save_viid_subscription(&theirs).await;
    assert!(
        matches!(taken, Err(CatalogError::Invalid { .. })),
        "{taken:?}"
    );
    assert_eq!(
        store.viid_subscriptions(None).await.expect("all"),
        vec![subscription.clone()]
    );
    assert!(
        store
            .viid_subscriptions(Some("51100000001190000002"))
            .await
            .expect("theirs")
            .is_empty()
    );

    let dataset = store
        .create_dataset(new_dataset("gaj.viid_motor_vehicles"))
        .await
        .expect("created");
    let first = committed(
        store
            .commit(append(&dataset, None, vec![file("a.parquet", 2)]))
            .await
            .expect("append"),
    );
    let second = committed(
        store
            .commit(append(&dataset, Some(first.id), vec![file("b.parquet", 3)]))
            .await
            .expect("append"),
    );
    committed(
        store
            .commit(compaction(
                &dataset,
                Some(second.id),
                &["a.parquet", "b.parquet"],
                file("ab.parquet", 5),
            ))
            .await
            .expect("compaction"),
    );
    let appended = store.appended_files(dataset.id, 0).await.expect("files");
    let seen: Vec<(i64, &str)> = appended
        .iter()
        .map(|(seq, f)| (*seq, f.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![(1, "a.parquet"), (2, "b.parquet")],
        "compactions add no records"
    );
    let later = store.appended_files(dataset.id, 1).await.expect("files");
    assert_eq!(later.len(), 1);
}

on_both_backends!(
    admin_department_exists_after_migration,
    departments_are_validated_and_unique,
    principals_are_found_by_token_hash_only,
    datasets_round_trip_and_refuse_duplicates,
    commits_chain_snapshots_and_track_live_files,
    a_stale_parent_is_a_conflict_and_changes_nothing,
    a_compaction_rebases_over_appends_that_committed_while_it_ran,
    a_compaction_loses_cleanly_to_a_change_that_removed_its_files,
    expired_snapshots_go_with_the_files_only_they_named,
    a_sort_key_is_kept_and_checked_against_the_columns,
    idempotency_keys_replay_and_refuse_different_bodies,
    concurrent_writers_never_lose_a_commit,
    two_nodes_commit_to_one_dataset_exactly_once,
    other_nodes_hear_of_changes,
    a_job_lease_has_one_holder_at_a_time,
    every_node_reads_every_nodes_feed_reports,
    reopening_keeps_everything_and_does_not_remigrate,
    only_datasets_without_data_can_be_dropped,
    stream_offsets_advance_with_the_snapshot_and_refuse_a_zombie,
    endpoints_are_versioned_and_owned,
    a_primary_key_is_kept_checked_and_an_upsert_never_rebases,
    commits_made_together_land_together_or_not_at_all,
    viid_accounts_register_keep_alive_and_unregister,
    viid_subscriptions_are_kept_whole_and_appended_files_skip_compactions,
);
