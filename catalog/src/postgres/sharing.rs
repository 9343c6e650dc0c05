//! Principals' lifecycle, share requests and grants in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::{GenericClient, Row};

use super::datasets::{PRINCIPAL_COLUMNS, principal_from_row};
use super::*;
use crate::model::Principal;
use crate::sharing::{Decision, Grant, NewShareRequest, ShareRequest, ShareStatus};
use crate::store::SharingStore;

const REQUEST_SELECT: &str = "SELECT r.id, d.department || '.' || d.name, d.department, \
     r.department, p.name, r.purpose, r.columns, r.unmasked, r.until, r.status, r.created_at, \
     r.answer_due_at, q.name, r.decided_at, r.reason, r.grant_id, r.rows \
     FROM share_requests r JOIN datasets d ON d.id = r.dataset_id \
     JOIN principals p ON p.id = r.requested_by \
     LEFT JOIN principals q ON q.id = r.decided_by";

fn request_from_row(row: &Row) -> Result<ShareRequest> {
    Ok(ShareRequest {
        id: row.try_get(0)?,
        dataset: row.try_get(1)?,
        owner: row.try_get(2)?,
        department: row.try_get(3)?,
        requested_by: row.try_get(4)?,
        purpose: row.try_get(5)?,
        columns: optional_json(row, 6)?,
        unmasked: json(row, 7)?,
        until: row.try_get(8)?,
        status: parse(row, 9)?,
        created_at: row.try_get(10)?,
        answer_due_at: row.try_get(11)?,
        decided_by: row.try_get(12)?,
        decided_at: row.try_get(13)?,
        reason: row.try_get(14)?,
        grant_id: row.try_get(15)?,
        rows: optional_json(row, 16)?,
    })
}

const GRANT_SELECT: &str = "SELECT g.id, d.department || '.' || d.name, g.dataset_id, \
     g.department, g.request_id, g.columns, g.unmasked, p.name, g.created_at, g.expires_at, \
     g.revoked_at, g.revoke_reason, g.rows \
     FROM grants g JOIN datasets d ON d.id = g.dataset_id \
     JOIN principals p ON p.id = g.created_by";

fn grant_from_row(row: &Row) -> Result<Grant> {
    Ok(Grant {
        id: row.try_get(0)?,
        dataset: row.try_get(1)?,
        dataset_id: row.try_get(2)?,
        department: row.try_get(3)?,
        request_id: row.try_get(4)?,
        columns: optional_json(row, 5)?,
        unmasked: json(row, 6)?,
        created_by: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        revoked_at: row.try_get(10)?,
        revoke_reason: row.try_get(11)?,
        rows: optional_json(row, 12)?,
    })
}

