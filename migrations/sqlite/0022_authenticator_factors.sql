-- Second sign-in factors (issue 13): an authenticator app (TOTP, RFC 6238) and recovery codes.
-- The TOTP secret is sealed with the key-encryption key; recovery codes are stored as SHA-256.
-- `last_step` is the last accepted RFC 6238 time step: a code is accepted only for a later
-- step, decided by one UPDATE, so each code is used at most once.
CREATE TABLE totp_factors (
    user_id         TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_sealed   BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    confirmed_at    BIGINT,                    -- NULL: enrollment not confirmed, not usable
    last_step       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE recovery_codes (
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash       BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    used_at         BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
