// Package store is imagegate's embedded data layer on bbolt.
//
// One file under the data directory holds the state the gateway must keep
// across restarts. Today that is the model catalogue learned from the
// inference tier, so a restarted gateway can derive cache keys (and serve
// cache hits) before the tier answers; accounts, sessions, the credit ledger
// and the rest of the data model land here as they are built.
//
// # Caveats
//
// bbolt takes an exclusive lock on the file: one process per data directory.
// Byte slices read from bbolt are only valid inside their transaction, so
// every getter copies. Nothing outside this package sees a *bbolt.Tx.
package store
