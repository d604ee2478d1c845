-- Admin clients are marked in their metadata (`admin: true`, set by `concierge admin-client
-- create`); only they get tokens for the admin API. Clients made by that command before the
-- mark existed (pre-registered, scope exactly `admin`) keep their access.
UPDATE clients SET metadata = json_set(metadata, '$.admin', json('true'))
WHERE kind = 'static' AND json_extract(metadata, '$.scope') = 'admin';
