-- Three-level governance: principals scoped to a region, datasets that say where each row
-- lies (or that they have no region), and share requests and grants limited to rows.
ALTER TABLE principals ADD COLUMN region TEXT;
ALTER TABLE datasets ADD COLUMN region_column TEXT;
ALTER TABLE datasets ADD COLUMN region_free INTEGER NOT NULL DEFAULT 0;
-- JSON {"regions": [...], "since": "<RFC 3339>"}; NULL: every row.
ALTER TABLE share_requests ADD COLUMN rows TEXT;
ALTER TABLE grants ADD COLUMN rows TEXT;
