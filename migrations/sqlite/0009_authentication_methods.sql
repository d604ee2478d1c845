-- How a user signed in (the authentication module): the RFC 8176 `amr` values, space-separated,
-- and the `acr` reached, on the session and on everything issued from it, so that codes,
-- refresh tokens and device approvals carry them into ID tokens and access tokens.
-- An account without a password stores '' as its password_hash (read as "no password").
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN acr TEXT;
ALTER TABLE auth_codes ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_codes ADD COLUMN acr TEXT;
ALTER TABLE refresh_tokens ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN acr TEXT;
ALTER TABLE device_codes ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN acr TEXT;
-- Until now every sign-in was a password.
UPDATE sessions SET amr = 'pwd';
UPDATE auth_codes SET amr = 'pwd';
UPDATE refresh_tokens SET amr = 'pwd';
UPDATE device_codes SET amr = 'pwd' WHERE user_id IS NOT NULL;
