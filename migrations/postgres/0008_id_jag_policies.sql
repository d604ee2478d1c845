-- ID-JAG issuing policy (MCP enterprise-managed authorization, as the enterprise IdP): which
-- of our clients may exchange an ID token for an ID-JAG toward one resource at one
-- authorization server, with which scopes, and the client's id there. No row: denied
-- (policies in the configuration file count too).

CREATE TABLE id_jag_policies (
    client_id         TEXT NOT NULL,   -- our client that asks
    audience          TEXT NOT NULL,   -- the target authorization server's issuer
    resource          TEXT NOT NULL,   -- the resource (MCP server) there
    target_client_id  TEXT NOT NULL,   -- the client's id at that authorization server
    scopes            TEXT NOT NULL,   -- space-separated scopes the ID-JAG may carry
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (client_id, audience, resource)
);
