//! Registering a dataset: who may, and the record of it.

use cityhub_catalog::access::may_register;
use cityhub_catalog::{
    Action, AuditEvent, Dataset, DatasetChange, DatasetName, NewDataset, Outcome, Principal,
};
use serde_json::json;

use crate::{Ingest, IngestError};

impl Ingest {
    /// Registers a dataset for `by` (an admin, or a producer of the department it names),
    /// with schema version 1 and no snapshot; audited.
    pub async fn register_dataset(
        &self,
        by: &Principal,
        new: NewDataset,
    ) -> Result<Dataset, IngestError> {
        may_register(by, new.name.department())?;
        let dataset = self.catalog.create_dataset(new).await?;
        self.audit.record(
            AuditEvent::by(by, Action::DatasetCreate, Outcome::Ok)
                .dataset(dataset.name.to_string())
                .detail(
                    json!({"sharing": dataset.sharing, "classification": dataset.classification}),
                ),
        );
        tracing::info!(dataset = %dataset.name, by = %by.name, "Registered a dataset.");
        Ok(dataset)
    }

    /// Changes a dataset's columns and/or sort key for `by` (admins, the owner's producers).
    /// Pushes, imports, Kafka feeds and queries read the new schema from their next
    /// request on; old files read with NULL in added columns and widened values. Audited,
    /// with the columns whose sensitivity changed.
    pub async fn change_dataset(
        &self,
        by: &Principal,
        name: &DatasetName,
        change: DatasetChange,
    ) -> Result<Dataset, IngestError> {
        let before = self
            .maintained_dataset(Some(by), name, "changing the schema of")
            .await?;
        if change.columns.is_none()
            && change.sort_key.is_none()
            && change.row_retention.is_none()
            && change.region_column.is_none()
            && change.region_free.is_none()
        {
            return Err(IngestError::Invalid {
                field: "columns".into(),
                message: "send the full new column list (columns), a sort_key, a \
                          row_retention, a region_column and/or region_free"
                    .into(),
            });
        }
        let after = self.catalog.change_dataset(before.id, change).await?;
        let sensitivity: Vec<serde_json::Value> = after
            .columns
            .iter()
            .filter_map(|column| {
                let old = before.columns.iter().find(|c| c.name == column.name);
                let was = old.and_then(|c| c.sensitivity);
                (old.is_some() && was != column.sensitivity)
                    .then(|| json!({"column": column.name, "from": was, "to": column.sensitivity}))
            })
            .collect();
        // Masking follows sensitivity and region scopes follow the region column: cached
        // results must be looked at again.
        let regions_changed = (&after.region_column, after.region_free)
            != (&before.region_column, before.region_free);
        if !sensitivity.is_empty()
            || after.schema_version != before.schema_version
            || regions_changed
        {
            self.versions.access_changed();
        }
        self.audit.record(
            AuditEvent::by(by, Action::DatasetChange, Outcome::Ok)
                .dataset(after.name.to_string())
                .detail(json!({
                    "schema_version": {"from": before.schema_version, "to": after.schema_version},
                    "sensitivity_changes": sensitivity,
                    "sort_key": after.sort_key,
                    "row_retention": after.row_retention,
                    "region_column": after.region_column,
                    "region_free": after.region_free,
                })),
        );
        tracing::info!(dataset = %after.name, by = %by.name,
            schema_version = after.schema_version, "Changed a dataset's schema.");
        Ok(after)
    }
}
