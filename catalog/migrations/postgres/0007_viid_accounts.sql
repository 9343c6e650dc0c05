-- cityhub catalog on PostgreSQL, version 7: GA/T 1400 视图库 accounts (SQLite's version 14).

CREATE TABLE viid_accounts (
    id             text COLLATE "C" PRIMARY KEY,
    department     text COLLATE "C" NOT NULL REFERENCES departments(code),
    ha1            text NOT NULL,
    created_at     timestamptz NOT NULL,
    registered_at  timestamptz,
    last_seen_at   timestamptz
);
