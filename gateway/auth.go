package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// Security log event kinds.
const (
	eventSignup          = "signup"
	eventSignupExisting  = "signup_existing_email"
	eventLogin           = "login"
	eventLoginFailed     = "login_failed"
	eventLoginThrottled  = "login_throttled"
	eventLogout          = "logout"
	eventLogoutAll       = "logout_all"
	eventPasswordChanged = "password_changed"
	eventPasswordReset   = "password_reset"
	eventResetRequested  = "password_reset_requested"
	eventEmailVerified   = "email_verified"
	eventAPIKeyCreated   = "api_key_created"
	eventAPIKeyDeleted   = "api_key_deleted"
	eventGoogleLogin     = "google_login"
	eventGoogleLinked    = "google_linked"
)

// authContext bounds the work of one auth request (hashing included).
func authContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

type signupJSON struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Over18   *bool  `json:"over_18"`
}

// statusAccepted is the one answer to signup and reset requests, whatever
// the email: responses never reveal whether an address has an account.
var statusAccepted = fiber.Map{"status": "accepted", "message": "if the address can be used, we have sent it an email"}

// signup creates an account (promise A4: only with an 18+ attestation).
// For an address that already has an account it sends that address a
// notice instead; both answer 202 after hashing the password, so neither
// the body nor the timing tells them apart.
func (g *Gateway) signup(c *fiber.Ctx) error {
	var req signupJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	email := store.NormalizeEmail(req.Email)
	if err := mail.CheckAddress(email); err != nil {
		return badRequest("invalid_email", "email: not a valid address")
	}
	if req.Over18 == nil || !*req.Over18 {
		return badRequest("age_attestation_required", "over_18: you must confirm that you are 18 or older to use this service")
	}
	if err := checkPassword("password", req.Password); err != nil {
		return err
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	ctx, cancel := authContext()
	defer cancel()
	hash, err := g.passwords.hash(ctx, req.Password)
	if err != nil {
		return hashError(err)
	}
	acct, err := g.store.CreateAccount(store.NewAccount{Email: email, PasswordHash: hash, Plan: g.cfg.Plans.Default, AgeAttested: g.now()})
	switch {
	case errors.Is(err, store.ErrConflict):
		// The notice is throttled per address like reset mail, so signups
		// cannot flood an account holder's inbox.
		existing, err := g.store.AccountByEmail(email)
		if err == nil && existing.Status == store.StatusActive && g.resetMails.Allow("signup:"+guardKey(email)) {
			g.securityEvent(c, eventSignupExisting, existing.ID, "")
			g.mail.send("signup_existing", existingAccountMail(email, site+"/reset-password"))
		}
	case err != nil:
		return err
	default:
		g.securityEvent(c, eventSignup, acct.ID, "")
		g.grantPlan(&acct)
		if tok, err := g.store.CreateEmailVerification(acct.ID, "", g.cfg.VerifyTTL); err == nil {
			g.mail.send("verify", verifyMail(email, site+"/verify-email?token="+url.QueryEscape(tok), false))
		} else {
			g.logger.Error("verification token not created", "err", err)
		}
	}
	return c.Status(fiber.StatusAccepted).JSON(statusAccepted)
}

type loginJSON struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// guardKey names an email to the sign-in guard without keeping the address
// itself in memory.
func guardKey(email string) string {
	sum := sha256.Sum256([]byte("login\x00" + store.NormalizeEmail(email)))
	return hex.EncodeToString(sum[:12])
}

var errBadCredentials = &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "invalid_credentials", Msg: "invalid email or password"}

// login checks a password and starts a new session, replacing any session
// the browser had (rotation at sign-in).
func (g *Gateway) login(c *fiber.Ctx) error {
	var req loginJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Email == "" || req.Password == "" || len(req.Password) > maxPasswordBytes {
		return errBadCredentials
	}
	ip, who := g.ips.Addr(c), guardKey(req.Email)
	if ok, wait := g.logins.Attempt(ip, who); !ok {
		g.securityEvent(c, eventLoginThrottled, "", "")
		return ratelimit.LoginThrottled(wait)
	}
	ctx, cancel := authContext()
	defer cancel()
	acct, err := g.store.AccountByEmail(req.Email)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	ok, err := g.passwords.verify(ctx, req.Password, acct.PasswordHash) // "" for unknown: dummy work
	if err != nil {
		return hashError(err)
	}
	if !ok {
		g.securityEvent(c, eventLoginFailed, acct.ID, "")
		return errBadCredentials
	}
	g.logins.Succeeded(ip, who)
	if acct.Status != store.StatusActive {
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "account_inactive", Msg: "this account is suspended or being deleted"}
	}
	if err := g.startSession(c, acct.ID); err != nil {
		return err
	}
	g.securityEvent(c, eventLogin, acct.ID, "")
	g.grantPlan(&acct)
	return c.JSON(accountView(acct))
}

