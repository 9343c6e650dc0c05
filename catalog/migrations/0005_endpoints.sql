-- Dashboard endpoints: every saved definition is a new version; the newest is current.
CREATE TABLE endpoints (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    owner       TEXT NOT NULL REFERENCES departments(code),
    spec        TEXT NOT NULL,               -- JSON EndpointSpec
    created_by  INTEGER REFERENCES principals(id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
