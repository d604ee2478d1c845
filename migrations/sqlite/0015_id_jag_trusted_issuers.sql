-- Enterprise IdPs whose ID-JAGs we redeem, added with `concierge id-jag trust` or the admin
-- API (the configuration file's `[[id_jag.trusted_issuers]]` are read from the file).
CREATE TABLE id_jag_trusted_issuers (
    issuer      TEXT PRIMARY KEY,
    jwks_uri    TEXT,                      -- exactly one of jwks_uri and jwks
    jwks        TEXT,                      -- JSON JWK Set
    created_at  BIGINT NOT NULL
);
