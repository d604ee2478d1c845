-- Single-use JWT identifiers: client assertion (private_key_jwt) jti now, DPoP proof jti
-- later. A use is one atomic INSERT … ON CONFLICT, so replicas sharing the database refuse
-- a replay exactly once. Keys are namespaced and hashed by the caller, e.g.
-- 'client_assertion:<base64url SHA-256 of client_id and jti>'. Expired rows are swept.

CREATE TABLE used_jtis (
    key         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL              -- Unix seconds; the use may be forgotten after
);
CREATE INDEX used_jtis_expires_at ON used_jtis (expires_at);
