-- Failed sign-ins per username (`oauth::authn::throttle`): how many attempts were counted
-- since the last success, and when the last one was. Each attempt past the free ones waits a
-- delay that doubles with every failure; a success or `concierge user unlock` deletes the row.
-- An attempt is admitted by a compare-and-swap on (failures, last_at), so concurrent attempts
-- cannot both take one slot.
CREATE TABLE signin_backoffs (
    bucket      TEXT PRIMARY KEY,          -- 'signin-fail:user:<keyed hash of the username>'
    failures    BIGINT NOT NULL,
    last_at     BIGINT NOT NULL
);
CREATE INDEX signin_backoffs_last_at ON signin_backoffs (last_at);
