package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/cache"

	"github.com/imagegate/imagegate/inference"
)

// paramsGateway is a gateway with just enough wiring to validate requests.
func paramsGateway() *Gateway {
	g := &Gateway{catalog: newCatalog(nil, nil)}
	g.cfg.setDefaults()
	g.catalog.set([]inference.ModelInfo{{
		Name: "retro", Version: "1", Kind: "procedural",
		Styles: []string{"auto", "synthwave", "cga"}, Sizes: []int{256, 512, 1024},
		SupportsEdits: true, CaseInsensitive: true,
	}})
	return g
}

func TestNoCacheDirectives(t *testing.T) {
	t.Parallel()
	for cc, want := range map[string]bool{
		"": false, "no-cache": true, "No-Cache": true, "max-age=0": true, "no-store": true,
		"public, no-cache": true, "max-age=60": false, "no-transform": false, "max-age=00": true,
	} {
		if got := noCache(cc); got != want {
			t.Errorf("noCache(%q) = %v, want %v", cc, got, want)
		}
	}
}

// TestValidatedPromptIsTheCanonicalOne pins that validation hands on the
// canonical form the content key hashes, so what was checked is what is
// keyed, moderated and generated.
func TestValidatedPromptIsTheCanonicalOne(t *testing.T) {
	t.Parallel()
	g := paramsGateway()
	p, err := g.validate(raw{Prompt: " Cafe\u0301\u00a0\u3000au\tlait ", NegativePrompt: "  blurry\n\nugly "})
	if err != nil {
		t.Fatal(err)
	}
	if p.Prompt != "Café au lait" || p.NegativePrompt != "blurry ugly" {
		t.Errorf("validated prompts %q / %q, want the canonical forms", p.Prompt, p.NegativePrompt)
	}
	for _, bad := range []raw{{Prompt: "\x00"}, {Prompt: "a\xffb"}, {Prompt: "\u200b\u200d"}, {Prompt: "\x00 \x01\u2028"}, {Prompt: "ok", NegativePrompt: "\x1b"}} {
		if _, err := g.validate(bad); err == nil {
			t.Errorf("validate(%+q) accepted", bad.Prompt+"|"+bad.NegativePrompt)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	g := paramsGateway()
	p, err := g.validate(raw{Prompt: "  hello  "})
	if err != nil {
		t.Fatal(err)
	}
	if p.Prompt != "hello" || p.N != 1 || p.Width != 512 || p.Height != 512 || p.Format != "url" ||
		p.Style != "auto" || p.Model.Name != "retro" || p.Steps != defaultSteps || p.Seed != nil {
		t.Errorf("defaults not applied: %+v", p)
	}
	p, err = g.validate(raw{Prompt: "x", Style: " CGA "})
	if err != nil || p.Style != "cga" {
		t.Errorf("style not normalised: %q %v", p.Style, err)
	}
}

// FuzzGenerationRequest feeds arbitrary bodies through the JSON decoder and
// validation: nothing panics, every refusal is a 4xx apiError, and every
// accepted request is within the contract.
func FuzzGenerationRequest(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"a synthwave sunset over a grid","size":"512x512"}`,
		`{"prompt":"x","n":4,"seed":4294967295,"response_format":"b64_json","style":"cga"}`,
		`{"prompt":"x","n":0}`, `{"prompt":"x","sise":"1"}`, `{"prompt":`, `[]`, `null`, `{"prompt":"x"} {}`,
		`{"prompt":"x","seed":-1}`, `{"prompt":"x","guidance":1e400}`, `{"prompt":"\u0000"}`,
		`{"prompt":"x","size":"512x512x1"}`, `{"prompt":"x","size":"-512x-512"}`,
		"{\"prompt\":\"\xff\"}", `{"prompt":"a\u0000"}`, `{"prompt":"\u200b"}`, `{"prompt":"x","negative_prompt":"\u001b[31m"}`,
		`{"prompt":"Cafe\u0301  \u3000 au\tlait"}`, `{"prompt":"x","prompt":"y"}`,
	} {
		f.Add([]byte(s))
	}
	g := paramsGateway()
	f.Fuzz(func(t *testing.T, body []byte) {
		var req generationJSON
		err := decodeJSON(body, &req)
		if err == nil {
			var p params
			p, err = g.validate(raw{
				Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, N: req.N, Size: req.Size,
				Format: req.ResponseFormat, Seed: req.Seed, Style: req.Style, Model: req.Model,
				Steps: req.Steps, Guidance: req.Guidance, Private: req.Private,
			})
			if err == nil {
				if p.Prompt == "" || p.N < 1 || p.N > maxImages || p.Width != p.Height ||
					(p.Width != 256 && p.Width != 512 && p.Width != 1024) || len(p.Prompt) > g.cfg.MaxPromptBytes ||
					(p.Format != "url" && p.Format != "b64_json") {
					t.Fatalf("accepted out-of-contract request %+v", p)
				}
				for _, text := range []string{p.Prompt, p.NegativePrompt} {
					if text != cache.CanonicalPrompt(text, false) || (text != "" && !strings.ContainsFunc(text, visible)) {
						t.Fatalf("accepted prompt %q is not canonical, or has nothing visible", text)
					}
				}
				return
			}
		}
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 || ae.Msg == "" || strings.Contains(ae.Msg, "\n") {
			t.Fatalf("refusal %v is not a clean 4xx", err)
		}
	})
}

// FuzzNoCache feeds arbitrary Cache-Control headers to noCache: nothing
// panics, directives are case-insensitive and independent of their
// neighbours, and an added no-cache always forces a fresh generation.
func FuzzNoCache(f *testing.F) {
	for _, s := range []string{"", "no-cache", "No-Store", "max-age=0", "max-age=000", "max-age=60", "public, no-cache",
		"max-age=-0", "max-age=", ",,,,", "no-cache=\"x\"", strings.Repeat("max-age=1,", 1000), "max-age=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cc string) {
		got := noCache(cc)
		if noCache(strings.ToUpper(cc)) != got && strings.ToLower(strings.ToUpper(cc)) == strings.ToLower(cc) {
			t.Fatalf("noCache(%q) depends on case", cc)
		}
		if noCache("public, "+cc) != got {
			t.Fatalf("noCache(%q) changed with a public directive before it", cc)
		}
		if !noCache(cc + ", no-cache") {
			t.Fatalf("noCache(%q + no-cache) = false", cc)
		}
	})
}
