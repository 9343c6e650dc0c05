-- Table lifecycle: the columns compaction sorts a dataset's rows by (JSON array of names;
-- empty means its first timestamp column).
ALTER TABLE datasets ADD COLUMN sort_key TEXT NOT NULL DEFAULT '[]';
