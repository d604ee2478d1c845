-- The sweeper keeps an expired-unused registration that holds a live refresh token (its use
-- went unrecorded): it looks refresh tokens up by client.
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_id);
