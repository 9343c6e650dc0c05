//! GA/T 1400 accounts on PostgreSQL: the SQLite store's statements.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::*;
use crate::store::ViidStore;
use crate::viid::{ViidAccount, validate_account_id};

const COLUMNS: &str = "id, department, ha1, created_at, registered_at, last_seen_at";

fn account_from_row(row: &Row) -> Result<ViidAccount> {
    Ok(ViidAccount {
        id: row.try_get(0)?,
        department: row.try_get(1)?,
        ha1: row.try_get(2)?,
        created_at: row.try_get(3)?,
        registered_at: row.try_get(4)?,
        last_seen_at: row.try_get(5)?,
    })
}

#[async_trait]
impl ViidStore for PostgresStore {
    async fn create_viid_account(
        &self,
        id: &str,
        department: &str,
        ha1: &str,
    ) -> Result<ViidAccount> {
        validate_account_id(id)?;
        let account = ViidAccount {
            id: id.to_string(),
            department: department.to_string(),
            ha1: ha1.to_string(),
            created_at: now(),
            registered_at: None,
            last_seen_at: None,
        };
        let client = self.client().await?;
        let known = client
            .query_opt(
                "SELECT code FROM departments WHERE code = $1",
                &[&account.department],
            )
            .await?;
        if known.is_none() {
            return Err(CatalogError::NotFound {
                what: "department",
                name: account.department,
            });
        }
        let inserted = client
            .execute(
                "INSERT INTO viid_accounts (id, department, ha1, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[
                    &account.id,
                    &account.department,
                    &account.ha1,
                    &account.created_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(CatalogError::AlreadyExists {
                what: "GA/T 1400 account",
                name: account.id,
            });
        }
        Ok(account)
    }

    async fn viid_account(&self, id: &str) -> Result<Option<ViidAccount>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM viid_accounts WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn viid_accounts(&self) -> Result<Vec<ViidAccount>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM viid_accounts ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn set_viid_registration(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE viid_accounts SET registered_at = $2, \
                 last_seen_at = COALESCE($2, last_seen_at) WHERE id = $1",
                &[&id, &at],
            )
            .await?;
        Ok(())
    }

    async fn viid_keepalive(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE viid_accounts SET last_seen_at = $2 \
                 WHERE id = $1 AND registered_at IS NOT NULL",
                &[&id, &at],
            )
            .await?;
        Ok(updated == 1)
    }
}
