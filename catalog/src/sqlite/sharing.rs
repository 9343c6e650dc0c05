//! SQLite statements for principals' lifecycle, share requests, grants and the audit log.
//! Each function runs on a connection the store hands it (writer or reader).

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    PRINCIPAL_COLUMNS, now, parse_json, parse_optional_time, parse_text, parse_time,
    principal_from_row, time_text,
};
use async_trait::async_trait;

use super::SqliteStore;
use crate::error::{CatalogError, Result};
use crate::model::Principal;
use crate::sharing::{Decision, Grant, NewShareRequest, ShareRequest, ShareStatus};
use crate::store::SharingStore;

pub fn list_principals(conn: &Connection) -> Result<Vec<Principal>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map([], principal_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn revoke_principal(conn: &mut Connection, id: i64) -> Result<Principal> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let principal = tx
        .query_row(
            &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = ?1"),
            [id],
            principal_from_row,
        )
        .optional()?
        .ok_or_else(|| CatalogError::NotFound {
            what: "token",
            name: id.to_string(),
        })?;
    if principal.revoked_at.is_some() {
        return Err(CatalogError::WrongState(format!(
            "token {id} ({}) is already revoked",
            principal.name
        )));
    }
    let at = now();
    tx.execute(
        "UPDATE principals SET revoked_at = ?1 WHERE id = ?2",
        params![time_text(at), id],
    )?;
    tx.commit()?;
    Ok(Principal {
        revoked_at: Some(at),
        ..principal
    })
}

const REQUEST_SELECT: &str = "SELECT r.id, d.department || '.' || d.name, d.department, \
     r.department, p.name, r.purpose, r.columns, r.unmasked, r.until, r.status, r.created_at, \
     r.answer_due_at, q.name, r.decided_at, r.reason, r.grant_id, r.rows \
     FROM share_requests r JOIN datasets d ON d.id = r.dataset_id \
     JOIN principals p ON p.id = r.requested_by \
     LEFT JOIN principals q ON q.id = r.decided_by";

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<ShareRequest> {
    Ok(ShareRequest {
        id: row.get(0)?,
        dataset: row.get(1)?,
        owner: row.get(2)?,
        department: row.get(3)?,
        requested_by: row.get(4)?,
        purpose: row.get(5)?,
        columns: row
            .get::<_, Option<String>>(6)?
            .map(parse_json)
            .transpose()?,
        unmasked: parse_json(row.get(7)?)?,
        until: parse_optional_time(row.get(8)?)?,
        status: parse_status(row.get(9)?)?,
        created_at: parse_time(row.get(10)?)?,
        answer_due_at: parse_time(row.get(11)?)?,
        decided_by: row.get(12)?,
        decided_at: parse_optional_time(row.get(13)?)?,
        reason: row.get(14)?,
        grant_id: row.get(15)?,
        rows: row
            .get::<_, Option<String>>(16)?
            .map(parse_json)
            .transpose()?,
    })
}

fn parse_status(text: String) -> rusqlite::Result<ShareStatus> {
    parse_text(text)
}

pub fn create_share_request(conn: &mut Connection, new: NewShareRequest) -> Result<ShareRequest> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO share_requests (dataset_id, department, requested_by, purpose, columns, \
         unmasked, until, status, created_at, answer_due_at, rows) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10)",
        params![
            new.dataset_id,
            new.department,
            new.requested_by,
            new.purpose,
            new.columns
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            serde_json::to_string(&new.unmasked)?,
            new.until.map(time_text),
            time_text(now()),
            time_text(new.answer_due_at),
            new.rows.as_ref().map(serde_json::to_string).transpose()?,
        ],
    )?;
    let id = tx.last_insert_rowid();
    let request = load_request(&tx, id)?.ok_or_else(|| {
        CatalogError::Storage(format!("share request {id} vanished after its insert"))
    })?;
    tx.commit()?;
    Ok(request)
}

fn load_request(conn: &Connection, id: i64) -> Result<Option<ShareRequest>> {
    let mut stmt = conn.prepare_cached(&format!("{REQUEST_SELECT} WHERE r.id = ?1"))?;
    Ok(stmt.query_row([id], request_from_row).optional()?)
}

pub fn share_request(conn: &Connection, id: i64) -> Result<Option<ShareRequest>> {
    load_request(conn, id)
}

pub fn list_share_requests(
    conn: &Connection,
    department: Option<&str>,
    status: Option<ShareStatus>,
) -> Result<Vec<ShareRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{REQUEST_SELECT} WHERE (?1 IS NULL OR r.department = ?1 OR d.department = ?1) \
         AND (?2 IS NULL OR r.status = ?2) ORDER BY r.id DESC"
    ))?;
    let rows = stmt.query_map(
        params![department, status.map(ShareStatus::as_str)],
        request_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn decide_share_request(
    conn: &mut Connection,
    decision: Decision,
) -> Result<(ShareRequest, Option<Grant>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let request =
        load_request(&tx, decision.request_id)?.ok_or_else(|| CatalogError::NotFound {
            what: "share request",
            name: decision.request_id.to_string(),
        })?;
    Decision::check_pending(&request)?;
    let at = now();
    let mut grant_id = None;
    if decision.approve {
        let dataset_id: i64 = tx.query_row(
            "SELECT dataset_id FROM share_requests WHERE id = ?1",
            [request.id],
            |row| row.get(0),
        )?;
        let terms = decision.grant_terms(&request);
        tx.execute(
            "INSERT INTO grants (dataset_id, department, request_id, columns, unmasked, \
             created_by, created_at, expires_at, rows) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                dataset_id,
                request.department,
                request.id,
                terms
                    .columns
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()?,
                serde_json::to_string(&terms.unmasked)?,
                decision.decided_by,
                time_text(at),
                terms.expires_at.map(time_text),
                terms.rows.as_ref().map(serde_json::to_string).transpose()?,
            ],
        )?;
        grant_id = Some(tx.last_insert_rowid());
    }
    tx.execute(
        "UPDATE share_requests SET status = ?1, decided_by = ?2, decided_at = ?3, reason = ?4, \
         grant_id = ?5 WHERE id = ?6",
        params![
            if decision.approve {
                "approved"
            } else {
                "rejected"
            },
            decision.decided_by,
            time_text(at),
            decision.reason,
            grant_id,
            request.id
        ],
    )?;
    let request = load_request(&tx, request.id)?
        .ok_or_else(|| CatalogError::Storage("a decided request vanished".into()))?;
    let grant = grant_id
        .map(|id| load_grant(&tx, id))
        .transpose()?
        .flatten();
    tx.commit()?;
    Ok((request, grant))
}

