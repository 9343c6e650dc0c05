//! Endpoint definitions in PostgreSQL: an append-only version log per name.

use async_trait::async_trait;
use tokio_postgres::{GenericClient, Row};

use super::*;
use crate::endpoint::{Endpoint, EndpointSpec, SavePlan, Saved};
use crate::store::EndpointStore;

const COLUMNS: &str = "name, version, owner, spec, created_by, created_at";

fn endpoint_from_row(row: &Row) -> Result<Endpoint> {
    Ok(Endpoint {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        owner: row.try_get(2)?,
        spec: json(row, 3)?,
        created_by: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

async fn latest(client: &impl GenericClient, name: &str) -> Result<Option<Endpoint>> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM endpoints WHERE name = $1 ORDER BY version DESC LIMIT 1"
            ),
            &[&name],
        )
        .await?
        .as_ref()
        .map(endpoint_from_row)
        .transpose()
}

#[async_trait]
impl EndpointStore for PostgresStore {
    async fn save_endpoint(
        &self,
        name: &str,
        owner: &str,
        spec: EndpointSpec,
        created_by: Option<i64>,
        acting_for: Option<String>,
    ) -> Result<(Endpoint, Saved)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Saves of one name from several nodes take turns: the lock is on the name, which
        // has no row of its own before its first version.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('cityhub endpoint ' || $1, 0))",
            &[&name],
        )
        .await?;
        let mut departments = vec![owner.to_string()];
        departments.extend(spec.allowed_departments.iter().cloned());
        let known = tx
            .query(
                "SELECT code FROM departments WHERE code = ANY($1)",
                &[&departments],
            )
            .await?;
        let known: Vec<String> = known
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        if !known.iter().any(|code| code == owner) {
            return Err(CatalogError::invalid(
                "owner",
                format!("department {owner:?} does not exist"),
            ));
        }
        for (index, department) in spec.allowed_departments.iter().enumerate() {
            if !known.contains(department) {
                return Err(CatalogError::invalid(
                    format!("allowed_departments[{index}]"),
                    format!("department {department:?} does not exist"),
                ));
            }
        }
        let current = latest(&*tx, name).await?;
        let (version, saved) =
            match SavePlan::of(name, current, owner, &spec, acting_for.as_deref())? {
                SavePlan::Unchanged(current) => return Ok((current, Saved::Unchanged)),
                SavePlan::Write(version, saved) => (version, saved),
            };
        let created_at = now();
        tx.execute(
            "INSERT INTO endpoints (name, version, owner, spec, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &name,
                &version,
                &owner,
                &serde_json::to_string(&spec)?,
                &created_by,
                &created_at,
            ],
        )
        .await?;
        self.notify_change(&tx, "endpoint saved").await?;
        tx.commit().await?;
        Ok((
            Endpoint {
                name: name.to_string(),
                version,
                owner: owner.to_string(),
                spec,
                created_by,
                created_at,
            },
            saved,
        ))
    }

    async fn endpoint(&self, name: &str) -> Result<Option<Endpoint>> {
        latest(&**self.client().await?, name).await
    }

    async fn endpoint_history(&self, name: &str) -> Result<Vec<Endpoint>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM endpoints WHERE name = $1 ORDER BY version DESC"),
                &[&name],
            )
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT DISTINCT ON (name) {COLUMNS} FROM endpoints \
                     ORDER BY name, version DESC"
                ),
                &[],
            )
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }
}
