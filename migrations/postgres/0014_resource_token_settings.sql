-- Per resource: how its access tokens are signed and whether it takes DPoP-bound tokens.
-- Resource servers that validate with their framework's own verifier may know only RS256,
-- or only Bearer tokens (`concierge resource add --token-alg RS256 --dpop off`).
ALTER TABLE resources ADD COLUMN access_token_alg TEXT NOT NULL DEFAULT 'ES256';
ALTER TABLE resources ADD COLUMN dpop TEXT NOT NULL DEFAULT 'optional';
