// Package cftest is a fake of Cloudflare's v4 API cache purge endpoint,
// POST /client/v4/zones/{zone_id}/purge_cache, for tests. No real peer of
// that API can run here, so the fake checks every request as strictly as
// Cloudflare does and answers in Cloudflare's envelope:
//
//	{"success":false,"errors":[{"code":971,"message":"..."}],"messages":[],"result":null}
//
// What it checks, in Cloudflare's order, and what it answers:
//
//   - the route: anything but /client/v4/zones/<32 hex>/purge_cache is
//     400 with code 7000 (no route) or 7003 (bad identifier); another method
//     than POST is 405 with code 7001;
//   - credentials: no Authorization header is 400 with code 9106; one that
//     is not "Bearer <token>" is 400 with code 6003 (chain 6111); an
//     unknown token is 400 with code 1000 "Invalid API Token" (Cloudflare
//     answers 400 here, not 401); a zone the token may not purge is 403
//     with code 10000 "Authentication error";
//   - Content-Type application/json, else 400 with code 6003 (chain 6105);
//   - a JSON object body (else 400, code 6007) naming exactly one of
//     "files", "tags", "hosts", "prefixes" or "purge_everything": true
//     (else 400, code 1012, Cloudflare's message), lists as arrays (else
//     code 1014), at most Config.MaxItems items (else CodeTooManyItems),
//     each valid by CheckFile, CheckTag, CheckHost or CheckPrefix (else
//     CodeInvalidItem);
//   - the purge rate, token buckets on Config.Now: URLs in file purges
//     against Config.URLLimit, other purges as requests against
//     Config.RequestLimit; over either is 429 with code 971 and a
//     Retry-After header in whole seconds.
//
// The codes above are the ones Cloudflare answers with; CodeTooManyItems,
// CodeInvalidItem and CodeInternalError are the fake's own, since
// Cloudflare does not document its codes for those cases.
//
// Tests script the answers to valid requests with Enqueue (the next call
// gets a 429, a 500, a stall) and RejectItem (any call naming an item
// fails), and read back every request received, parsed, with Requests and
// Purged.
package cftest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Error codes the fake answers with. All but CodeTooManyItems,
// CodeInvalidItem and CodeInternalError are Cloudflare's own.
const (
	CodeRateLimited       = 971   // purge rate exceeded (HTTP 429)
	CodeInvalidToken      = 1000  // unknown API token (HTTP 400)
	CodeMustContainOne    = 1012  // none or several of files/tags/hosts/prefixes/purge_everything
	CodeMustBeArray       = 1014  // a list that is not a JSON array
	CodeTooManyItems      = 1090  // the fake's own: more than MaxItems items
	CodeInvalidItem       = 1091  // the fake's own: an item Cloudflare would refuse
	CodeInvalidHeaders    = 6003  // Authorization or Content-Type malformed; see the chain
	CodeBadContentType    = 6105  // chain entry: Content-Type is not JSON
	CodeBadAuthorization  = 6111  // chain entry: Authorization is not "Bearer <token>"
	CodeMalformedJSON     = 6007  // body is not a JSON object
	CodeNoRoute           = 7000  // unknown path
	CodeMethodNotAllowed  = 7001  // known path, other method
	CodeInvalidIdentifier = 7003  // zone id is not 32 hex digits
	CodeMissingAuth       = 9106  // no credentials at all
	CodeAuthentication    = 10000 // the token may not purge this zone (HTTP 403)
	CodeInternalError     = 1092  // the fake's own: default error of a scripted 5xx
)

const (
	apiBasePath     = "/client/v4"
	zonesPathPrefix = apiBasePath + "/zones/"
	purgePathSuffix = "/purge_cache"
	maxBodyBytes    = 1 << 20
	jsonType        = "application/json"
	bearerPrefix    = "Bearer "

	rateLimitedMessage = "Please wait and consider throttling your request speed"
)

// Limit is a token bucket: Rate tokens a second, at most Burst saved up.
// A zero Rate means no limit.
type Limit struct {
	Rate  float64
	Burst int
}

// Config configures a Server.
type Config struct {
	// Token is the one API token the server accepts. Required.
	Token string
	// ZoneID is the one zone Token may purge: 32 lowercase hex digits.
	// Required.
	ZoneID string
	// MaxItems bounds the items of one request; zero means MaxItems.
	MaxItems int
	// RequestLimit bounds tag, host, prefix and purge-everything requests
	// (Cloudflare Free: 5 a minute, bucket 25; Pro 5 a second). A zero
	// Burst means 1.
	RequestLimit Limit
	// URLLimit bounds the URLs of file purges (Free: 800 a second). A zero
	// Burst means MaxItems; a smaller one refuses full requests forever.
	URLLimit Limit
	// Now is the clock the limits run on; nil means time.Now. Pass a
	// Clock's Now to check a client's pacing without waiting.
	Now func() time.Time
}

