-- Token exchange (RFC 8693) policy: which client may exchange a token for one resource
-- (source) into a token for another (target), and how scopes map. No row: denied.

CREATE TABLE exchange_policies (
    target      TEXT NOT NULL,     -- resource URI of the token to issue
    client_id   TEXT NOT NULL,     -- the client allowed to ask
    source      TEXT NOT NULL,     -- resource URI the subject token is for
    scope_map   TEXT NOT NULL,     -- JSON: {"source scope": ["target scope", ...]}
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (target, client_id, source)
);
