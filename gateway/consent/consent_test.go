package consent

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// FuzzConsentCookie feeds the consent cookie parser what a client could
// send: it never panics, yields either no choice or one with a valid
// visitor id, and what it yields survives a round trip through the cookie
// the gateway would set.
func FuzzConsentCookie(f *testing.F) {
	v := NewVisitorID()
	for _, seed := range []string{
		"", v + ".1.dpa", v + ".1.-", v + ".0.g", v + ".2.dpag", v + ".1.dpaX", v + ".1.pd",
		v + ".-1.d", v + ".1000001.d", v + ".1", v + ".1.d.x", "v.1.d", "x" + v[1:] + ".1.d", v[:26] + "1.1.d",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		s := ParseCookie(raw)
		if s == (State{}) {
			return
		}
		if !ValidVisitor(s.Visitor) || s.GPC {
			t.Fatalf("parse(%q) = %+v: invalid visitor or GPC from a cookie", raw, s)
		}
		if again := ParseCookie(s.CookieValue()); again != s {
			t.Fatalf("round trip of %q: %+v became %+v", raw, s, again)
		}
	})
}

// The decision rules: necessary always; optional categories only under a
// choice for the revision in force; GPC vetoes analytics whatever was
// stored.
func TestAllowedBy(t *testing.T) {
	both := State{Revision: 3, Decided: true, Preferences: true, Analytics: true}
	gpc := both
	gpc.GPC = true
	cases := []struct {
		name  string
		s     State
		rev   int
		cat   Category
		allow bool
	}{
		{"necessary without a choice", State{}, 3, Necessary, true},
		{"preferences without a choice", State{}, 3, Preferences, false},
		{"analytics without a choice", State{Revision: 3, Analytics: true}, 3, Analytics, false},
		{"preferences allowed", both, 3, Preferences, true},
		{"analytics allowed", both, 3, Analytics, true},
		{"preferences stale", both, 4, Preferences, false},
		{"analytics stale", both, 4, Analytics, false},
		{"analytics under GPC", gpc, 3, Analytics, false},
		{"preferences under GPC", gpc, 3, Preferences, true},
		{"unknown category", both, 3, Category("marketing"), false},
	}
	for _, tc := range cases {
		if got := tc.s.AllowedBy(tc.cat, tc.rev); got != tc.allow {
			t.Errorf("%s: AllowedBy(%s, %d) = %v, want %v", tc.name, tc.cat, tc.rev, got, tc.allow)
		}
	}
}

// A choice made under GPC records analytics off and the GPC opt-out, and
// its proof says what the choice allows, not what was asked for.
func TestDecideAndProof(t *testing.T) {
	v := NewVisitorID()
	s := State{Visitor: v, Revision: 1, Decided: true, Analytics: true, GPC: true}.Decide(true, true, 2)
	want := State{Visitor: v, Revision: 2, Decided: true, Preferences: true, GPC: true, GPCRecorded: true}
	if s != want {
		t.Fatalf("Decide under GPC = %+v, want %+v", s, want)
	}
	if diff := cmp.Diff(store.Consent{Subject: "acct", Visitor: v, Revision: 2, Preferences: true, Source: store.ConsentBanner},
		s.Proof("acct", 2, store.ConsentBanner)); diff != "" {
		t.Errorf("proof (-want +got):\n%s", diff)
	}
	// A stale choice proves nothing allowed at the new revision.
	stale := State{Visitor: v, Revision: 1, Decided: true, Preferences: true, Analytics: true, GPC: true}
	if p := stale.Proof(v, 2, store.ConsentGPC); p.Preferences || p.Analytics || p.Revision != 2 {
		t.Errorf("stale proof = %+v, want nothing allowed at revision 2", p)
	}
	if got := stale.View(2, "2027-01-15"); got != (View{Revision: 2, Stale: true, GPC: true, Updated: "2027-01-15"}) {
		t.Errorf("stale view = %+v", got)
	}
}

// The published policy carries only name, category, purpose and lifetime;
// every cookie is __Host- and named once; only the preferences cookie is
// for scripts and only the admin cookie is Strict.
func TestRegistry(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Cookies() {
		if !strings.HasPrefix(s.Name, "__Host-") || seen[s.Name] {
			t.Errorf("%s: not __Host- or declared twice", s.Name)
		}
		seen[s.Name] = true
		if got, ok := Lookup(s.Name); !ok || got != s {
			t.Errorf("Lookup(%s) = %+v, %v", s.Name, got, ok)
		}
		if s.Script() != (s.Name == CookiePrefs) || s.Strict() != (s.Name == CookieAdmin) {
			t.Errorf("%s: script=%v strict=%v", s.Name, s.Script(), s.Strict())
		}
	}
	if _, ok := Lookup("__Host-undeclared"); ok {
		t.Error("an undeclared name was found")
	}
	b, err := json.Marshal(Cookies()[:1])
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"name":"__Host-imagegate_session","category":"necessary","purpose":"Keeps you signed in. Holds a random session token; the server stores only its hash.","lifetime":"30 days at most (ends at sign-out or after 7 days without use)"}]`; string(b) != want {
		t.Errorf("policy JSON = %s, want %s", b, want)
	}
	c := Cookies()
	c[0].Name = "changed"
	if Cookies()[0].Name != CookieSession {
		t.Error("Cookies shares the registry with its caller")
	}
}
