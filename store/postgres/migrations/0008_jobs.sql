-- Asynchronous generation jobs (store.Job), shared by every gateway.
-- record is the job without its request; request_sealed the request
-- (prompt) sealed with the owner's account key, or for an anonymous job
-- with a key derived from the visitor's job token. An anonymous job also
-- keeps resume_sealed, the request under a key of its own (resume_slot in
-- the account key file), dropped and its key destroyed when it finishes.
-- lease_holder/lease_until: the gateway running an unfinished job; others
-- claim it (FOR UPDATE SKIP LOCKED) only once the lease lapsed.
CREATE TABLE jobs (
	id             text PRIMARY KEY,
	owner          text NOT NULL DEFAULT '',
	status         text NOT NULL,
	created        timestamptz NOT NULL,
	updated        timestamptz NOT NULL,
	idem_key       text NOT NULL DEFAULT '',
	record         jsonb NOT NULL,
	request_sealed bytea NOT NULL,
	resume_slot    bigint NOT NULL DEFAULT 0,
	resume_sealed  bytea,
	lease_holder   text NOT NULL DEFAULT '',
	lease_until    timestamptz
);
-- An idempotency key names one job per owner, whichever gateway got it.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idem_key) WHERE owner <> '' AND idem_key <> '';
CREATE INDEX jobs_owner ON jobs (owner, created) WHERE owner <> '';
CREATE INDEX jobs_unfinished ON jobs (created) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_finished ON jobs (updated) WHERE status NOT IN ('queued', 'running');