async fn load_request(client: &impl GenericClient, id: i64) -> Result<Option<ShareRequest>> {
    client
        .query_opt(&format!("{REQUEST_SELECT} WHERE r.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(request_from_row)
        .transpose()
}

async fn load_grant(client: &impl GenericClient, id: i64) -> Result<Option<Grant>> {
    client
        .query_opt(&format!("{GRANT_SELECT} WHERE g.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(grant_from_row)
        .transpose()
}

fn json_text<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>> {
    Ok(value.as_ref().map(serde_json::to_string).transpose()?)
}

#[async_trait]
impl SharingStore for PostgresStore {
    async fn list_principals(&self) -> Result<Vec<Principal>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY id DESC"),
                &[],
            )
            .await?;
        rows.iter().map(principal_from_row).collect()
    }

    async fn revoke_principal(&self, id: i64) -> Result<Principal> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let principal = tx
            .query_opt(
                &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                what: "token",
                name: id.to_string(),
            })?;
        let principal = principal_from_row(&principal)?;
        if principal.revoked_at.is_some() {
            return Err(CatalogError::WrongState(format!(
                "token {id} ({}) is already revoked",
                principal.name
            )));
        }
        let at = now();
        tx.execute(
            "UPDATE principals SET revoked_at = $1 WHERE id = $2",
            &[&at, &id],
        )
        .await?;
        self.notify_change(&tx, "token revoked").await?;
        tx.commit().await?;
        Ok(Principal {
            revoked_at: Some(at),
            ..principal
        })
    }

    async fn create_share_request(&self, new: NewShareRequest) -> Result<ShareRequest> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO share_requests (dataset_id, department, requested_by, purpose, \
                 columns, unmasked, until, status, created_at, answer_due_at, rows) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10) RETURNING id",
                &[
                    &new.dataset_id,
                    &new.department,
                    &new.requested_by,
                    &new.purpose,
                    &json_text(&new.columns)?,
                    &serde_json::to_string(&new.unmasked)?,
                    &new.until,
                    &now(),
                    &new.answer_due_at,
                    &json_text(&new.rows)?,
                ],
            )
            .await?
            .try_get(0)?;
        let request = load_request(&*tx, id).await?.ok_or_else(|| {
            CatalogError::Storage(format!("share request {id} vanished after its insert"))
        })?;
        tx.commit().await?;
        Ok(request)
    }

    async fn share_request(&self, id: i64) -> Result<Option<ShareRequest>> {
        load_request(&**self.client().await?, id).await
    }

    async fn list_share_requests(
        &self,
        department: Option<&str>,
        status: Option<ShareStatus>,
    ) -> Result<Vec<ShareRequest>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "{REQUEST_SELECT} WHERE ($1::text IS NULL OR r.department = $1 \
                     OR d.department = $1) AND ($2::text IS NULL OR r.status = $2) \
                     ORDER BY r.id DESC"
                ),
                &[&department, &status.map(ShareStatus::as_str)],
            )
            .await?;
        rows.iter().map(request_from_row).collect()
    }

    async fn decide_share_request(
        &self,
        decision: Decision,
    ) -> Result<(ShareRequest, Option<Grant>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Locks the request: of two deciders, the second sees it decided.
        let locked = tx
            .query_opt(
                "SELECT dataset_id FROM share_requests WHERE id = $1 FOR UPDATE",
                &[&decision.request_id],
            )
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                what: "share request",
                name: decision.request_id.to_string(),
            })?;
        let dataset_id: i64 = locked.try_get(0)?;
        let request = load_request(&*tx, decision.request_id)
            .await?
            .ok_or_else(|| CatalogError::Storage("a locked request vanished".into()))?;
        Decision::check_pending(&request)?;
        let at = now();
        let mut grant_id: Option<i64> = None;
        if decision.approve {
            let terms = decision.grant_terms(&request);
            let inserted = tx
                .query_one(
                    "INSERT INTO grants (dataset_id, department, request_id, columns, unmasked, \
                     created_by, created_at, expires_at, rows) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[
                        &dataset_id,
                        &request.department,
                        &request.id,
                        &json_text(&terms.columns)?,
                        &serde_json::to_string(&terms.unmasked)?,
                        &decision.decided_by,
                        &at,
                        &terms.expires_at,
                        &json_text(&terms.rows)?,
                    ],
                )
                .await?;
            grant_id = Some(inserted.try_get(0)?);
        }
        let status = if decision.approve {
            "approved"
        } else {
            "rejected"
        };
        tx.execute(
            "UPDATE share_requests SET status = $1, decided_by = $2, decided_at = $3, \
             reason = $4, grant_id = $5 WHERE id = $6",
            &[
                &status,
                &decision.decided_by,
                &at,
                &decision.reason,
                &grant_id,
                &request.id,
            ],
        )
        .await?;
        let request = load_request(&*tx, request.id)
            .await?
            .ok_or_else(|| CatalogError::Storage("a decided request vanished".into()))?;
        let grant = match grant_id {
            Some(id) => load_grant(&*tx, id).await?,
            None => None,
        };
        self.notify_change(&tx, "share request decided").await?;
        tx.commit().await?;
        Ok((request, grant))
    }

    async fn grants_held_by(&self, department: Option<&str>) -> Result<Vec<Grant>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "{GRANT_SELECT} WHERE ($1::text IS NULL OR g.department = $1) \
                     ORDER BY g.id DESC"
                ),
                &[&department],
            )
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn grants_given_by(&self, owner: &str) -> Result<Vec<Grant>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("{GRANT_SELECT} WHERE d.department = $1 ORDER BY g.id DESC"),
                &[&owner],
            )
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn grant(&self, id: i64) -> Result<Option<Grant>> {
        load_grant(&**self.client().await?, id).await
    }

    async fn revoke_grant(&self, id: i64, by: i64, reason: &str) -> Result<Grant> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let locked = tx
            .query_opt(
                "SELECT revoked_at IS NOT NULL FROM grants WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            .ok_or_else(|| CatalogError::NotFound {
                what: "grant",
                name: id.to_string(),
            })?;
        if locked.try_get::<_, bool>(0)? {
            return Err(CatalogError::WrongState(format!(
                "grant {id} is already revoked"
            )));
        }
        tx.execute(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2, revoke_reason = $3 WHERE id = $4",
            &[&now(), &by, &reason, &id],
        )
        .await?;
        let grant = load_grant(&*tx, id)
            .await?
            .ok_or_else(|| CatalogError::Storage("a revoked grant vanished".into()))?;
        self.notify_change(&tx, "grant revoked").await?;
        tx.commit().await?;
        Ok(grant)
    }
}
