package billing

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stripe/stripe-go/v76"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/store"
)

const storyWorkers = 100

// storyShift separates the Stripe times of an account's successive orders
// (a story's events span 30 days and a few hours).
const storyShift = 3_000_000

var storySeed = flag.Uint64("billing-story-seed", 0, "seed of TestWebhookStoryAnyOrder (0: a random one)")

// TestWebhookStoryAnyOrder is the property test of issue 4: a purchase →
// renewal → refund → dispute story, each event delivered five times, in
// 1,000 random orders. Every order must change the balance by the same
// amount and end with the same plan, subscription and flags, with each
// payment granted exactly once and each event applied exactly once.
//
// It runs the webhook's own code after verification (handleEvent) on a
// real store. An account plays several orders in turn, as a returning
// customer with new payments and a new subscription each time (Stripe
// times moved forward by storyShift), so earlier orders' state is there to
// interfere; 100 accounts play at once.
func TestWebhookStoryAnyOrder(t *testing.T) {
	t.Parallel()
	seed := *storySeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -args -billing-story-seed=%d)", seed, seed)
	const orders, copies = 1000, 5

	db, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "imagegate.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := New(testConfig(noStripe), db, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	b.Bind("free", func(name string) bool { return name == "free" || name == "pro" })

	// The story, with RUN in every Stripe id of the order, ACCT for the
	// account and CUST for its Stripe customer.
	const (
		a, c          = "ACCT", "CUST"
		t0            = 1_780_000_000
		t1            = t0 + 30*86400
		t2            = t1 + 30*86400
		subID, pi0    = "sub_RUN", "pi_pack_RUN"
		in1, in2      = "in_1_RUN", "in_2_RUN"
		pi1, pi2      = "pi_in1_RUN", "pi_in2_RUN"
		chPack, chIn2 = "ch_pack_RUN", "ch_in2_RUN"
		dpLost, dpWon = "dp_lost_RUN", "dp_won_RUN"
		packCredits   = 100
		periodCredits = 2000
		packMoney     = 500
		periodMoney   = 2000
	)
	story := decodeEvents(t,
		eventJSON(t, "evt_01_RUN", stripe.EventTypeCustomerSubscriptionCreated, t0, subscriptionObj(subID, a, c, "incomplete", t0, t1, false)),
		eventJSON(t, "evt_02_RUN", stripe.EventTypeCheckoutSessionCompleted, t0+5, sessionObj("cs_RUN", a, c, pi0, "paid", packCredits, packMoney)),
		eventJSON(t, "evt_03_RUN", stripe.EventTypeInvoicePaid, t0+10, invoiceObj(in1, a, c, subID, pi1, "subscription_create", periodMoney, t0, t1)),
		eventJSON(t, "evt_04_RUN", stripe.EventTypeCustomerSubscriptionUpdated, t0+10, subscriptionObj(subID, a, c, "active", t0, t1, false)),
		eventJSON(t, "evt_05_RUN", stripe.EventTypeInvoicePaid, t1, invoiceObj(in2, a, c, subID, pi2, "subscription_cycle", periodMoney, t1, t2)),
		eventJSON(t, "evt_06_RUN", stripe.EventTypeCustomerSubscriptionUpdated, t1, subscriptionObj(subID, a, c, "active", t1, t2, false)),
		eventJSON(t, "evt_07_RUN", stripe.EventTypeChargeRefunded, t1+7200, chargeObj(chPack, c, pi0, packMoney, 200)),
		eventJSON(t, "evt_08_RUN", stripe.EventTypeChargeRefunded, t1+7300, chargeObj(chPack, c, pi0, packMoney, packMoney)),
		eventJSON(t, "evt_09_RUN", stripe.EventTypeChargeDisputeCreated, t1+8000, disputeObj(dpLost, chIn2, pi2, "needs_response", periodMoney)),
		eventJSON(t, "evt_10_RUN", stripe.EventTypeChargeDisputeCreated, t1+8100, disputeObj(dpWon, "ch_in1_RUN", pi1, "needs_response", periodMoney)),
		eventJSON(t, "evt_11_RUN", stripe.EventTypeChargeDisputeClosed, t1+9000, disputeObj(dpLost, chIn2, pi2, "lost", periodMoney)),
		eventJSON(t, "evt_12_RUN", stripe.EventTypeChargeDisputeClosed, t1+9001, disputeObj(dpWon, "ch_in1_RUN", pi1, "won", periodMoney)),
		eventJSON(t, "evt_13_RUN", stripe.EventTypeCustomerSubscriptionDeleted, t1+10000, subscriptionObj(subID, a, c, "canceled", t1, t2, false)),
	)
	// The pack is refunded, the first period's dispute is won, the
	// renewal's is lost: what is left is one period.
	wantOutcome := storyOutcome{
		Credited: periodCredits, Plan: "free",
		Subscription: store.Subscription{
			ID: "sub_RUN", Status: "canceled", PriceID: priceProMonthly, Plan: "pro",
			PeriodStart: time.Unix(t1, 0).UTC(), PeriodEnd: time.Unix(t2, 0).UTC(),
			StatusAt: time.Unix(t1+10000, 0).UTC(), DetailsAt: time.Unix(t1+10000, 0).UTC(),
		},
		Grants:  map[string]int64{pi0: packCredits, in1: periodCredits, in2: periodCredits},
		Applied: slices.Repeat([]int{1}, len(story)),
	}

	runs := make(chan int)
	accountOf := make([]string, orders)
	errs := make([]error, orders)
	var wg sync.WaitGroup
	for w := range storyWorkers {
		wg.Go(func() {
			acct, err := db.CreateAccount(store.NewAccount{Email: fmt.Sprintf("story%d@example.com", w), PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: time.Now()})
			if err == nil {
				_, err = db.LinkStripeCustomer(acct.ID, fmt.Sprintf("cus_w%d", w))
			}
			for run := range runs {
				if err != nil {
					errs[run] = err
					continue
				}
				rng := rand.New(rand.NewPCG(seed, uint64(run)))
				got, err := playStory(db, b, story, acct.ID, fmt.Sprintf("cus_w%d", w), run, rng, copies)
				if err == nil {
					if diff := cmp.Diff(wantOutcome, got); diff != "" {
						err = fmt.Errorf("(-want +got):\n%s", diff)
					}
				}
				accountOf[run], errs[run] = acct.ID, err
			}
		})
	}
	for run := range orders {
		runs <- run
	}
	close(runs)
	wg.Wait()
	failures := 0
	for run, err := range errs {
		if err != nil {
			if failures < 3 {
				t.Errorf("order %d (seed %d): %v", run, seed, err)
			}
			failures++
		}
	}
	if failures > 0 {
		t.Fatalf("%d of %d orders diverged (seed %d)", failures, orders, seed)
	}

	// Flags converge too: one per dispute, in its final state.
	flags, err := db.BillingFlags()
	if err != nil {
		t.Fatal(err)
	}
	byRun := map[string][]string{}
	for _, f := range flags {
		run := f.Ref[strings.LastIndex(f.Ref, "_r"):]
		byRun[f.AccountID+run] = append(byRun[f.AccountID+run], fmt.Sprintf("%s %s %s %d", f.Reason, runless(f.Ref), f.Status, f.Credits))
	}
	wantFlags := []string{"dispute dp_lost_RUN lost 2000", "dispute dp_won_RUN won 2000"}
	for run, id := range accountOf {
		got := byRun[fmt.Sprintf("%s_r%d", id, run)]
		slices.Sort(got)
		if diff := cmp.Diff(wantFlags, got); diff != "" {
			t.Fatalf("order %d: flags (-want +got):\n%s", run, diff)
		}
	}
	if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
		t.Errorf("Reconcile after the story: %+v, %v", mm, err)
	}
}

