-- Just-in-time access. A policy is a document (what may be requested, by
-- whom, for how long, approved by whom), kept as the API wrote it.
CREATE TABLE access_policies (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

-- A request: what it asks for (`asks`, a JSON list), for how long, why,
-- under which policy, and where it is. Once approved, the grants it made
-- (`grant_ids`, JSON) end at `grants_until`.
CREATE TABLE access_requests (
    id TEXT PRIMARY KEY,
    requester_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    policy TEXT NOT NULL,
    asks TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    approvals_needed BIGINT NOT NULL,
    break_glass BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    review_by BIGINT NOT NULL,
    decided_at BIGINT,
    grants_until BIGINT,
    grant_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX access_requests_state ON access_requests (state);
CREATE INDEX access_requests_requester ON access_requests (requester_id);

-- Each reviewer's decision on a request, once.
CREATE TABLE request_reviews (
    request_id TEXT NOT NULL REFERENCES access_requests (id) ON DELETE CASCADE,
    reviewer_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, reviewer_id)
);

-- Where request events are sent: each receiver reads the audit log's
-- `request.*` events after `last_seq`, so nothing is lost while it is
-- down. `next_at` is also the lease one replica takes to deliver.
CREATE TABLE request_webhooks (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    format TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
