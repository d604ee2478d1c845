-- A client secret being rotated out (`concierge client rotate-secret --overlap-secs`): it
-- keeps working until previous_secret_expires_at, so a client can switch to the new one
-- without downtime. SHA-256, like secret_hash.
ALTER TABLE clients ADD COLUMN previous_secret_hash BLOB;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at BIGINT;