const GRANT_SELECT: &str = "SELECT g.id, d.department || '.' || d.name, g.dataset_id, \
     g.department, g.request_id, g.columns, g.unmasked, p.name, g.created_at, g.expires_at, \
     g.revoked_at, g.revoke_reason, g.rows \
     FROM grants g JOIN datasets d ON d.id = g.dataset_id \
     JOIN principals p ON p.id = g.created_by";

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get(0)?,
        dataset: row.get(1)?,
        dataset_id: row.get(2)?,
        department: row.get(3)?,
        request_id: row.get(4)?,
        columns: row
            .get::<_, Option<String>>(5)?
            .map(parse_json)
            .transpose()?,
        unmasked: parse_json(row.get(6)?)?,
        created_by: row.get(7)?,
        created_at: parse_time(row.get(8)?)?,
        expires_at: parse_optional_time(row.get(9)?)?,
        revoked_at: parse_optional_time(row.get(10)?)?,
        revoke_reason: row.get(11)?,
        rows: row
            .get::<_, Option<String>>(12)?
            .map(parse_json)
            .transpose()?,
    })
}

fn load_grant(conn: &Connection, id: i64) -> Result<Option<Grant>> {
    let mut stmt = conn.prepare_cached(&format!("{GRANT_SELECT} WHERE g.id = ?1"))?;
    Ok(stmt.query_row([id], grant_from_row).optional()?)
}

pub fn grant(conn: &Connection, id: i64) -> Result<Option<Grant>> {
    load_grant(conn, id)
}

pub fn grants_held_by(conn: &Connection, department: Option<&str>) -> Result<Vec<Grant>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{GRANT_SELECT} WHERE (?1 IS NULL OR g.department = ?1) ORDER BY g.id DESC"
    ))?;
    let rows = stmt.query_map([department], grant_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn grants_given_by(conn: &Connection, owner: &str) -> Result<Vec<Grant>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{GRANT_SELECT} WHERE d.department = ?1 ORDER BY g.id DESC"
    ))?;
    let rows = stmt.query_map([owner], grant_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn revoke_grant(conn: &mut Connection, id: i64, by: i64, reason: &str) -> Result<Grant> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let grant = load_grant(&tx, id)?.ok_or_else(|| CatalogError::NotFound {
        what: "grant",
        name: id.to_string(),
    })?;
    if grant.revoked_at.is_some() {
        return Err(CatalogError::WrongState(format!(
            "grant {id} is already revoked"
        )));
    }
    tx.execute(
        "UPDATE grants SET revoked_at = ?1, revoked_by = ?2, revoke_reason = ?3 WHERE id = ?4",
        params![time_text(now()), by, reason, id],
    )?;
    let grant = load_grant(&tx, id)?
        .ok_or_else(|| CatalogError::Storage("a revoked grant vanished".into()))?;
    tx.commit()?;
    Ok(grant)
}

#[async_trait]
impl SharingStore for SqliteStore {
    async fn list_principals(&self) -> Result<Vec<Principal>> {
        self.read(list_principals).await
    }

    async fn revoke_principal(&self, id: i64) -> Result<Principal> {
        self.write(move |conn| revoke_principal(conn, id)).await
    }

    async fn create_share_request(&self, new: NewShareRequest) -> Result<ShareRequest> {
        self.write(move |conn| create_share_request(conn, new))
            .await
    }

    async fn share_request(&self, id: i64) -> Result<Option<ShareRequest>> {
        self.read(move |conn| share_request(conn, id)).await
    }

    async fn list_share_requests(
        &self,
        department: Option<&str>,
        status: Option<ShareStatus>,
    ) -> Result<Vec<ShareRequest>> {
        let department = department.map(str::to_string);
        self.read(move |conn| list_share_requests(conn, department.as_deref(), status))
            .await
    }

    async fn decide_share_request(
        &self,
        decision: Decision,
    ) -> Result<(ShareRequest, Option<Grant>)> {
        self.write(move |conn| decide_share_request(conn, decision))
            .await
    }

    async fn grants_held_by(&self, department: Option<&str>) -> Result<Vec<Grant>> {
        let department = department.map(str::to_string);
        self.read(move |conn| grants_held_by(conn, department.as_deref()))
            .await
    }

    async fn grants_given_by(&self, owner: &str) -> Result<Vec<Grant>> {
        let owner = owner.to_string();
        self.read(move |conn| grants_given_by(conn, &owner)).await
    }

    async fn grant(&self, id: i64) -> Result<Option<Grant>> {
        self.read(move |conn| grant(conn, id)).await
    }

    async fn revoke_grant(&self, id: i64, by: i64, reason: &str) -> Result<Grant> {
        let reason = reason.to_string();
        self.write(move |conn| revoke_grant(conn, id, by, &reason))
            .await
    }
}
