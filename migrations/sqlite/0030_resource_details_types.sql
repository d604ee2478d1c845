-- Authorization details types a resource declares (issue 14.2, RFC 9396): a JSON array of
-- {"type", "schema", "sentence"}, checked by `oauth::details_type` when declared. Earlier
-- releases neither read nor write it; their updates leave it as it is.
ALTER TABLE resources ADD COLUMN details_types TEXT NOT NULL DEFAULT '[]';
