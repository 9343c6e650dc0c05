//! Share requests, grants, access decisions and the audit log, on both catalog backends.

use chrono::{Duration, TimeZone, Utc};

use super::{Backend, TestCatalog, on_both_backends};
use crate::sharing::{self, Decision, NewShareRequest};
use crate::*;

async fn store(backend: Backend) -> Option<(TestCatalog, Catalog)> {
    super::open(backend).await
}

async fn principal(store: &Catalog, department: &str, role: Role) -> Principal {
    if store
        .department(department)
        .await
        .expect("lookup")
        .is_none()
    {
        store
            .create_department(department, department)
            .await
            .expect("department");
    }
    let token = token::Token::generate();
    store
        .create_principal(
            NewPrincipal {
                name: format!("{department}-{role}"),
                department: department.into(),
                role,
                expires_at: None,
                rate_limit_per_second: None,
                region: None,
            },
            &token.hash,
        )
        .await
        .expect("principal")
}

async fn dataset(store: &Catalog, sharing: Sharing) -> Dataset {
    store
        .create_dataset(NewDataset {
            name: DatasetName::parse("gongan.people").expect("name"),
            description: "people".into(),
            columns: vec![
                Column::new("id", ColumnType::Int64, false),
                Column::new("name", ColumnType::String, true).sensitive(Sensitivity::PersonName),
                Column::new("phone", ColumnType::String, true).sensitive(Sensitivity::Phone),
                Column::new("town", ColumnType::String, true),
            ],
            classification: Classification::Important,
            sharing,
            resource_code: None,
            update_cycle: None,
            tags: vec![],
            sort_key: vec![],
            primary_key: vec![],
            snapshot_retention_days: None,
            row_retention: None,
            region_column: None,
            region_free: false,
        })
        .await
        .expect("dataset")
}

/// `gongan.people` as a value, without a catalog.
fn dataset_value(sharing: Sharing, columns: Vec<Column>) -> Dataset {
    Dataset {
        id: 1,
        name: DatasetName::parse("gongan.people").expect("name"),
        owner: "gongan".into(),
        description: String::new(),
        classification: Classification::General,
        sharing,
        resource_code: None,
        update_cycle: None,
        tags: vec![],
        sort_key: vec![],
        primary_key: vec![],
        snapshot_retention_days: None,
        row_retention: None,
        last_gc_at: None,
        columns,
        schema_version: 1,
        snapshot_id: None,
        snapshot_seq: 0,
        rows: 0,
        bytes: 0,
        files: 0,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        region_column: None,
        region_free: false,
    }
}

fn request(dataset: &Dataset, by: &Principal, columns: Option<&[&str]>) -> NewShareRequest {
    NewShareRequest {
        dataset_id: dataset.id,
        department: by.department.clone(),
        requested_by: by.id,
        purpose: "流动人口核查".into(),
        columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
        unmasked: vec![],
        until: None,
        answer_due_at: Utc::now() + Duration::days(7),
        rows: None,
    }
}

async fn approval_creates_a_grant_that_opens_a_conditional_dataset(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let owner = principal(&store, "gongan", Role::Producer).await;
    let reader = principal(&store, "minzheng", Role::Analyst).await;
    let data = dataset(&store, Sharing::Conditional).await;
    let now = Utc::now();
    assert_eq!(
        crate::access::access(&reader, &data, &[], now),
        Access::Apply
    );
    assert_eq!(crate::access::access(&owner, &data, &[], now), Access::Full);

    let asked = store
        .create_share_request(request(&data, &reader, Some(&["id", "name", "phone"])))
        .await
        .expect("request");
    assert_eq!(asked.status, ShareStatus::Pending);
    assert_eq!(asked.owner, "gongan");
    let (decided, grant) = store
        .decide_share_request(Decision {
            request_id: asked.id,
            decided_by: owner.id,
            approve: true,
            reason: None,
            columns: Some(vec!["id".into(), "name".into()]),
            unmasked: Some(vec!["name".into()]),
            expires_at: Some(now + Duration::days(30)),
            rows: None,
        })
        .await
        .expect("approve");
    let grant = grant.expect("an approval makes a grant");
    assert_eq!(decided.status, ShareStatus::Approved);
    assert_eq!(decided.grant_id, Some(grant.id));
    assert_eq!(decided.decided_by.as_deref(), Some("gongan-producer"));
    assert_eq!(grant.columns, Some(vec!["id".into(), "name".into()]));

    let held = store
        .grants_held_by(Some("minzheng"))
        .await
        .expect("grants");
    assert_eq!(held.len(), 1);
    match crate::access::access(&reader, &data, &held, now) {
        Access::Read {
            columns: Some(columns),
            unmasked,
            trusted: true,
            rows: None,
        } => {
            assert_eq!(columns.into_iter().collect::<Vec<_>>(), ["id", "name"]);
            assert_eq!(unmasked.into_iter().collect::<Vec<_>>(), ["name"]);
        }
        other => panic!("expected a narrowed read, got {other:?}"),
    }
    // The grant lapses at its expiry ...
    assert_eq!(
        crate::access::access(&reader, &data, &held, now + Duration::days(31)),
        Access::Apply
    );
    // ... and at once when revoked; a second revocation is refused.
    store
        .revoke_grant(grant.id, owner.id, "项目结束")
        .await
        .expect("revoke");
    let held = store
        .grants_held_by(Some("minzheng"))
        .await
        .expect("grants");
    assert_eq!(
        crate::access::access(&reader, &data, &held, now),
        Access::Apply
    );
    assert!(matches!(
        store.revoke_grant(grant.id, owner.id, "again").await,
        Err(CatalogError::WrongState(_))
    ));
    // A decided request cannot be decided again.
    let again = store
        .decide_share_request(Decision {
            request_id: asked.id,
            decided_by: owner.id,
            approve: false,
            reason: Some("no".into()),
            columns: None,
            unmasked: None,
            expires_at: None,
            rows: None,
        })
        .await;
    assert!(matches!(again, Err(CatalogError::WrongState(_))));
}

