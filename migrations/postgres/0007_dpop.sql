-- DPoP (RFC 9449): the key thumbprint an authorization code was requested for (dpop_jkt,
-- §10) and the key a public client's refresh token is bound to (§5).
ALTER TABLE auth_codes ADD COLUMN dpop_jkt TEXT;
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt TEXT;
