-- Table lifecycle: the columns compaction sorts a dataset's rows by (JSON array of names;
-- empty means its first timestamp column), how long its old snapshots stay readable (NULL:
-- retention.snapshot_days), when garbage collection last ran over it, and which rows the hub
-- deletes once old (JSON {column, days}; NULL: none).
ALTER TABLE datasets ADD COLUMN sort_key TEXT NOT NULL DEFAULT '[]';
ALTER TABLE datasets ADD COLUMN snapshot_retention_days INTEGER;
ALTER TABLE datasets ADD COLUMN last_gc_at TEXT;
ALTER TABLE datasets ADD COLUMN row_retention TEXT;
-- Time travel finds the snapshot current at an instant through this index.
CREATE INDEX snapshots_by_time ON snapshots (dataset_id, created_at);
