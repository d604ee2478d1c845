-- Passkeys (WebAuthn): public-key credentials a user registered, usable alone (discoverable,
-- with user verification) or as the second step after a password.
--
-- Each user who registers a passkey gets a random WebAuthn user handle (user.id in the
-- ceremony), never their user id: an authenticator shows the handle to whoever asks.
CREATE TABLE passkey_users (
    user_id         TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    handle          TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);

-- One row per credential. `credential` is the credential as the WebAuthn library keeps it
-- (JSON: the public key, its counter, its flags): public data, no secret. `credential_id` is
-- the authenticator's credential id, base64url, unique across users.
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id   TEXT NOT NULL UNIQUE,
    credential      TEXT NOT NULL,
    name            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT
);
CREATE INDEX passkeys_by_user ON passkeys (user_id);

-- A ceremony under way (its challenge and what the library needs to finish it), between the
-- options request and the browser's answer. Single use: taken by one DELETE … RETURNING, so
-- whichever replica gets the answer finishes it once. Keyed by the SHA-256 of the random
-- ceremony id the browser holds; bound to that browser (`binding`) and, for registrations
-- and second steps, to the user.
CREATE TABLE webauthn_ceremonies (
    id_hash         BYTEA PRIMARY KEY,
    kind            TEXT NOT NULL,
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,
    binding         TEXT NOT NULL,
    state           TEXT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
