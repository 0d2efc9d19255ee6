package partner

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// receiver is a partner's webhook endpoint that verifies Standard
// Webhooks signatures as strictly as the reference libraries: the id
// and timestamp headers present, the timestamp within five minutes of
// its clock, a v1 signature equal to HMAC-SHA256 over id.timestamp.body.
type receiver struct {
	t      *testing.T
	key    []byte
	clock  *testpeer.Clock
	fail   int // answer 503 to this many valid attempts first
	got    chan received
	srv    *httptest.Server
	wrongs chan string
}

type received struct {
	id, ts string
	body   []byte
}

func newReceiver(t *testing.T, secret string, clock *testpeer.Clock, fail int) *receiver {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, key: key, clock: clock, fail: fail, got: make(chan received, 16), wrongs: make(chan string, 16)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

var msgID = regexp.MustCompile(`^msg_[0-9a-f]{32}$`)

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts, sigs := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	reject := func(why string) {
		r.wrongs <- why
		http.Error(w, why, http.StatusBadRequest)
	}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		reject("method or content type")
		return
	}
	if !msgID.MatchString(id) {
		reject("webhook-id")
		return
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || r.clock.Now().Sub(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		reject("webhook-timestamp")
		return
	}
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	ok := false
	for _, s := range strings.Fields(sigs) {
		v, sig, _ := strings.Cut(s, ",")
		ok = ok || (v == "v1" && hmac.Equal([]byte(sig), []byte(want)))
	}
	if !ok {
		reject("webhook-signature")
		return
	}
	r.got <- received{id: id, ts: ts, body: body}
	if r.fail > 0 {
		r.fail--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func webhookPartner(t *testing.T, url string) store.Partner {
	t.Helper()
	db, err := store.Open(store.Config{Path: t.TempDir() + "/db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p, _, err := db.CreatePartner(store.NewPartner{Name: "Shop", Origins: []string{host}, MonthlyQuota: 1, RateLimit: 1, Plan: "free", WebhookURL: url})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebhookSignedAndRetried(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Now())
	p := webhookPartner(t, "http://placeholder.invalid")
	r := newReceiver(t, p.WebhookSecret, clock, 2)
	p.WebhookURL = r.srv.URL + "/hooks"
	n := NewNotifier(WebhookConfig{Backoff: 5 * time.Second}, r.srv.Client(), clock, slog.New(slog.DiscardHandler))
	go n.Run(t.Context())

	n.Notify(p, Completion{Images: []Image{{URL: "https://gen.example/o/ab.png?verify=1", Seed: 7}}})
	var attempts []received
	for range 3 {
		select {
		case a := <-r.got:
			attempts = append(attempts, a)
		case why := <-r.wrongs:
			t.Fatalf("receiver refused the callback: %s", why)
		case <-t.Context().Done():
			t.Fatal("no callback")
		}
	}
	for _, a := range attempts[1:] {
		if a.id != attempts[0].id || string(a.body) != string(attempts[0].body) {
			t.Errorf("a retry changed the message: %q %s vs %q %s", a.id, a.body, attempts[0].id, attempts[0].body)
		}
	}
	// Two failures: waits of 5 s, then 10 s.
	waitFor(t, func() bool { return n.Delivered.Load() == 1 })
	if got := clock.Slept(); got != 15*time.Second {
		t.Errorf("backoff slept %s, want 15s (5s then 10s)", got)
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Partner string  `json:"partner"`
			Images  []Image `json:"images"`
		} `json:"data"`
	}
	if err := json.Unmarshal(attempts[0].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "image.generated" || ev.Data.Partner != p.ID || len(ev.Data.Images) != 1 || ev.Data.Images[0].Seed != 7 {
		t.Errorf("event %s", attempts[0].body)
	}
	if strings.Contains(string(attempts[0].body), "prompt") {
		t.Errorf("callback carries a prompt: %s", attempts[0].body)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Now())
	p := webhookPartner(t, "http://placeholder.invalid")
	r := newReceiver(t, p.WebhookSecret, clock, 100)
	p.WebhookURL = r.srv.URL
	n := NewNotifier(WebhookConfig{Attempts: 3, Backoff: time.Second}, r.srv.Client(), clock, slog.New(slog.DiscardHandler))
	go n.Run(t.Context())
	n.Notify(p, Completion{})
	waitFor(t, func() bool { return n.Failed.Load() == 1 })
	if got := len(r.got); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
	if got := clock.Slept(); got != 3*time.Second {
		t.Errorf("slept %s, want 1s+2s", got)
	}
}

func TestWebhookWrongSecretRefused(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Now())
	p := webhookPartner(t, "http://placeholder.invalid")
	other := webhookPartner(t, "http://placeholder.invalid")
	r := newReceiver(t, other.WebhookSecret, clock, 0)
	p.WebhookURL = r.srv.URL
	n := NewNotifier(WebhookConfig{Attempts: 1}, r.srv.Client(), clock, slog.New(slog.DiscardHandler))
	go n.Run(t.Context())
	n.Notify(p, Completion{})
	select {
	case why := <-r.wrongs:
		if why != "webhook-signature" {
			t.Errorf("refused for %s, want the signature", why)
		}
	case <-r.got:
		t.Fatal("the receiver accepted a signature made with another secret")
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	t.Parallel()
	p := webhookPartner(t, "https://hooks.example/x")
	n := NewNotifier(WebhookConfig{Queue: 2}, http.DefaultClient, RealClock, slog.New(slog.DiscardHandler))
	// Not running: the queue fills and further callbacks are dropped.
	for range 5 {
		n.Notify(p, Completion{})
	}
	if got := n.Dropped.Load(); got != 3 {
		t.Errorf("dropped %d, want 3", got)
	}
}

// waitFor polls cond; the test's deadline bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatal("condition not reached")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSignVector checks Sign against the test vector of the Standard
// Webhooks reference libraries.
func TestSignVector(t *testing.T) {
	t.Parallel()
	got, err := Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; err != nil || got != want {
		t.Errorf("Sign = %q, %v; want %q", got, err, want)
	}
}
