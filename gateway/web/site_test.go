package web

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEveryPageRenders renders each page with representative data and
// checks what the pages promise: the nonce on the one script, no inline
// handlers or styles, and retro described as procedural.
func TestEveryPageRenders(t *testing.T) {
	t.Parallel()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	home := Home{MaxPrompt: 1000, N: 1, Strength: "0.6", Sizes: []string{"512x512"},
		Models:  []Model{{Name: "retro", Procedural: true, Styles: []string{"synthwave"}}, {Name: "sdxl", Styles: []string{"photo"}}},
		Results: []Image{{URL: "/o/abc.png?sig=1", Width: 512, Height: 512, Seed: 7}}, Prompt: "a cat"}
	pages := map[string]any{
		"home":     home,
		"gallery":  Gallery{Items: []GalleryItem{{ID: "g1", URL: "/o/a.png", Prompt: "p", Expires: time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC)}}},
		"signup":   Auth{Google: true},
		"signin":   Auth{},
		"reset":    Reset{Token: "t"},
		"verify":   Verify{Token: "t"},
		"message":  Message{Message: "m"},
		"account":  Account{Email: "a@example.com", HasPassword: true, Keys: []APIKey{{ID: "k", Name: "n", Hint: "sk_ab…"}}},
		"cookies":  Cookies{Revision: 1, Cookies: []Cookie{{Name: "c", Category: "necessary"}}},
		"pricing":  Pricing{Plans: []Plan{{Name: "free", Credits: 10}}},
		"terms":    nil,
		"notfound": nil,
		"privacy":  nil,
	}
	inlineHandler := regexp.MustCompile(`(?i)\son[a-z]+=|\sstyle=|<style|javascript:`)
	for name, data := range pages {
		if name == "privacy" {
			continue // needs the gateway's policy data; rendered by its tests
		}
		var b bytes.Buffer
		l := Layout{Title: name, Nonce: "n0nce", Path: "/", Banner: Banner{Show: true, GPC: true}}
		if err := s.Render(&b, name, l, data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		html := b.String()
		if !strings.Contains(html, `nonce="n0nce"`) || strings.Count(html, "<script") != 1 {
			t.Errorf("%s: want exactly one script, with the nonce", name)
		}
		if m := inlineHandler.FindString(html); m != "" {
			t.Errorf("%s: inline handler or style %q", name, m)
		}
		if !strings.Contains(html, `id="cookie-accept"`) || !strings.Contains(html, `id="cookie-reject"`) || !strings.Contains(html, `id="gpc-note"`) {
			t.Errorf("%s: banner without accept, reject or the GPC note", name)
		}
	}
	var b bytes.Buffer
	if err := s.Render(&b, "home", Layout{}, home); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "procedural generator") || !strings.Contains(b.String(), "not a neural model") {
		t.Error("home: retro is not described as a procedural generator")
	}
	if err := s.Render(&b, "nope", Layout{}, nil); err == nil {
		t.Error("unknown page rendered")
	}
}

// TestScriptBudget holds the pages to their budget: all script under
// 30 KiB gzip.
func TestScriptBudget(t *testing.T) {
	t.Parallel()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if n := s.ScriptGzipSize(); n == 0 || n > 30<<10 {
		t.Errorf("scripts are %d bytes gzipped, budget 30 KiB", n)
	}
}

func TestCSP(t *testing.T) {
	t.Parallel()
	got := CSP("abc", []string{"https://cdn.example"}, []string{"https://checkout.stripe.com"})
	for _, want := range []string{"script-src 'nonce-abc' 'strict-dynamic'", "style-src 'self'", "img-src 'self' https://cdn.example",
		"form-action 'self' https://checkout.stripe.com", "frame-ancestors 'none'", "default-src 'none'", "object-src 'none'"} {
		if !strings.Contains(got, want) {
			t.Errorf("CSP %q lacks %q", got, want)
		}
	}
	if a, b := Nonce(), Nonce(); a == b || len(a) < 22 {
		t.Errorf("nonces %q %q are not fresh 128-bit values", a, b)
	}
}
