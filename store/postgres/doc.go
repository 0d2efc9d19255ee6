// Package postgres is the account store on PostgreSQL, so that several
// gateways (in several regions) share accounts, sessions, credits and the
// rest of what package store keeps in a bbolt file on one machine. It
// implements the same methods with the same contracts and passes the same
// conformance suite (store/storetest); the gateway takes either.
//
// # Schema and migrations
//
// Migrations are numbered SQL files embedded in the binary
// (migrations/NNNN_name.sql), applied in order by Open or `imagegate
// migrate`, each in its own transaction, under a session-level
// pg_advisory_lock: two gateways starting at once apply each exactly once,
// and the second waits for the first. A database newer than the binary is
// refused.
//
// # Money: row locks, not serializable retries
//
// Every credit operation (reserve, commit, release, grant, purchase,
// refund) runs in one READ COMMITTED transaction that first locks the
// account's row with SELECT … FOR UPDATE, then checks and writes the
// balance, the held amount and the ledger. All changes to one account's
// money queue on that one row, from any number of gateways, so the
// available balance is checked and held atomically and never overspent.
// This was chosen over SERIALIZABLE transactions because each operation
// touches exactly one account: a row lock serialises exactly the
// conflicting work, needs no retry loop, and cannot fail spuriously the
// way serializable predicate locks on the ledger's indexes do under load.
// A hold is taken with DELETE … RETURNING, so a hold committed twice (two
// gateways retrying one job) charges once. (account_id, ref) is unique in
// the ledger, so a replayed credit is a no-op. A partner's monthly image
// quota is checked and counted the same way, under its partners row.
//
// # Personal data stays sealed
//
// Sealed fields are sealed exactly as in the bbolt store, with the same
// key files (store.Keyring: KeyPath+".keys", ".daykeys", ".reportkeys",
// here or behind a key service), which never enter the database. The database holds only ciphertext,
// HMAC lookup indexes and SHA-256 hashes of secrets; destroying a key
// (erasure, the end of a retention period) makes every copy unreadable,
// including the database's WAL, replicas and backups. Key slots come from
// a database sequence, so gateways never collide on one.
//
// # Asynchronous jobs: leases
//
// Generation jobs (table jobs) are shared by every gateway. Each
// unfinished job is leased to one store client (one gateway) until
// lease_until; the holder renews it, and ClaimJobs hands a job whose lease
// lapsed (its gateway died or lost the database) to exactly one other
// client: UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED), the lease
// re-checked under the row lock. Leases are compared with the claiming
// gateway's clock, so gateways' clocks must agree to well within the
// lease (NTP). A run that finds its lease gone stops without recording.
// An idempotency key is unique per owner (a partial unique index), so a
// POST retried through another gateway gets the same job.
//
// # Caveats
//
// The lookup-index key (HMAC of emails and Google subjects) is rotated
// after every erasure, as in the bbolt store (RotateIndexKey): every
// account row is re-indexed in one transaction, which costs time in
// proportion to the number of accounts.
//
// Every gateway must use the same key files: either it opens them itself
// (Config.KeyPath; gateways on one host or one volume share them under
// flock), or a key service keeps them for the whole fleet (Config.Keys, a
// store/keyservice client; `imagegate keys serve`), so gateways on
// separate hosts in several regions need no shared disk. The gateway's
// store interfaces carry no context, so each operation is bounded by
// Config.Timeout instead.
package postgres
