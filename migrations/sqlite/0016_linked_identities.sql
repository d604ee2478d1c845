-- Accounts at other issuers that name a local user: an enterprise IdP's user redeeming an
-- ID-JAG here (and, later, upstream sign-in). An (issuer, subject) pair names one user; a
-- user may have several. Linked by an operator, by a verified email address when the
-- trusted issuer allows it, or when the account was provisioned for the identity.
CREATE TABLE linked_identities (
    issuer          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email           TEXT,                      -- as the issuer asserted it when linked
    linked_by       TEXT NOT NULL,             -- 'operator', 'email' or 'provisioned'
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX linked_identities_by_user ON linked_identities (user_id);

-- Whether the user's email address is known to be theirs (an operator said so, or the
-- issuer that provisioned the account did). Only verified addresses link accounts.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX users_by_email ON users (lower(email));

-- Per trusted ID-JAG issuer: link its users to local accounts by verified email, and
-- provision an account for a user it names who has none (otherwise refuse).
ALTER TABLE id_jag_trusted_issuers ADD COLUMN link_by_email BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE id_jag_trusted_issuers ADD COLUMN provision BOOLEAN NOT NULL DEFAULT TRUE;
