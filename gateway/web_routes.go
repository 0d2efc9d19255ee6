package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/consent"
	"github.com/imagegate/imagegate/gateway/web"
	"github.com/imagegate/imagegate/store"
)

// The website (issue 11). Package web renders; this file gathers each
// page's data from the principal, the store and the consent state, and
// turns the pages' form posts into calls of the very handlers the JSON API
// uses (callAPI), so a form and an API client pass the same checks and
// leave the same security-log rows. Forms need no CSRF token: crossOrigin
// refuses state-changing requests that do not come from these pages.

// stripeOrigins are where Checkout and the billing portal live: a form
// post redirected there must be allowed by form-action.
var stripeOrigins = []string{"https://checkout.stripe.com", "https://billing.stripe.com"}

// webRoutes registers the pages and their form handlers. with is the
// standard chain (body limit, identify, rate limit, GPC).
func (g *Gateway) webRoutes(app fiber.Router, with func(...fiber.Handler) []fiber.Handler, limit func(int) fiber.Handler) {
	signedIn := func(hs ...fiber.Handler) []fiber.Handler {
		return with(append([]fiber.Handler{pageAccount}, hs...)...)
	}
	app.Get("/assets/:name", limit(g.cfg.RateLimits.Costs.Default), g.asset)

	app.Get("/", with(g.homePage)...)
	// The generator form carries a reference image: no small-body limit,
	// and it is charged like the API routes it calls.
	app.Post("/generate", g.identify, limit(g.cfg.RateLimits.Costs.GenerationHit), g.gpcOptOut, g.generateForm)

	app.Get("/signup", with(g.signupPage)...)
	app.Post("/signup", with(g.signupForm)...)
	app.Get("/signin", with(g.signinPage)...)
	app.Post("/signin", with(g.signinForm)...)
	app.Post("/signout", with(g.signoutForm)...)
	app.Get("/reset-password", with(g.resetPage)...)
	app.Post("/reset-password", with(g.resetRequestForm)...)
	app.Post("/reset-password/confirm", with(g.resetConfirmForm)...)
	app.Get("/verify-email", with(g.verifyPage)...)
	app.Post("/verify-email", with(g.verifyForm)...)

	app.Get("/gallery", signedIn(g.galleryPage)...)
	app.Post("/gallery/:id/delete", signedIn(g.galleryDeleteForm)...)

	app.Get("/account", signedIn(g.accountPage)...)
	app.Post("/account/profile", signedIn(g.profileForm)...)
	app.Post("/account/email", signedIn(g.emailForm)...)
	app.Post("/account/password", signedIn(g.passwordForm)...)
	app.Post("/account/signout-all", signedIn(g.signoutAllForm)...)
	app.Post("/account/settings", signedIn(g.settingsForm)...)
	app.Post("/account/api-keys", signedIn(g.apiKeyForm)...)
	app.Post("/account/api-keys/:id/delete", signedIn(g.apiKeyDeleteForm)...)
	app.Post("/account/delete", signedIn(g.deleteAccountForm)...)

	app.Get("/cookies", with(g.cookiesWebPage)...)
	app.Post("/cookies", with(g.consentForm)...)
	app.Get("/terms", with(g.staticPage("terms", "Terms of use"))...)
	app.Get("/pricing", with(g.pricingPage)...)
	app.Post("/pricing/checkout", signedIn(g.checkoutForm)...)
	app.Post("/pricing/portal", signedIn(g.portalForm)...)
}

// pageAccount sends visitors who are not signed in to the sign-in page,
// and back here afterwards.
func pageAccount(c *fiber.Ctx) error {
	if principalOf(c).account != nil {
		return c.Next()
	}
	next := "/"
	if c.Method() == fiber.MethodGet {
		next = c.Path()
	}
	return c.Redirect("/signin?next="+url.QueryEscape(next), fiber.StatusSeeOther)
}

