-- A workload issuer made from a cluster (`--from-cluster NAME`) takes its
-- issuer and keys from what that Kubernetes destination's connector last
-- reported, so a key rotation in the cluster needs nothing from an admin.
ALTER TABLE workload_issuers ADD COLUMN cluster TEXT;
