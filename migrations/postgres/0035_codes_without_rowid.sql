-- SQLite's 0035 stores authorization codes in their primary key's B-tree (`WITHOUT ROWID`).
-- PostgreSQL's tables have no rowid to drop; this keeps the two schemas' versions alike (an
-- export names one version for either store).
SELECT 1;
