-- The sweeper (startup.rs, once a minute) deletes expired rows by these columns. Without an
-- index each pass read the whole table: with a million stored codes, refresh tokens or
-- sessions, a scan a minute that, on SQLite, held the one write lock while it read
-- (issue 17.2). Indexes only: the previous release runs unchanged on this schema.
CREATE INDEX auth_codes_by_expiry ON auth_codes (expires_at);
CREATE INDEX refresh_tokens_by_absolute_expiry ON refresh_tokens (absolute_expires_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX rate_limits_by_window ON rate_limits (window_start);
