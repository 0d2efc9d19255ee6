-- API key scopes, and the flag a password change may leave on a key it
-- kept. Keys without scopes (none exist here, but copies of old bbolt
-- records may) read as store.DefaultAPIKeyScopes.

ALTER TABLE api_keys
	ADD COLUMN scopes     text[] NOT NULL DEFAULT '{}',
	ADD COLUMN flagged    timestamptz,
	ADD COLUMN flagged_by text NOT NULL DEFAULT '';
