-- The BRIN index on `at` (0033) summarizes a range of pages only when VACUUM passes; until
-- then the retention sweep's DELETE reads every page appended since, which under a load of
-- tokens was millions of rows a minute. Ask for each range to be summarized once it fills.
-- A storage parameter only: the previous release runs unchanged.
ALTER INDEX audit_events_at SET (autosummarize = on);
