-- A disabled user cannot sign in and nothing more is issued for them; disabling ends their
-- sessions and revokes their refresh tokens (`concierge user disable`, the admin API).
-- NULL: enabled.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
