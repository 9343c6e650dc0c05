//! Registering a dataset: who may, and the record of it.

use cityhub_catalog::access::may_register;
use cityhub_catalog::{Action, AuditEvent, Dataset, NewDataset, Outcome, Principal};
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
}
