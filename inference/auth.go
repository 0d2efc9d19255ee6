package inference

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// requireBearer admits only requests carrying "Authorization: Bearer
// <token>". It wraps the whole handler, so health checks need the token
// too: the tier says nothing to strangers, not even that it is up.
func requireBearer(token string, next http.Handler) http.Handler {
	// Comparing digests keeps the comparison constant-time even in the
	// token's length.
	want := sha256.Sum256([]byte(token))
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(got))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			// Write answers in whichever protocol the caller speaks.
			_ = errs.Write(w, r, connect.NewError(connect.CodeUnauthenticated, errors.New("missing or invalid bearer token")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validateToken refuses tokens that cannot travel in a header as is.
func validateToken(token string) error {
	for i := range len(token) {
		if c := token[i]; c <= ' ' || c > '~' {
			return errors.New("inference: token must be printable ASCII without spaces")
		}
	}
	return nil
}
