//! cityhub SQL: Apache DataFusion over the catalog's snapshots.
//!
//! This crate will hold the DataFusion session, the catalog adapters (schema = department,
//! table = dataset, files from the current snapshot), the per-request access view and the
//! result encoders. It is wired into the workspace now so that the crate graph is the final
//! one; the SQL surface itself is tracked in its own issue.
