//! GA/T 1400 accounts on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::*;
use crate::model::DataFile;
use crate::store::ViidStore;
use crate::viid::{ViidAccount, ViidSubscription, validate_account_id};

const COLUMNS: &str = "id, department, ha1, created_at, registered_at, last_seen_at";

fn account_from_row(row: &Row) -> rusqlite::Result<ViidAccount> {
    Ok(ViidAccount {
        id: row.get(0)?,
        department: row.get(1)?,
        ha1: row.get(2)?,
        created_at: parse_time(row.get(3)?)?,
        registered_at: parse_optional_time(row.get(4)?)?,
        last_seen_at: parse_optional_time(row.get(5)?)?,
    })
}

#[async_trait]
impl ViidStore for SqliteStore {
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
        let row = account.clone();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let known: Option<String> = tx
                .query_row(
                    "SELECT code FROM departments WHERE code = ?1",
                    [&row.department],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                return Err(CatalogError::NotFound {
                    what: "department",
                    name: row.department,
                });
            }
            let inserted = tx.execute(
                "INSERT INTO viid_accounts (id, department, ha1, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                params![row.id, row.department, row.ha1, time_text(row.created_at)],
            )?;
            if inserted == 0 {
                return Err(CatalogError::AlreadyExists {
                    what: "GA/T 1400 account",
                    name: row.id,
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(account)
    }

    async fn viid_account(&self, id: &str) -> Result<Option<ViidAccount>> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM viid_accounts WHERE id = ?1"
                ))?
                .query_row([id], account_from_row)
                .optional()?)
        })
        .await
    }

    async fn viid_accounts(&self) -> Result<Vec<ViidAccount>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM viid_accounts ORDER BY id"))?;
            let rows = stmt.query_map([], account_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_viid_registration(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        let id = id.to_string();
        self.write(move |conn| {
            let at = at.map(time_text);
            // Unregistering keeps when it was last heard, for the operators.
            conn.execute(
                "UPDATE viid_accounts SET registered_at = ?2, \
                 last_seen_at = COALESCE(?2, last_seen_at) WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn viid_keepalive(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let id = id.to_string();
        self.write(move |conn| {
            let updated = conn.execute(
                "UPDATE viid_accounts SET last_seen_at = ?2 \
                 WHERE id = ?1 AND registered_at IS NOT NULL",
                params![id, time_text(at)],
            )?;
            Ok(updated == 1)
        })
        .await
    }

    async fn save_viid_subscription(&self, subscription: &ViidSubscription) -> Result<()> {
        let record = serde_json::to_string(subscription)?;
        let (id, account, status) = (
            subscription.id.clone(),
            subscription.account_id.clone(),
            subscription.status.as_str(),
        );
        self.write(move |conn| {
            let changed = conn.execute(
                "INSERT INTO viid_subscriptions (id, account_id, status, record, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET \
                 status = excluded.status, record = excluded.record, \
                 updated_at = excluded.updated_at \
                 WHERE viid_subscriptions.account_id = excluded.account_id",
                params![id, account, status, record, time_text(now())],
            )?;
            if changed == 0 {
                return Err(CatalogError::invalid(
                    "SubscribeID",
                    format!("{id} is another platform's subscription; choose another id"),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn viid_subscriptions(&self, account: Option<&str>) -> Result<Vec<ViidSubscription>> {
        let account = account.map(str::to_string);
        let records: Vec<String> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT record FROM viid_subscriptions \
                     WHERE ?1 IS NULL OR account_id = ?1 ORDER BY id",
                )?;
                let rows = stmt.query_map([account], |row| row.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        records
            .iter()
            .map(|record| Ok(serde_json::from_str(record)?))
            .collect()
    }

    async fn appended_files(&self, dataset_id: i64, after: i64) -> Result<Vec<(i64, DataFile)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.added_seq, f.path, f.rows, f.bytes, f.stats FROM files f \
                 JOIN snapshots s ON s.dataset_id = f.dataset_id AND s.seq = f.added_seq \
                 WHERE f.dataset_id = ?1 AND f.added_seq > ?2 \
                 AND s.operation IN ('append', 'upsert') ORDER BY f.added_seq, f.path",
            )?;
            let rows = stmt.query_map(params![dataset_id, after], |row| {
                Ok((
                    row.get(0)?,
                    DataFile {
                        path: row.get(1)?,
                        rows: row.get(2)?,
                        bytes: row.get(3)?,
                        stats: parse_json(row.get(4)?)?,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
