-- Rights requests, reports under legal hold, incident notifications,
-- first-party analytics aggregates and the sweep lease.

CREATE SEQUENCE dsar_seq;

CREATE TABLE dsar_requests (
	id           text PRIMARY KEY,
	slot         bigint NOT NULL,
	kind         text NOT NULL,
	email_sealed bytea,
	note_sealed  bytea,
	received     timestamptz NOT NULL,
	deadline     timestamptz NOT NULL,
	created      timestamptz NOT NULL,
	closed       timestamptz,
	close_sealed bytea,
	erased       boolean NOT NULL DEFAULT false
);

CREATE SEQUENCE report_key_slots START 1;

CREATE TABLE reports (
	id           text PRIMARY KEY,
	slot         bigint NOT NULL,
	created      timestamptz NOT NULL,
	hold_until   timestamptz NOT NULL,
	category     text NOT NULL,
	source       text NOT NULL,
	image_size   integer NOT NULL,
	details      bytea NOT NULL,
	image_sealed bytea
);

CREATE SEQUENCE notify_seq;

CREATE TABLE notify_jobs (
	id     text PRIMARY KEY,
	seq    bigint NOT NULL,
	state  text NOT NULL,
	record bytea NOT NULL
);

CREATE TABLE notify_recipients (
	job_id     text NOT NULL,
	account_id text NOT NULL,
	state      text NOT NULL,
	PRIMARY KEY (job_id, account_id)
);
CREATE INDEX notify_recipients_account ON notify_recipients (account_id);

CREATE TABLE analytics_days (
	day    text PRIMARY KEY,
	record bytea NOT NULL
);
