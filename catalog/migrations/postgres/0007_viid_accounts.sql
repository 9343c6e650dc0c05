-- cityhub catalog on PostgreSQL, version 7: GA/T 1400 视图库 accounts (SQLite's version 14).

CREATE TABLE viid_accounts (
    id             text COLLATE "C" PRIMARY KEY,
    department     text COLLATE "C" NOT NULL REFERENCES departments(code),
    ha1            text NOT NULL,
    created_at     timestamptz NOT NULL,
    registered_at  timestamptz,
    last_seen_at   timestamptz
);

CREATE TABLE viid_subscriptions (
    id          text COLLATE "C" PRIMARY KEY,
    account_id  text COLLATE "C" NOT NULL REFERENCES viid_accounts(id),
    status      text NOT NULL,
    record      text NOT NULL,
    updated_at  timestamptz NOT NULL
);
