-- Upstream identity providers added with `concierge idp add` (issue 13.4): "Sign in with …"
-- buttons for an OpenID Connect provider or an OAuth 2.0 provider with a user endpoint
-- (GitHub). Providers in the configuration file's [[upstream]] tables are not stored here.
-- The client secret is sealed with the key-encryption key (associated data
-- "upstream:<id>"), so `keys rekey` re-encrypts it with the signing keys.
CREATE TABLE upstream_providers (
    id                      TEXT PRIMARY KEY,          -- in URLs: /signin/upstream/<id>
    name                    TEXT NOT NULL,             -- the button's label
    kind                    TEXT NOT NULL,             -- 'oidc' or 'github'
    issuer                  TEXT,
    client_id               TEXT NOT NULL,
    client_secret_sealed    BYTEA,
    scopes                  TEXT NOT NULL,             -- space-separated; empty: the kind's default
    link_by_email           BOOLEAN NOT NULL,
    provision               BOOLEAN NOT NULL,
    authorization_endpoint  TEXT,
    token_endpoint          TEXT,
    userinfo_endpoint       TEXT,
    created_at              BIGINT NOT NULL
);
