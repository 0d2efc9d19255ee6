package inference

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// ErrUnavailable means no inference server could serve the call: every
// attempt failed in a way another try might not. Callers answer 503 with
// Retry-After.
var ErrUnavailable = errors.New("inference: unavailable")

// Pool defaults.
const (
	DefaultCallTimeout    = 60 * time.Second
	DefaultHealthInterval = 2 * time.Second
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// URLs of inference servers: http:// speaks h2c (HTTP/2 without TLS,
	// for loopback and private networks), https:// HTTP/2 over TLS,
	// negotiated by ALPN.
	URLs []string
	// Token is sent as a bearer token on every call, health probes included.
	// Over http:// to a host other than loopback it travels in clear text:
	// NewPool allows that (private networks are a legitimate home for h2c)
	// but logs a warning per such URL.
	Token string
	// RootCAs are the certificate authorities https:// servers must chain
	// to; nil means the system's roots.
	RootCAs *x509.CertPool
	// CallTimeout bounds one attempt on one server; the caller's deadline
	// still applies when it is sooner. Zero means 60 s.
	CallTimeout time.Duration
	// HealthInterval is the time between health probes. Zero means 2 s.
	HealthInterval time.Duration
	// Registerer receives the pool's metrics unless nil.
	Registerer prometheus.Registerer
}

// Validate reports every problem with the configuration at once.
func (c PoolConfig) Validate() error {
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, errors.New("inference: no URLs"))
	}
	for _, raw := range c.URLs {
		if _, err := parseEndpointURL(raw); err != nil {
			errs = append(errs, err)
		}
	}
	if err := validateToken(c.Token); err != nil {
		errs = append(errs, err)
	}
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("inference: CallTimeout %v is negative", c.CallTimeout))
	}
	if c.HealthInterval < 0 {
		errs = append(errs, fmt.Errorf("inference: HealthInterval %v is negative", c.HealthInterval))
	}
	return errors.Join(errs...)
}

func parseEndpointURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("inference: URL %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("inference: URL %q: want http(s)://host[:port][/path]", u.Redacted())
	}
	return u, nil
}

// isLoopbackHost reports whether host (a URL's Hostname) names this
// machine: "localhost" or a loopback address. Other names are not resolved:
// what they point at can change after the check.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Pool calls a set of inference servers, balancing and failing over
// between them. It is safe for concurrent use.
type Pool struct {
	cfg        PoolConfig
	logger     *slog.Logger
	endpoints  []*endpoint
	transports []*http.Transport
	next       atomic.Uint64 // round-robin tie-break
	metrics    poolMetrics

	stop      context.CancelFunc
	stopped   chan struct{}
	closeOnce sync.Once
}

// NewPool returns a pool over cfg.URLs and starts probing them in the
// background; until a probe succeeds, calls try the servers in order.
// Close stops the probes.
func NewPool(cfg PoolConfig, logger *slog.Logger) (*Pool, error) {
	p, err := newPool(cfg, logger)
	if err != nil {
		return nil, err
	}
	ticker := time.NewTicker(p.cfg.HealthInterval)
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.stopped = make(chan struct{})
	go func() {
		defer close(p.stopped)
		defer ticker.Stop()
		p.probeLoop(ctx, ticker.C)
	}()
	return p, nil
}

