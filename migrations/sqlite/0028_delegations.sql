-- Delegation chains (issue 14.5). Each hop is one path a user's authority took through token
-- exchange: `client_id` exchanged a token derived from the user's grant to `root_client_id`
-- at `root_resource` for a token at `resource`, under the hop `parent_id` ('' for the first
-- hop, whose subject token came straight from the user's grant). Exchanged access tokens
-- name their hop (claim `delegation`), so cutting a hop, or disconnecting the app at the
-- root, makes every token derived through it inactive and stops further exchanges through it.
-- `cut_by`: 'user' (the user or an operator cut this hop; it stays cut while the app stays
-- connected), 'app' (the app at the root was disconnected; a token issued after that comes
-- from a new grant and starts a new chain).
CREATE TABLE delegations (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    root_client_id  TEXT NOT NULL,
    root_resource   TEXT NOT NULL,
    parent_id       TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    cut_by          TEXT
);
-- One row per path: an exchange finds its hop by where it comes from and where it goes.
CREATE UNIQUE INDEX delegations_by_path
    ON delegations (user_id, root_client_id, root_resource, parent_id, client_id, resource);
-- Cutting a hop cuts the hops below it.
CREATE INDEX delegations_by_parent ON delegations (parent_id);
-- The sweeper.
CREATE INDEX delegations_by_expiry ON delegations (expires_at);