// storyOutcome is what one order of the story did, with the order's own
// ids and times turned back into the template's.
type storyOutcome struct {
	Credited     int64 // balance change
	Plan         string
	Subscription store.Subscription
	Grants       map[string]int64 // grant and purchase refs → credits
	Applied      []int            // applications of each story event
}

// decodeEvents signs each payload and verifies it as the webhook does.
func decodeEvents(t *testing.T, payloads ...[]byte) []*stripe.Event {
	t.Helper()
	events := make([]*stripe.Event, len(payloads))
	now := time.Now()
	for i, p := range payloads {
		ev, err := verifyWebhook(p, signHeader(p, testWebhookSecret, now), []string{testWebhookSecret}, DefaultWebhookTolerance, now)
		if err != nil {
			t.Fatal(err)
		}
		events[i] = ev
	}
	return events
}

// runless turns an order's Stripe id back into the story's ("_r17" → "_RUN").
func runless(id string) string {
	if i := strings.LastIndex(id, "_r"); i >= 0 {
		return id[:i] + "_RUN"
	}
	return id
}

// playStory plays order run of the story on the account: every event
// copies times, in an order shuffled by rng, through handleEvent.
func playStory(db *store.DB, b *Stripe, story []*stripe.Event, accountID, customerID string, run int, rng *rand.Rand, copies int) (storyOutcome, error) {
	var out storyOutcome
	before, err := db.Account(accountID)
	if err != nil {
		return out, err
	}
	// The envelopes were verified once; this order gets its own ids in the
	// raw object handleEvent reads, and its own stretch of Stripe time.
	suffix := fmt.Sprintf("_r%d", run)
	shift := int64(run) * storyShift
	events := make([]*stripe.Event, len(story))
	for i, tmpl := range story {
		ev, data := *tmpl, *tmpl.Data
		ev.ID = strings.ReplaceAll(ev.ID, "_RUN", suffix)
		ev.Created += shift
		data.Raw = bytes.ReplaceAll(data.Raw, []byte("_RUN"), []byte(suffix))
		data.Raw = bytes.ReplaceAll(data.Raw, []byte("ACCT"), []byte(accountID))
		data.Raw = bytes.ReplaceAll(data.Raw, []byte("CUST"), []byte(customerID))
		ev.Data = &data
		events[i] = &ev
	}
	var deliveries []int
	for i := range story {
		for range copies {
			deliveries = append(deliveries, i)
		}
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	out.Applied = make([]int, len(story))
	for _, i := range deliveries {
		res, err := b.handleEvent(events[i])
		if err != nil {
			return out, fmt.Errorf("event %s: %w", events[i].ID, err)
		}
		if res == eventApplied {
			out.Applied[i]++
		}
	}

	after, err := db.Account(accountID)
	if err != nil {
		return out, err
	}
	out.Credited, out.Plan = after.Credits-before.Credits, after.Plan
	rec, err := db.Billing(accountID)
	if err != nil {
		return out, err
	}
	out.Subscription, _ = rec.Current()
	out.Subscription.ID = runless(out.Subscription.ID)
	out.Subscription.StatusAt = time.Unix(out.Subscription.StatusAt.Unix()-shift, 0).UTC()
	out.Subscription.DetailsAt = time.Unix(out.Subscription.DetailsAt.Unix()-shift, 0).UTC()
	entries, err := db.Ledger(accountID)
	if err != nil {
		return out, err
	}
	var sum int64
	out.Grants = map[string]int64{}
	for _, e := range entries {
		sum += e.Amount
		if (e.Kind == store.KindGrant || e.Kind == store.KindPurchase) && strings.HasSuffix(e.Ref, suffix) {
			ref := runless(e.Ref)
			if _, twice := out.Grants[ref]; twice {
				return out, fmt.Errorf("%s granted twice", e.Ref)
			}
			out.Grants[ref] = e.Amount
		}
	}
	if sum != after.Credits {
		return out, fmt.Errorf("ledger sums to %d, balance %d", sum, after.Credits)
	}
	return out, nil
}

// parseSignatureHeaderCases seed the header fuzzer.
var parseSignatureHeaderCases = []struct {
	header string
	ok     bool
}{
	{"t=1700000000,v1=" + strings.Repeat("ab", 32), true},
	{"t=1700000000,v1=" + strings.Repeat("ab", 32) + ",v1=" + strings.Repeat("cd", 32) + ",v0=" + strings.Repeat("00", 32), true},
	{" t=1700000000 , v1=" + strings.Repeat("ab", 32), true},
	{"v1=" + strings.Repeat("ab", 32) + ",t=1700000000", true},
	{"t=1700000000,v1=zz,v1=" + strings.Repeat("ab", 32), true},
	{"", false},
	{"t=1700000000", false},
	{"v1=" + strings.Repeat("ab", 32), false},
	{"t=1700000000,v1=" + strings.Repeat("ab", 31), false},
	{"t=-5,v1=" + strings.Repeat("ab", 32), false},
	{"t=+5,v1=" + strings.Repeat("ab", 32), false},
	{"t=0,v1=" + strings.Repeat("ab", 32), false},
	{"t=1,t=2,v1=" + strings.Repeat("ab", 32), false},
	{"t=99999999999999999999,v1=" + strings.Repeat("ab", 32), false},
	{"t=1700000000,v1", false},
	{"t=1700000000,,v1=" + strings.Repeat("ab", 32), false},
	{"t=1700000000" + strings.Repeat(",v1="+strings.Repeat("ab", 32), 9), false},
	{"t=1700000000,v1=" + strings.Repeat("ab", 32) + strings.Repeat(",x=y", 1100), false},
}

func TestParseSignatureHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range parseSignatureHeaderCases {
		sh, err := parseSignatureHeader(tc.header)
		if (err == nil) != tc.ok {
			t.Errorf("parseSignatureHeader(%.60q) = %+v, %v; want ok %v", tc.header, sh, err, tc.ok)
		}
	}
}

