-- cityhub catalog, version 2: share requests, grants and the audit log.

-- A department asks the owner of a dataset for access (conditional datasets) or for
-- unmasked columns (any shared dataset). Deadlines are working days after creation.
CREATE TABLE share_requests (
    id                 INTEGER PRIMARY KEY,
    dataset_id         INTEGER NOT NULL REFERENCES datasets(id),
    department         TEXT NOT NULL REFERENCES departments(code),
    requested_by       INTEGER NOT NULL REFERENCES principals(id),
    purpose            TEXT NOT NULL,
    columns            TEXT,                   -- JSON array; NULL = every column
    unmasked           TEXT NOT NULL,          -- JSON array of columns asked for unmasked
    until              TEXT,                   -- access wanted until (RFC 3339)
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at         TEXT NOT NULL,
    answer_due_at      TEXT NOT NULL,
    decided_by         INTEGER REFERENCES principals(id),
    decided_at         TEXT,
    reason             TEXT,
    grant_id           INTEGER
);
CREATE INDEX share_requests_dataset ON share_requests (dataset_id, status);
CREATE INDEX share_requests_department ON share_requests (department, status);

-- What an approval gives: one department reads one dataset, optionally only some columns,
-- some of them unmasked, until an expiry or a revocation.
CREATE TABLE grants (
    id            INTEGER PRIMARY KEY,
    dataset_id    INTEGER NOT NULL REFERENCES datasets(id),
    department    TEXT NOT NULL REFERENCES departments(code),
    request_id    INTEGER REFERENCES share_requests(id),
    columns       TEXT,                        -- JSON array; NULL = every column
    unmasked      TEXT NOT NULL,               -- JSON array
    created_by    INTEGER NOT NULL REFERENCES principals(id),
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    revoked_by    INTEGER REFERENCES principals(id),
    revoke_reason TEXT
);
CREATE INDEX grants_department ON grants (department, dataset_id);

-- Tokens may carry their own request rate (NULL = the configured default).
ALTER TABLE principals ADD COLUMN rate_limit_per_second INTEGER;

-- The audit log is append-only: nothing updates it, and rows may only be deleted once they
-- are older than the retention cutoff that the purge itself records (and audits).
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    principal_id  INTEGER,
    principal     TEXT,
    department    TEXT,
    action        TEXT NOT NULL,               -- query, push, share_request, ...
    outcome       TEXT NOT NULL,               -- ok, refused, failed
    dataset       TEXT,                        -- the main dataset, for filtering
    detail        TEXT NOT NULL                -- JSON object
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_principal ON audit_log (principal_id, at);
CREATE INDEX audit_log_dataset ON audit_log (dataset, at);

CREATE TABLE audit_retention (
    only_row   INTEGER PRIMARY KEY CHECK (only_row = 1),
    cutoff     TEXT NOT NULL
);
INSERT INTO audit_retention (only_row, cutoff) VALUES (1, '0000-01-01T00:00:00.000000Z');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_delete_only_expired BEFORE DELETE ON audit_log
WHEN OLD.at >= (SELECT cutoff FROM audit_retention WHERE only_row = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are deleted only after their retention period');
END;

CREATE TRIGGER audit_retention_only_forward BEFORE UPDATE ON audit_retention
WHEN NEW.cutoff < OLD.cutoff
BEGIN
    SELECT RAISE(ABORT, 'the audit retention cutoff only moves forward');
END;
