-- Core account data: the same records as the bbolt store, one table per
-- bucket. Personal fields are sealed bytea (keys live in key files beside
-- the gateway, never here); secrets are SHA-256 hashes.

CREATE TABLE meta (
	key   text PRIMARY KEY,
	value bytea NOT NULL
);

-- Slots of the account key file. Slot 0 is the lookup-index key.
CREATE SEQUENCE account_key_slots START 1;

CREATE TABLE accounts (
	id             text PRIMARY KEY,
	slot           bigint NOT NULL UNIQUE,
	email_sealed   bytea NOT NULL,
	email_index    bytea NOT NULL UNIQUE,
	email_verified boolean NOT NULL,
	google_sealed  bytea,
	google_index   bytea UNIQUE,
	password_hash  text NOT NULL DEFAULT '',
	plan           text NOT NULL,
	status         text NOT NULL,
	created        timestamptz NOT NULL,
	age_attested   timestamptz NOT NULL,
	settings       jsonb NOT NULL,
	balance        bigint NOT NULL DEFAULT 0,
	held           bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
	ledger_seq     bigint NOT NULL DEFAULT 0,
	grant_period   text NOT NULL DEFAULT ''
);

CREATE TABLE sessions (
	hash       bytea PRIMARY KEY,
	account_id text NOT NULL,
	created    timestamptz NOT NULL,
	last_seen  timestamptz NOT NULL,
	idle_ns    bigint NOT NULL,
	expires    timestamptz NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE email_tokens (
	hash       bytea PRIMARY KEY,
	account_id text NOT NULL,
	purpose    text NOT NULL,
	expires    timestamptz NOT NULL,
	new_email  bytea
);
CREATE INDEX email_tokens_account ON email_tokens (account_id, purpose);

CREATE TABLE api_keys (
	hash       bytea PRIMARY KEY,
	id         text NOT NULL UNIQUE,
	account_id text NOT NULL,
	name       text NOT NULL,
	hint       text NOT NULL,
	created    timestamptz NOT NULL,
	last_used  timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00'
);
CREATE INDEX api_keys_account ON api_keys (account_id, created);

-- The ledger is append-only; (account_id, ref) unique makes every credit
-- idempotent per cause.
CREATE TABLE ledger (
	account_id  text NOT NULL,
	seq         bigint NOT NULL,
	time        timestamptz NOT NULL,
	kind        text NOT NULL,
	amount      bigint NOT NULL,
	balance     bigint NOT NULL,
	ref         text NOT NULL,
	money_minor bigint NOT NULL DEFAULT 0,
	currency    text NOT NULL DEFAULT '',
	PRIMARY KEY (account_id, seq),
	UNIQUE (account_id, ref)
);

CREATE TABLE holds (
	id         text PRIMARY KEY,
	account_id text NOT NULL,
	amount     bigint NOT NULL CHECK (amount > 0),
	ref        text NOT NULL,
	created    timestamptz NOT NULL
);
CREATE INDEX holds_account ON holds (account_id);
CREATE INDEX holds_created ON holds (created);

CREATE TABLE consents (
	seq         bigserial PRIMARY KEY,
	subject     text NOT NULL,
	visitor     text NOT NULL DEFAULT '',
	revision    integer NOT NULL,
	preferences boolean NOT NULL,
	analytics   boolean NOT NULL,
	source      text NOT NULL,
	time        timestamptz NOT NULL
);
CREATE INDEX consents_subject ON consents (subject, seq);

-- id is the bbolt store's key: 8 bytes of big-endian UnixNano, 8 random.
-- client (IP and user agent) is sealed with the key of the event's day.
CREATE TABLE security_log (
	id         bytea PRIMARY KEY,
	time       timestamptz NOT NULL,
	kind       text NOT NULL,
	account_id text NOT NULL DEFAULT '',
	day        bigint NOT NULL,
	client     bytea,
	detail     text NOT NULL DEFAULT ''
);
CREATE INDEX security_log_account ON security_log (account_id, id) WHERE account_id <> '';
