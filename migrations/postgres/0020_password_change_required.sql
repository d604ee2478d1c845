-- An operator asked the user to choose a new password (`concierge user require-password-change`):
-- their next sign-in with the current password must set a new one before it completes.
ALTER TABLE users ADD COLUMN password_change_required BOOLEAN NOT NULL DEFAULT FALSE;
