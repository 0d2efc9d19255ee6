package keyservice

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/imagegate/imagegate/store"
)

// ClientConfig says where the key service is.
type ClientConfig struct {
	// URL is the service's base URL, http:// or https://.
	URL string
	// Token is the shared secret (≥ MinTokenLen).
	Token string
	// RootCAs verifies an https:// service (nil: the system roots).
	RootCAs *x509.CertPool
	// Timeout bounds one attempt (default 3 s).
	Timeout time.Duration
	// Attempts is how many times an operation is tried before its error
	// is returned (default 3): after a network error, a timeout or a 5xx.
	// Every operation is idempotent, so a retry after a lost answer
	// returns the same key or destroys nothing more.
	Attempts int
	// Backoff is the wait before the second attempt, doubled for each
	// further one (default 100 ms).
	Backoff time.Duration
}

// Client is a store.KeyBackend kept by a key service. It is safe for
// concurrent use and caches nothing: every Key is a request, so a destroy
// made through any gateway holds for every gateway once it returns.
type Client struct {
	endpoint string
	auth     string
	http     *http.Client
	timeout  time.Duration
	attempts int
	backoff  time.Duration
}

var _ store.KeyBackend = (*Client)(nil)

// Validate fills defaults and reports every problem at once.
func (cfg *ClientConfig) Validate() error {
	var errs []error
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, errors.New("keyservice: the URL must be http(s)://host[:port][/path], without credentials or query"))
	}
	if len(cfg.Token) < MinTokenLen {
		errs = append(errs, errors.New("keyservice: the token must be at least 32 characters"))
	}
	if cfg.Timeout < 0 || cfg.Attempts < 0 || cfg.Backoff < 0 {
		errs = append(errs, errors.New("keyservice: timeout, attempts and backoff must not be negative"))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Attempts == 0 {
		cfg.Attempts = 3
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	return errors.Join(errs...)
}

// NewClient checks cfg and returns a client. It does not connect.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 16
	return &Client{
		endpoint: strings.TrimRight(cfg.URL, "/") + "/v1/keys",
		auth:     "Bearer " + cfg.Token,
		http:     &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		timeout:  cfg.Timeout,
		attempts: cfg.Attempts,
		backoff:  cfg.Backoff,
	}, nil
}

// CreateKey is store.KeyBackend.CreateKey.
func (c *Client) CreateKey(f store.KeyFile, slot uint64, tag store.KeyTag) ([]byte, error) {
	return c.do(Request{Op: OpCreate, File: f, Slot: slot, Tag: tag})
}

// Key is store.KeyBackend.Key.
func (c *Client) Key(f store.KeyFile, slot uint64, tag store.KeyTag) ([]byte, error) {
	return c.do(Request{Op: OpGet, File: f, Slot: slot, Tag: tag})
}

// DestroyKey is store.KeyBackend.DestroyKey.
func (c *Client) DestroyKey(f store.KeyFile, slot uint64) error {
	_, err := c.do(Request{Op: OpDestroy, File: f, Slot: slot})
	return err
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// errPermanent marks an answer a retry would not change.
type errPermanent struct{ err error }

func (e errPermanent) Error() string { return e.err.Error() }
func (e errPermanent) Unwrap() error { return e.err }

// do sends r, retrying transient failures. Slots past MaxSlot are refused
// here as the server would.
func (c *Client) do(r Request) ([]byte, error) {
	if r.Slot > MaxSlot {
		return nil, fmt.Errorf("keyservice: slot %d is past the service's %d", r.Slot, uint64(MaxSlot))
	}
	body := EncodeRequest(r)
	var err error
	wait := c.backoff
	for attempt := 1; ; attempt++ {
		var key []byte
		key, err = c.once(body, r.Op)
		if err == nil {
			return key, nil
		}
		if perm := (errPermanent{}); errors.As(err, &perm) {
			return nil, perm.err
		}
		if attempt == c.attempts {
			break
		}
		time.Sleep(wait)
		wait *= 2
	}
	return nil, fmt.Errorf("keyservice: %s %s slot %d: %w", r.Op, r.File, r.Slot, err)
}

// once is one attempt.
func (c *Client) once(body []byte, op string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, errPermanent{fmt.Errorf("keyservice: %w", err)}
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound:
		return nil, errPermanent{store.ErrKeyDestroyed}
	case resp.StatusCode == http.StatusConflict:
		return nil, errPermanent{store.ErrKeyOwner}
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errPermanent{errors.New("keyservice: the service refused the token (401): check --key-service-token")}
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("keyservice: status %d: %s", resp.StatusCode, errorText(raw))
	default:
		return nil, errPermanent{fmt.Errorf("keyservice: status %d: %s", resp.StatusCode, errorText(raw))}
	}
	if op == OpDestroy {
		return nil, nil
	}
	var k wireKey
	if err := json.Unmarshal(raw, &k); err != nil || len(k.Key) != 32 {
		return nil, errPermanent{errors.New("keyservice: malformed key in the answer")}
	}
	return k.Key, nil
}

// errorText is the service's error message, short and printable.
func errorText(raw []byte) string {
	var e wireError
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		return "no error message"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, e.Error)
}
