-- Device authorization grant (RFC 8628). The device code is stored as its SHA-256; the
-- user code is short and typed by a person, so it is unique and rate-limited instead.

CREATE TABLE device_codes (
    device_code_hash BLOB PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_id        TEXT NOT NULL,
    resources        TEXT NOT NULL,            -- JSON array of resource URIs
    scope            TEXT NOT NULL,
    status           TEXT NOT NULL,            -- pending, approved or denied
    user_id          TEXT REFERENCES users (id) ON DELETE CASCADE,
    auth_time        BIGINT,
    sid              TEXT,
    interval_secs    BIGINT NOT NULL,          -- grows on slow_down
    last_polled_at   BIGINT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    used_at          BIGINT
);