// newPool builds a pool without starting its probes.
func newPool(cfg PoolConfig, logger *slog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h2c, overTLS := newTransport(true), newTransport(false)
	overTLS.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	p := &Pool{
		cfg:        cfg,
		logger:     logger,
		transports: []*http.Transport{h2c, overTLS},
	}
	for i, raw := range cfg.URLs {
		u, err := parseEndpointURL(raw)
		if err != nil {
			return nil, err
		}
		if cfg.Token != "" && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			logger.Warn("inference token will travel in clear text: use https:// unless this network is private",
				"endpoint", u.Redacted())
		}
		p.endpoints = append(p.endpoints, newEndpoint(i, u, &http.Client{Transport: h2c}, &http.Client{Transport: overTLS}))
	}
	p.metrics = newPoolMetrics(p)
	if cfg.Registerer != nil {
		if err := p.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Generate renders req with model ("" for the tier's default). Only Name
// and Version of the returned ModelInfo are set. Errors wrap
// ErrInvalidArgument for requests the tier refuses (including an unknown
// model) and ErrUnavailable when no server could answer; when ctx ends
// first, the error is ctx.Err().
func (p *Pool) Generate(ctx context.Context, model string, req Request) (Result, ModelInfo, error) {
	began := time.Now()
	res, info, err := p.generate(ctx, model, req)
	p.metrics.duration.WithLabelValues(outcome(ctx, err)).Observe(time.Since(began).Seconds())
	return res, info, err
}

func (p *Pool) generate(ctx context.Context, model string, req Request) (Result, ModelInfo, error) {
	msg, err := requestToProto(model, req)
	if err != nil {
		return Result{}, ModelInfo{}, err
	}
	var out *inferencev1.GenerateResponse
	err = p.call(ctx, p.pickLeastBusy, func(ctx context.Context, e *endpoint) error {
		res, err := e.client.Generate(ctx, withToken(connect.NewRequest(msg), p.cfg.Token))
		if err != nil {
			return err
		}
		out = res.Msg
		return nil
	})
	if err != nil {
		return Result{}, ModelInfo{}, err
	}
	res, info := resultFromProto(out)
	return res, info, nil
}

// Progress is one progress event of a streamed generation.
type Progress struct {
	Fraction float32
	Stage    string
	// PartialImage is the backend's latest preview, when it makes them
	// and it changed since the last event; PartialImageType is its media
	// type.
	PartialImage     []byte
	PartialImageType string
}

// GenerateStream is Generate, calling progress for each progress event
// the tier streams before the image. A retry on another server starts the
// stream again; progress never sees the fraction go back. Errors are as
// for Generate.
func (p *Pool) GenerateStream(ctx context.Context, model string, req Request, progress func(Progress)) (Result, ModelInfo, error) {
	began := time.Now()
	res, info, err := p.generateStream(ctx, model, req, progress)
	p.metrics.duration.WithLabelValues(outcome(ctx, err)).Observe(time.Since(began).Seconds())
	return res, info, err
}

func (p *Pool) generateStream(ctx context.Context, model string, req Request, progress func(Progress)) (Result, ModelInfo, error) {
	msg, err := requestToProto(model, req)
	if err != nil {
		return Result{}, ModelInfo{}, err
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	var highest float32
	var out *inferencev1.GenerateResponse
	err = p.call(ctx, p.pickLeastBusy, func(ctx context.Context, e *endpoint) error {
		stream, err := e.client.GenerateStream(ctx, withToken(connect.NewRequest(msg), p.cfg.Token))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			switch ev := stream.Msg().GetEvent().(type) {
			case *inferencev1.GenerateStreamResponse_Progress:
				pr := ev.Progress
				highest = max(highest, pr.GetFraction())
				progress(Progress{Fraction: highest, Stage: pr.GetStage(),
					PartialImage: pr.GetPartialImage(), PartialImageType: pr.GetPartialImageContentType()})
			case *inferencev1.GenerateStreamResponse_Result:
				out = ev.Result
			}
		}
		if err := stream.Err(); err != nil {
			return err
		}
		if out == nil {
			return connect.NewError(connect.CodeUnavailable, errors.New("stream ended without an image"))
		}
		return nil
	})
	if err != nil {
		return Result{}, ModelInfo{}, err
	}
	res, info := resultFromProto(out)
	return res, info, nil
}

// Models lists the backends of the first healthy server (servers run the
// same backends). Errors are as for Generate.
func (p *Pool) Models(ctx context.Context) ([]ModelInfo, error) {
	var models []ModelInfo
	err := p.call(ctx, p.pickFirst, func(ctx context.Context, e *endpoint) error {
		res, err := e.client.ListModels(ctx, withToken(connect.NewRequest(&inferencev1.ListModelsRequest{}), p.cfg.Token))
		if err != nil {
			return err
		}
		models = toModels(res.Msg)
		return nil
	})
	return models, err
}

// Ready reports whether at least one server passed its last health probe
// and has not failed a call since.
func (p *Pool) Ready() bool {
	return p.healthy() > 0
}

func (p *Pool) healthy() int {
	n := 0
	for _, e := range p.endpoints {
		if e.up.Load() {
			n++
		}
	}
	return n
}

// Close stops the health probes and drops idle connections. Calls in
// progress finish; the pool must not be used afterwards.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		if p.stop != nil {
			p.stop()
			<-p.stopped
		}
		for _, t := range p.transports {
			t.CloseIdleConnections()
		}
	})
}

// call runs fn on one endpoint after another until it succeeds, fails in a
// way no other endpoint would change, or the attempts run out: one per
// endpoint, and two when there is only one (a single server may have just
// restarted).
func (p *Pool) call(ctx context.Context, pick func(tried []bool) *endpoint, fn func(context.Context, *endpoint) error) error {
	attempts := max(len(p.endpoints), 2)
	tried := make([]bool, len(p.endpoints))
	var last error
	var wait time.Duration // the longest Retry-After a busy tier asked for
	for attempt := range attempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if attempt > 0 {
			p.metrics.retries.Inc()
		}
		e := pick(tried)
		tried[e.index] = true
		err := p.attempt(ctx, e, fn)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		code := connect.CodeOf(err)
		switch code {
		case connect.CodeInvalidArgument, connect.CodeNotFound:
			// NotFound is an unknown model: the caller asked for it.
			return fmt.Errorf("%w: %s", ErrInvalidArgument, messageOf(err))
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeCanceled:
			// The server or the way to it failed (the caller's context is
			// still live, so a deadline or cancellation was this
			// attempt's alone). Prefer others until a probe says otherwise.
			e.setUp(p.logger, false, err)
		case connect.CodeResourceExhausted, connect.CodeAborted:
			// Busy, not broken: retry elsewhere but keep the endpoint.
			if d := retryAfterOf(err); d > wait {
				wait = d
			}
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			p.logger.Error("inference endpoint refused the token", "endpoint", e.name)
			return fmt.Errorf("inference: %s: %w", e.name, err)
		default:
			return fmt.Errorf("inference: %s: %w", e.name, err)
		}
		last = fmt.Errorf("%s: %w", e.name, err)
	}
	// The last error is text only: it must not make errors.Is match, say,
	// context.DeadlineExceeded of an attempt when the caller has time left.
	return &UnavailableError{
		msg:        fmt.Sprintf("%v: %d attempts failed, last: %v", ErrUnavailable, attempts, last),
		RetryAfter: wait,
	}
}

