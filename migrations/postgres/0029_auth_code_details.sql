-- RFC 9396 authorization details at the authorization endpoint (issue 14.2): what the user
-- approved on the consent page travels with the code into the access token. JSON text,
-- validated; NULL for a request without details (and for codes of earlier releases).
ALTER TABLE auth_codes ADD COLUMN authorization_details TEXT;