// localPath accepts only a path on this site as a redirect target, so
// ?next= and return= cannot send a visitor elsewhere.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return "/"
	}
	return p
}

// layout is what every page shows around its content for this request.
func (g *Gateway) layout(c *fiber.Ctx, title string) web.Layout {
	l := web.Layout{Title: title, Nonce: web.Nonce(), Path: strings.Clone(c.Path()), Banner: g.banner(c)}
	if a := principalOf(c).account; a != nil {
		l.User = &web.User{Email: a.Email, Verified: a.EmailVerified, Plan: a.Plan, Credits: a.Available()}
	}
	if n := c.Query("done"); n != "" {
		l.Notice = notices[n]
	}
	switch c.Query("checkout") { // Stripe Checkout's success and cancel URLs
	case "success":
		l.Notice = "Thank you. Your credits arrive as soon as Stripe confirms the payment."
	case "cancel":
		l.Notice = "Checkout cancelled; nothing was charged."
	}
	return l
}

// notices are the fixed messages a redirect may ask for (?done=): only
// these, so no text from the URL is ever shown.
var notices = map[string]string{
	"deleted":   "Image deleted.",
	"profile":   "Profile saved.",
	"email":     "We sent a confirmation link to the new address; your address changes only when that link is used.",
	"password":  "Password changed. Every other session was signed out.",
	"settings":  "Privacy choices saved.",
	"revoked":   "API key revoked.",
	"signedout": "You were signed out everywhere.",
	"consent":   "Cookie choices saved.",
	"signedin":  "Signed in.",
}

// banner is the visitor's cookie choice as the pages show it.
func (g *Gateway) banner(c *fiber.Ctx) web.Banner {
	s := consentOf(c)
	v := g.consentView(s)
	b := web.Banner{Show: !v.Decided, Stale: v.Stale, GPC: v.GPC, Preferences: v.Preferences, Analytics: v.Analytics, Revision: v.Revision}
	b.Count = g.analyticsAllowed(c)
	return b
}

// renderPage writes a page with its own CSP (a fresh nonce) and no
// caching: pages show the visitor's own state.
func (g *Gateway) renderPage(c *fiber.Ctx, status int, page string, l web.Layout, data any) error {
	var imgOrigins, formOrigins []string
	if base := g.baseURL(c); base != c.Protocol()+"://"+string(c.Request().Host()) {
		imgOrigins = append(imgOrigins, base)
	}
	if g.billing != nil {
		formOrigins = append(formOrigins, stripeOrigins...)
	}
	if g.googleEnabled() {
		// The Google sign-up form's GET is redirected to Google's
		// consent screen, which form-action must allow.
		if u, err := url.Parse(g.cfg.Google.AuthURL); err == nil && u.Host != "" {
			formOrigins = append(formOrigins, u.Scheme+"://"+u.Host)
		}
	}
	var b bytes.Buffer
	if err := g.site.Render(&b, page, l, data); err != nil {
		return err
	}
	c.Set("Content-Security-Policy", web.CSP(l.Nonce, imgOrigins, formOrigins))
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(b.Bytes())
}

