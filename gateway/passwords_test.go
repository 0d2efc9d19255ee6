package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
)

// TestPasswordHashIsOWASPArgon2id decodes the PHC string the production
// hasher writes (promise A1): argon2id v19 at m=19 MiB, t=2, p=1, with a
// fresh 16-byte salt and a 32-byte key, and it verifies only its password.
func TestPasswordHashIsOWASPArgon2id(t *testing.T) {
	t.Parallel()
	h := newPasswordHasher(nil, 2, time.Minute)
	const pw = "correct horse battery"
	salts := map[string]bool{}
	for range 2 {
		phc, err := h.hash(t.Context(), pw)
		if err != nil {
			t.Fatal(err)
		}
		// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
		f := strings.Split(phc, "$")
		if len(f) != 6 || f[0] != "" {
			t.Fatalf("hash %q is not a PHC string of 5 fields", phc)
		}
		if f[1] != "argon2id" || f[2] != "v=19" || f[3] != "m=19456,t=2,p=1" {
			t.Errorf("hash %q: algorithm %q, version %q, parameters %q; want argon2id, v=19, m=19456,t=2,p=1", phc, f[1], f[2], f[3])
		}
		salt, err := base64.RawStdEncoding.Strict().DecodeString(f[4])
		if err != nil {
			t.Fatalf("salt %q: %v", f[4], err)
		}
		if len(salt) != 16 {
			t.Errorf("salt is %d bytes, want 16", len(salt))
		}
		key, err := base64.RawStdEncoding.Strict().DecodeString(f[5])
		if err != nil {
			t.Fatalf("key %q: %v", f[5], err)
		}
		if len(key) != 32 {
			t.Errorf("key is %d bytes, want 32", len(key))
		}
		salts[string(salt)] = true

		for _, c := range []struct {
			password string
			want     bool
		}{{pw, true}, {pw + "!", false}} {
			ok, err := h.verify(t.Context(), c.password, phc)
			if err != nil || ok != c.want {
				t.Errorf("verify(%q) = %v, %v; want %v", c.password, ok, err, c.want)
			}
		}
	}
	if len(salts) != 2 {
		t.Errorf("two hashes of one password share a salt")
	}
	if ok, err := h.verify(t.Context(), pw, ""); ok || err != nil {
		t.Errorf("verify against no hash = %v, %v; want false, nil", ok, err)
	}
}

// kdfGauge wraps the hasher's argon2id calls: each call counts itself in,
// reports on entered, and waits for a token on gate, so a test holds hashes
// in flight and reads the most that ever ran at once.
type kdfGauge struct {
	entered chan struct{}
	gate    chan struct{}
	mu      sync.Mutex
	now     int
	peak    int
}

func watchKDF(t *testing.T, h *passwordHasher) *kdfGauge {
	g := &kdfGauge{entered: make(chan struct{}, 16), gate: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(g.gate) }) }) // free anything still held on failure
	create, compare := h.create, h.compare
	h.create = func(pw string, p *argon2id.Params) (string, error) {
		defer g.in()()
		return create(pw, p)
	}
	h.compare = func(pw, phc string) (bool, error) {
		defer g.in()()
		return compare(pw, phc)
	}
	return g
}

// in counts a call in, blocks until the gate lets it through, and returns
// the count-out for the caller to defer.
func (g *kdfGauge) in() func() {
	g.mu.Lock()
	g.now++
	g.peak = max(g.peak, g.now)
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.gate
	return func() {
		g.mu.Lock()
		g.now--
		g.mu.Unlock()
	}
}

func (g *kdfGauge) max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}

// TestPasswordHashingIsBounded holds two hashes inside argon2id on a hasher
// of concurrency 2: a third is refused after the wait without ever
// reaching argon2id, or, given a longer wait, queues until a slot frees.
// The gauge of calls inside argon2id never exceeds 2 (promise A1), for
// hashing and for verifying alike.
func TestPasswordHashingIsBounded(t *testing.T) {
	t.Parallel()
	cheap := &argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
	phc, err := argon2id.CreateHash(testPassword, cheap)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]func(context.Context, *passwordHasher) error{
		"hash": func(ctx context.Context, h *passwordHasher) error {
			_, err := h.hash(ctx, testPassword)
			return err
		},
		"verify": func(ctx context.Context, h *passwordHasher) error {
			ok, err := h.verify(ctx, testPassword, phc)
			if err == nil && !ok {
				err = errors.New("the right password did not verify")
			}
			return err
		},
	}
	for name, op := range ops {
		t.Run(name+"/refused", func(t *testing.T) {
			t.Parallel()
			h := newPasswordHasher(cheap, 2, 20*time.Millisecond)
			g := watchKDF(t, h)
			errs := make(chan error, 3)
			for range 2 {
				go func() { errs <- op(t.Context(), h) }()
			}
			<-g.entered
			<-g.entered
			go func() { errs <- op(t.Context(), h) }()
			select {
			case <-g.entered:
				t.Fatalf("a third call reached argon2id beside two in flight (concurrency 2)")
			case err := <-errs:
				if !errors.Is(err, errHashBusy) {
					t.Fatalf("third call with both slots held: %v, want %v", err, errHashBusy)
				}
			}
			for range 2 {
				g.gate <- struct{}{}
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			// The slots came back: the next call runs.
			go func() { errs <- op(t.Context(), h) }()
			<-g.entered
			g.gate <- struct{}{}
			if err := <-errs; err != nil {
				t.Fatalf("call after the slots were freed: %v", err)
			}
			if got := g.max(); got > 2 {
				t.Errorf("%d calls inside argon2id at once, want at most 2", got)
			}
		})
		t.Run(name+"/queued", func(t *testing.T) {
			t.Parallel()
			h := newPasswordHasher(cheap, 2, time.Minute)
			g := watchKDF(t, h)
			errs := make(chan error, 5)
			for range 5 {
				go func() { errs <- op(t.Context(), h) }()
			}
			for range 5 {
				<-g.entered // at most two are inside; each token frees one slot for a waiter
				g.gate <- struct{}{}
			}
			for range 5 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if got := g.max(); got > 2 {
				t.Errorf("%d calls inside argon2id at once, want at most 2", got)
			}
		})
	}
}