// Error is one entry of an envelope's "errors" array.
type Error struct {
	Code       int     `json:"code"`
	Message    string  `json:"message"`
	ErrorChain []Error `json:"error_chain,omitempty"`
}

// Reply is a scripted answer to one valid request.
type Reply struct {
	// Status is the HTTP status; zero means 200.
	Status int
	// Errors fill the envelope's "errors"; with them the envelope says
	// "success": false even under a 2xx status, as Cloudflare sometimes
	// does. A 4xx or 5xx Reply without Errors gets a generic one.
	Errors []Error
	// RetryAfter, if positive, is sent as a Retry-After header, in whole
	// seconds rounded up.
	RetryAfter time.Duration
	// Stall holds the request open until the client gives up (to test
	// the client's timeouts); the other fields are then ignored.
	Stall bool
}

// Request is what the server received, as parsed. The body fields are set
// only for a body the server could parse.
type Request struct {
	// At is the time on Config.Now when the request arrived.
	At          time.Time
	Method      string
	Path        string
	ZoneID      string
	ContentType string
	// Authorized reports whether the request carried the configured
	// token for the configured zone.
	Authorized bool
	Body       []byte
	Files      []string
	Tags       []string
	Hosts      []string
	Prefixes   []string
	Everything bool
	// Status and Errors are what the server answered; a stalled request
	// has Status 0.
	Status int
	Errors []Error
	// ID is the purge id of a successful request.
	ID string
}

// Purged is everything successful requests asked to purge, in order.
type Purged struct {
	Files      []string
	Tags       []string
	Hosts      []string
	Prefixes   []string
	Everything int // successful purge_everything requests
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API base to give a client: "http://127.0.0.1:port/client/v4".
	URL string

	cfg      Config
	srv      *httptest.Server
	closing  chan struct{}
	closeOne sync.Once

	mu       sync.Mutex
	requests []Request
	queue    []Reply
	rejects  map[string]Error
	reqLimit *rate.Limiter // nil: unlimited
	urlLimit *rate.Limiter // nil: unlimited
	seq      int
	conns    atomic.Int64
}

// NewServer starts a fake on loopback and stops it when t ends. It fails t
// if cfg lacks a token or a well-formed zone id.
func NewServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Token == "" || !isZoneID(cfg.ZoneID) {
		t.Fatalf("cftest: Config needs a Token and a ZoneID of 32 lowercase hex digits, got zone %q", cfg.ZoneID)
	}
	if cfg.MaxItems == 0 {
		cfg.MaxItems = MaxItems
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, closing: make(chan struct{}), rejects: map[string]Error{}}
	if l := cfg.RequestLimit; l.Rate > 0 {
		s.reqLimit = newBucket(l, 1)
	}
	if l := cfg.URLLimit; l.Rate > 0 {
		s.urlLimit = newBucket(l, cfg.MaxItems)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.Start()
	s.URL = s.srv.URL + apiBasePath
	t.Cleanup(s.Close)
	return s
}

// newBucket returns a full token bucket for l.
func newBucket(l Limit, defaultBurst int) *rate.Limiter {
	burst := l.Burst
	if burst == 0 {
		burst = defaultBurst
	}
	return rate.NewLimiter(rate.Limit(l.Rate), burst)
}

// Close stops the server; stalled requests are released.
func (s *Server) Close() {
	s.closeOne.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// Enqueue scripts the answers to the next valid requests, one each, in
// order. A request the server refuses on its own (bad credentials, bad
// body, over the rate) does not consume a scripted answer.
func (s *Server) Enqueue(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, replies...)
}

// RejectItem makes every valid request that names item (a file URL, tag,
// host or prefix) fail with HTTP 400 and e, until the server stops.
func (s *Server) RejectItem(item string, e Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejects[item] = e
}

// Requests returns every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Purged returns what the successful requests so far asked to purge.
func (s *Server) Purged() Purged {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p Purged
	for _, r := range s.requests {
		if r.Status != http.StatusOK || len(r.Errors) > 0 {
			continue
		}
		p.Files = append(p.Files, r.Files...)
		p.Tags = append(p.Tags, r.Tags...)
		p.Hosts = append(p.Hosts, r.Hosts...)
		p.Prefixes = append(p.Prefixes, r.Prefixes...)
		if r.Everything {
			p.Everything++
		}
	}
	return p
}