// startSession ends the browser's current session, if any, and starts a
// new one for accountID: a session token is never carried across sign-in.
func (g *Gateway) startSession(c *fiber.Ctx, accountID string) error {
	if old := c.Cookies(cookieSession); old != "" {
		if err := g.store.DeleteSession(old); err != nil {
			return err
		}
	}
	token, _, err := g.store.CreateSession(accountID, store.SessionPolicy{Idle: g.cfg.SessionIdle, Absolute: g.cfg.SessionAbsolute})
	if err != nil {
		return err
	}
	setCookie(c, cookieSession, token)
	return nil
}

func (g *Gateway) logout(c *fiber.Ctx) error {
	p := principalOf(c)
	if p.session != "" {
		if err := g.store.DeleteSession(p.session); err != nil {
			return err
		}
		g.securityEvent(c, eventLogout, p.account.ID, "")
	}
	clearCookie(c, cookieSession)
	return c.SendStatus(fiber.StatusNoContent)
}

// logoutAll ends every session of the account, this one included.
func (g *Gateway) logoutAll(c *fiber.Ctx) error {
	p := principalOf(c)
	n, err := g.store.DeleteSessions(p.account.ID, "")
	if err != nil {
		return err
	}
	g.securityEvent(c, eventLogoutAll, p.account.ID, "")
	clearCookie(c, cookieSession)
	return c.JSON(fiber.Map{"sessions_ended": n})
}

type passwordJSON struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
	// APIKeys: "revoke" (default) or "flag"; see apiKeyAction.
	APIKeys string `json:"api_keys"`
}

// apiKeyAction reads what a password change or reset should do to the
// account's API keys. Revoking is the default: a change of password often
// answers a suspected compromise, and a key the intruder made would
// otherwise outlive it. "flag" keeps the keys working (an integration the
// owner trusts keeps running) and marks them in the key list.
func apiKeyAction(v string) (store.APIKeyAction, error) {
	switch v {
	case "", string(store.RevokeAPIKeys):
		return store.RevokeAPIKeys, nil
	case string(store.FlagAPIKeys):
		return store.FlagAPIKeys, nil
	}
	return "", badRequest("invalid_api_keys", `api_keys: "revoke" (the default) or "flag"`)
}

// changePassword re-checks the current password, stores the new one, ends
// every other session and revokes or flags the API keys as asked.
func (g *Gateway) changePassword(c *fiber.Ctx) error {
	var req passwordJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if err := checkPassword("new_password", req.NewPassword); err != nil {
		return err
	}
	keys, err := apiKeyAction(req.APIKeys)
	if err != nil {
		return err
	}
	p := principalOf(c)
	ip, who := g.ips.Addr(c), guardKey(p.account.Email)
	if ok, wait := g.logins.Attempt(ip, who); !ok {
		return ratelimit.LoginThrottled(wait)
	}
	ctx, cancel := authContext()
	defer cancel()
	if len(req.CurrentPassword) > maxPasswordBytes {
		return badRequest("invalid_password", "current_password: incorrect")
	}
	ok, err := g.passwords.verify(ctx, req.CurrentPassword, p.account.PasswordHash)
	if err != nil {
		return hashError(err)
	}
	if !ok {
		return &apiError{Status: fiber.StatusForbidden, Type: "authentication_error", Code: "invalid_credentials", Msg: "current_password: incorrect"}
	}
	g.logins.Succeeded(ip, who)
	hash, err := g.passwords.hash(ctx, req.NewPassword)
	if err != nil {
		return hashError(err)
	}
	ch, err := g.store.SetPassword(p.account.ID, hash, p.session, keys)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventPasswordChanged, p.account.ID, keysDetail(ch))
	g.mail.send("password_changed", passwordChangedMail(p.account.Email, ch, false))
	return c.JSON(fiber.Map{"sessions_ended": ch.SessionsEnded, "api_keys_revoked": ch.KeysRevoked, "api_keys_flagged": ch.KeysFlagged})
}

type resetJSON struct {
	Email string `json:"email"`
}

