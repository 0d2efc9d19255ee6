-- Billing (promise M1): Stripe ids, subscription state and payment
-- records, never card data. Records are the bbolt store's JSON, so both
-- stores share one convergence logic (store.ApplyBillingChanges).

CREATE TABLE billing (
	account_id  text PRIMARY KEY,
	customer_id text UNIQUE,
	state       bytea
);

CREATE TABLE stripe_payments (
	key    text PRIMARY KEY,
	record bytea
);

-- Webhook dedupe is this primary key: the event row is inserted in the
-- same transaction as the event's effects, so a redelivery to any gateway
-- conflicts and changes nothing.
CREATE TABLE webhook_events (
	id       text PRIMARY KEY,
	type     text NOT NULL,
	created  timestamptz NOT NULL,
	received timestamptz NOT NULL
);
CREATE INDEX webhook_events_received ON webhook_events (received);

CREATE TABLE billing_flags (
	id   text PRIMARY KEY,
	flag bytea NOT NULL
);
