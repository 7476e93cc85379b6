-- Destinations as connectors register them; one row per destination and
-- connector name (several connectors with one name share the row).
CREATE TABLE destinations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    connector TEXT NOT NULL,
    labels TEXT NOT NULL,
    direct_url TEXT,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    -- How many tunnels serve it right now, as last written by a replica.
    tunnels BIGINT NOT NULL DEFAULT 0
);

-- Audit events from connectors are numbered per connector instance; the
-- highest stored number makes resends harmless.
CREATE TABLE connector_audit (
    instance_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- Sessions and keys ended recently: tokens minted through them may not
-- have expired yet, so connectors are told to refuse them.
CREATE TABLE revoked_sessions (
    id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);

-- Public keys connectors sign X-Infra-Assertion with.
CREATE TABLE connector_keys (
    kid TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    public_x TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
