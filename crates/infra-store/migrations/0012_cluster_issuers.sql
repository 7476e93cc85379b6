-- A workload issuer made from a cluster (`--from-cluster NAME`) takes its
-- issuer and keys from what that Kubernetes destination's connector last
-- reported, so a key rotation in the cluster needs nothing from an admin.
-- The connector that served the cluster then is recorded: a report from
-- any other (the destination removed and registered again by another
-- connector) is not trusted.
ALTER TABLE workload_issuers ADD COLUMN cluster TEXT;
ALTER TABLE workload_issuers ADD COLUMN cluster_connector TEXT;
