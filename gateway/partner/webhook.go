package partner

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/store"
)

// Completion is what a partner's server is told after one of its
// visitors' generations: the links and seeds of the images, never the
// prompt or anything about the visitor.
type Completion struct {
	Images []Image `json:"images"`
}

// Image is one generated image in a completion callback.
type Image struct {
	URL  string `json:"url"`
	Seed uint32 `json:"seed"`
}

// webhookEvent is the callback's body, in the Standard Webhooks shape
// (type, timestamp, data).
type webhookEvent struct {
	Type      string         `json:"type"`
	Timestamp string         `json:"timestamp"`
	Data      webhookPayload `json:"data"`
}

type webhookPayload struct {
	Partner string  `json:"partner"`
	Images  []Image `json:"images"`
}

// WebhookConfig tunes delivery.
type WebhookConfig struct {
	// Attempts is how often one callback is tried (default 6).
	Attempts int
	// Backoff is the wait after the first failure; it doubles after each
	// further one (default 5s: 5s, 10s, 20s, 40s, 80s).
	Backoff time.Duration
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration
	// Queue bounds callbacks waiting for delivery (default 1024); when it
	// is full new ones are dropped and counted, so a slow partner server
	// never holds up generations.
	Queue int
	// Workers deliver concurrently (default 4).
	Workers int
}

func (c *WebhookConfig) defaults() {
	if c.Attempts == 0 {
		c.Attempts = 6
	}
	if c.Backoff == 0 {
		c.Backoff = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Queue == 0 {
		c.Queue = 1024
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
}

// Clock is the time a Notifier reads and waits on; testpeer.Clock
// implements it for tests.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RealClock is the wall clock.
var RealClock Clock = realClock{}

type delivery struct {
	id, url, secret string
	body            []byte
}

// Notifier delivers signed completion callbacks in the background with
// retries and exponential backoff. Create it with NewNotifier, start it
// with Run, and Notify from request handlers: Notify never blocks.
type Notifier struct {
	cfg    WebhookConfig
	client *http.Client
	clock  Clock
	logger *slog.Logger
	queue  chan delivery

	// Delivered, Failed (gave up after every attempt) and Dropped (queue
	// full) count callbacks, for /metrics.
	Delivered, Failed, Dropped atomic.Int64
}

// NewNotifier returns a notifier posting with client.
func NewNotifier(cfg WebhookConfig, client *http.Client, clock Clock, logger *slog.Logger) *Notifier {
	cfg.defaults()
	return &Notifier{cfg: cfg, client: client, clock: clock, logger: logger, queue: make(chan delivery, cfg.Queue)}
}

// Notify queues a completion callback to the partner's webhook URL, if it
// has one. It returns at once.
func (n *Notifier) Notify(p store.Partner, c Completion) {
	if p.WebhookURL == "" || p.WebhookSecret == "" {
		return
	}
	body, err := json.Marshal(webhookEvent{
		Type: "image.generated", Timestamp: n.clock.Now().UTC().Format(time.RFC3339),
		Data: webhookPayload{Partner: p.ID, Images: c.Images},
	})
	if err != nil {
		n.logger.Error("webhook not encoded", "err", err)
		return
	}
	var b [16]byte
	rand.Read(b[:])
	d := delivery{id: "msg_" + hex.EncodeToString(b[:]), url: p.WebhookURL, secret: p.WebhookSecret, body: body}
	select {
	case n.queue <- d:
	default:
		n.Dropped.Add(1)
		n.logger.Warn("webhook dropped: queue full", "partner", p.ID)
	}
}

// Run delivers queued callbacks until ctx ends; callbacks still queued
// then are abandoned.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range n.cfg.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-n.queue:
					n.deliver(ctx, d)
				}
			}
		})
	}
	wg.Wait()
}

// deliver tries one callback until it is accepted (2xx), the attempts run
// out or ctx ends. Every attempt keeps the message id (receivers
// deduplicate on it) and is signed with its own timestamp, so a retry is
// not refused as stale.
func (n *Notifier) deliver(ctx context.Context, d delivery) {
	wait := n.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := n.attempt(ctx, d)
		if err == nil {
			n.Delivered.Add(1)
			return
		}
		if attempt >= n.cfg.Attempts || ctx.Err() != nil {
			n.Failed.Add(1)
			// The URL may carry a partner's token in its query: not logged.
			n.logger.Warn("webhook failed", "id", d.id, "attempts", attempt, "err", err)
			return
		}
		if n.clock.Sleep(ctx, wait) != nil {
			n.Failed.Add(1)
			return
		}
		wait *= 2
	}
}

func (n *Notifier) attempt(ctx context.Context, d delivery) error {
	ts := strconv.FormatInt(n.clock.Now().Unix(), 10)
	sig, err := Sign(d.secret, d.id, ts, d.body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", d.id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", sig)
	resp, err := n.client.Do(req)
	if err != nil {
		return errors.New("request failed") // the error text holds the URL
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// Sign is the Standard Webhooks signature of a message: "v1," and the
// base64 HMAC-SHA256 of "id.timestamp.body" under the key the whsec_
// secret encodes.
func Sign(secret, id, timestamp string, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, store.WebhookSecretPrefix))
	if err != nil || !strings.HasPrefix(secret, store.WebhookSecretPrefix) {
		return "", errors.New("partner: webhook secret is not whsec_ and base64")
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}
