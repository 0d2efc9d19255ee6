package gateway

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/oauth2"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// GoogleConfig enables "Sign in with Google" (promise A2) when ClientID is
// set. The endpoint URLs default to Google's; tests point them elsewhere.
type GoogleConfig struct {
	ClientID     string
	ClientSecret string
	// RedirectURL is this gateway's callback as registered with Google,
	// e.g. https://example.com/v1/auth/google/callback. Empty: derived
	// from PublicURL.
	RedirectURL string
	AuthURL     string
	TokenURL    string
	UserInfoURL string
	// DoneURL is where the browser lands after signing in ("/").
	DoneURL string
}

func (c *GoogleConfig) setDefaults(publicURL string) {
	if c.AuthURL == "" {
		c.AuthURL = "https://accounts.google.com/o/oauth2/v2/auth"
	}
	if c.TokenURL == "" {
		c.TokenURL = "https://oauth2.googleapis.com/token"
	}
	if c.UserInfoURL == "" {
		c.UserInfoURL = "https://openidconnect.googleapis.com/v1/userinfo"
	}
	if c.RedirectURL == "" && publicURL != "" {
		c.RedirectURL = strings.TrimSuffix(publicURL, "/") + "/v1/auth/google/callback"
	}
	if c.DoneURL == "" {
		c.DoneURL = "/"
	}
}

func (c *GoogleConfig) validate() error {
	if c.ClientID == "" {
		return nil
	}
	var errs []error
	if c.ClientSecret == "" {
		errs = append(errs, errors.New("gateway: Google sign-in needs a client secret"))
	}
	if c.RedirectURL == "" {
		errs = append(errs, errors.New("gateway: Google sign-in needs a redirect URL (or a public URL to derive it from)"))
	}
	if !strings.HasPrefix(c.DoneURL, "/") || strings.HasPrefix(c.DoneURL, "//") {
		errs = append(errs, errors.New("gateway: Google done URL must be a path on this site"))
	}
	return errors.Join(errs...)
}

func (c *GoogleConfig) oauth() *oauth2.Config {
	return &oauth2.Config{
		ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: c.RedirectURL,
		Endpoint: oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   []string{"openid", "email"},
	}
}

var errGoogleOff = &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "google_disabled", Msg: "Sign in with Google is not configured on this site"}

// googleStart sends the browser to Google with a fresh state and PKCE
// verifier, kept in a short-lived necessary cookie. ?over_18=true carries
// the age attestation a new account needs (promise A4).
func (g *Gateway) googleStart(c *fiber.Ctx) error {
	if g.cfg.Google.ClientID == "" {
		return errGoogleOff
	}
	var b [18]byte
	rand.Read(b[:])
	state := base64.RawURLEncoding.EncodeToString(b[:])
	verifier := oauth2.GenerateVerifier()
	over18 := "0"
	if c.Query("over_18") == "true" {
		over18 = "1"
	}
	setCookie(c, cookieOAuth, state+"."+verifier+"."+over18)
	u := g.cfg.Google.oauth().AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "select_account"))
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Redirect(u, fiber.StatusFound)
}

// googleUser is what we read from Google: the subject and the address,
// nothing else (no name, no picture).
type googleUser struct {
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

var errGoogleState = badRequest("invalid_state", "the sign-in attempt expired or was started elsewhere; start again")

// googleCallback finishes the flow: checks state, exchanges the code with
// the PKCE verifier, reads the user, then signs in the linked account,
// links a verified address to its existing account, or creates an account
// if the visitor attested their age.
func (g *Gateway) googleCallback(c *fiber.Ctx) error {
	if g.cfg.Google.ClientID == "" {
		return errGoogleOff
	}
	parts := strings.Split(c.Cookies(cookieOAuth), ".")
	clearCookie(c, cookieOAuth)
	if len(parts) != 3 || subtle.ConstantTimeCompare([]byte(parts[0]), []byte(c.Query("state"))) != 1 {
		return errGoogleState
	}
	if c.Query("error") != "" || c.Query("code") == "" {
		return badRequest("google_refused", "Google did not sign you in")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	user, err := g.googleUser(ctx, strings.Clone(c.Query("code")), parts[1])
	if err != nil {
		return &apiError{Status: fiber.StatusBadGateway, Type: "server_error", Code: "google_failed", Msg: "could not complete Sign in with Google; try again", Err: err}
	}
	acct, err := g.store.AccountByGoogle(user.Subject)
	switch {
	case err == nil:
	case !errors.Is(err, store.ErrNotFound):
		return err
	case !user.EmailVerified || mail.CheckAddress(store.NormalizeEmail(user.Email)) != nil:
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "email_unverified", Msg: "your Google account has no verified email address"}
	default:
		acct, err = g.store.AccountByEmail(user.Email)
		switch {
		case err == nil && acct.GoogleSubject != "":
			// Another Google account is linked already: Google reassigned
			// the address, or someone else holds it. Never switch owners.
			return &apiError{Status: fiber.StatusConflict, Type: "permission_error", Code: "google_conflict",
				Msg: "this email address is linked to a different Google account; sign in with your password"}
		case err == nil:
			// The address is verified by Google. If the account never
			// proved it owns the address, LinkGoogle revokes every
			// credential of whoever signed up with it before the
			// account passes to the address's owner.
			if err := g.store.LinkGoogle(acct.ID, user.Subject); err != nil {
				return err
			}
			g.securityEvent(c, eventGoogleLinked, acct.ID, "")
		case !errors.Is(err, store.ErrNotFound):
			return err
		case parts[2] != "1":
			return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "age_attestation_required",
				Msg: "to create an account, confirm that you are 18 or older and start Sign in with Google again"}
		default:
			acct, err = g.store.CreateAccount(store.NewAccount{
				Email: user.Email, EmailVerified: true, GoogleSubject: user.Subject,
				Plan: g.cfg.Plans.Default, AgeAttested: g.now(),
			})
			if err != nil {
				return err
			}
			g.securityEvent(c, eventSignup, acct.ID, "google")
		}
	}
	if acct.Status != store.StatusActive {
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "account_inactive", Msg: "this account is suspended or being deleted"}
	}
	if err := g.startSession(c, acct.ID); err != nil {
		return err
	}
	g.securityEvent(c, eventGoogleLogin, acct.ID, "")
	return c.Redirect(g.cfg.Google.DoneURL, fiber.StatusSeeOther)
}

// googleUser exchanges the code and reads the user from the userinfo
// endpoint with the access token.
func (g *Gateway) googleUser(ctx context.Context, code, verifier string) (googleUser, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, g.httpClient)
	tok, err := g.cfg.Google.oauth().Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return googleUser{}, fmt.Errorf("google: token exchange: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.Google.UserInfoURL, nil)
	if err != nil {
		return googleUser{}, err
	}
	tok.SetAuthHeader(req)
	resp, err := g.httpClient.Do(req)
	if err != nil {
		return googleUser{}, fmt.Errorf("google: userinfo: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return googleUser{}, fmt.Errorf("google: userinfo: status %d", resp.StatusCode)
	}
	var u googleUser
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&u); err != nil {
		return googleUser{}, fmt.Errorf("google: userinfo: %w", err)
	}
	if u.Subject == "" {
		return googleUser{}, errors.New("google: userinfo without a subject")
	}
	return u, nil
}
