-- Asynchronous approval requests: OpenID Connect CIBA in poll mode (issue 14). A client asks
-- for a user's approval at /bc-authorize; the user decides on the approvals page of the
-- account area; the client polls the token endpoint with its auth_req_id. The auth_req_id
-- is stored as its SHA-256; `id` names the request on the user's pages (not a secret).
-- A request for a login_hint that names no user is stored too, with no user_id, so the
-- client's answers cannot tell known users from unknown ones; it simply never completes.
CREATE TABLE backchannel_requests (
    auth_req_hash          BYTEA PRIMARY KEY,
    id                     TEXT NOT NULL UNIQUE,
    client_id              TEXT NOT NULL,
    user_id                TEXT REFERENCES users (id) ON DELETE CASCADE,
    resources              TEXT NOT NULL,            -- JSON array of resource URIs
    scope                  TEXT NOT NULL,
    authorization_details  TEXT,                     -- JSON array (RFC 9396), validated
    binding_message        TEXT,
    acr_values             TEXT NOT NULL,            -- requested, space-separated
    status                 TEXT NOT NULL,            -- pending, approved or denied
    auth_time              BIGINT,
    amr                    TEXT NOT NULL,
    acr                    TEXT,
    sid                    TEXT,
    interval_secs          BIGINT NOT NULL,          -- grows on slow_down
    last_polled_at         BIGINT,
    created_at             BIGINT NOT NULL,
    expires_at             BIGINT NOT NULL,
    decided_at             BIGINT,
    used_at                BIGINT
);
-- The approvals page: a user's pending requests.
CREATE INDEX backchannel_requests_by_user ON backchannel_requests (user_id, status, expires_at);
-- The sweeper.
CREATE INDEX backchannel_requests_by_expiry ON backchannel_requests (expires_at);
-- The sweeper also removes device codes now.
CREATE INDEX device_codes_by_expiry ON device_codes (expires_at);
