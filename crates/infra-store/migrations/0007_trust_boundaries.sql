-- Which connector an audit instance belongs to: a connector key must not
-- claim another connector's instance (and so move its acknowledged
-- sequence number past events not yet shipped). Rows from before this
-- column are claimed by the first connector that presents the instance.
ALTER TABLE connector_audit ADD COLUMN connector TEXT;

-- A key made from a borrowed session (a workload's exchanged session, an
-- identity-provider session, or a key made with one) names the borrowed
-- session it came from: it ends when that session ends.
ALTER TABLE access_keys ADD COLUMN lender_id TEXT;
CREATE INDEX access_keys_lender ON access_keys (lender_id);

-- Who started a pending provider login: anyone may start one, so the
-- number in flight per address is bounded.
ALTER TABLE oidc_pending ADD COLUMN source TEXT NOT NULL DEFAULT '';