// asset serves the embedded CSS and script. A URL with the current
// version (?v=) is cached for a year; any other for no time.
func (g *Gateway) asset(c *fiber.Ctx) error {
	a, ok := g.site.Asset(c.Params("name"))
	if !ok {
		return fiber.ErrNotFound
	}
	if c.Query("v") == a.Version {
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	c.Set(fiber.HeaderContentType, a.ContentType)
	return c.Send(a.Body)
}

// notFound answers unknown paths: a page for browsers, the API's JSON
// error for everything else.
func (g *Gateway) notFound(c *fiber.Ctx) error {
	if strings.HasPrefix(c.Path(), "/v1/") || !strings.Contains(c.Get(fiber.HeaderAccept), "text/html") {
		return fiber.ErrNotFound
	}
	return g.renderPage(c, fiber.StatusNotFound, "notfound", g.layout(c, "Page not found"), nil)
}

func (g *Gateway) staticPage(page, title string) fiber.Handler {
	return func(c *fiber.Ctx) error { return g.renderPage(c, fiber.StatusOK, page, g.layout(c, title), nil) }
}

// callAPI runs a JSON API handler for a form: the request body becomes
// body as JSON (nil: empty), the handler runs with every check it makes
// for API clients, and its status and JSON answer come back for the page
// to show; the answer is not sent. Cookies it sets (a session) stay.
func callAPI(c *fiber.Ctx, h fiber.Handler, body any) (int, []byte, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	c.Request().Header.SetContentType(fiber.MIMEApplicationJSON)
	c.Request().SetBody(raw)
	err := h(c)
	status := c.Response().StatusCode()
	out := bytes.Clone(c.Response().Body())
	c.Response().ResetBody()
	c.Response().Header.Del("Cache-Status")
	c.Status(fiber.StatusOK)
	return status, out, err
}

// formError is the message a page shows for a refused form: the API's
// public message for a 4xx. Anything else is returned to the error
// handler.
func formError(err error) (string, int, bool) {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
		return ae.Msg, ae.Status, true
	}
	return "", 0, false
}

// models is the model list the generator offers, with the sizes the
// visitor's plan allows (maxSize; 0: all).
func (g *Gateway) models(maxSize int) ([]web.Model, []string) {
	var out []web.Model
	var sizes []int
	for _, m := range g.catalog.list() {
		out = append(out, web.Model{Name: m.Name, Description: m.Description, Procedural: m.Kind == "procedural", Styles: m.Styles})
		for _, s := range m.Sizes {
			if !slices.Contains(sizes, s) && (maxSize == 0 || s <= maxSize) {
				sizes = append(sizes, s)
			}
		}
	}
	slices.Sort(sizes)
	names := make([]string, len(sizes))
	for i, s := range sizes {
		names[i] = strconv.Itoa(s) + "x" + strconv.Itoa(s)
	}
	return out, names
}

func (g *Gateway) homeData(c *fiber.Ctx) web.Home {
	models, sizes := g.models(g.payerOf(c).plan.MaxSize)
	h := web.Home{MaxPrompt: g.cfg.MaxPromptBytes, N: 1, Strength: "0.6", Models: models, Sizes: sizes, Model: g.cfg.DefaultModel}
	if slices.Contains(sizes, "512x512") {
		h.Size = "512x512"
	}
	return h
}

func (g *Gateway) homePage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "home", g.layout(c, "Generate"), g.homeData(c))
}

// generateForm is the generator without script: a multipart post of the
// form. With a reference image it is exactly the edit API's request, so
// that handler reads it as is; without, its fields become the generation
// API's JSON.
func (g *Gateway) generateForm(c *fiber.Ctx) error {
	h := g.homeData(c)
	l := g.layout(c, "Generate")
	// A browser's reload sends Cache-Control, which the API reads as "skip
	// the cache": a page must never force a regeneration.
	c.Request().Header.Del(fiber.HeaderCacheControl)
	form, err := c.MultipartForm()
	if err != nil {
		l.Error = "The form could not be read; please try again."
		return g.renderPage(c, fiber.StatusBadRequest, "home", l, h)
	}
	val := func(name string) string {
		if vs := form.Value[name]; len(vs) > 0 {
			return strings.Clone(vs[0])
		}
		return ""
	}
	h.Prompt, h.Model, h.Style, h.Size, h.Seed = val("prompt"), val("model"), val("style"), val("size"), val("seed")
	if s := val("strength"); s != "" {
		h.Strength = s
	}
	if n, err := strconv.Atoi(val("n")); err == nil {
		h.N = n
	}
	var status int
	var out []byte
	if files := form.File["image"]; len(files) == 1 && files[0].Size > 0 {
		h.Edit = true
		err = g.edits(c)
		status, out = c.Response().StatusCode(), bytes.Clone(c.Response().Body())
		c.Response().ResetBody()
		c.Status(fiber.StatusOK)
	} else {
		req := map[string]any{"prompt": h.Prompt}
		for _, k := range []string{"model", "style", "size"} {
			if v := val(k); v != "" {
				req[k] = v
			}
		}
		for _, k := range []string{"n", "seed"} {
			if v := val(k); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					l.Error = k + ": must be a whole number"
					return g.renderPage(c, fiber.StatusBadRequest, "home", l, h)
				}
				req[k] = n
			}
		}
		status, out, err = callAPI(c, g.generations, req)
	}
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l.Error = msg
		return g.renderPage(c, code, "home", l, h)
	}
	if status != fiber.StatusOK {
		return g.renderPage(c, status, "home", l, h)
	}
	var resp imagesResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return err
	}
	w, ht, _ := parseSize(h.Size)
	for _, d := range resp.Data {
		h.Results = append(h.Results, web.Image{URL: d.URL, Width: w, Height: ht, Seed: d.Seed})
	}
	return g.renderPage(c, fiber.StatusOK, "home", l, h)
}

