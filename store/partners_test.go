package store

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var originCases = []struct {
	in, want string // want "" means refused
}{
	{"https://shop.example", "https://shop.example"},
	{"HTTPS://Shop.Example", "https://shop.example"},
	{"https://shop.example/", "https://shop.example"},
	{"https://shop.example:443", "https://shop.example"},
	{"http://shop.example:80", "http://shop.example"},
	{"http://127.0.0.2:8080", "http://127.0.0.2:8080"},
	{"https://[::1]:8443", "https://[::1]:8443"},
	{"https://xn--bcher-kva.example", "https://xn--bcher-kva.example"},
	{"https://shop.example:8443", "https://shop.example:8443"},
	{"", ""},
	{"null", ""},
	{"*", ""},
	{"https://*.example", ""},
	{"shop.example", ""},
	{"ftp://shop.example", ""},
	{"javascript:alert(1)", ""},
	{"https://shop.example/path", ""},
	{"https://shop.example?x=1", ""},
	{"https://shop.example#top", ""},
	{"https://user:pw@shop.example", ""},
	{"https://shop.example:", ""},
	{"https://shop.example:0", ""},
	{"https://shop.example:65536", ""},
	{"https://shop.example:080", ""},
	{"https://bücher.example", ""},
	{"https://-bad.example", ""},
	{"https://a..example", ""},
	{"https://", ""},
	{"https://shop.example; script-src *", ""},
	{"https://shop.example\r\nX: y", ""},
}

func TestParseOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range originCases {
		got, err := ParseOrigin(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseOrigin(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseOrigin checks that whatever ParseOrigin accepts is canonical
// (parsing it again gives itself) and can go into a CSP source list and a
// header unchanged.
func FuzzParseOrigin(f *testing.F) {
	for _, tc := range originCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOrigin(s)
		if err != nil {
			return
		}
		again, err := ParseOrigin(o)
		if err != nil || again != o {
			t.Fatalf("ParseOrigin(%q) = %q, which parses to %q, %v", s, o, again, err)
		}
		if strings.ContainsAny(o, " ;,'\"\r\n\t*") || !(strings.HasPrefix(o, "https://") || strings.HasPrefix(o, "http://")) {
			t.Fatalf("ParseOrigin(%q) = %q: unsafe in a CSP source list", s, o)
		}
	})
}

func newTestPartner(t *testing.T, db *DB) (Partner, string) {
	t.Helper()
	p, secret, err := db.CreatePartner(NewPartner{
		Name: "Shop", Origins: []string{"https://shop.example", "HTTPS://www.shop.example:443/"},
		MonthlyQuota: 5, RateLimit: 60, Plan: "free", WebhookURL: "https://shop.example/hooks",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, secret
}

func TestPartnerKeysAndLookup(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	p, secret := newTestPartner(t, db)
	if diff := cmp.Diff([]string{"https://shop.example", "https://www.shop.example"}, p.Origins); diff != "" {
		t.Errorf("origins not canonical (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(p.PublishableKey, PublishableKeyPrefix) || !strings.HasPrefix(secret, PartnerSecretPrefix) || !strings.HasPrefix(p.WebhookSecret, WebhookSecretPrefix) {
		t.Fatalf("keys %q %q %q lack their prefixes", p.PublishableKey, secret, p.WebhookSecret)
	}
	byPK, err := db.PartnerByPublishableKey(p.PublishableKey)
	if err != nil || byPK.ID != p.ID {
		t.Fatalf("by publishable key: %v, %v", byPK.ID, err)
	}
	bySecret, err := db.PartnerBySecret(secret)
	if err != nil || bySecret.ID != p.ID {
		t.Fatalf("by secret: %v, %v", bySecret.ID, err)
	}
	if _, err := db.PartnerBySecret(secret + "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("wrong secret: %v, want ErrNotFound", err)
	}
	if _, err := db.PartnerByPublishableKey(secret); !errors.Is(err, ErrNotFound) {
		t.Errorf("secret used as publishable key: %v, want ErrNotFound", err)
	}
	db.Close()
	if fileContains(t, path, []byte(secret)) {
		t.Error("the partner's secret key is stored in the clear")
	}
}

func TestPartnerValidation(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	for name, np := range map[string]NewPartner{
		"no origins":  {Name: "a", MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"bad origin":  {Name: "a", Origins: []string{"https://a.example/path"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"no name":     {Origins: []string{"https://a.example"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"zero quota":  {Name: "a", Origins: []string{"https://a.example"}, RateLimit: 1, Plan: "free"},
		"zero rate":   {Name: "a", Origins: []string{"https://a.example"}, MonthlyQuota: 1, Plan: "free"},
		"bad webhook": {Name: "a", Origins: []string{"https://a.example"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free", WebhookURL: "ftp://x"},
	} {
		if _, _, err := db.CreatePartner(np); !errors.Is(err, ErrInvalidPartner) {
			t.Errorf("%s: %v, want ErrInvalidPartner", name, err)
		}
	}
	if ps, _ := db.Partners(); len(ps) != 0 {
		t.Errorf("refused partners were stored: %v", ps)
	}
}

func TestUpdatePartner(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	p, _ := newTestPartner(t, db)
	clock.Advance(time.Hour)
	quota, disabled, hook := 9, true, ""
	got, err := db.UpdatePartner(p.ID, PartnerChange{MonthlyQuota: &quota, Disabled: &disabled, Origins: []string{"http://127.0.0.2:9000"}, WebhookURL: &hook})
	if err != nil {
		t.Fatal(err)
	}
	if got.MonthlyQuota != 9 || !got.Disabled || got.WebhookSecret != "" || !got.Updated.After(p.Updated) || got.PublishableKey != p.PublishableKey {
		t.Errorf("update gave %+v", got)
	}
	bad := []string{"https://ok.example", "nope"}
	if _, err := db.UpdatePartner(p.ID, PartnerChange{Origins: bad}); !errors.Is(err, ErrInvalidPartner) {
		t.Fatalf("bad origins: %v", err)
	}
	after, _ := db.Partner(p.ID)
	if diff := cmp.Diff([]string{"http://127.0.0.2:9000"}, after.Origins); diff != "" {
		t.Errorf("a refused update changed the record (-want +got):\n%s", diff)
	}
	if _, err := db.UpdatePartner("ptr_missing", PartnerChange{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing partner: %v", err)
	}
}

func TestPartnerQuotaAndUsage(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	p, _ := newTestPartner(t, db) // quota 5 a month
	day1 := clock.Now()
	if err := db.ReservePartnerImages(p.ID, day1, 3); err != nil {
		t.Fatal(err)
	}
	day2 := day1.Add(24 * time.Hour)
	if err := db.ReservePartnerImages(p.ID, day2, 3); !errors.Is(err, ErrPartnerQuota) {
		t.Fatalf("over the month's quota: %v", err)
	}
	if err := db.ReservePartnerImages(p.ID, day2, 2); err != nil {
		t.Fatal(err)
	}
	// A failed generation gives its image back.
	if err := db.ReservePartnerImages(p.ID, day2, -1); err != nil {
		t.Fatal(err)
	}
	got, err := db.PartnerUsageDays(p.ID, day1.Add(-48*time.Hour), day2)
	if err != nil {
		t.Fatal(err)
	}
	want := []PartnerUsage{{Day: "2026-11-23", Images: 3}, {Day: "2026-11-24", Images: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	// A new month starts from zero.
	if err := db.ReservePartnerImages(p.ID, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 5); err != nil {
		t.Errorf("new month: %v", err)
	}
	if n, _ := db.PartnerMonthUsage(p.ID, day1); n != 4 {
		t.Errorf("November usage %d, want 4", n)
	}
}

func TestPartnerQuotaConcurrent(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	p, _ := newTestPartner(t, db) // quota 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 20 {
		wg.Go(func() {
			if db.ReservePartnerImages(p.ID, clock.Now(), 1) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n, _ := db.PartnerMonthUsage(p.ID, clock.Now()); ok != 5 || n != 5 {
		t.Errorf("%d reservations succeeded, usage %d; want exactly the quota, 5", ok, n)
	}
}
