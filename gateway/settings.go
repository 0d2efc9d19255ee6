package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/text/unicode/norm"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// Account settings (promise R4: opt-outs switchable at any time), the
// Global Privacy Control signal on accounts (K2), and correction of the
// email address and profile (R2).

// gpcOptOut is middleware: a signed-in request carrying Sec-GPC: 1 opts
// the account out of analytics and model improvement. Only a change is
// written (and logged), so the signal on every request costs one read of
// settings the request already loaded. It must run after identify.
func (g *Gateway) gpcOptOut(c *fiber.Ctx) error {
	p := principalOf(c)
	if p.account == nil || !consentOf(c).GPC || (p.account.Settings.NoAnalytics && p.account.Settings.NoModelImprovement) {
		return c.Next()
	}
	s, changed, err := g.store.UpdateSettings(p.account.ID, func(s *store.Settings) {
		s.NoAnalytics, s.NoModelImprovement = true, true
	})
	if err != nil {
		return err
	}
	p.account.Settings = s
	if changed {
		g.securityEvent(c, eventSettingsChanged, p.account.ID, settingsDetail(s, "gpc"))
	}
	return c.Next()
}

// settingsJSON is GET and PUT /v1/account/settings. The API speaks in
// positive switches; the store keeps opt-outs.
type settingsJSON struct {
	// ProductEmail: non-essential email (news, tips). Off unless turned on.
	ProductEmail bool `json:"product_email"`
	// Analytics: this account's page views may be counted in the
	// aggregated first-party analytics (the browser's cookie choice must
	// allow it too).
	Analytics bool `json:"analytics"`
	// ModelImprovement: this account's generations may be included in the
	// aggregated, anonymized model-improvement statistics.
	ModelImprovement bool `json:"model_improvement"`
	// GPC says the request carries Sec-GPC: 1, which keeps analytics and
	// model improvement off.
	GPC bool `json:"gpc"`
}

func settingsView(s store.Settings, gpc bool) settingsJSON {
	return settingsJSON{ProductEmail: s.ProductEmail, Analytics: !s.NoAnalytics, ModelImprovement: !s.NoModelImprovement, GPC: gpc}
}

// settingsDetail describes settings for the security log.
func settingsDetail(s store.Settings, source string) string {
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	return fmt.Sprintf("product_email=%s analytics=%s model_improvement=%s source=%s",
		onOff(s.ProductEmail), onOff(!s.NoAnalytics), onOff(!s.NoModelImprovement), source)
}

func (g *Gateway) getSettings(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(settingsView(principalOf(c).account.Settings, consentOf(c).GPC))
}

type settingsPut struct {
	ProductEmail     *bool `json:"product_email"`
	Analytics        *bool `json:"analytics"`
	ModelImprovement *bool `json:"model_improvement"`
}

var errGPCOptOut = &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "gpc_opt_out",
	Msg: "your browser sends Global Privacy Control (Sec-GPC: 1), which this site honours as an opt-out of analytics and model improvement; turn it off in the browser to opt in"}

// putSettings changes the switches present in the body; absent ones keep
// their value. Each change is logged to the security log with the new
// values, so an account's export shows when it opted in or out.
func (g *Gateway) putSettings(c *fiber.Ctx) error {
	var req settingsPut
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.ProductEmail == nil && req.Analytics == nil && req.ModelImprovement == nil {
		return badRequest("missing_field", "send at least one of product_email, analytics, model_improvement (true or false)")
	}
	gpc := consentOf(c).GPC
	if gpc && ((req.Analytics != nil && *req.Analytics) || (req.ModelImprovement != nil && *req.ModelImprovement)) {
		return errGPCOptOut
	}
	p := principalOf(c)
	s, changed, err := g.store.UpdateSettings(p.account.ID, func(s *store.Settings) {
		if req.ProductEmail != nil {
			s.ProductEmail = *req.ProductEmail
		}
		if req.Analytics != nil {
			s.NoAnalytics = !*req.Analytics
		}
		if req.ModelImprovement != nil {
			s.NoModelImprovement = !*req.ModelImprovement
		}
	})
	if err != nil {
		return err
	}
	p.account.Settings = s
	if changed {
		g.securityEvent(c, eventSettingsChanged, p.account.ID, settingsDetail(s, "settings"))
	}
	if s.NoAnalytics {
		clearCookie(c, cookieAnalytics)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(settingsView(s, gpc))
}

// Correction of the email address (promise R2).

type emailChangeJSON struct {
	NewEmail string `json:"new_email"`
	Password string `json:"password"`
}

// errPasswordRequired answers accounts that sign in with Google only. They
// re-authenticate through their current mailbox instead: a password reset
// sent to the current address sets a password, which then confirms the
// change. (Changing the address at Google changes nothing here: Sign in
// with Google finds the account by Google's subject id, not the address.)
var errPasswordRequired = &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "password_required",
	Msg: "this account signs in with Google and has no password: set one first with a password reset sent to your current address, then change the address with it"}

// emailChangeAccepted is the answer whether or not the new address has an
// account: a taken address is refused only when its link is used, so the
// request tells the caller nothing about other accounts.
var emailChangeAccepted = fiber.Map{"status": "accepted",
	"message": "we sent a confirmation link to the new address; your address changes only when that link is used. Until then, keep signing in with the current one."}

