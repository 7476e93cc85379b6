-- What a destination offers to grant (Kubernetes namespaces and ClusterRoles),
-- as JSON reported by its connector; NULL until it reports.
ALTER TABLE destinations ADD COLUMN inventory TEXT;
