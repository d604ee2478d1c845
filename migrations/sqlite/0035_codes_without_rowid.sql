-- Authorization codes stored in their primary key's B-tree (issue 17).
--
-- A table with a rowid keeps its rows in one B-tree and a BLOB primary key in an index of
-- its own, so every code stored wrote both, and every spend searched both. `WITHOUT ROWID`
-- keeps each code under its hash: one B-tree, and less space (the index on `expires_at`
-- carries the hash instead of a rowid, but the hash's own index goes: 242 against 260 MB for
-- 10^6 codes). Nothing references the table, and no statement reads its rowid. Refresh
-- tokens keep their rowid: their four other indexes would each carry the 40-byte hash
-- instead (a third more bytes per token), and rotations ran no faster without it
-- (bench/README.md, "Codes without a rowid").
--
-- SQLite cannot change a table's kind in place: the table is built again under a new name,
-- its rows copied, the old one dropped and the new one renamed, its index made again. The
-- migration runs in one transaction, so a crash leaves the old table as it was. PostgreSQL
-- keeps its heap and its indexes as they are; its 0035 only keeps the two schemas' versions
-- alike.

CREATE TABLE auth_codes_by_hash (
    code_hash             BLOB PRIMARY KEY,
    family_id             TEXT NOT NULL,       -- tokens issued from this code share it
    client_id             TEXT NOT NULL,
    user_id               TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri          TEXT,                -- as sent on the authorization request
    code_challenge        TEXT NOT NULL,
    resources             TEXT NOT NULL,       -- JSON array of resource URIs
    scope                 TEXT NOT NULL,
    nonce                 TEXT,
    auth_time             BIGINT NOT NULL,
    sid                   TEXT,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    used_at               BIGINT,
    dpop_jkt              TEXT,
    amr                   TEXT NOT NULL DEFAULT '',
    acr                   TEXT,
    authorization_details TEXT
) WITHOUT ROWID;

INSERT INTO auth_codes_by_hash (code_hash, family_id, client_id, user_id, redirect_uri,
    code_challenge, resources, scope, nonce, auth_time, sid, created_at, expires_at, used_at,
    dpop_jkt, amr, acr, authorization_details)
SELECT code_hash, family_id, client_id, user_id, redirect_uri, code_challenge, resources,
    scope, nonce, auth_time, sid, created_at, expires_at, used_at, dpop_jkt, amr, acr,
    authorization_details
FROM auth_codes;

DROP TABLE auth_codes;
ALTER TABLE auth_codes_by_hash RENAME TO auth_codes;
CREATE INDEX auth_codes_by_expiry ON auth_codes (expires_at);