func (g *Gateway) googleEnabled() bool { return g.cfg.Google.ClientID != "" }

func (g *Gateway) signupPage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "signup", g.layout(c, "Sign up"), web.Auth{Google: g.googleEnabled()})
}

func (g *Gateway) signupForm(c *fiber.Ctx) error {
	d := web.Auth{Email: strings.Clone(c.FormValue("email")), Google: g.googleEnabled()}
	over18 := c.FormValue("over_18") == "on"
	_, _, err := callAPI(c, g.signup, signupJSON{Email: d.Email, Password: c.FormValue("password"), Over18: &over18})
	l := g.layout(c, "Sign up")
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l.Error = msg
		return g.renderPage(c, code, "signup", l, d)
	}
	d.Sent = true
	return g.renderPage(c, fiber.StatusOK, "signup", l, d)
}

func (g *Gateway) signinPage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "signin", g.layout(c, "Sign in"), web.Auth{Google: g.googleEnabled()})
}

func (g *Gateway) signinForm(c *fiber.Ctx) error {
	email := strings.Clone(c.FormValue("email"))
	next := localPath(c.Query("next", "/"))
	_, _, err := callAPI(c, g.login, loginJSON{Email: email, Password: c.FormValue("password")})
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l := g.layout(c, "Sign in")
		l.Error = msg
		return g.renderPage(c, code, "signin", l, web.Auth{Email: email, Google: g.googleEnabled()})
	}
	return c.Redirect(next, fiber.StatusSeeOther)
}

func (g *Gateway) signoutForm(c *fiber.Ctx) error {
	if principalOf(c).account != nil {
		if _, _, err := callAPI(c, g.logout, nil); err != nil {
			return err
		}
	}
	return c.Redirect("/", fiber.StatusSeeOther)
}

// resetPage is where the emailed reset link lands: a form that posts the
// token and the new password. Opening it changes nothing, so mail scanners
// that fetch links cannot spend the token. Without a token it asks for
// the address to send a link to.
func (g *Gateway) resetPage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "reset", g.layout(c, "Reset your password"), web.Reset{Token: strings.Clone(c.Query("token"))})
}

func (g *Gateway) resetRequestForm(c *fiber.Ctx) error {
	_, _, err := callAPI(c, g.requestReset, resetJSON{Email: strings.Clone(c.FormValue("email"))})
	l := g.layout(c, "Reset your password")
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l.Error = msg
		return g.renderPage(c, code, "reset", l, web.Reset{})
	}
	return g.renderPage(c, fiber.StatusOK, "reset", l, web.Reset{Sent: true})
}

