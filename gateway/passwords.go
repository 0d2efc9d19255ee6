package gateway

import (
	"context"
	"errors"
	"runtime"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
)

// passwordParams are OWASP's minimum argon2id parameters (m=19 MiB, t=2,
// p=1). Every hash in flight holds Memory KiB, so hashing is bounded by
// passwordHasher's semaphore.
var passwordParams = &argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// Password length bounds. The upper bound stops a megabyte "password" from
// becoming an argon2 input; the lower is NIST SP 800-63B's minimum for
// user-chosen secrets, raised by two.
const (
	minPasswordRunes = 10
	maxPasswordBytes = 256
)

// errHashBusy reports that every hashing slot stayed busy past the wait.
var errHashBusy = errors.New("gateway: password hashing at capacity")

// passwordHasher hashes and verifies passwords as argon2id PHC strings
// (promise A1), never more than a fixed number at once, so a storm of
// sign-ins queues instead of exhausting memory: N slots cost N×19 MiB.
type passwordHasher struct {
	params *argon2id.Params
	slots  chan struct{}
	wait   time.Duration
	// create and compare are argon2id's; a test wraps them to count the
	// hashes that run at once.
	create  func(password string, params *argon2id.Params) (string, error)
	compare func(password, phc string) (bool, error)
	// dummy is verified when an email is unknown, so that "no such
	// account" takes as long as "wrong password".
	dummy string
}

// newPasswordHasher hashes with params (nil: passwordParams).
func newPasswordHasher(params *argon2id.Params, concurrency int, wait time.Duration) *passwordHasher {
	if params == nil {
		params = passwordParams
	}
	if concurrency <= 0 {
		concurrency = max(2, runtime.NumCPU())
	}
	h := &passwordHasher{
		params: params, slots: make(chan struct{}, concurrency), wait: wait,
		create: argon2id.CreateHash, compare: argon2id.ComparePasswordAndHash,
	}
	h.dummy, _ = argon2id.CreateHash("imagegate dummy password", params)
	return h
}

func (h *passwordHasher) acquire(ctx context.Context) error {
	t := time.NewTimer(h.wait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-t.C:
		return errHashBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *passwordHasher) release() { <-h.slots }

// hash returns the PHC string of password.
func (h *passwordHasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return h.create(password, h.params)
}

// verify reports whether password matches phc. An empty phc (an account
// without a password) is verified against a dummy hash and never matches.
func (h *passwordHasher) verify(ctx context.Context, password, phc string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	if phc == "" {
		h.compare(password, h.dummy)
		return false, nil
	}
	return h.compare(password, phc)
}

// checkPassword enforces the password policy on a new password; the error
// names the field.
func checkPassword(field, pw string) error {
	switch {
	case utf8.RuneCountInString(pw) < minPasswordRunes:
		return badRequest("weak_password", field+": use at least 10 characters")
	case len(pw) > maxPasswordBytes:
		return badRequest("invalid_password", field+": at most 256 bytes")
	case !utf8.ValidString(pw):
		return badRequest("invalid_password", field+": must be valid UTF-8")
	}
	return nil
}
