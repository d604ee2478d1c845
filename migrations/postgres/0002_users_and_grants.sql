-- Users, browser sessions, consents, authorization codes and refresh tokens.
-- Codes, sessions and refresh tokens are stored as SHA-256 of their values.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    email           TEXT,
    name            TEXT,
    password_hash   TEXT NOT NULL,             -- argon2id PHC string
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash      BYTEA PRIMARY KEY,
    sid             TEXT NOT NULL UNIQUE,      -- public session id (the ID token's sid)
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time       BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- What a user allowed a client to do at a resource. Always keyed by user AND client, so one
-- user's decision never reaches another user of the same (document) client_id.
CREATE TABLE consents (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    scopes          TEXT NOT NULL,             -- space-separated
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    PRIMARY KEY (user_id, client_id, resource)
);

CREATE TABLE auth_codes (
    code_hash       BYTEA PRIMARY KEY,
    family_id       TEXT NOT NULL,             -- tokens issued from this code share it
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri    TEXT,                      -- as sent on the authorization request
    code_challenge  TEXT NOT NULL,
    resources       TEXT NOT NULL,             -- JSON array of resource URIs
    scope           TEXT NOT NULL,
    nonce           TEXT,
    auth_time       BIGINT NOT NULL,
    sid             TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

CREATE TABLE refresh_tokens (
    token_hash          BYTEA PRIMARY KEY,
    family_id           TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    resources           TEXT NOT NULL,
    scope               TEXT NOT NULL,
    auth_time           BIGINT NOT NULL,
    sid                 TEXT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,       -- idle expiry, renewed on use
    absolute_expires_at BIGINT NOT NULL,
    used_at             BIGINT,                -- set when rotated away
    revoked_at          BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_client ON refresh_tokens (user_id, client_id);
