package moderation

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		errs []string // substrings, all reported at once
	}{
		{name: "zero value", cfg: Config{}},
		{name: "rules and a classifier", cfg: Config{
			Block: []string{"sexual", "illicit"},
			Rules: []Rule{{Category: "sexual", Terms: []string{"nud*", "adult film"}, Patterns: []string{`\bxxx+\b`}}},
			Classifier: ClassifierConfig{URL: "https://api.openai.com/v1/moderations", Token: "sk-test", Model: "omni-moderation-latest",
				Timeout: 2 * time.Second, FailOpen: true},
		}},
		{name: "loopback http classifier", cfg: Config{Classifier: ClassifierConfig{URL: "http://127.0.0.1:9000/moderate"}}},
		{name: "everything wrong", cfg: Config{
			Block: []string{"Sexual Content"},
			Rules: []Rule{
				{Category: "bad category!", Terms: []string{"x"}},
				{Category: "sexual"},
				{Category: "sexual", Terms: []string{"***", "fo*o"}, Patterns: []string{"(unclosed"}},
			},
			Classifier: ClassifierConfig{URL: "http://classifier.example.com/", Timeout: time.Hour},
			LegalHold:  30 * 24 * time.Hour,
		}, errs: []string{
			`block: "Sexual Content"`, `rule 1: category "bad category!"`, "rule 2: needs terms or patterns",
			`term "***" has no letters`, `term "fo*o": * may only end a word`, `pattern "(unclosed"`,
			"must be https", "timeout must be between", "at least one year",
		}},
		{name: "classifier settings without a url", cfg: Config{Classifier: ClassifierConfig{Token: "t", FailOpen: true}},
			errs: []string{"need a classifier url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testpeer.CheckValidation(t, tc.cfg.Validate(), tc.errs)
		})
	}
	var c Config
	c.Validate()
	if diff := cmp.Diff(defaultBlock, c.Block); diff != "" || c.Classifier.Timeout != 5*time.Second || c.LegalHold != 365*24*time.Hour {
		t.Errorf("defaults: block (-want +got) %s, timeout %v, hold %v", diff, c.Classifier.Timeout, c.LegalHold)
	}
	empty := Config{Block: []string{}}
	empty.Validate()
	if len(empty.Block) != 0 {
		t.Errorf("an explicitly empty block list was replaced by the defaults: %v", empty.Block)
	}
}

// testRules are the operator rules the matching tests use, besides the
// built-in ones.
var testRules = []Rule{
	{Category: categorySexual, Terms: []string{"nud*", "ass", "forbidden fruit"}},
	{Category: categoryViolence, Terms: []string{"blood bath", "殺す"}, Patterns: []string{`\bbehead(ing|ed)?\b`}},
	{Category: categoryHate, Terms: []string{"голый"}},
}

