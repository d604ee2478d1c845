-- Refresh-token reuse grace (RFC 9700 §4.14.2 with a short window for retries): a rotated
-- token (`used_at` set) remembers the hash of the token it was rotated into, so that its
-- client retrying within the window can have that one successor replaced, never a second
-- one added.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BYTEA;
