// Package edge holds what sits between imagegate and the outside world's
// storage and CDN: the object store for generated outputs, the
// content-addressed names those outputs live under, and the signed links
// that let a CDN refuse forged or stale URLs before they reach the origin.
//
// # Objects
//
// Outputs are stored under "o/<sha256 hex>.<ext>" (OutputName), so equal
// bytes share one object and a name never changes meaning. Local keeps
// objects in a directory: writes are atomic and first-writer-wins (see
// Local.Put), reads never see a partially written file.
//
// # Signed links and the Cloudflare WAF
//
// A public link is "/o/<sha256>.<ext>?verify=<issued>-<mac>" where issued is
// the Unix time of signing in exactly 10 decimal digits and mac is
// HMAC-SHA256(key, path + issued) in URL-safe base64 without padding. That is
// the token Cloudflare's Rules language checks with is_timed_hmac_valid_v0
// when given flag "s", so the CDN can drop bad links at the edge with a WAF
// custom rule such as (action: Block)
//
//	starts_with(http.request.uri.path, "/o/") and
//	not is_timed_hmac_valid_v0("<key>", http.request.uri, 86400,
//	    http.request.timestamp.sec, 8, "s")
//
// where 86400 is SignerConfig.TTL in seconds and 8 is len("?verify="), the
// separator between the signed message (the path) and the token. A Signer
// verifies the very same token when the gateway is the origin, so a link is
// valid at the CDN exactly when it is valid at the gateway, except that the
// gateway is stricter in two ways: it refuses tokens issued more than
// MaxClockSkew in the future, and it refuses any other query parameter (our
// links never carry one, and a CDN cache key that ignores the token must not
// be fed variants).
//
// The key is used verbatim as bytes. A WAF rule holds the key as a string
// literal, so keys should be printable: LoadOrCreateKey generates 64 hex
// characters and those characters, not the 32 bytes they spell, are the key.
// Paste the file's content into the rule.
//
// Rotation: a rule holds one key literal, so during a rotation OR a second
// is_timed_hmac_valid_v0 call with the previous key into the rule, and set
// SignerConfig.Previous to the same key; drop both after one TTL.
//
// The token must not become part of the CDN cache key, or every signed link
// becomes its own cache entry: add a Cache Rule that excludes the "verify"
// query parameter (or the whole query string) from the cache key. The MAC
// covers Cloudflare's normalized URL; our paths are already in normal form
// (lowercase hex, no escapes, no dot segments), so what we sign is what
// Cloudflare checks.
package edge
