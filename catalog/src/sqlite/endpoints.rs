//! Endpoint definitions in SQLite: an append-only version log per name.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use async_trait::async_trait;

use super::{SqliteStore, now, parse_time, time_text};
use crate::endpoint::{Endpoint, EndpointSpec, SavePlan, Saved};
use crate::error::{CatalogError, Result};
use crate::store::EndpointStore;

const COLUMNS: &str = "name, version, owner, spec, created_by, created_at";

/// A stored row; its JSON definition is read by [`StoredRow::endpoint`].
struct StoredRow {
    name: String,
    version: i64,
    owner: String,
    spec: String,
    created_by: Option<i64>,
    created_at: String,
}

fn endpoint_row(row: &Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        name: row.get(0)?,
        version: row.get(1)?,
        owner: row.get(2)?,
        spec: row.get(3)?,
        created_by: row.get(4)?,
        created_at: row.get(5)?,
    })
}

impl StoredRow {
    fn endpoint(self) -> Result<Endpoint> {
        Ok(Endpoint {
            name: self.name,
            version: self.version,
            owner: self.owner,
            spec: serde_json::from_str(&self.spec)?,
            created_by: self.created_by,
            created_at: parse_time(self.created_at)?,
        })
    }
}

pub fn latest(conn: &Connection, name: &str) -> Result<Option<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM endpoints WHERE name = ?1 ORDER BY version DESC LIMIT 1"
    ))?
    .query_row(params![name], endpoint_row)
    .optional()?
    .map(StoredRow::endpoint)
    .transpose()
}

pub fn history(conn: &Connection, name: &str) -> Result<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM endpoints WHERE name = ?1 ORDER BY version DESC"
    ))?;
    let rows = stmt.query_map(params![name], endpoint_row)?;
    rows.map(|row| row?.endpoint()).collect()
}

pub fn list(conn: &Connection) -> Result<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM endpoints e WHERE version = \
         (SELECT max(version) FROM endpoints WHERE name = e.name) ORDER BY name"
    ))?;
    let rows = stmt.query_map([], endpoint_row)?;
    rows.map(|row| row?.endpoint()).collect()
}

/// Saves a definition as the endpoint's next version. `owner` is the department the new
/// version runs as; `acting_for` is the caller's department when it may only change its
/// own endpoints (`None`: an admin, who may also hand an endpoint to another owner).
pub fn save(
    conn: &mut Connection,
    name: &str,
    owner: &str,
    spec: &EndpointSpec,
    created_by: Option<i64>,
    acting_for: Option<&str>,
) -> Result<(Endpoint, Saved)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known: bool = tx
        .prepare_cached("SELECT 1 FROM departments WHERE code = ?1")?
        .exists(params![owner])?;
    if !known {
        return Err(CatalogError::invalid(
            "owner",
            format!("department {owner:?} does not exist"),
        ));
    }
    for (index, department) in spec.allowed_departments.iter().enumerate() {
        let known: bool = tx
            .prepare_cached("SELECT 1 FROM departments WHERE code = ?1")?
            .exists(params![department])?;
        if !known {
            return Err(CatalogError::invalid(
                format!("allowed_departments[{index}]"),
                format!("department {department:?} does not exist"),
            ));
        }
    }
    let current = latest(&tx, name)?;
    let (version, saved) = match SavePlan::of(name, current, owner, spec, acting_for)? {
        SavePlan::Unchanged(current) => return Ok((current, Saved::Unchanged)),
        SavePlan::Write(version, saved) => (version, saved),
    };
    let created_at = now();
    tx.execute(
        "INSERT INTO endpoints (name, version, owner, spec, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            name,
            version,
            owner,
            serde_json::to_string(spec)?,
            created_by,
            time_text(created_at)
        ],
    )?;
    tx.commit()?;
    Ok((
        Endpoint {
            name: name.to_string(),
            version,
            owner: owner.to_string(),
            spec: spec.clone(),
            created_by,
            created_at,
        },
        saved,
    ))
}

/// Every dataset's current snapshot (`None` before its first commit).
pub fn current_snapshots(conn: &Connection) -> Result<Vec<(i64, Option<i64>)>> {
    let mut stmt = conn.prepare_cached("SELECT id, snapshot_id FROM datasets")?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[async_trait]
impl EndpointStore for SqliteStore {
    async fn save_endpoint(
        &self,
        name: &str,
        owner: &str,
        spec: EndpointSpec,
        created_by: Option<i64>,
        acting_for: Option<String>,
    ) -> Result<(Endpoint, Saved)> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |conn| {
            save(
                conn,
                &name,
                &owner,
                &spec,
                created_by,
                acting_for.as_deref(),
            )
        })
        .await
    }

    async fn endpoint(&self, name: &str) -> Result<Option<Endpoint>> {
        let name = name.to_string();
        self.read(move |conn| latest(conn, &name)).await
    }

    async fn endpoint_history(&self, name: &str) -> Result<Vec<Endpoint>> {
        let name = name.to_string();
        self.read(move |conn| history(conn, &name)).await
    }

    async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        self.read(list).await
    }
}