func FuzzParseSignatureHeader(f *testing.F) {
	for _, tc := range parseSignatureHeaderCases {
		f.Add(tc.header)
	}
	f.Fuzz(func(t *testing.T, h string) {
		sh, err := parseSignatureHeader(h)
		if err != nil {
			if ae := (*apierror.Error)(nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if sh.timestamp <= 0 || len(sh.signatures) < 1 || len(sh.signatures) > maxSignatures {
			t.Fatalf("parse(%q) = %+v", h, sh)
		}
		// What was parsed renders back to a header that parses the same.
		parts := []string{fmt.Sprintf("t=%d", sh.timestamp)}
		for _, s := range sh.signatures {
			if len(s) != 32 {
				t.Fatalf("signature of %d bytes", len(s))
			}
			parts = append(parts, "v1="+hex.EncodeToString(s))
		}
		again, err := parseSignatureHeader(strings.Join(parts, ","))
		if err != nil || !cmp.Equal(sh, again, cmp.AllowUnexported(signatureHeader{})) {
			t.Fatalf("round trip of %q: %+v became %+v, %v", h, sh, again, err)
		}
	})
}

// FuzzVerifyWebhook: whatever the body and header, verification either
// refuses with a 400 or accepts only what an independent check of Stripe's
// scheme accepts — a v1 HMAC-SHA256 of "<t>.<body>" under the secret, a
// timestamp inside the window, and the pinned API version.
func FuzzVerifyWebhook(f *testing.F) {
	now := time.Unix(1_780_000_000, 0)
	payload := []byte(`{"id":"evt_f","object":"event","api_version":"` + stripe.APIVersion + `","created":1780000000,"type":"charge.refunded","data":{"object":{"id":"ch_f"}}}`)
	f.Add(payload, signHeader(payload, testWebhookSecret, now))
	f.Add(payload, signHeader(payload, testWebhookSecret, now.Add(-299*time.Second)))
	f.Add(payload, signHeader(payload, testWebhookSecret, now.Add(-301*time.Second)))
	f.Add(payload, signHeader(payload, testWebhookSecret, now.Add(31*time.Second)))
	f.Add(payload, signHeader(payload, "whsec_other", now))
	f.Add([]byte(`{}`), signHeader([]byte(`{}`), testWebhookSecret, now))
	for _, tc := range parseSignatureHeaderCases {
		f.Add(payload, tc.header)
	}
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		ev, err := verifyWebhook(body, header, []string{testWebhookSecret}, DefaultWebhookTolerance, now)
		if err != nil {
			if ae := (*apierror.Error)(nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ev != nil {
				t.Fatalf("refusal %v is not a 400", err)
			}
			return
		}
		sh, err := parseSignatureHeader(header)
		if err != nil {
			t.Fatalf("accepted an unparseable header %q", header)
		}
		mac := hmac.New(sha256.New, []byte(testWebhookSecret))
		fmt.Fprintf(mac, "%d.", sh.timestamp)
		mac.Write(body)
		expected := mac.Sum(nil)
		if !slices.ContainsFunc(sh.signatures, func(s []byte) bool { return hmac.Equal(s, expected) }) {
			t.Fatalf("accepted %q without a valid signature", header)
		}
		if d := now.Sub(time.Unix(sh.timestamp, 0)); d > DefaultWebhookTolerance || d < -WebhookFutureSkew {
			t.Fatalf("accepted a signature %s old", d)
		}
		if ev.APIVersion != stripe.APIVersion || ev.ID == "" {
			t.Fatalf("accepted event %+v", ev)
		}
	})
}
