-- Signing-key lifecycle (`keys::lifecycle`): publish-then-activate, revocation, one successor.
-- A key is published from `created_at` and signs from `activates_at` (NULL: from
-- `created_at`, as every key made before this migration); the previous key of its algorithm
-- is retired from then on. `revoked_at` withdraws a key at once (also written into
-- `retired_at`/`expires_at`, so servers of the previous release stop publishing it too).
-- `supersedes` names the active key a rotation replaces; unique, so when replicas race to
-- rotate on schedule exactly one insert wins.
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT;
ALTER TABLE signing_keys ADD COLUMN revoked_at BIGINT;
ALTER TABLE signing_keys ADD COLUMN supersedes TEXT;
CREATE UNIQUE INDEX signing_keys_supersedes ON signing_keys (supersedes);
