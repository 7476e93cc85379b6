-- One schema for SQLite and PostgreSQL: only types both understand, ids
-- made by the application, times as unix milliseconds.

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    password_update_required BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE infra_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES infra_groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    role TEXT NOT NULL,
    resource TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    UNIQUE (subject_kind, subject_id, role, resource)
);
CREATE INDEX grants_subject ON grants (subject_id);
CREATE INDEX grants_resource ON grants (resource);

CREATE TABLE access_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    inactivity_timeout_ms BIGINT,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX access_keys_user ON access_keys (user_id);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_x TEXT NOT NULL,
    private_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE sealed_secrets (
    name TEXT PRIMARY KEY,
    public_part TEXT NOT NULL,
    sealed TEXT NOT NULL
);

CREATE TABLE login_failures (
    bucket TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time_ms);

-- The head of the hash chain. Every write transaction locks this row
-- first, which serialises writers across replicas (PostgreSQL) and makes
-- checks such as "the last admin stays" race-free.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
