package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// partnerStore is partners, their quotas and usage, and credit sales.
type partnerStore interface {
	CreatePartner(store.NewPartner) (store.Partner, string, error)
	Partner(id string) (store.Partner, error)
	Partners() ([]store.Partner, error)
	PartnerByPublishableKey(pk string) (store.Partner, error)
	PartnerBySecret(secret string) (store.Partner, error)
	UpdatePartner(id string, ch store.PartnerChange) (store.Partner, error)
	ReservePartnerImages(id string, day time.Time, n int) error
	PartnerMonthUsage(id string, month time.Time) (int, error)
	PartnerUsageDays(id string, from, to time.Time) ([]store.PartnerUsage, error)
	CreditSalesDays(from, to time.Time) ([]store.CreditSales, error)
}

func newTestPartner(t *testing.T, db Store) (store.Partner, string) {
	t.Helper()
	p, secret, err := db.CreatePartner(store.NewPartner{
		Name: "Shop", Origins: []string{"https://shop.example", "HTTPS://www.shop.example:443/"},
		MonthlyQuota: 5, RateLimit: 60, Plan: "free", WebhookURL: "https://shop.example/hooks",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, secret
}

func testPartnerKeysAndLookup(t *testing.T, h Harness) {
	db, _ := h.open(t)
	p, secret := newTestPartner(t, db)
	if diff := cmp.Diff([]string{"https://shop.example", "https://www.shop.example"}, p.Origins); diff != "" {
		t.Errorf("origins not canonical (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(p.PublishableKey, store.PublishableKeyPrefix) || !strings.HasPrefix(secret, store.PartnerSecretPrefix) || !strings.HasPrefix(p.WebhookSecret, store.WebhookSecretPrefix) {
		t.Fatalf("keys %q %q %q lack their prefixes", p.PublishableKey, secret, p.WebhookSecret)
	}
	byPK, err := db.PartnerByPublishableKey(p.PublishableKey)
	if err != nil || byPK.ID != p.ID {
		t.Fatalf("by publishable key: %v, %v", byPK.ID, err)
	}
	if diff := cmp.Diff(p, byPK); diff != "" {
		t.Errorf("the stored partner differs from the created one (-created +stored):\n%s", diff)
	}
	bySecret, err := db.PartnerBySecret(secret)
	if err != nil || bySecret.ID != p.ID {
		t.Fatalf("by secret: %v, %v", bySecret.ID, err)
	}
	if _, err := db.PartnerBySecret(secret + "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("wrong secret: %v, want ErrNotFound", err)
	}
	if _, err := db.PartnerByPublishableKey(secret); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("secret used as publishable key: %v, want ErrNotFound", err)
	}
	if _, err := db.Partner("ptr_missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing partner: %v, want ErrNotFound", err)
	}
	if h.Contains(t, db, []byte(secret)) {
		t.Error("the partner's secret key is stored in the clear")
	}
}

func testPartnerValidation(t *testing.T, h Harness) {
	db, _ := h.open(t)
	for name, np := range map[string]store.NewPartner{
		"no origins":  {Name: "a", MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"bad origin":  {Name: "a", Origins: []string{"https://a.example/path"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"no name":     {Origins: []string{"https://a.example"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free"},
		"zero quota":  {Name: "a", Origins: []string{"https://a.example"}, RateLimit: 1, Plan: "free"},
		"zero rate":   {Name: "a", Origins: []string{"https://a.example"}, MonthlyQuota: 1, Plan: "free"},
		"bad webhook": {Name: "a", Origins: []string{"https://a.example"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free", WebhookURL: "ftp://x"},
	} {
		if _, _, err := db.CreatePartner(np); !errors.Is(err, store.ErrInvalidPartner) {
			t.Errorf("%s: %v, want ErrInvalidPartner", name, err)
		}
	}
	if ps, _ := db.Partners(); len(ps) != 0 {
		t.Errorf("refused partners were stored: %v", ps)
	}
}

func testPartnersOldestFirst(t *testing.T, h Harness) {
	db, clock := h.open(t)
	first, _ := newTestPartner(t, db)
	clock.Advance(time.Minute)
	second, _ := newTestPartner(t, db)
	ps, err := db.Partners()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	if diff := cmp.Diff([]string{first.ID, second.ID}, ids); diff != "" {
		t.Errorf("partners (-want +got):\n%s", diff)
	}
}

func testUpdatePartner(t *testing.T, h Harness) {
	db, clock := h.open(t)
	p, _ := newTestPartner(t, db)
	clock.Advance(time.Hour)
	quota, disabled, hook := 9, true, ""
	got, err := db.UpdatePartner(p.ID, store.PartnerChange{MonthlyQuota: &quota, Disabled: &disabled, Origins: []string{"http://127.0.0.2:9000"}, WebhookURL: &hook})
	if err != nil {
		t.Fatal(err)
	}
	if got.MonthlyQuota != 9 || !got.Disabled || got.WebhookSecret != "" || !got.Updated.After(p.Updated) || got.PublishableKey != p.PublishableKey {
		t.Errorf("update gave %+v", got)
	}
	if stored, _ := db.Partner(p.ID); !cmp.Equal(got, stored) {
		t.Errorf("stored %+v, update returned %+v", stored, got)
	}
	// Disabled partners are still found by key: the caller refuses them.
	if byPK, err := db.PartnerByPublishableKey(p.PublishableKey); err != nil || !byPK.Disabled {
		t.Errorf("disabled partner by key: %+v, %v", byPK, err)
	}
	rehook := "https://shop.example/again"
	again, err := db.UpdatePartner(p.ID, store.PartnerChange{WebhookURL: &rehook})
	if err != nil || !strings.HasPrefix(again.WebhookSecret, store.WebhookSecretPrefix) {
		t.Errorf("a webhook set again gets a new secret: %q, %v", again.WebhookSecret, err)
	}
	bad := []string{"https://ok.example", "nope"}
	if _, err := db.UpdatePartner(p.ID, store.PartnerChange{Origins: bad}); !errors.Is(err, store.ErrInvalidPartner) {
		t.Fatalf("bad origins: %v", err)
	}
	after, _ := db.Partner(p.ID)
	if diff := cmp.Diff([]string{"http://127.0.0.2:9000"}, after.Origins); diff != "" {
		t.Errorf("a refused update changed the record (-want +got):\n%s", diff)
	}
	if _, err := db.UpdatePartner("ptr_missing", store.PartnerChange{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing partner: %v", err)
	}
}

func testPartnerQuotaAndUsage(t *testing.T, h Harness) {
	db, clock := h.open(t)
	p, _ := newTestPartner(t, db) // quota 5 a month
	day1 := clock.Now()
	if err := db.ReservePartnerImages(p.ID, day1, 3); err != nil {
		t.Fatal(err)
	}
	day2 := day1.Add(24 * time.Hour)
	if err := db.ReservePartnerImages(p.ID, day2, 3); !errors.Is(err, store.ErrPartnerQuota) {
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
	want := []store.PartnerUsage{{Day: "2026-11-23", Images: 3}, {Day: "2026-11-24", Images: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	// Giving back a whole day's images leaves the day out.
	if err := db.ReservePartnerImages(p.ID, day2, -1); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.PartnerUsageDays(p.ID, day2, day2); len(got) != 0 {
		t.Errorf("a day with no images left is listed: %+v", got)
	}
	// A new month starts from zero.
	if err := db.ReservePartnerImages(p.ID, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 5); err != nil {
		t.Errorf("new month: %v", err)
	}
	if n, _ := db.PartnerMonthUsage(p.ID, day1); n != 3 {
		t.Errorf("November usage %d, want 3", n)
	}
	if err := db.ReservePartnerImages("ptr_missing", day1, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing partner: %v, want ErrNotFound", err)
	}
}

// Reservations from many goroutines — and, on PostgreSQL, from several
// gateways' connections to one database — never take a partner over its
// quota.
func testPartnerQuotaConcurrent(t *testing.T, h Harness) {
	db, clock := h.open(t)
	p, _ := newTestPartner(t, db) // quota 5
	others := []Store{db, h.reopenShared(t, db, clock), h.reopenShared(t, db, clock)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 30 {
		s := others[i%len(others)]
		wg.Go(func() {
			err := s.ReservePartnerImages(p.ID, clock.Now(), 1)
			if err != nil && !errors.Is(err, store.ErrPartnerQuota) {
				t.Errorf("reserve: %v", err)
			}
			if err == nil {
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

func testCreditSalesDays(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a, b := mustAccount(t, db, "a@example.com"), mustAccount(t, db, "b@example.com")
	add := func(acct store.Account, c store.Credit) {
		t.Helper()
		if _, _, err := db.AddCredit(acct.ID, c); err != nil {
			t.Fatal(err)
		}
	}
	add(a, store.Credit{Kind: store.KindPurchase, Amount: 100, Ref: "cs_1", MoneyMinor: 500, Currency: "eur"})
	add(b, store.Credit{Kind: store.KindPurchase, Amount: 50, Ref: "cs_2", MoneyMinor: 300, Currency: "eur"})
	add(a, store.Credit{Kind: store.KindGrant, Amount: 50, Ref: "plan:2026-11"}) // not a sale
	clock.Advance(48 * time.Hour)
	add(b, store.Credit{Kind: store.KindPurchase, Amount: 20, Ref: "cs_3", MoneyMinor: 200, Currency: "usd"})
	add(a, store.Credit{Kind: store.KindPurchase, Amount: 10, Ref: "cs_4", MoneyMinor: 100, Currency: "eur"})
	add(b, store.Credit{Kind: store.KindRefund, Amount: -20, Ref: "re_3"}) // not a sale either

	got, err := db.CreditSalesDays(clock.Now().AddDate(0, 0, -7), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []store.CreditSales{
		{Day: "2026-11-23", Credits: 150, Money: map[string]int64{"eur": 800}},
		{Day: "2026-11-25", Credits: 30, Money: map[string]int64{"usd": 200, "eur": 100}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sales (-want +got):\n%s", diff)
	}
	if got, _ := db.CreditSalesDays(clock.Now(), clock.Now()); len(got) != 1 || got[0].Credits != 30 {
		t.Errorf("one day: %+v", got)
	}
	if got, _ := db.CreditSalesDays(start.AddDate(0, 0, 1), start.AddDate(0, 0, 1)); len(got) != 0 {
		t.Errorf("a day without sales: %+v", got)
	}
}
