-- Cheaper appends to the audit log, which gains a row with every token issued (issue 17):
-- each of its indexes costs an insertion per row. A machine client's events have no user:
-- the user index leaves them out (a listing by user names one, so it still uses the index).
-- SQLite has no BRIN index: `at` keeps its B-tree.
DROP INDEX IF EXISTS audit_events_user;
CREATE INDEX audit_events_user ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
