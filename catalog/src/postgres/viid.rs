//! GA/T 1400 accounts on PostgreSQL: the SQLite store's statements.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::*;
use crate::model::DataFile;
use crate::store::ViidStore;
use crate::viid::{ViidAccount, ViidSubscription, validate_account_id};

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

    async fn save_viid_subscription(&self, subscription: &ViidSubscription) -> Result<()> {
        let record = serde_json::to_string(subscription)?;
        let changed = self
            .client()
            .await?
            .execute(
                "INSERT INTO viid_subscriptions (id, account_id, status, record, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
                 status = excluded.status, record = excluded.record, \
                 updated_at = excluded.updated_at \
                 WHERE viid_subscriptions.account_id = excluded.account_id",
                &[
                    &subscription.id,
                    &subscription.account_id,
                    &subscription.status.as_str(),
                    &record,
                    &now(),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(CatalogError::invalid(
                "SubscribeID",
                format!(
                    "{} is another platform's subscription; choose another id",
                    subscription.id
                ),
            ));
        }
        Ok(())
    }

    async fn viid_subscriptions(&self, account: Option<&str>) -> Result<Vec<ViidSubscription>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT record FROM viid_subscriptions \
                 WHERE $1::text IS NULL OR account_id = $1 ORDER BY id",
                &[&account],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let record: String = row.try_get(0)?;
                Ok(serde_json::from_str(&record)?)
            })
            .collect()
    }

    async fn appended_files(&self, dataset_id: i64, after: i64) -> Result<Vec<(i64, DataFile)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT f.added_seq, f.path, f.rows, f.bytes, f.stats FROM files f \
                 JOIN snapshots s ON s.dataset_id = f.dataset_id AND s.seq = f.added_seq \
                 WHERE f.dataset_id = $1 AND f.added_seq > $2 \
                 AND s.operation IN ('append', 'upsert') ORDER BY f.added_seq, f.path",
                &[&dataset_id, &after],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    DataFile {
                        path: row.try_get(1)?,
                        rows: row.try_get(2)?,
                        bytes: row.try_get(3)?,
                        stats: json(row, 4)?,
                    },
                ))
            })
            .collect()
    }
}
