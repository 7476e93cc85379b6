-- Where each audit export target (a file, a syslog collector, a webhook)
-- has got to in the chain, and which replica ships it: one at a time, by
-- lease, so replicas do not send every event twice.
CREATE TABLE audit_exports (
    target TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    owner TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
