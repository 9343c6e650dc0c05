-- Jobs that one node of a cluster runs at a time (the camera sweeper, compaction, garbage
-- collection, the audit purge): the node that holds a job's lease runs it and renews the
-- lease each round; another node takes it over once it expires.
CREATE TABLE job_leases (
    job         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
