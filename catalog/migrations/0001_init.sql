-- cityhub catalog, version 1: departments, principals, datasets, schema versions,
-- snapshots, files and idempotency keys.

CREATE TABLE departments (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

INSERT INTO departments (code, name, created_at)
VALUES ('admin', '平台运维', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE principals (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    department  TEXT NOT NULL REFERENCES departments(code),
    role        TEXT NOT NULL CHECK (role IN ('admin', 'producer', 'analyst', 'dashboard')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);

CREATE TABLE datasets (
    id               INTEGER PRIMARY KEY,
    department       TEXT NOT NULL REFERENCES departments(code),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    classification   TEXT NOT NULL CHECK (classification IN ('general', 'important', 'core')),
    sharing          TEXT NOT NULL CHECK (sharing IN ('unconditional', 'conditional', 'none')),
    resource_code    TEXT,
    update_cycle     TEXT,
    tags             TEXT NOT NULL,           -- JSON array
    schema_version   INTEGER NOT NULL,
    snapshot_id      INTEGER,                 -- current snapshot, NULL before the first commit
    snapshot_seq     INTEGER NOT NULL DEFAULT 0,
    rows             INTEGER NOT NULL DEFAULT 0,
    bytes            INTEGER NOT NULL DEFAULT 0,
    files            INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (department, name)
);

CREATE TABLE schema_versions (
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id),
    version     INTEGER NOT NULL,
    columns     TEXT NOT NULL,                -- JSON array of columns
    created_at  TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);

CREATE TABLE snapshots (
    id              INTEGER PRIMARY KEY,
    dataset_id      INTEGER NOT NULL REFERENCES datasets(id),
    seq             INTEGER NOT NULL,
    parent_id       INTEGER REFERENCES snapshots(id),
    created_at      TEXT NOT NULL,
    operation       TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    added_rows      INTEGER NOT NULL,
    added_bytes     INTEGER NOT NULL,
    added_files     INTEGER NOT NULL,
    rows            INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    files           INTEGER NOT NULL,
    UNIQUE (dataset_id, seq)
);

-- A file is live in snapshots with added_seq <= seq < removed_seq.
CREATE TABLE files (
    dataset_id   INTEGER NOT NULL REFERENCES datasets(id),
    path         TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    stats        TEXT NOT NULL,               -- JSON object: column -> {min, max, null_count}
    added_seq    INTEGER NOT NULL,
    removed_seq  INTEGER,
    PRIMARY KEY (dataset_id, path)
);
CREATE INDEX files_live ON files (dataset_id, removed_seq, added_seq);

CREATE TABLE idempotency_keys (
    dataset_id    INTEGER NOT NULL REFERENCES datasets(id),
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    snapshot_id   INTEGER,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (dataset_id, key)
);
