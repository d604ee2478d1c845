-- PostgreSQL's 0032 adds the sequence `commit_barrier` (src/store/commits.rs). SQLite's
-- commits never wait for the disk, so it needs nothing; this keeps the two schemas' versions
-- alike (an export names one version for either store).
SELECT 1;