// Connections returns how many TCP connections clients have opened. A
// client that reads and closes every answer reuses one connection for
// requests made one after another.
func (s *Server) Connections() int {
	return int(s.conns.Load())
}

// Client returns an HTTP client with a connection pool of its own for this
// server. http.DefaultClient's pool is shared: any httptest.Server closing
// in a parallel test empties it, which makes Connections() count again.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Count returns how many requests were answered with status.
func (s *Server) Count(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Status == status {
			n++
		}
	}
	return n
}

// serve answers one request and records it with its answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{
		At:          s.cfg.Now(),
		Method:      r.Method,
		Path:        r.URL.Path,
		ContentType: r.Header.Get("Content-Type"),
	}
	body, readErr := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	rec.Body = body

	reply, stall := s.check(r, &rec, body, readErr)
	if stall {
		s.record(rec)
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return
	}
	rec.Status = reply.Status
	rec.Errors = reply.Errors
	if reply.Status == http.StatusOK && len(reply.Errors) == 0 {
		rec.ID = s.nextID()
	}
	s.record(rec)

	h := w.Header()
	h.Set("Content-Type", jsonType)
	if reply.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(reply.RetryAfter.Seconds())), 10))
	}
	w.WriteHeader(reply.Status)
	_ = json.NewEncoder(w).Encode(envelope(rec.ID, reply.Errors))
}

func (s *Server) record(rec Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, rec)
}

func (s *Server) nextID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("%032x", s.seq)
}

// envelope builds Cloudflare's response body.
func envelope(id string, errs []Error) map[string]any {
	env := map[string]any{
		"success":  len(errs) == 0,
		"errors":   []Error{},
		"messages": []any{},
		"result":   nil,
	}
	if len(errs) > 0 {
		env["errors"] = errs
	} else {
		env["result"] = map[string]string{"id": id}
	}
	return env
}

func fail(status, code int, msg string, chain ...Error) Reply {
	return Reply{Status: status, Errors: []Error{{Code: code, Message: msg, ErrorChain: chain}}}
}

