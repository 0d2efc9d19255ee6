package widget

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestRenderFrameEscapes(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	err := RenderFrame(&buf, Frame{
		Nonce: "abc", Host: `https://shop.example" onload="x`, Key: "pk_1", Token: "e1.t",
		Sizes: []string{"256x256", "512x512"}, DefaultSize: "512x512", Partner: "<b>Shop</b>", PrivacyURL: "/privacy",
	})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, `" onload="`) || strings.Contains(out, "<b>Shop</b>") {
		t.Errorf("frame data not escaped:\n%s", out)
	}
	var plain bytes.Buffer
	if err := RenderFrame(&plain, Frame{Nonce: "abc", Host: "https://shop.example", Sizes: []string{"512x512"}}); err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`\son[a-z]+=`).MatchString(plain.String()) {
		t.Error("the frame has an inline event handler")
	}
	if !strings.Contains(out, `<option value="512x512" selected>`) || !strings.Contains(out, `<script nonce="abc" src="/embed/frame.js">`) ||
		!strings.Contains(out, `<style nonce="abc">`) || !strings.Contains(out, `data-results=""`) {
		t.Errorf("frame page:\n%s", out)
	}
}

// TestScriptsPostOnlyToKnownOrigins guards the postMessage contract in the
// source: neither script may ever post to "*".
func TestScriptsPostOnlyToKnownOrigins(t *testing.T) {
	t.Parallel()
	for name, src := range map[string][]byte{"embed.js": Script(), "frame.js": FrameScript()} {
		if bytes.Contains(src, []byte(`"*"`)) || bytes.Contains(src, []byte(`'*'`)) {
			t.Errorf("%s posts to any origin", name)
		}
	}
	if !bytes.Contains(Script(), []byte("e.origin !== base || e.source !== frame.contentWindow")) {
		t.Error("embed.js no longer checks the sender's origin and window")
	}
	if !bytes.Contains(FrameScript(), []byte("e.source !== window.parent || e.origin !== host")) {
		t.Error("frame.js no longer checks the sender's origin and window")
	}
}
