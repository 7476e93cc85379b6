-- SSH certificate authorities (kind 'user' or 'host'). The newest unretired
-- key of a kind signs; retired keys stay published for a while so
-- certificates they signed keep working across a rotation.
CREATE TABLE ssh_cas (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    public_key TEXT NOT NULL,
    private_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