async fn rejection_keeps_its_reason_and_listing_filters_by_department_and_status(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let owner = principal(&store, "gongan", Role::Producer).await;
    let reader = principal(&store, "minzheng", Role::Analyst).await;
    let other = principal(&store, "jiaotong", Role::Analyst).await;
    let data = dataset(&store, Sharing::Conditional).await;
    let first = store
        .create_share_request(request(&data, &reader, None))
        .await
        .expect("request");
    store
        .create_share_request(request(&data, &other, None))
        .await
        .expect("request");
    let (rejected, grant) = store
        .decide_share_request(Decision {
            request_id: first.id,
            decided_by: owner.id,
            approve: false,
            reason: Some("用途与职责不符".into()),
            columns: None,
            unmasked: None,
            expires_at: None,
            rows: None,
        })
        .await
        .expect("reject");
    assert!(grant.is_none());
    assert_eq!(rejected.status, ShareStatus::Rejected);
    assert_eq!(rejected.reason.as_deref(), Some("用途与职责不符"));

    let mine = store
        .list_share_requests(Some("minzheng"), None)
        .await
        .expect("list");
    assert_eq!(mine.len(), 1);
    let to_owner = store
        .list_share_requests(Some("gongan"), Some(ShareStatus::Pending))
        .await
        .expect("list");
    assert_eq!(to_owner.len(), 1);
    assert_eq!(to_owner[0].department, "jiaotong");
    assert!(!to_owner[0].overdue(Utc::now()));
    assert!(to_owner[0].overdue(Utc::now() + Duration::days(8)));
}

#[test]
fn unconditional_datasets_are_read_masked_and_none_datasets_are_hidden() {
    let reader = Principal {
        id: 7,
        name: "r".into(),
        department: "minzheng".into(),
        role: Role::Analyst,
        created_at: Utc::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
        region: None,
    };
    let mut data = dataset_value(Sharing::Unconditional, vec![]);
    let now = Utc::now();
    assert_eq!(
        crate::access::access(&reader, &data, &[], now),
        Access::Read {
            columns: None,
            unmasked: Default::default(),
            trusted: false,
            rows: None,
        }
    );
    data.sharing = Sharing::None;
    assert_eq!(
        crate::access::access(&reader, &data, &[], now),
        Access::Hidden
    );
    let admin = Principal {
        role: Role::Admin,
        department: "admin".into(),
        ..reader
    };
    assert_eq!(crate::access::access(&admin, &data, &[], now), Access::Full);
}

#[test]
fn deadlines_count_working_days() {
    // Friday 2026-11-27 + 1 working day = Monday 2026-11-30; + 5 = Friday 2026-12-04.
    let friday = Utc
        .with_ymd_and_hms(2026, 11, 27, 9, 0, 0)
        .single()
        .expect("date");
    let monday = Utc
        .with_ymd_and_hms(2026, 11, 30, 9, 0, 0)
        .single()
        .expect("date");
    let next_friday = Utc
        .with_ymd_and_hms(2026, 12, 4, 9, 0, 0)
        .single()
        .expect("date");
    assert_eq!(sharing::working_days_after(friday, 1), monday);
    assert_eq!(sharing::working_days_after(friday, 5), next_friday);
    assert_eq!(sharing::working_days_after(friday, 0), friday);
}

