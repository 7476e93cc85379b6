-- Server replicas and the URL each is reached at, so connectors can keep a
-- tunnel to every one of them.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
