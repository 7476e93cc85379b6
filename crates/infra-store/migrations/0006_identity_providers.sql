-- OpenID Connect providers people log in through.
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret_sealed TEXT NOT NULL,
    groups_claim TEXT NOT NULL,
    scopes TEXT NOT NULL,
    allowed_domains TEXT NOT NULL,
    -- 1: accept emails the provider does not mark email_verified (Entra ID
    -- sends no such claim); only for providers whose emails are trusted.
    allow_unverified_email BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Which provider identity (issuer's subject) is which user: once linked, a
-- login follows the subject, and no other subject can take the account.
CREATE TABLE provider_links (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX provider_links_user ON provider_links (user_id);

-- A login in progress (authorization code + PKCE): single use, short-lived.
CREATE TABLE oidc_pending (
    state TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    rd TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX oidc_pending_created ON oidc_pending (created_at);

-- Sessions that came from a provider: its refresh token (sealed), and when
-- the user's groups were last read from it.
CREATE TABLE provider_sessions (
    key_id TEXT PRIMARY KEY REFERENCES access_keys (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    refresh_sealed TEXT,
    refreshed_at BIGINT NOT NULL
);

-- Memberships a provider's groups claim made (NULL: made by an admin). Sync
-- adds and removes only its own.
ALTER TABLE group_members ADD COLUMN provider TEXT;

-- 'user' (a person) or 'service' (a workload: no password, no provider).
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

-- Issuers whose JWTs workloads may exchange for Infra credentials.
CREATE TABLE workload_issuers (
    name TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    jwks_url TEXT,
    jwks TEXT,
    audience TEXT NOT NULL,
    claim TEXT NOT NULL,
    mappings TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
