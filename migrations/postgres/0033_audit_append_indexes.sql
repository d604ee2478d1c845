-- Cheaper appends to the audit log, which gains a row with every token issued (issue 17):
-- each of its B-tree indexes costs a leaf insertion per row, most of a row's cost.
--
-- `at` serves only the retention sweep (listings walk the log newest first), and events are
-- appended in the order they happen: a BRIN index (one small summary per range of table
-- pages) serves it and is next to free to keep, where the B-tree took an insertion per event.
DROP INDEX IF EXISTS audit_events_at;
CREATE INDEX audit_events_at ON audit_events USING brin (at);
-- A machine client's events have no user: the user index leaves them out (a listing by user
-- names one, so it still uses the index).
DROP INDEX IF EXISTS audit_events_user;
CREATE INDEX audit_events_user ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