// UnavailableError is the error Generate returns when no server could
// serve the call; errors.Is(err, ErrUnavailable) holds. RetryAfter, when
// not zero, is how long the busiest tier asked callers to wait (its queue
// and expected wait were too long); answer 503 with that Retry-After.
type UnavailableError struct {
	msg        string
	RetryAfter time.Duration
}

func (e *UnavailableError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// RetryAfter returns the wait a tier asked for in err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var ue *UnavailableError
	if errors.As(err, &ue) && ue.RetryAfter > 0 {
		return ue.RetryAfter, true
	}
	return 0, false
}

// retryAfterOf reads the Retry-After seconds a tier put in a
// ResourceExhausted error's metadata.
func retryAfterOf(err error) time.Duration {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return 0
	}
	secs, convErr := strconv.Atoi(cerr.Meta().Get(retryAfterHeader))
	if convErr != nil || secs <= 0 || secs > 3600 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

func (p *Pool) attempt(ctx context.Context, e *endpoint, fn func(context.Context, *endpoint) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	e.active.Add(1)
	defer e.active.Add(-1)
	return fn(ctx, e)
}

func messageOf(err error) string {
	if cerr := new(connect.Error); errors.As(err, &cerr) {
		return cerr.Message()
	}
	return err.Error()
}

// pickLeastBusy chooses, among endpoints not yet tried, the healthy one
// with the fewest calls in flight, breaking ties round-robin. With none
// healthy it takes the first untried one in order: probes may be stale, and
// trying beats failing. Once every endpoint was tried it starts over.
func (p *Pool) pickLeastBusy(tried []bool) *endpoint {
	resetIfAllTried(tried)
	n := len(p.endpoints)
	start := int(p.next.Add(1) % uint64(n))
	var best *endpoint
	var bestActive int64
	for i := range n {
		e := p.endpoints[(start+i)%n]
		if tried[e.index] || !e.up.Load() {
			continue
		}
		if active := e.active.Load(); best == nil || active < bestActive {
			best, bestActive = e, active
		}
	}
	if best != nil {
		return best
	}
	return p.firstUntried(tried)
}

// pickFirst chooses the first healthy endpoint not yet tried, in
// configuration order, else the first untried one.
func (p *Pool) pickFirst(tried []bool) *endpoint {
	resetIfAllTried(tried)
	for _, e := range p.endpoints {
		if !tried[e.index] && e.up.Load() {
			return e
		}
	}
	return p.firstUntried(tried)
}

func (p *Pool) firstUntried(tried []bool) *endpoint {
	for _, e := range p.endpoints {
		if !tried[e.index] {
			return e
		}
	}
	return p.endpoints[0] // unreachable after resetIfAllTried
}

func resetIfAllTried(tried []bool) {
	for _, t := range tried {
		if !t {
			return
		}
	}
	clear(tried)
}

// probeLoop probes every endpoint now and then on every tick until ctx
// ends.
func (p *Pool) probeLoop(ctx context.Context, tick <-chan time.Time) {
	for {
		p.probeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

// probeAll probes every endpoint concurrently and records the outcomes.
func (p *Pool) probeAll(ctx context.Context) {
	timeout := min(p.cfg.CallTimeout, max(p.cfg.HealthInterval, time.Second))
	var wg sync.WaitGroup
	for _, e := range p.endpoints {
		wg.Go(func() {
			probeCtx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			err := e.check(probeCtx, p.cfg.Token)
			if ctx.Err() != nil {
				return // the pool is closing: no verdict
			}
			e.setUp(p.logger, err == nil, err)
		})
	}
	wg.Wait()
}

// outcome labels a finished Generate for the latency histogram.
func outcome(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case ctx.Err() != nil:
		return "canceled"
	default:
		return "error"
	}
}

// poolMetrics are the client side's Prometheus figures.
type poolMetrics struct {
	duration *prometheus.HistogramVec
	retries  prometheus.Counter
	healthy  prometheus.GaugeFunc
}

func newPoolMetrics(p *Pool) poolMetrics {
	m := poolMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_inference_request_duration_seconds",
			Help:    "Time to complete a generation through the inference pool, retries included.",
			Buckets: prometheus.ExponentialBucketsRange(0.01, 120, 12),
		}, []string{"outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_inference_retries_total",
			Help: "Calls the pool repeated on another inference endpoint.",
		}),
		healthy: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imagegate_inference_endpoints_healthy",
			Help: "Inference endpoints that passed their last health probe.",
		}, func() float64 { return float64(p.healthy()) }),
	}
	return m
}

func (m poolMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.duration, m.retries, m.healthy} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("inference: register metrics: %w", err)
		}
	}
	return nil
}