func (g *Gateway) resetConfirmForm(c *fiber.Ctx) error {
	token := strings.Clone(c.FormValue("token"))
	_, _, err := callAPI(c, g.confirmReset, resetConfirmJSON{Token: token, NewPassword: c.FormValue("new_password"), APIKeys: strings.Clone(c.FormValue("api_keys"))})
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l := g.layout(c, "Choose a new password")
		l.Error = msg
		return g.renderPage(c, code, "reset", l, web.Reset{Token: token})
	}
	return g.message(c, "Password changed", "Your password was changed and every session was signed out. Sign in with the new password.", "/signin", "Sign in")
}

// verifyPage is where the emailed verification link lands: opening it
// changes nothing; the button confirms.
func (g *Gateway) verifyPage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "verify", g.layout(c, "Confirm your email address"), web.Verify{Token: strings.Clone(c.Query("token"))})
}

func (g *Gateway) verifyForm(c *fiber.Ctx) error {
	_, _, err := callAPI(c, g.verifyEmail, verifyJSON{Token: strings.Clone(c.FormValue("token"))})
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l := g.layout(c, "Confirm your email address")
		l.Error = msg
		return g.renderPage(c, code, "message", l, web.Message{Message: "Ask for a new link from your account page.", Link: "/account", LinkText: "Account"})
	}
	return g.message(c, "Address confirmed", "Your email address is confirmed.", "/", "Make an image")
}

// message renders a one-message page.
func (g *Gateway) message(c *fiber.Ctx, title, msg, link, linkText string) error {
	return g.renderPage(c, fiber.StatusOK, "message", g.layout(c, title), web.Message{Message: msg, Link: link, LinkText: linkText})
}

