package gateway

import (
	"html/template"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// The few pages the gateway serves itself: the targets of emailed links
// and the cookie policy. They are plain HTML forms with no script at all,
// so the policy forbids every script, style and connection (promise K3:
// no third-party anything); forms may post only to this site.
const pageCSP = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title></head>
<body>
<h1>{{.Title}}</h1>
{{if .Message}}<p>{{.Message}}</p>{{end}}
{{if .Action}}<form method="post" action="{{.Action}}">
<input type="hidden" name="token" value="{{.Token}}">
{{if .Password}}<label>New password <input type="password" name="new_password" autocomplete="new-password" minlength="10" required></label>
<fieldset><legend>Your API keys</legend>
<label><input type="radio" name="api_keys" value="revoke" checked> Revoke them (choose this if a key may have leaked; programs using them stop working)</label>
<label><input type="radio" name="api_keys" value="flag"> Keep them working, flagged for review in the key list</label>
</fieldset>{{end}}
<button type="submit">{{.Button}}</button>
</form>{{end}}
</body></html>
`))

type pageData struct {
	Title, Message string
	Action, Token  string
	Password       bool
	Button         string
}

func (g *Gateway) render(c *fiber.Ctx, d pageData) error {
	var b strings.Builder
	if err := pageTemplate.Execute(&b, d); err != nil {
		return err
	}
	c.Set("Content-Security-Policy", pageCSP)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.SendString(b.String())
}

// page renders a message.
func (g *Gateway) page(c *fiber.Ctx, title, message string) error {
	return g.render(c, pageData{Title: title, Message: message})
}

// resetPage is where the emailed reset link lands: a form that posts the
// token and the new password. Opening it changes nothing, so mail scanners
// that fetch links cannot spend the token.
func (g *Gateway) resetPage(c *fiber.Ctx) error {
	return g.render(c, pageData{Title: "Choose a new password", Action: "/v1/auth/password-reset/confirm",
		Token: strings.Clone(c.Query("token")), Password: true, Button: "Set password"})
}

// verifyPage is where the emailed verification link lands.
func (g *Gateway) verifyPage(c *fiber.Ctx) error {
	return g.render(c, pageData{Title: "Confirm your email address", Action: "/v1/auth/verify-email",
		Token: strings.Clone(c.Query("token")), Button: "Confirm"})
}
