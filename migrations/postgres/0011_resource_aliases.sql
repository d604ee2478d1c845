-- Other URIs that name a registered resource (`concierge resource add --alias`): clients write
-- a server's address in more than one way (RFC 3986 §6 normalisation covers case, default
-- ports and a trailing slash; an alias covers the rest, e.g. an old host name). Tokens always
-- carry the resource's registered URI.
CREATE TABLE resource_aliases (
    alias       TEXT PRIMARY KEY,          -- normalised, never itself a registered resource URI
    uri         TEXT NOT NULL,             -- the resource it names
    created_at  BIGINT NOT NULL
);
CREATE INDEX resource_aliases_by_uri ON resource_aliases (uri);
