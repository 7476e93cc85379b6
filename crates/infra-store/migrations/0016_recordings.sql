-- Session recordings. A row says what the session was; while it runs (or
-- its connector cannot reach a store) its text arrives in pieces, kept in
-- `recording_pieces` in order; once complete it is written to the
-- recording store, its digest goes into the audit log (`audit_seq`), and
-- the pieces are deleted. `size` is the bytes received so far.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    kind TEXT NOT NULL,
    user_email TEXT NOT NULL,
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    command TEXT NOT NULL,
    source TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    exit TEXT NOT NULL DEFAULT '',
    truncated BIGINT NOT NULL DEFAULT 0,
    size BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    audit_seq BIGINT
);
CREATE INDEX recordings_started ON recordings (started_ms);
CREATE INDEX recordings_user ON recordings (user_email, started_ms);
CREATE INDEX recordings_destination ON recordings (destination, started_ms);

CREATE TABLE recording_pieces (
    recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (recording_id, at)
);
