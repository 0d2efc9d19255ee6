package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/store"
)

// suspendLikeModeration suspends acct the way the moderator does: the
// status, then the security-log event naming the report.
func suspendLikeModeration(t *testing.T, e *env, id, report string) {
	t.Helper()
	if err := e.db.SetStatus(id, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	err := e.db.LogSecurityEvent(store.SecurityEvent{Kind: moderation.EventAccountSuspended, AccountID: id, Detail: "moderation category=sexual/minors report=" + report})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdminReviewsAndLiftsSuspension(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	suspended := consentAccount(t, e, "suspended@example.com")
	active := consentAccount(t, e, "active@example.com")
	b := newConsentBrowser(t)
	consentSignIn(t, e, b, suspended)
	suspendLikeModeration(t, e, suspended.ID, "rep_0001")
	if resp, _ := b.do("GET", e.url+"/v1/account", ""); resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a suspended account's session works: %d", resp.StatusCode)
	}
	admin := func(method, path, body string) (int, []byte) {
		resp, raw := b.do(method, e.url+path, body, "Authorization", "Bearer "+testAdminToken)
		return resp.StatusCode, raw
	}

	// Review: the suspended account, when and why; not the active one.
	status, raw := admin("GET", "/v1/admin/suspensions", "")
	var list struct{ Suspensions []suspensionJSON }
	if err := json.Unmarshal(raw, &list); status != 200 || err != nil {
		t.Fatalf("list: %d %s", status, raw)
	}
	if len(list.Suspensions) != 1 || list.Suspensions[0].Account != suspended.ID || list.Suspensions[0].Since == nil ||
		!strings.Contains(list.Suspensions[0].Reason, "report=rep_0001") {
		t.Fatalf("review lists %+v, want only %s with its report", list.Suspensions, suspended.ID)
	}

	// Lifting refuses what is not suspended and changes nothing then.
	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"account":"` + active.ID + `"}`, 409},
		{`{"account":"acct_nobody"}`, 404},
		{`{}`, 400},
		{`{"account":"` + suspended.ID + `","account":"` + active.ID + `"}`, 400},
	} {
		if status, raw := admin("POST", "/v1/admin/suspensions/lift", tc.body); status != tc.status {
			t.Errorf("lift %s: %d %s, want %d", tc.body, status, raw, tc.status)
		}
	}
	if a, _ := e.db.Account(suspended.ID); a.Status != store.StatusSuspended {
		t.Fatalf("a refused lift changed the account: %s", a.Status)
	}

	if status, raw := admin("POST", "/v1/admin/suspensions/lift", `{"account":"`+suspended.ID+`"}`); status != 200 {
		t.Fatalf("lift: %d %s", status, raw)
	}
	if a, _ := e.db.Account(suspended.ID); a.Status != store.StatusActive {
		t.Errorf("status after lift %q, want active", a.Status)
	}
	// A second lift is refused: it was lifted once.
	if status, _ := admin("POST", "/v1/admin/suspensions/lift", `{"account":"`+suspended.ID+`"}`); status != 409 {
		t.Errorf("second lift: %d, want 409", status)
	}
	// The owner signs in afresh and can work again.
	b2 := newConsentBrowser(t)
	consentSignIn(t, e, b2, suspended)
	if resp, raw := b2.do("GET", e.url+"/v1/account", ""); resp.StatusCode != 200 {
		t.Errorf("lifted account cannot sign in: %d %s", resp.StatusCode, raw)
	}
	_, raw = admin("GET", "/v1/admin/suspensions", "")
	if err := json.Unmarshal(raw, &list); err != nil || len(list.Suspensions) != 0 {
		t.Errorf("review after lift: %s", raw)
	}

	// The security log holds the lift under the account, with the admin's
	// address, and the review itself.
	events, err := e.db.SecurityEvents(suspended.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
		if ev.Kind == eventSuspensionLifted && ev.IP == "" {
			t.Errorf("lift logged without the admin's address: %+v", ev)
		}
	}
	if diff := cmp.Diff([]string{moderation.EventAccountSuspended, eventSuspensionLifted}, kinds); diff != "" {
		t.Errorf("security log of the account (-want +got):\n%s", diff)
	}
	var all []string
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error { all = append(all, ev.Kind); return nil })
	if !slices.Contains(all, eventSuspensionsListed) {
		t.Errorf("the review is not in the security log: %v", all)
	}
}

func TestLiftSuspensionNeedsTheAdminToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	acct := consentAccount(t, e, "still-suspended@example.com")
	suspendLikeModeration(t, e, acct.ID, "rep_0002")
	for _, token := range []string{"", "wrong-token"} {
		req, _ := http.NewRequest("POST", e.url+"/v1/admin/suspensions/lift", strings.NewReader(`{"account":"`+acct.ID+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 && resp.StatusCode != 403 {
			t.Errorf("lift with token %q: %d", token, resp.StatusCode)
		}
	}
	if a, _ := e.db.Account(acct.ID); a.Status != store.StatusSuspended {
		t.Errorf("lifted without the admin token")
	}
}
