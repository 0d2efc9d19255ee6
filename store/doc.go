// Package store is imagegate's embedded data layer on bbolt: the model
// catalogue, accounts, sessions, API keys, password resets, the credit
// ledger and its holds, consent records and the security log.
//
// # Personal data is sealed
//
// bbolt never wipes freed pages, so a deleted record stays readable in the
// file until its page is reused. Personal data is therefore never written
// to bbolt in the clear:
//
//   - an account's email and Google subject are sealed (AES-256-GCM) with a
//     key of the account's own, kept in a slot of a separate key file
//     (Path+".keys") that is overwritten in place when the account is
//     erased; lookups go through HMAC index entries, not the addresses;
//   - the security log's IP addresses and user agents are sealed with a key
//     per UTC day (Path+".daykeys"), destroyed when the day leaves the
//     retention period;
//   - reports of apparent CSAM (kept for the legal reporting duty) are
//     sealed with a key per report (Path+".reportkeys"), destroyed when the
//     one-year legal hold ends; unlike the other key files, back this one
//     up for the whole hold;
//   - a rights request's email and notes are sealed with a key of the
//     request's own (a slot of Path+".keys"), destroyed 90 days after the
//     request is closed;
//   - secrets (session tokens, API keys, reset tokens) are stored only as
//     SHA-256 hashes; passwords only as the argon2id PHC strings the
//     gateway computes.
//
// Destroying a key makes every copy of what it sealed unreadable: in freed
// pages, and in backups of the bbolt file taken before the erasure (back
// up the key files on a shorter schedule than the retention period, or not
// at all).
//
// # Payments
//
// Billing state keeps only Stripe ids, subscription status and periods,
// and transaction records; no card or address field exists in any type
// (a test parses every type to keep it so). Each webhook event's id is
// stored in the same transaction as its effect, so a redelivery is a
// no-op, and changes converge on Stripe's latest state in any order.
//
// # Money
//
// An account's credit balance is stored beside its ledger and changes only
// in the same transaction as a ledger entry, so it always equals the sum of
// the entries (Reconcile checks). Generations reserve credits with a Hold
// before the GPU call and commit or release it after; a reservation checks
// and holds in one write transaction, so concurrent requests never
// overspend.
//
// # Caveats
//
// bbolt takes an exclusive lock on the file: one process per data directory.
// Byte slices read from bbolt are only valid inside their transaction, so
// every getter copies. Nothing outside this package sees a *bbolt.Tx.
package store
