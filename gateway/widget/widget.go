// Package widget holds the partner embed widget as it reaches browsers:
// embed.js, which a partner's page loads to insert the generator frame,
// and the frame page with its script. Assets are embedded in the binary;
// nothing is loaded from a third party. The gateway serves them and sets
// the frame's Content-Security-Policy (frame-ancestors from the partner's
// origins, a per-response script nonce).
//
// The postMessage protocol between frame and host page: the frame posts
// {type: "imagegate:ready"}, {type: "imagegate:resize", height},
// {type: "imagegate:generated"} (with url and seed only when the host
// asked for results with data-results="1"; never the prompt) and
// {type: "imagegate:error", code}, always to the exact host origin; the
// host page's embed.js accepts them only from the frame's window and the
// gateway's origin, and re-dispatches them as DOM events of those names on
// the iframe (bubbling). The host may post {type: "imagegate:set-prompt",
// prompt} to the frame, which accepts it only from its parent window at
// the host origin.
package widget

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io"
)

//go:embed assets/embed.js assets/frame.js assets/frame.html
var assets embed.FS

var (
	script      = mustRead("assets/embed.js")
	frameScript = mustRead("assets/frame.js")
	frameTmpl   = template.Must(template.ParseFS(assets, "assets/frame.html"))
)

func mustRead(name string) []byte {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time: cannot fail at run time
	}
	return b
}

// Script is embed.js.
func Script() []byte { return script }

// FrameScript is the frame page's script.
func FrameScript() []byte { return frameScript }

// ETag is a strong validator for an asset's bytes.
func ETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// Frame is what the frame page shows and knows.
type Frame struct {
	// Nonce is this response's CSP script and style nonce.
	Nonce string
	// Host is the partner page's origin: the only target of the frame's
	// messages and the only sender it listens to.
	Host string
	// Key is the publishable key, Token the embed token the frame sends
	// with its generation requests.
	Key, Token string
	// Results: the host asked to receive image links and seeds.
	Results bool
	// Sizes are the image sizes offered (the partner plan's), DefaultSize
	// the one preselected.
	Sizes       []string
	DefaultSize string
	// Partner names the partner; PrivacyURL is this site's privacy page.
	Partner, PrivacyURL string
}

// RenderFrame writes the frame page.
func RenderFrame(w io.Writer, f Frame) error { return frameTmpl.Execute(w, f) }
