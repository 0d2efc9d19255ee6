-- Generations (history), outputs and who references them, the deletion
-- queue, erasure jobs and profiles. Prompts and display names are sealed
-- with the account's key.

CREATE SEQUENCE generation_seq;

CREATE TABLE generations (
	account_id      text NOT NULL,
	id              text NOT NULL,
	content_key     text NOT NULL,
	object          text NOT NULL,
	last_access     timestamptz NOT NULL,
	expires         timestamptz NOT NULL,
	record          bytea NOT NULL, -- store.Generation as JSON, prompts blank
	prompt_sealed   bytea NOT NULL,
	negative_sealed bytea,
	PRIMARY KEY (account_id, id),
	UNIQUE (account_id, content_key)
);
CREATE INDEX generations_expires ON generations (expires);

-- An output and how many references keep it.
CREATE TABLE objects (
	hash          text PRIMARY KEY,
	ext           text NOT NULL,
	model         text NOT NULL,
	model_version text NOT NULL,
	created       timestamptz NOT NULL,
	refs          integer NOT NULL,
	keys          text[] NOT NULL DEFAULT '{}'
);

-- owner is an account id (ref_id its generation id), or anon (ref_id ''),
-- hold (ref_id the report id) or pending (ref_id the content key); the
-- last three expire by themselves.
CREATE TABLE object_refs (
	hash    text NOT NULL,
	owner   text NOT NULL,
	ref_id  text NOT NULL,
	expires timestamptz,
	PRIMARY KEY (hash, owner, ref_id)
);
CREATE INDEX object_refs_expires ON object_refs (expires) WHERE expires IS NOT NULL;

CREATE TABLE doomed_objects (
	hash  text PRIMARY KEY,
	ext   text NOT NULL,
	since timestamptz NOT NULL,
	keys  text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE erasures (
	account_id text PRIMARY KEY,
	reason     text NOT NULL,
	started    timestamptz NOT NULL,
	mailed     boolean NOT NULL DEFAULT false,
	slot       bigint NOT NULL
);

CREATE TABLE profiles (
	account_id   text PRIMARY KEY,
	display_name bytea
);
