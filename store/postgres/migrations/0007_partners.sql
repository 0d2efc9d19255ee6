-- Partner sites that embed the generator (store/partners.go): the record,
-- its publishable key (public by design) and the SHA-256 of its secret
-- key, both unique because requests are looked up by them; images per
-- partner per UTC day for the monthly quota and the usage figures.

CREATE TABLE partners (
	id              text PRIMARY KEY,
	name            text NOT NULL,
	origins         text[] NOT NULL,
	monthly_quota   integer NOT NULL,
	rate_limit      integer NOT NULL,
	plan            text NOT NULL,
	disabled        boolean NOT NULL DEFAULT false,
	publishable_key text NOT NULL UNIQUE,
	secret_hash     bytea NOT NULL UNIQUE,
	secret_hint     text NOT NULL,
	webhook_url     text NOT NULL DEFAULT '',
	webhook_secret  text NOT NULL DEFAULT '',
	created         timestamptz NOT NULL,
	updated         timestamptz NOT NULL
);

CREATE TABLE partner_usage (
	partner_id text NOT NULL REFERENCES partners (id),
	day        date NOT NULL,
	images     bigint NOT NULL CHECK (images > 0),
	PRIMARY KEY (partner_id, day)
);

-- Credit sales per day (store.CreditSalesDays) read purchases by time.
CREATE INDEX ledger_purchases ON ledger (time) WHERE kind = 'purchase';
