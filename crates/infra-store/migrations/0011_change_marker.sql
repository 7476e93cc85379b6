-- A counter every write that changes what connectors and forward-auth
-- decide with moves (grants, users, groups, keys, sessions ended, ...), so
-- replicas notice each other's changes without taking every audit event
-- (a proxied request's, say) for one.
CREATE TABLE change_marker (
    id BIGINT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO change_marker (id, n) VALUES (1, 0);