func (g *Gateway) galleryPage(c *fiber.Ctx) error {
	status, out, err := callAPI(c, g.listGenerations, nil)
	if err != nil {
		return err
	}
	if status != fiber.StatusOK {
		return fiber.NewError(status)
	}
	var list struct {
		Data []historyEntryJSON `json:"data"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return err
	}
	var d web.Gallery
	for _, e := range list.Data {
		d.Items = append(d.Items, web.GalleryItem{ID: e.ID, URL: e.URL, Prompt: e.Prompt, Model: e.Model, Style: e.Style,
			Width: e.Width, Height: e.Height, Seed: e.Seed, Edit: e.Edit, Expires: e.Expires})
	}
	return g.renderPage(c, fiber.StatusOK, "gallery", g.layout(c, "Gallery"), d)
}

func (g *Gateway) galleryDeleteForm(c *fiber.Ctx) error {
	if _, _, err := callAPI(c, g.deleteGeneration, nil); err != nil {
		if _, _, ok := formError(err); !ok {
			return err
		}
	}
	return c.Redirect("/gallery?done=deleted", fiber.StatusSeeOther)
}

// accountData is the account centre's content for the signed-in account.
func (g *Gateway) accountData(c *fiber.Ctx) (web.Account, error) {
	a := principalOf(c).account
	d := web.Account{Email: a.Email, Plan: a.Plan, Credits: a.Available(), Verified: a.EmailVerified,
		HasPassword: a.PasswordHash != "", GPC: consentOf(c).GPC}
	s := settingsView(a.Settings, d.GPC)
	d.Settings = web.Settings{Analytics: s.Analytics, ModelImprovement: s.ModelImprovement, ProductEmail: s.ProductEmail}
	prof, err := g.store.Profile(a.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return d, err
	}
	d.DisplayName = prof.DisplayName
	keys, err := g.store.APIKeys(a.ID)
	if err != nil {
		return d, err
	}
	for _, k := range keys {
		v := apiKeyView(k)
		d.Keys = append(d.Keys, web.APIKey{ID: v.ID, Name: v.Name, Hint: v.Hint, Scopes: v.Scopes, Flagged: v.FlaggedBy != "", Created: k.Created})
	}
	return d, nil
}

func (g *Gateway) accountPage(c *fiber.Ctx) error {
	return g.renderAccount(c, fiber.StatusOK, "", "")
}

func (g *Gateway) renderAccount(c *fiber.Ctx, status int, errMsg, newKey string) error {
	d, err := g.accountData(c)
	if err != nil {
		return err
	}
	d.NewKey = newKey
	l := g.layout(c, "Account")
	l.Path = "/account"
	l.Error = errMsg
	return g.renderPage(c, status, "account", l, d)
}

// accountForm runs an account API handler for a form and redirects to
// the account page with a notice, or shows the account page with the
// API's message.
func (g *Gateway) accountForm(c *fiber.Ctx, h fiber.Handler, body any, done string) error {
	if _, _, err := callAPI(c, h, body); err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		return g.renderAccount(c, code, msg, "")
	}
	return c.Redirect("/account?done="+done, fiber.StatusSeeOther)
}

func (g *Gateway) profileForm(c *fiber.Ctx) error {
	name := strings.Clone(c.FormValue("display_name"))
	return g.accountForm(c, g.patchProfile, profilePatch{DisplayName: &name}, "profile")
}

func (g *Gateway) emailForm(c *fiber.Ctx) error {
	return g.accountForm(c, g.changeEmail, emailChangeJSON{NewEmail: strings.Clone(c.FormValue("new_email")), Password: c.FormValue("password")}, "email")
}

func (g *Gateway) passwordForm(c *fiber.Ctx) error {
	return g.accountForm(c, g.changePassword, passwordJSON{CurrentPassword: c.FormValue("current_password"), NewPassword: c.FormValue("new_password"), APIKeys: strings.Clone(c.FormValue("api_keys"))}, "password")
}

func (g *Gateway) signoutAllForm(c *fiber.Ctx) error {
	if _, _, err := callAPI(c, g.logoutAll, nil); err != nil {
		return err
	}
	return c.Redirect("/signin?done=signedout", fiber.StatusSeeOther)
}

func (g *Gateway) settingsForm(c *fiber.Ctx) error {
	on := func(name string) *bool { b := c.FormValue(name) == "on"; return &b }
	req := settingsPut{ProductEmail: on("product_email"), Analytics: on("analytics"), ModelImprovement: on("model_improvement")}
	return g.accountForm(c, g.putSettings, req, "settings")
}

func (g *Gateway) apiKeyForm(c *fiber.Ctx) error {
	req := newKeyJSON{Name: strings.Clone(c.FormValue("name"))}
	// The form's checkboxes name the scopes; none ticked keeps the default.
	if args := c.Request().PostArgs().PeekMulti("scope"); len(args) > 0 {
		scopes := make([]string, len(args))
		for i, a := range args {
			scopes[i] = string(a)
		}
		req.Scopes = &scopes
	}
	_, out, err := callAPI(c, g.createAPIKey, req)
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		return g.renderAccount(c, code, msg, "")
	}
	var k apiKeyJSON
	if err := json.Unmarshal(out, &k); err != nil {
		return err
	}
	return g.renderAccount(c, fiber.StatusOK, "", k.Key)
}

func (g *Gateway) apiKeyDeleteForm(c *fiber.Ctx) error {
	return g.accountForm(c, g.deleteAPIKey, nil, "revoked")
}

// deleteAccountForm erases the account once the visitor ticked the
// confirmation; the API handler re-checks the password.
func (g *Gateway) deleteAccountForm(c *fiber.Ctx) error {
	if c.FormValue("confirm") != "yes" {
		return g.renderAccount(c, fiber.StatusBadRequest, "Tick the confirmation to delete the account.", "")
	}
	if _, _, err := callAPI(c, g.deleteAccount, deleteAccountJSON{Password: c.FormValue("password")}); err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		return g.renderAccount(c, code, msg, "")
	}
	l := g.layout(c, "Account deleted")
	l.User = nil
	return g.renderPage(c, fiber.StatusOK, "message", l, web.Message{
		Message: "Your account is being deleted. A confirmation email follows when everything is gone.", Link: "/", LinkText: "Home"})
}

func (g *Gateway) cookiesWebPage(c *fiber.Ctx) error {
	d := web.Cookies{Updated: g.cfg.CookiePolicyUpdated, Revision: g.cfg.CookiePolicyRevision}
	for _, s := range consent.Cookies() {
		d.Cookies = append(d.Cookies, web.Cookie{Name: s.Name, Category: string(s.Category), Purpose: s.Purpose, Lifetime: s.Lifetime})
	}
	return g.renderPage(c, fiber.StatusOK, "cookies", g.layout(c, "Cookies"), d)
}

// consentForm records a choice posted by the banner or the preferences
// page without script: accept and reject are one call with true or
// false, as in the API (promise K1).
func (g *Gateway) consentForm(c *fiber.Ctx) error {
	back := localPath(c.FormValue("return"))
	prefs, analytics := c.FormValue("preferences") == "on", c.FormValue("analytics") == "on"
	switch c.FormValue("choice") {
	case "accept":
		prefs, analytics = true, true
	case "reject":
		prefs, analytics = false, false
	}
	source := store.ConsentBanner
	if back == "/cookies" {
		source = store.ConsentSettings
	}
	if _, _, err := callAPI(c, g.putConsent, consentPut{Preferences: &prefs, Analytics: &analytics, Source: source}); err != nil {
		return err
	}
	if back == "/cookies" {
		back += "?done=consent"
	}
	return c.Redirect(back, fiber.StatusSeeOther)
}

func (g *Gateway) pricingPage(c *fiber.Ctx) error {
	var d web.Pricing
	for name, p := range g.cfg.Plans.Plans {
		if name != planAnonymous {
			d.Plans = append(d.Plans, web.Plan{Name: name, Credits: p.MonthlyCredits, MaxSize: p.MaxSize, RetentionDays: p.RetentionDays})
		}
	}
	slices.SortFunc(d.Plans, func(a, b web.Plan) int { return int(a.Credits - b.Credits) })
	if g.billing != nil {
		d.Billing = true
		cat := g.billing.catalogueView()
		for _, p := range cat.Packs {
			d.Packs = append(d.Packs, web.Offer{Name: p.Name, Credits: p.Credits})
		}
		for _, s := range cat.Subscriptions {
			d.Subscriptions = append(d.Subscriptions, web.Offer{Name: s.Name, Plan: s.Plan, Credits: s.CreditsPerPeriod})
		}
	}
	return g.renderPage(c, fiber.StatusOK, "pricing", g.layout(c, "Pricing"), d)
}

// checkoutForm and portalForm send the visitor on to Stripe.
func (g *Gateway) checkoutForm(c *fiber.Ctx) error {
	return g.stripeRedirect(c, g.billingCheckout, checkoutJSON{Pack: strings.Clone(c.FormValue("pack")), Plan: strings.Clone(c.FormValue("plan"))})
}

func (g *Gateway) portalForm(c *fiber.Ctx) error { return g.stripeRedirect(c, g.billingPortal, nil) }

func (g *Gateway) stripeRedirect(c *fiber.Ctx, h fiber.Handler, body any) error {
	if g.billing == nil {
		return c.Redirect("/pricing", fiber.StatusSeeOther)
	}
	_, out, err := callAPI(c, h, body)
	if err != nil {
		msg, code, ok := formError(err)
		if !ok {
			return err
		}
		l := g.layout(c, "Pricing")
		l.Error = msg
		return g.renderPage(c, code, "message", l, web.Message{Message: "Nothing was charged.", Link: "/pricing", LinkText: "Back to pricing"})
	}
	var r struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(out, &r); err != nil || !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://") {
		return errors.New("gateway: stripe answered without a redirect url")
	}
	return c.Redirect(r.URL, fiber.StatusSeeOther)
}
