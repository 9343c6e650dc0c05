-- Table lifecycle: the columns compaction sorts a dataset's rows by (JSON array of names;
-- empty means its first timestamp column), how long its old snapshots stay readable (NULL:
-- retention.snapshot_days), and when garbage collection last ran over it.
ALTER TABLE datasets ADD COLUMN sort_key TEXT NOT NULL DEFAULT '[]';
ALTER TABLE datasets ADD COLUMN snapshot_retention_days INTEGER;
ALTER TABLE datasets ADD COLUMN last_gc_at TEXT;