// requestReset emails a single-use reset link if the address has an
// active account. It always answers 202 (promise A3; no enumeration).
func (g *Gateway) requestReset(c *fiber.Ctx) error {
	var req resetJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if mail.CheckAddress(store.NormalizeEmail(req.Email)) != nil {
		return badRequest("invalid_email", "email: not a valid address")
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	// One reset mail per address per interval, so the route cannot be
	// used to flood someone's inbox.
	if !g.resetMails.Allow("reset:" + guardKey(req.Email)) {
		return c.Status(fiber.StatusAccepted).JSON(statusAccepted)
	}
	// The answer does not wait for the lookup and the writes, so its
	// timing says nothing about whether the address has an account.
	email, cl := strings.Clone(req.Email), g.clientOf(c)
	g.mail.run(func() { g.sendReset(email, site, cl) })
	return c.Status(fiber.StatusAccepted).JSON(statusAccepted)
}

// sendReset issues and mails a reset link if email has an active account.
func (g *Gateway) sendReset(email, site string, cl client) {
	acct, err := g.store.AccountByEmail(email)
	if err != nil || acct.Status != store.StatusActive {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.logger.Error("reset lookup failed", "err", err)
		}
		return
	}
	tok, err := g.store.CreatePasswordReset(acct.ID, g.cfg.ResetTTL)
	if err != nil {
		g.logger.Error("reset token not created", "err", err)
		return
	}
	g.securityEventFrom(cl, eventResetRequested, acct.ID, "")
	g.mail.send("reset", resetMail(acct.Email, site+"/reset-password?token="+url.QueryEscape(tok), g.cfg.ResetTTL))
}

type resetConfirmJSON struct {
	Token       string `json:"token"`
	NewPassword string `json:"new_password"`
	// APIKeys: "revoke" (default) or "flag"; see apiKeyAction.
	APIKeys string `json:"api_keys"`
}

var errBadToken = badRequest("invalid_token", "token: the link is invalid, used or expired; ask for a new one")

// confirmReset spends a reset token: new password, every session ended,
// the API keys revoked or flagged as asked. It accepts JSON, or the form
// posted by the /reset-password page.
func (g *Gateway) confirmReset(c *fiber.Ctx) error {
	var req resetConfirmJSON
	form := isForm(c)
	if form {
		req.Token, req.NewPassword, req.APIKeys = c.FormValue("token"), c.FormValue("new_password"), c.FormValue("api_keys")
	} else if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if err := checkPassword("new_password", req.NewPassword); err != nil {
		return err
	}
	keys, err := apiKeyAction(req.APIKeys)
	if err != nil {
		return err
	}
	if req.Token == "" || len(req.Token) > 128 {
		return errBadToken
	}
	token := strings.Clone(req.Token)
	// A bad token is refused before the expensive hash: guessing tokens
	// must not buy argon2 time.
	if err := resetTokenError(g.store.CheckPasswordReset(token)); err != nil {
		return err
	}
	ctx, cancel := authContext()
	defer cancel()
	hash, err := g.passwords.hash(ctx, req.NewPassword)
	if err != nil {
		return hashError(err)
	}
	ch, err := g.store.ConsumePasswordReset(token, hash, keys)
	if err := resetTokenError(err); err != nil {
		return err
	}
	g.securityEvent(c, eventPasswordReset, ch.AccountID, keysDetail(ch))
	if acct, err := g.store.Account(ch.AccountID); err == nil {
		g.mail.send("password_changed", passwordChangedMail(acct.Email, ch, true))
	}
	clearCookie(c, cookieSession)
	if form {
		return g.page(c, "Password changed", "Your password was changed and every session was signed out. "+keysSentence(ch)+" Sign in with the new password.")
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// resetTokenError maps the store's verdict on a reset token to the answer
// the client gets: every kind of bad token looks the same.
func resetTokenError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrAccountInactive):
		return errBadToken
	}
	return err
}

type verifyJSON struct {
	Token string `json:"token"`
}

// verifyEmail spends an email-verification token (sign-up, or a change of
// address).
func (g *Gateway) verifyEmail(c *fiber.Ctx) error {
	var req verifyJSON
	form := isForm(c)
	if form {
		req.Token = c.FormValue("token")
	} else if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Token == "" || len(req.Token) > 128 {
		return errBadToken
	}
	id, err := g.store.ConfirmEmail(strings.Clone(req.Token))
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrAccountInactive):
		return errBadToken
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "email_taken", Msg: "that address is no longer available"}
	case err != nil:
		return err
	}
	g.securityEvent(c, eventEmailVerified, id, "")
	if form {
		return g.page(c, "Address confirmed", "Your email address is confirmed.")
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func isForm(c *fiber.Ctx) bool {
	return strings.HasPrefix(c.Get(fiber.HeaderContentType), fiber.MIMEApplicationForm)
}

func hashError(err error) error {
	if errors.Is(err, errHashBusy) || errors.Is(err, context.DeadlineExceeded) {
		return unavailable("too many sign-ins at once; retry shortly", 2, err)
	}
	return err
}

// resetMailPolicy bounds reset emails to one address: 3 an hour.
var resetMailPolicy = LimitPolicy{Quota: 3, Window: time.Hour}
