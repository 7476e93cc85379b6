-- Each running connector (an instance: one data directory) as admins see
-- it: its name, version, where it connects from, since when, and how many
-- tunnels it has open now (as last written by the replicas it reached).
CREATE TABLE connector_instances (
    instance_id TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    version TEXT NOT NULL,
    source TEXT NOT NULL,
    connected_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    tunnels BIGINT NOT NULL
);