async fn the_audit_log_is_append_only_and_purged_only_with_a_record(backend: Backend) {
    let Some((dir, store)) = store(backend).await else {
        return;
    };
    let who = principal(&store, "gongan", Role::Analyst).await;
    let old = AuditEvent {
        at: Utc::now() - Duration::days(400),
        ..AuditEvent::by(&who, Action::Query, Outcome::Ok).dataset("gongan.people")
    };
    let new = AuditEvent::by(&who, Action::Push, Outcome::Ok).dataset("gongan.people");
    store.append_audit(vec![old, new]).await.expect("append");
    let all = store
        .audit_entries(AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("read");
    assert_eq!(all.len(), 2);

    // Nobody can change or delete entries through the database either.
    let update = dir
        .raw_execute("UPDATE audit_log SET outcome = 'forged'")
        .await;
    assert!(update.expect_err("must fail").contains("append-only"));
    let delete = dir.raw_execute("DELETE FROM audit_log").await;
    assert!(delete.expect_err("must fail").contains("retention"));
    let forward = dir
        .raw_execute("UPDATE audit_retention SET cutoff = '9999-01-01T00:00:00.000000Z'")
        .await;
    assert!(forward.is_ok(), "moving the cutoff forward is allowed");
    let rewind = dir
        .raw_execute("UPDATE audit_retention SET cutoff = '0001-01-01T00:00:00.000000Z'")
        .await;
    assert!(
        rewind
            .expect_err("must fail")
            .contains("only moves forward")
    );

    let Some((dir, store)) = self::store(backend).await else {
        return;
    };
    let who = principal(&store, "gongan", Role::Analyst).await;
    let old = AuditEvent {
        at: Utc::now() - Duration::days(400),
        ..AuditEvent::by(&who, Action::Query, Outcome::Ok)
    };
    store
        .append_audit(vec![old, AuditEvent::by(&who, Action::Query, Outcome::Ok)])
        .await
        .expect("append");
    let purged = store
        .purge_audit(
            Utc::now() - Duration::days(365),
            AuditEvent::by(&who, Action::AuditPurge, Outcome::Ok),
        )
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    let left = store
        .audit_entries(AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("read");
    let actions: Vec<&str> = left.iter().map(|e| e.event.action.as_str()).collect();
    assert_eq!(actions, ["query", "audit_purge"]);
    assert_eq!(left[1].event.detail["deleted"], 1);
    let by_action = store
        .audit_entries(AuditFilter {
            action: Some("audit_purge".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("read");
    assert_eq!(by_action.len(), 1);
    // A time window: `since` inclusive, `until` exclusive.
    let purge_at = left[1].event.at;
    let before_purge = store
        .audit_entries(AuditFilter {
            until: Some(purge_at),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("read");
    assert_eq!(before_purge.len(), 1);
    assert_eq!(before_purge[0].event.action.as_str(), "query");
    let from_purge = store
        .audit_entries(AuditFilter {
            since: Some(purge_at),
            until: Some(purge_at + Duration::seconds(1)),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("read");
    assert_eq!(from_purge.len(), 1);
    assert_eq!(from_purge[0].event.action.as_str(), "audit_purge");
    drop(dir);
}

async fn revoked_tokens_are_listed_as_revoked(backend: Backend) {
    let Some((_dir, store)) = store(backend).await else {
        return;
    };
    let who = principal(&store, "gongan", Role::Analyst).await;
    let revoked = store.revoke_principal(who.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        store.revoke_principal(who.id).await,
        Err(CatalogError::WrongState(_))
    ));
    assert!(matches!(
        store.revoke_principal(999).await,
        Err(CatalogError::NotFound { .. })
    ));
    let listed = store.list_principals().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|p| p.id == who.id && p.revoked_at.is_some())
    );
}

#[test]
fn requests_may_only_name_known_columns_and_unmask_sensitive_ones() {
    let data = dataset_value(
        Sharing::Conditional,
        vec![
            Column::new("id", ColumnType::Int64, false),
            Column::new("phone", ColumnType::String, true).sensitive(Sensitivity::Phone),
        ],
    );
    let check = |columns: Option<&[&str]>, unmasked: &[&str]| {
        let columns: Option<Vec<String>> =
            columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        let unmasked: Vec<String> = unmasked.iter().map(|s| s.to_string()).collect();
        sharing::validate_columns_asked(&data, columns.as_deref(), &unmasked)
            .map_err(|e| e.to_string())
    };
    assert!(check(None, &["phone"]).is_ok());
    assert!(check(Some(&["id", "phone"]), &["phone"]).is_ok());
    assert!(
        check(Some(&["nope"]), &[])
            .expect_err("must fail")
            .starts_with("columns[0]")
    );
    assert!(
        check(None, &["id"])
            .expect_err("must fail")
            .contains("no sensitivity tag")
    );
    assert!(
        check(Some(&["id"]), &["phone"])
            .expect_err("must fail")
            .contains("not among")
    );
    assert!(
        check(Some(&[]), &[])
            .expect_err("must fail")
            .starts_with("columns")
    );
}

on_both_backends!(
    approval_creates_a_grant_that_opens_a_conditional_dataset,
    rejection_keeps_its_reason_and_listing_filters_by_department_and_status,
    the_audit_log_is_append_only_and_purged_only_with_a_record,
    revoked_tokens_are_listed_as_revoked,
);
