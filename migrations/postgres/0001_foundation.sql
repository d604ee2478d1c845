-- Foundation: protected resources, clients, signing keys, rate-limit buckets.
-- Times are Unix seconds (BIGINT) in both backends so one SQL text serves both.

CREATE TABLE resources (
    uri         TEXT PRIMARY KEY,          -- normalised resource URI (RFC 8707)
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,             -- JSON: [{"name": "...", "description": "..."}]
    created_at  BIGINT NOT NULL
);

CREATE TABLE clients (
    client_id               TEXT PRIMARY KEY,
    kind                    TEXT NOT NULL,     -- 'dynamic' (RFC 7591) or 'static' (CLI/admin)
    secret_hash             BYTEA,              -- SHA-256 of the client secret
    metadata                TEXT NOT NULL,     -- JSON of the validated client metadata
    registration_token_hash BYTEA,              -- SHA-256 of the RFC 7592 access token
    registered_from         TEXT,              -- caller address at registration
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    last_used_at            BIGINT,
    expires_at              BIGINT             -- set while a registration was never used
);
CREATE INDEX clients_expires_at ON clients (expires_at);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,          -- RFC 7638 thumbprint
    alg             TEXT NOT NULL,             -- ES256 or RS256
    public_jwk      TEXT NOT NULL,
    private_key     BYTEA NOT NULL,             -- PKCS#8, AES-256-GCM under the key-encryption key
    created_at      BIGINT NOT NULL,
    retired_at      BIGINT,                    -- no longer signs
    expires_at      BIGINT                     -- no longer published after this
);

CREATE TABLE rate_limits (
    bucket          TEXT PRIMARY KEY,          -- e.g. 'register:203.0.113.9'
    window_start    BIGINT NOT NULL,
    hits            BIGINT NOT NULL
);
