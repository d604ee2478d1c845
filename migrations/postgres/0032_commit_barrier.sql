-- A request's writes may commit without waiting for the disk; before its answer one write
-- that waits (a `setval` of this sequence, src/store/commits.rs) makes them all durable.
-- Its value means nothing. A new object only: the previous release runs unchanged.
CREATE SEQUENCE IF NOT EXISTS commit_barrier;
