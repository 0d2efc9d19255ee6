package gateway

import (
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// Who may do what (issue 16). A browser session acts for the whole
// account. An API key is a secret that lives in other people's servers,
// CI logs and config files, so it leaks: it acts only within the scopes
// its owner granted, and never on a route that changes the account, hands
// out its data in bulk or could sign its owner out. authorize is the one
// place this is decided; handlers do not check credentials again.

// recentSignIn is how recent a session's sign-in must be for the routes
// whose misuse cannot be undone: the export (every prompt, the security
// log) and deletion. A session left open on a shared computer does not
// open them; signing in again does.
const recentSignIn = 10 * time.Minute

// access is what a route asks of its caller.
type access int

const (
	// accessImages: anyone, signed in or not; an API key needs
	// images:write.
	accessImages access = iota + 1
	// accessAccount: a signed-in account. A read (GET, HEAD) takes a
	// browser session or a key with account:read; anything else takes a
	// browser session.
	accessAccount
	// accessRecent: a browser session signed in within recentSignIn.
	accessRecent
)

// errSessionRequired answers an API key on a route only a browser may use.
var errSessionRequired = &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "session_required",
	Msg: "this needs a signed-in browser session: API keys cannot change the account, export it, manage keys or sign anyone out"}

var errReauthenticate = &apiError{Status: fiber.StatusForbidden, Type: "authentication_error", Code: "reauthentication_required",
	Msg: fmt.Sprintf("sign in again first: this needs a sign-in within the last %d minutes", int(recentSignIn/time.Minute))}

func errInsufficientScope(scope string) error {
	return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "insufficient_scope",
		Msg: "this API key lacks the " + scope + " scope; create a key with it from a signed-in browser session"}
}

// authorize is middleware that lets the request through only if its
// principal (see identify) meets need. It runs after identify.
func (g *Gateway) authorize(need access) fiber.Handler {
	return func(c *fiber.Ctx) error {
		p := principalOf(c)
		if need == accessImages {
			if p.apiKeyID != "" && !p.hasScope(store.ScopeImagesWrite) {
				return errInsufficientScope(store.ScopeImagesWrite)
			}
			return c.Next()
		}
		if p.account == nil {
			return errUnauthenticated
		}
		read := c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead
		switch {
		case p.session != "":
			if need == accessRecent && g.now().Sub(p.signedIn) > recentSignIn {
				return errReauthenticate
			}
		case need == accessAccount && read:
			if !p.hasScope(store.ScopeAccountRead) {
				return errInsufficientScope(store.ScopeAccountRead)
			}
		default:
			return errSessionRequired
		}
		return c.Next()
	}
}
