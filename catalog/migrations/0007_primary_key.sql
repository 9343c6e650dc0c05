-- Upsert by key: the columns whose values identify a row of a dataset (JSON array of names;
-- empty: the dataset has no key and every pushed row is a new row).
ALTER TABLE datasets ADD COLUMN primary_key TEXT NOT NULL DEFAULT '[]';
