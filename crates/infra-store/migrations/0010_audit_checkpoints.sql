-- Signed checkpoints of the audit chain. `archive`: the events up to `seq`
-- were written to an archive file and deleted from audit_events; the chain
-- in the table goes on from `hash`. `verified`: a verification walked the
-- chain up to `seq` and found it intact; the next one starts there.
CREATE TABLE audit_checkpoints (
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    archive TEXT,
    archive_sha256 TEXT,
    created_at BIGINT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (seq, kind)
);
