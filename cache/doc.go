// Package cache maps generation requests to stored outputs, so that a
// repeated request is answered without a GPU.
//
// A Request's Key is a versioned SHA-256 over its canonical form: model and
// version, the prompts in canonical form (see CanonicalPrompt), size, seed,
// steps, guidance, style, format, the reference image's hash and strength
// for image-to-image, and a scope that separates private results from the
// shared space. Nothing else: never who asked, a filename or the time.
// DeriveSeed gives seedless requests a seed of their own from the same form.
//
// A Cache resolves keys through three tiers and then a Loader:
//
//   - L1, memory (ristretto), bounded by bytes; it also holds output bytes
//     for Object. It is advisory: it may drop anything at any time. An
//     entry is an 80-byte value inside ristretto's hash-table slot, so a
//     hit is one probe (no pointer to follow).
//   - L2, a bbolt file on this node: key → Entry, surviving restarts. Hits
//     read through one read-only transaction shared by all goroutines and
//     closed before every write, so it is never stale and pins no pages.
//   - L3, the object store shared by every node: a manifest
//     "k/<key>.json" naming the output "o/<sha256>.<ext>". A node whose own
//     tiers lack a key finds another node's result here.
//
// Hits are copied into the nearer tiers. Concurrent misses of one key share
// one L3 lookup and one load (golang.org/x/sync/singleflight), which runs
// under a context no single caller can cancel; a refresh skips the tiers but
// still shares the load.
//
// # Caveats
//
//   - Close must not run concurrently with other calls. Loads that outlive
//     their callers are allowed to finish after Close; they skip the local
//     tiers.
//   - Invalidate and InvalidateObject act on this node only, and do not
//     delete manifests, which belong to every node. Removing a result
//     everywhere means deleting its output from the object store (a
//     manifest whose output is missing is a miss) and invalidating it on
//     every node.
//   - An Invalidate that races with a load of the same key may be undone by
//     that load.
//   - Byte slices returned by Object are shared with L1: never modify them.
package cache
