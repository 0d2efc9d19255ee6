package mail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	netmail "net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/mail"
)

// fakeClock advances by one millisecond on every reading and keeps the
// start time's zone.
type fakeClock struct {
	start time.Time
	reads atomic.Int64
}

func newFakeClock(start time.Time) *fakeClock { return &fakeClock{start: start} }

func (c *fakeClock) Now() time.Time {
	return c.start.Add(time.Duration(c.reads.Add(1)) * time.Millisecond)
}

func newOutbox(t *testing.T, cfg mail.Config) *mail.Outbox {
	t.Helper()
	if cfg.OutboxDir == "" {
		cfg.OutboxDir = filepath.Join(t.TempDir(), "outbox")
	}
	o, err := mail.NewOutbox(cfg, testLogger(t, "ada@example.com", "SECRET-TOKEN"))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// readOutbox parses every .eml file in dir, in file-name order, and fails
// on anything else left in it.
func readOutbox(t *testing.T, dir string) (names []string, msgs []*netmail.Message, bodies [][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".eml") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("unexpected file %s in the outbox", e.Name())
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := netmail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s does not parse: %v\n%s", e.Name(), err, raw)
		}
		var body bytes.Buffer
		body.ReadFrom(m.Body)
		names, msgs, bodies = append(names, e.Name()), append(msgs, m), append(bodies, body.Bytes())
	}
	return names, msgs, bodies
}

// TestOutboxWritesEML: a sent message becomes one parseable RFC 5322 file
// with the headers and bodies of the SMTP path.
func TestOutboxWritesEML(t *testing.T) {
	t.Parallel()
	clock := newFakeClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	o := newOutbox(t, mail.Config{Now: clock.Now})
	want := resetMessage("ada@example.com")
	if err := o.Send(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	names, msgs, bodies := readOutbox(t, o.Dir())
	if len(msgs) != 1 {
		t.Fatalf("outbox has %d messages, want 1", len(msgs))
	}
	h := msgs[0].Header
	if got := decodedSubject(t, h); got != want.Subject {
		t.Errorf("subject %q, want %q", got, want.Subject)
	}
	for header, v := range map[string]string{
		"To":   "<ada@example.com>",
		"From": `"imagegate" <no-reply@imagegate.invalid>`,
		"Date": "Wed, 04 Mar 2026 05:06:07 +0000",
	} {
		if got := h.Get(header); got != v {
			t.Errorf("%s: %q, want %q", header, got, v)
		}
	}
	id := h.Get("Message-Id")
	token := strings.TrimSuffix(strings.SplitN(names[0], "-", 2)[1], ".eml")
	if id != "<"+token+"@imagegate.invalid>" {
		t.Errorf("Message-ID %q does not match file %s", id, names[0])
	}
	if !strings.HasPrefix(names[0], "20260304T050607.001000000Z-") {
		t.Errorf("file name %s does not start with the UTC write time", names[0])
	}
	text, html := decodeBodies(t, h, bodies[0])
	if text != want.Text || html != want.HTML {
		t.Errorf("bodies %q, %q; want %q, %q", text, html, want.Text, want.HTML)
	}
}

// TestOutboxConcurrent: many goroutines writing at once produce one
// complete, parseable file each, with unique names and no leftovers.
func TestOutboxConcurrent(t *testing.T) {
	t.Parallel()
	// A frozen clock makes every name share its time prefix, so only the
	// random part can keep them apart.
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := newOutbox(t, mail.Config{Now: func() time.Time { return frozen }})
	const writers, each = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m := resetMessage("ada@example.com")
				m.Text = fmt.Sprintf("message %d/%d\n", w, i)
				errs <- o.Send(t.Context(), m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	names, msgs, bodies := readOutbox(t, o.Dir())
	if len(names) != writers*each {
		t.Fatalf("outbox has %d files, want %d", len(names), writers*each)
	}
	var texts []string
	for i, m := range msgs {
		text, _ := decodeBodies(t, m.Header, bodies[i])
		texts = append(texts, text)
	}
	slices.Sort(texts)
	if len(slices.Compact(texts)) != writers*each {
		t.Errorf("bodies are not all distinct: some messages were lost or overwritten")
	}
}

// TestOutboxNamesSortByTime: file-name order is write order.
func TestOutboxNamesSortByTime(t *testing.T) {
	t.Parallel()
	// 2026-12-31 23:59:59.990 UTC, read through a clock in another zone:
	// names must use UTC.
	clock := newFakeClock(time.Date(2027, 1, 1, 4, 59, 59, 990_000_000, time.FixedZone("UTC+5", 5*3600)))
	o := newOutbox(t, mail.Config{Now: clock.Now})
	for i := range 30 { // crosses a second, minute, hour, day and year
		m := resetMessage("ada@example.com")
		m.Text = fmt.Sprintf("%02d", i)
		if err := o.Send(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	_, msgs, bodies := readOutbox(t, o.Dir())
	var got []string
	for i, m := range msgs {
		text, _ := decodeBodies(t, m.Header, bodies[i])
		got = append(got, text)
	}
	if !slices.IsSorted(got) || len(got) != 30 {
		t.Errorf("messages in file-name order: %q", got)
	}
}

// TestOutboxPermissions: the directory is 0700 (tightened if it existed)
// and every file 0600, whatever the umask allows.
func TestOutboxPermissions(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "outbox")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o := newOutbox(t, mail.Config{OutboxDir: dir})
	if err := o.Send(t.Context(), resetMessage("ada@example.com")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("outbox directory mode %v, want 0700", got)
	}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %v, want 0600", d.Name(), got)
		}
		return nil
	})
}

// TestOutboxRefusesBeforeWriting: an invalid message or a finished context
// writes nothing.
func TestOutboxRefusesBeforeWriting(t *testing.T) {
	t.Parallel()
	o := newOutbox(t, mail.Config{})
	injected := resetMessage("ada@example.com")
	injected.Subject = "Hello\r\nBcc: eve@example.com"
	if err := o.Send(t.Context(), injected); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("header injection: error %v, want ErrInvalidMessage", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := o.Send(ctx, resetMessage("ada@example.com")); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: error %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(o.Dir()); len(entries) != 0 {
		t.Errorf("outbox holds %d files after refusals", len(entries))
	}
}

// TestOutboxPrune deletes messages written before the cut-off and stale
// temporary files, and leaves everything else.
func TestOutboxPrune(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var now atomic.Int64
	clock := func() time.Time { return start.Add(time.Duration(now.Load()) * time.Hour) }
	o := newOutbox(t, mail.Config{Now: clock})
	for h := range 4 { // written at +0h, +1h, +2h, +3h
		now.Store(int64(h))
		if err := o.Send(t.Context(), resetMessage("ada@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(o.Dir(), ".tmp-123.eml")
	fresh := filepath.Join(o.Dir(), ".tmp-456.eml")
	foreign := filepath.Join(o.Dir(), "README")
	for _, f := range []string{stale, fresh, foreign} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(stale, start, start); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(fresh, start.Add(5*time.Hour), start.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}

	n, err := o.Prune(t.Context(), start.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("pruned %d files, want 3 (two messages, one stale temp file)", n)
	}
	entries, err := os.ReadDir(o.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name()[:min(len(e.Name()), 13)])
	}
	want := []string{".tmp-456.eml", "20260501T0200", "20260501T0300", "README"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files left (-want +got):\n%s", diff)
	}
}
