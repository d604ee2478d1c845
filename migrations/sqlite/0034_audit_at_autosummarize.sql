-- PostgreSQL's 0034 has the audit log's BRIN index on `at` summarize each range as it fills.
-- SQLite's `at` index is a B-tree and needs nothing; this keeps the two schemas' versions
-- alike (an export names one version for either store).
SELECT 1;
