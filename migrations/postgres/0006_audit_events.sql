-- The audit log: one row per security event (DESIGN.md §6). Rows are appended in batches by
-- a background writer and read by the admin API; old rows are swept after the configured
-- retention. `detail` is a JSON object and never holds a secret or a token.

CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,             -- Unix seconds
    kind        TEXT NOT NULL,               -- e.g. token.issued, signin.failed
    client_id   TEXT,
    user_id     TEXT,
    ip          TEXT,
    detail      TEXT NOT NULL                -- JSON object
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_client ON audit_events (client_id, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
