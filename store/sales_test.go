package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCreditSalesDays(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a, b := mustAccount(t, db, "a@example.com"), mustAccount(t, db, "b@example.com")
	add := func(acct Account, c Credit) {
		t.Helper()
		if _, _, err := db.AddCredit(acct.ID, c); err != nil {
			t.Fatal(err)
		}
	}
	add(a, Credit{Kind: KindPurchase, Amount: 100, Ref: "cs_1", MoneyMinor: 500, Currency: "eur"})
	add(b, Credit{Kind: KindPurchase, Amount: 50, Ref: "cs_2", MoneyMinor: 300, Currency: "eur"})
	add(a, Credit{Kind: KindGrant, Amount: 50, Ref: "plan:2026-11"}) // not a sale
	clock.Advance(48 * time.Hour)
	add(b, Credit{Kind: KindPurchase, Amount: 20, Ref: "cs_3", MoneyMinor: 200, Currency: "usd"})
	add(b, Credit{Kind: KindRefund, Amount: -20, Ref: "re_3"}) // not a sale either

	got, err := db.CreditSalesDays(clock.Now().AddDate(0, 0, -7), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []CreditSales{
		{Day: "2026-11-23", Credits: 150, Money: map[string]int64{"eur": 800}},
		{Day: "2026-11-25", Credits: 20, Money: map[string]int64{"usd": 200}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sales (-want +got):\n%s", diff)
	}
	if got, _ := db.CreditSalesDays(clock.Now(), clock.Now()); len(got) != 1 || got[0].Credits != 20 {
		t.Errorf("one day: %+v", got)
	}
}