// changeEmail starts a change of address: the password re-authenticates
// the request, the new address gets a single-use link (the change happens
// only when it is used, through /verify-email and
// POST /v1/auth/verify-email), and the current address gets a notice.
// Only a browser session gets here (authorize): an API key alone must
// never move an account to another mailbox.
func (g *Gateway) changeEmail(c *fiber.Ctx) error {
	p := principalOf(c)
	var req emailChangeJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	email := store.NormalizeEmail(req.NewEmail)
	if mail.CheckAddress(email) != nil {
		return badRequest("invalid_email", "new_email: not a valid address")
	}
	if email == p.account.Email {
		return badRequest("same_email", "new_email: this is already your address")
	}
	if p.account.PasswordHash == "" {
		return errPasswordRequired
	}
	ip, who := g.ips.Addr(c), guardKey(p.account.Email)
	if ok, wait := g.logins.Attempt(ip, who); !ok {
		return ratelimit.LoginThrottled(wait)
	}
	if req.Password == "" || len(req.Password) > maxPasswordBytes {
		return errWrongPassword
	}
	ctx, cancel := authContext()
	defer cancel()
	ok, err := g.passwords.verify(ctx, req.Password, p.account.PasswordHash)
	if err != nil {
		return hashError(err)
	}
	if !ok {
		g.securityEvent(c, eventLoginFailed, p.account.ID, "email_change")
		return errWrongPassword
	}
	g.logins.Succeeded(ip, who)
	// At most a few links per account and per new address an hour, so
	// the route cannot flood anyone's inbox.
	if !g.resetMails.Allow("email-change:"+p.account.ID) || !g.resetMails.Allow("email-change:"+guardKey(email)) {
		return &apiError{Status: fiber.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_emails",
			Msg: "too many address changes requested; try again later", RetryAfter: 1200}
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	tok, err := g.store.CreateEmailVerification(p.account.ID, email, g.cfg.VerifyTTL)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventEmailChangeRequested, p.account.ID, "")
	g.mail.send("verify_change", verifyMail(email, site+"/verify-email?token="+url.QueryEscape(tok), true))
	g.mail.send("email_change_notice", emailChangeNoticeMail(p.account.Email, maskEmail(email), site+"/reset-password"))
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusAccepted).JSON(emailChangeAccepted)
}

var errWrongPassword = &apiError{Status: fiber.StatusForbidden, Type: "authentication_error", Code: "invalid_credentials", Msg: "password: incorrect"}

// maskEmail shows enough of an address for its owner to recognise it:
// "a***@example.org".
func maskEmail(email string) string {
	local, domain, _ := strings.Cut(email, "@")
	r, _ := utf8.DecodeRuneInString(local)
	return string(r) + "***@" + domain
}

// cancelEmailChange revokes a pending change of address: the link sent
// to the new address stops working. A session is enough (no password): it
// only ever keeps the account where it is.
func (g *Gateway) cancelEmailChange(c *fiber.Ctx) error {
	p := principalOf(c)
	cancelled, err := g.store.CancelEmailChange(p.account.ID)
	if err != nil {
		return err
	}
	if cancelled {
		g.securityEvent(c, eventEmailChangeCancelled, p.account.ID, "")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"cancelled": cancelled})
}

// emailChangeNoticeMail tells the current address that the account is
// being moved, while it can still be stopped.
func emailChangeNoticeMail(to, maskedNew, resetLink string) mail.Message {
	return mail.Message{To: to, Category: mail.CategorySecurity, Subject: "Your email address is being changed",
		Text: "Someone signed in to your account asked to change its email address to " + maskedNew + ".\n\n" +
			"The change happens only when the link we sent to that address is used; until then this address stays in use.\n\n" +
			"If this was not you, sign in, cancel the pending change from your account page and change your password. " +
			"If you cannot sign in, reset your password here first:\n\n" + resetLink + "\n"}
}

// Profile (promise R2).

// maxDisplayName bounds a display name, in characters.
const maxDisplayName = 64

type profileJSON struct {
	DisplayName string `json:"display_name"`
}

type profilePatch struct {
	DisplayName *string `json:"display_name"`
}

func (g *Gateway) getProfile(c *fiber.Ctx) error {
	pr, err := g.store.Profile(principalOf(c).account.ID)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(profileJSON{DisplayName: pr.DisplayName})
}

// patchProfile changes the fields present; an empty display name removes
// it.
func (g *Gateway) patchProfile(c *fiber.Ctx) error {
	var req profilePatch
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.DisplayName == nil {
		return badRequest("missing_field", "display_name: required (an empty string removes it)")
	}
	name, err := cleanDisplayName(*req.DisplayName)
	if err != nil {
		return err
	}
	id := principalOf(c).account.ID
	err = g.store.SetProfile(id, store.Profile{DisplayName: name})
	if errors.Is(err, store.ErrAccountInactive) {
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "account_inactive", Msg: "this account is suspended or being deleted"}
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(profileJSON{DisplayName: name})
}

// cleanDisplayName validates a display name: valid UTF-8, NFC, trimmed,
// one line of at most maxDisplayName characters, with no control or
// bidirectional-override characters (which could disguise it where it is
// shown).
func cleanDisplayName(s string) (string, error) {
	bad := badRequest("invalid_display_name", fmt.Sprintf("display_name: at most %d characters on one line, no control characters", maxDisplayName))
	if len(s) > 4*maxDisplayName+64 || !utf8.ValidString(s) {
		return "", bad
	}
	s = strings.TrimSpace(norm.NFC.String(s))
	if utf8.RuneCountInString(s) > maxDisplayName {
		return "", bad
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) ||
			(r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') || r == '\u200e' || r == '\u200f' || r == '\u061c' {
			return "", bad
		}
	}
	return strings.Clone(s), nil
}
