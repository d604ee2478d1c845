-- A user's sessions are listed on their security page and ended together (a password
-- change, an operator disabling the account): find them by user, not by a scan.
CREATE INDEX sessions_user_id ON sessions (user_id);