// check validates r in Cloudflare's order and returns the answer, filling
// rec with what it parsed. stall reports a scripted stall.
func (s *Server) check(r *http.Request, rec *Request, body []byte, readErr error) (reply Reply, stall bool) {
	zone, ok := strings.CutPrefix(r.URL.Path, zonesPathPrefix)
	zone, ok2 := strings.CutSuffix(zone, purgePathSuffix)
	if !ok || !ok2 || zone == "" || strings.Contains(zone, "/") {
		return fail(http.StatusBadRequest, CodeNoRoute, "No route for that URI"), false
	}
	rec.ZoneID = zone
	if !isZoneID(zone) {
		return fail(http.StatusBadRequest, CodeInvalidIdentifier, fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", strings.TrimPrefix(r.URL.Path, apiBasePath))), false
	}
	if r.Method != http.MethodPost {
		return fail(http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("Method %s not available for that URI.", r.Method)), false
	}

	auth := r.Header.Values("Authorization")
	switch {
	case len(auth) == 0 && r.Header.Get("X-Auth-Key") == "" && r.Header.Get("X-Auth-Email") == "":
		return fail(http.StatusBadRequest, CodeMissingAuth, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"), false
	case len(auth) != 1 || !validBearer(auth[0]):
		return fail(http.StatusBadRequest, CodeInvalidHeaders, "Invalid request headers",
			Error{Code: CodeBadAuthorization, Message: "Invalid format for Authorization header"}), false
	case auth[0][len(bearerPrefix):] != s.cfg.Token:
		return fail(http.StatusBadRequest, CodeInvalidToken, "Invalid API Token"), false
	case zone != s.cfg.ZoneID:
		return fail(http.StatusForbidden, CodeAuthentication, "Authentication error"), false
	}
	rec.Authorized = true

	if mt, _, err := mime.ParseMediaType(rec.ContentType); err != nil || mt != jsonType {
		return fail(http.StatusBadRequest, CodeInvalidHeaders, "Invalid request headers",
			Error{Code: CodeBadContentType, Message: "Invalid Content-Type header, valid values are application/json,multipart/form-data"}), false
	}
	if readErr != nil || len(body) > maxBodyBytes {
		return fail(http.StatusRequestEntityTooLarge, CodeMalformedJSON, "Request body too large or unreadable"), false
	}
	if rep, ok := parseBody(body, rec); !ok {
		return rep, false
	}
	if rep, ok := s.checkItems(rec); !ok {
		return rep, false
	}
	if rep, ok := s.checkRate(rec); !ok {
		return rep, false
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 {
		reply = s.queue[0]
		s.queue = s.queue[1:]
		if reply.Stall {
			return reply, true
		}
		if reply.Status == 0 {
			reply.Status = http.StatusOK
		}
		if reply.Status >= 400 && len(reply.Errors) == 0 {
			reply.Errors = []Error{{Code: CodeInternalError, Message: "Internal Server Error"}}
			if reply.Status == http.StatusTooManyRequests {
				reply.Errors = []Error{{Code: CodeRateLimited, Message: rateLimitedMessage}}
			}
		}
		return reply, false
	}
	for _, list := range [][]string{rec.Files, rec.Tags, rec.Hosts, rec.Prefixes} {
		for _, item := range list {
			if e, ok := s.rejects[item]; ok {
				return Reply{Status: http.StatusBadRequest, Errors: []Error{e}}, false
			}
		}
	}
	return Reply{Status: http.StatusOK}, false
}

// validBearer reports whether v is "Bearer " followed by a token of the
// characters Cloudflare API tokens use.
func validBearer(v string) bool {
	tok, ok := strings.CutPrefix(v, bearerPrefix)
	if !ok || tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// parseBody fills rec's body fields from a purge request body, or returns
// the answer refusing it.
func parseBody(body []byte, rec *Request) (Reply, bool) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return fail(http.StatusBadRequest, CodeMalformedJSON, "Malformed JSON in request body"), false
	}
	kinds := 0
	if raw, ok := fields["purge_everything"]; ok {
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return fail(http.StatusBadRequest, CodeMustContainOne, `Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"`), false
		}
		if v {
			rec.Everything = true
			kinds++
		}
	}
	for _, f := range []struct {
		name string
		dst  *[]string
	}{{"files", &rec.Files}, {"tags", &rec.Tags}, {"hosts", &rec.Hosts}, {"prefixes", &rec.Prefixes}} {
		raw, ok := fields[f.name]
		if !ok || string(raw) == "null" {
			continue
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return fail(http.StatusBadRequest, CodeMustBeArray, `"files", "tags", "hosts" or "prefixes" must be an array`), false
		}
		if len(elems) == 0 {
			continue
		}
		kinds++
		list := make([]string, 0, len(elems))
		for _, e := range elems {
			s, ok := parseItem(f.name, e)
			if !ok {
				return fail(http.StatusBadRequest, CodeMustContainOne, `Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"`), false
			}
			list = append(list, s)
		}
		*f.dst = list
	}
	if kinds != 1 {
		return fail(http.StatusBadRequest, CodeMustContainOne, `Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"`), false
	}
	return Reply{}, true
}

// parseItem decodes one list element: a string, or for files also
// {"url": "...", "headers": {...}} (a purge by cache key).
func parseItem(field string, raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true
	}
	if field != "files" {
		return "", false
	}
	var obj struct {
		URL     *string           `json:"url"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.URL == nil {
		return "", false
	}
	return *obj.URL, true
}

// checkItems applies the per-request item limit and the per-item rules.
func (s *Server) checkItems(rec *Request) (Reply, bool) {
	for _, f := range []struct {
		items []string
		check func(string) error
	}{{rec.Files, CheckFile}, {rec.Tags, CheckTag}, {rec.Hosts, CheckHost}, {rec.Prefixes, CheckPrefix}} {
		if len(f.items) > s.cfg.MaxItems {
			return fail(http.StatusBadRequest, CodeTooManyItems,
				fmt.Sprintf("You may purge up to %d items per request, got %d", s.cfg.MaxItems, len(f.items))), false
		}
		for _, item := range f.items {
			if err := f.check(item); err != nil {
				return fail(http.StatusBadRequest, CodeInvalidItem, err.Error()), false
			}
		}
	}
	return Reply{}, true
}

// checkRate takes tokens for rec from its bucket, or returns a 429 telling
// how long until they are there.
func (s *Server) checkRate(rec *Request) (Reply, bool) {
	lim, n := s.reqLimit, 1
	if len(rec.Files) > 0 {
		lim, n = s.urlLimit, len(rec.Files)
	}
	if lim == nil {
		return Reply{}, true
	}
	now := rec.At
	if lim.AllowN(now, n) {
		return Reply{}, true
	}
	wait := time.Duration(math.Ceil((float64(n)-lim.TokensAt(now))/float64(lim.Limit())*1e9)) * time.Nanosecond
	rep := fail(http.StatusTooManyRequests, CodeRateLimited, rateLimitedMessage)
	rep.RetryAfter = max(wait, time.Second)
	return rep, false
}

// isZoneID reports whether s has the form of a Cloudflare zone id.
func isZoneID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