func testPolicy(t testing.TB) *policy {
	t.Helper()
	p, err := newPolicy(append(slices.Clone(builtinRules), testRules...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyMatching(t *testing.T) {
	t.Parallel()
	p := testPolicy(t)
	for _, tc := range []struct {
		text string
		want []string
	}{
		// Word boundaries: a term never matches inside another word.
		{"a classic bass guitar", nil},
		{"a glass of water", nil},
		{"the passage of time", nil},
		{"a lollipop for the kids", nil},
		{"a kid flying a kite", nil},
		{"an assassin in the rain", nil},
		{"a denuded hillside", nil},
		{"forbidden", nil},
		{"fruit forbidden", nil},
		{"the year 1337 in neon", nil},
		{"bloodbath", nil},
		// Plain matches, prefix terms, multi-word terms.
		{"kick his ass", []string{categorySexual}},
		{"a nude figure", []string{categorySexual}},
		{"nudity and art", []string{categorySexual}},
		{"the forbidden fruit", []string{categorySexual}},
		{"forbidden-fruit", []string{categorySexual}},
		{"forbidden\n\t fruit!", []string{categorySexual}},
		{"a blood bath", []string{categoryViolence}},
		{"beheading", []string{categoryViolence}},
		// Normalisation: case, width, accents, styled letters, invisible
		// characters, look-alike letters, leetspeak, spelled-out letters.
		{"A NUDE FIGURE", []string{categorySexual}},
		{"ｎｕｄｅ", []string{categorySexual}},
		{"nüde", []string{categorySexual}},
		{"𝐧𝐮𝐝𝐞", []string{categorySexual}},
		{"nu\u200bde", []string{categorySexual}},
		{"nu\u00adde", []string{categorySexual}},
		{"nudе", []string{categorySexual}}, // Cyrillic е
		{"n u d e", []string{categorySexual}},
		{"n.u.d.e", []string{categorySexual}},
		{"nud3", []string{categorySexual}},
		{"@ss", []string{categorySexual}},
		{"BEHEADED", []string{categoryViolence}},
		// Scripts: Cyrillic terms, and Japanese written without spaces.
		{"ГОЛЫЙ человек", []string{categoryHate}},
		{"彼を殺すな", []string{categoryViolence}},
		// Apparent CSAM: standalone terms, and minors only with a sexual
		// term.
		{"loli", []string{categorySexualMinors}},
		{"L0LI art", []string{categorySexualMinors}},
		{"child porn", []string{categorySexualMinors}},
		{"CHILD-PORNOGRAPHY", []string{categorySexualMinors}},
		{"a naked kid", []string{categorySexualMinors}},
		{"nsfw schoolgirl", []string{categorySexualMinors}},
		{"12yo nsfw", []string{categorySexualMinors}},
		{"a 12-year-old, naked", []string{categorySexualMinors}},
		{"a 30 year old, naked", nil},
		{"nude child", []string{categorySexualMinors, categorySexual}},
		{"a 12 year old on a bike", nil},
	} {
		t.Run(tc.text, func(t *testing.T) {
			t.Parallel()
			got, err := p.classify(t.Context(), content{text: tc.text})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("classify(%q) (-want +got):\n%s", tc.text, diff)
			}
		})
	}
	if got, _ := p.classify(t.Context(), content{image: []byte("\x89PNG")}); got != nil {
		t.Errorf("the term policy judged an image: %v", got)
	}
}

// FuzzPolicy checks the matcher on arbitrary text: it never panics, a term
// set off by spaces is always found whatever surrounds it, and case does
// not change a verdict.
func FuzzPolicy(f *testing.F) {
	for _, s := range []string{"a classic bass guitar", "ｎｕｄｅ", "nu\u200bde", "n u d e", "彼を殺すな", "12yo nsfw", "@ss", "\xff\xfe", "*", "İstanbul ß"} {
		f.Add(s)
	}
	p := testPolicy(f)
	f.Fuzz(func(t *testing.T, text string) {
		got, err := p.classify(context.Background(), content{text: text})
		if err != nil {
			t.Fatal(err)
		}
		with, _ := p.classify(context.Background(), content{text: text + " Forbidden  FRUIT "})
		if !slices.Contains(with, categorySexual) {
			t.Errorf("%q + a listed term: %v, want sexual", text, with)
		}
		upper := []byte(text)
		for i, c := range upper {
			if c >= 'a' && c <= 'z' {
				upper[i] = c - 'a' + 'A'
			}
		}
		again, _ := p.classify(context.Background(), content{text: string(upper)})
		slices.Sort(got)
		slices.Sort(again)
		if !slices.Equal(got, again) {
			t.Errorf("%q: %v, upper-cased: %v", text, got, again)
		}
	})
}

func BenchmarkPolicyClassify(b *testing.B) {
	p := testPolicy(b)
	text := strings.Repeat("a retro synthwave city skyline at dusk, neon grid, palm trees, 80s poster, ", 4)
	b.ReportAllocs()
	for b.Loop() {
		if cats, _ := p.classify(context.Background(), content{text: text}); len(cats) != 0 {
			b.Fatal(cats)
		}
	}
}

func TestParseClassifierAnswer(t *testing.T) {
	t.Parallel()
	known := map[string]bool{categorySexualMinors: true, categorySexual: true, categorySelfHarm: true, categoryViolence: true}
	for _, tc := range []struct {
		name, answer string
		want         []string
		err          bool
	}{
		{"flat, clean", `{"flagged":false,"categories":{"sexual":false}}`, nil, false},
		{"flat, flagged", `{"flagged":true,"categories":{"violence":true,"sexual":false}}`, []string{categoryViolence}, false},
		{"openai shape", `{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"sexual":true,"sexual/minors":true,"self-harm/intent":true,"harassment":false},"category_scores":{"sexual":0.9}}]}`,
			[]string{categorySelfHarm, categorySexual, categorySexualMinors}, false},
		{"unknown category kept", `{"flagged":true,"categories":{"Illicit/Violent":true}}`, []string{"illicit_violent"}, false},
		{"violence sub-category", `{"flagged":true,"categories":{"violence/graphic":true}}`, []string{categoryViolence}, false},
		{"flagged without a category", `{"flagged":true}`, []string{categoryUnspecified}, false},
		{"no verdict", `{}`, nil, true},
		{"result without flagged", `{"results":[{"categories":{"sexual":true}}]}`, nil, true},
		{"not JSON", `<html>502 Bad Gateway</html>`, nil, true},
		{"wrong types", `{"flagged":"yes"}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseClassifierAnswer([]byte(tc.answer), known)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseClassifierAnswer: any answer is parsed without panic into
// well-formed category names, and a flagged verdict is never read as
// clean.
func FuzzParseClassifierAnswer(f *testing.F) {
	for _, s := range []string{`{"flagged":true}`, `{"results":[{"flagged":true,"categories":{"sexual/minors":true}}]}`, `{}`, `[]`, `{"flagged":false,"categories":{"":true}}`} {
		f.Add([]byte(s))
	}
	known := map[string]bool{categorySexualMinors: true, categorySexual: true}
	f.Fuzz(func(t *testing.T, raw []byte) {
		cats, err := parseClassifierAnswer(raw, known)
		if err != nil {
			return
		}
		for _, c := range cats {
			if len(c) > 40 || strings.ContainsFunc(c, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') }) {
				t.Errorf("category %q is not a clean name", c)
			}
		}
		var v struct {
			Flagged *bool `json:"flagged"`
		}
		if json.Unmarshal(raw, &v) == nil && v.Flagged != nil && *v.Flagged && len(cats) == 0 {
			t.Errorf("%s: flagged, yet no category", raw)
		}
	})
}

// counterValue reads one series of a counter vector.
func TestModeratorBuiltFromConfigAlone(t *testing.T) {
	t.Parallel()
	// A moderator is built from its config alone; bad rules are refused.
	if _, err := New(Config{Rules: []Rule{{Category: "x"}}}, nil, slog.New(slog.DiscardHandler), nil, time.Now); err == nil {
		t.Error("New accepted a rule without terms")
	}
	m, err := New(Config{NoBuiltinRules: true, Block: []string{}}, nil, slog.New(slog.DiscardHandler), nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckPrompt(t.Context(), Subject{}, Request{Prompt: "loli"}); err != nil {
		t.Errorf("without built-in rules, nothing is listed: %v", err)
	}
	if err := m.CheckOutput(t.Context(), Subject{}, Request{}, []byte("\x89PNG\r\n\x1a\n"), "image/png"); err != nil {
		t.Errorf("without a classifier every output passes: %v", err)
	}
}

// TestNegativePromptIsJudgedLikeThePrompt refuses a blocked negative
// prompt naming the field, and reports apparent CSAM in it.
func TestNegativePromptIsJudgedLikeThePrompt(t *testing.T) {
	t.Parallel()
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "imagegate.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := New(Config{Rules: []Rule{{Category: "violence", Terms: []string{"gore*"}}}}, st, slog.New(slog.DiscardHandler), nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	err = m.CheckPrompt(t.Context(), Subject{}, Request{Prompt: "a quiet lake", NegativePrompt: "gore"})
	var ae *apierror.Error
	if !errors.As(err, &ae) || ae.Code != "content_policy_violation" || !strings.HasPrefix(ae.Msg, "negative_prompt:") {
		t.Fatalf("blocked negative prompt: %v, want a refusal naming negative_prompt", err)
	}
	if err := m.CheckPrompt(t.Context(), Subject{}, Request{Prompt: "a quiet lake", NegativePrompt: "blurry"}); err != nil {
		t.Errorf("harmless negative prompt: %v", err)
	}
	err = m.CheckPrompt(t.Context(), Subject{}, Request{Prompt: "a quiet lake", NegativePrompt: "loli"})
	reports, _ := st.Reports()
	if !errors.As(err, &ae) || !strings.Contains(ae.Msg, categorySexualMinors) || len(reports) != 1 || reports[0].NegativePrompt != "loli" {
		t.Errorf("apparent CSAM in the negative prompt: %v, reports %+v", err, reports)
	}
}

// TestPolicyVersion changes with what decides a verdict and only with it.
func TestPolicyVersion(t *testing.T) {
	t.Parallel()
	version := func(cfg Config) uint64 {
		t.Helper()
		m, err := New(cfg, nil, slog.New(slog.DiscardHandler), nil, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		return m.Version()
	}
	base := Config{Rules: []Rule{{Category: "violence", Terms: []string{"gore*"}}}}
	v := version(base)
	if v == 0 || version(base) != v {
		t.Fatalf("version %d is zero or unstable", v)
	}
	for name, cfg := range map[string]Config{
		"another term":       {Rules: []Rule{{Category: "violence", Terms: []string{"gore*", "blood"}}}},
		"another category":   {Rules: []Rule{{Category: "hate", Terms: []string{"gore*"}}}},
		"another block list": {Rules: base.Rules, Block: []string{"violence"}},
		"no built-in rules":  {Rules: base.Rules, NoBuiltinRules: true},
		"a classifier":       {Rules: base.Rules, Classifier: ClassifierConfig{URL: "http://127.0.0.1:9/v1/moderations"}},
	} {
		if version(cfg) == v {
			t.Errorf("%s: same version", name)
		}
	}
	same := base
	same.Classifier.Timeout = time.Minute // how long to wait changes no verdict
	if version(same) != v {
		t.Error("a classifier timeout changed the version")
	}
}
