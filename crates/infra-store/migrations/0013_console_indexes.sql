-- The console and the API list grants by resource, role and subject a page
-- at a time, and filter the audit log by who acted or was acted on: with
-- 100,000 grants or events, a full sort or scan for each page is too slow.
-- The listing index holds all a page's choice needs (expiry and id too),
-- so a late page skips index entries without reading the table.
CREATE INDEX grants_listing ON grants (resource, role, subject_kind, subject_id, expires_at, id);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_target ON audit_events (target);
