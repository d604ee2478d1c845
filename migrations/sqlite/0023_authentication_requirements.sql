-- The authentication context class (`acr`, e.g. `urn:concierge:acr:mfa`) every sign-in for a
-- resource must reach (`concierge resource add --require-mfa`); NULL: none beyond the server's.
ALTER TABLE resources ADD COLUMN required_acr TEXT;
