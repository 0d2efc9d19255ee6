package inference

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/imagegate/imagegate/inference/sched"
	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
)

// Server defaults.
const (
	DefaultGenerateTimeout = 2 * time.Minute
)

// ServerConfig configures a Server. The zero value is usable: no token,
// 2×GOMAXPROCS concurrent generations, two minutes per generation.
type ServerConfig struct {
	// Token, when set, must arrive as "Authorization: Bearer <Token>" on
	// every request, health checks included.
	Token string
	// MaxConcurrent bounds backend generations running at once; requests
	// beyond it wait their turn. Zero means 2×GOMAXPROCS.
	MaxConcurrent int
	// GenerateTimeout bounds one generation, time waiting for a slot
	// included. It is the generation's own deadline, independent of any
	// caller's: coalesced callers share it. Zero means two minutes.
	GenerateTimeout time.Duration
	// Queue configures scheduling: plan classes, admission limits, retries
	// and the watchdog. The zero value is one class and sched's defaults.
	Queue QueueConfig
	// Terms by model name: catalogue prices and defaults ListModels
	// publishes.
	Terms map[string]ModelTerms
}

// QueueConfig configures the tier's scheduler (see package sched).
// MaxConcurrent sets the slots of the local worker that runs in-process
// backends such as retro; backends that run on workers of their own
// (Placed) bring their slots with them.
type QueueConfig struct {
	// Classes by plan class name, with their weights and caps; requests
	// naming another class, or none, are in DefaultClass.
	Classes      map[string]sched.Class
	DefaultClass string
	// MaxQueue caps waiting generations; MaxWait refuses generations
	// expected to wait longer. Zero means sched's defaults.
	MaxQueue int
	MaxWait  time.Duration
	// MaxAttempts bounds tries of one generation on workers of Placed
	// backends; in-process backends are tried once.
	MaxAttempts int
	// StallTimeout ends an attempt whose backend reports no progress for
	// that long, to retry it elsewhere.
	StallTimeout time.Duration
}

// Validate reports every problem with the configuration at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("inference: MaxConcurrent %d is negative", c.MaxConcurrent))
	}
	if c.GenerateTimeout < 0 {
		errs = append(errs, fmt.Errorf("inference: GenerateTimeout %v is negative", c.GenerateTimeout))
	}
	if err := validateToken(c.Token); err != nil {
		errs = append(errs, err)
	}
	if err := c.schedConfig(nil).ValidateQueue(); err != nil {
		errs = append(errs, fmt.Errorf("inference: %w", err))
	}
	return errors.Join(errs...)
}

// schedConfig is the scheduler's configuration for workers.
func (c ServerConfig) schedConfig(workers []sched.Worker) sched.Config {
	q := c.Queue
	return sched.Config{
		Workers: workers, Classes: q.Classes, DefaultClass: q.DefaultClass,
		MaxQueue: q.MaxQueue, MaxWait: q.MaxWait, MaxAttempts: q.MaxAttempts, StallTimeout: q.StallTimeout,
		Retryable: func(err error) bool { return !errors.As(err, new(permanent)) },
	}
}

// Placed is a backend whose generations run on workers of its own (GPU
// servers it reaches over the network), which the tier's scheduler chooses
// between. Backends that are not Placed run in-process on the local worker.
type Placed interface {
	Workers() []Worker
	// GenerateOn runs req on worker, reporting progress and, when the
	// backend makes them, previews of the image in progress.
	GenerateOn(ctx context.Context, worker string, req Request, progress ProgressFunc, preview PreviewFunc) (Result, error)
}

// localWorker is the worker in-process backends run on.
const localWorker = "local"

// permanent marks an attempt's error as not worth retrying elsewhere.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// errWorkersFailed wraps the last error of a generation every attempt of
// which failed on a Placed backend's workers.
var errWorkersFailed = errors.New("inference: generation failed on every worker tried")

func (c ServerConfig) withDefaults() ServerConfig {
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 2 * runtime.GOMAXPROCS(0)
	}
	if c.GenerateTimeout == 0 {
		c.GenerateTimeout = DefaultGenerateTimeout
	}
	return c
}

// Server serves backends as the Connect service
// imagegate.inference.v1.InferenceService.
type Server struct {
	cfg      ServerConfig
	logger   *slog.Logger
	backends []Backend
	models   []ModelInfo    // models[i] describes backends[i]; index 0 is the default
	byName   map[string]int // index by model name
	sched    *sched.Scheduler
	flights  flightGroup
	metrics  serverMetrics
	handler  http.Handler
	// queued, when set (tests only), runs when a generation has to wait
	// for a free slot.
	queued func()
}

// NewServer returns a server for backends; the first one serves requests
// that name no model. Backend names (Info().Name) must be unique and
// non-empty. Metrics are registered on reg unless it is nil.
func NewServer(cfg ServerConfig, backends []Backend, reg prometheus.Registerer, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(backends) == 0 {
		return nil, errors.New("inference: no backends")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:    cfg,
		logger: logger,
		byName: make(map[string]int, len(backends)),
	}
	for i, b := range backends {
		if b == nil {
			return nil, fmt.Errorf("inference: backend %d is nil", i)
		}
		info := b.Info()
		if info.Name == "" {
			return nil, fmt.Errorf("inference: backend %d has no name", i)
		}
		if _, dup := s.byName[info.Name]; dup {
			return nil, fmt.Errorf("inference: two backends named %q", info.Name)
		}
		s.byName[info.Name] = i
		s.backends = append(s.backends, b)
		s.models = append(s.models, info)
	}
	s.metrics = newServerMetrics(s.models)
	if reg != nil {
		if err := s.metrics.register(reg); err != nil {
			return nil, err
		}
	}
	scfg := cfg.schedConfig(workersOf(s.backends, cfg.MaxConcurrent))
	scfg.Observer = schedObserver{s}
	sc, err := sched.New(scfg)
	if err != nil {
		return nil, fmt.Errorf("inference: %w", err)
	}
	s.sched = sc

	// Image bytes are PNGs already: never compress responses, whatever the
	// client accepts. Compressed requests are still understood.
	opts := []connect.HandlerOption{
		connect.WithCompressMinBytes(math.MaxInt),
		connect.WithReadMaxBytes(maxRequestBytes),
	}
	mux := http.NewServeMux()
	mux.Handle(inferencev1connect.NewInferenceServiceHandler(service{s}, opts...))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(inferencev1connect.InferenceServiceName), opts...))
	s.handler = mux
	if cfg.Token != "" {
		s.handler = requireBearer(cfg.Token, mux)
	}
	return s, nil
}

// workersOf lists the scheduler's workers: the local one, with slots
// slots, for in-process backends, and the workers Placed backends bring;
// backends naming the same worker ID share it (at the most slots any
// names).
func workersOf(backends []Backend, slots int) []sched.Worker {
	var out []sched.Worker
	index := map[string]int{}
	add := func(id string, n int, model string) {
		i, ok := index[id]
		if !ok {
			i = len(out)
			index[id] = i
			out = append(out, sched.Worker{ID: id})
		}
		out[i].Slots = max(out[i].Slots, n)
		out[i].Models = append(out[i].Models, model)
	}
	for _, b := range backends {
		name := b.Info().Name
		p, ok := b.(Placed)
		if !ok {
			add(localWorker, slots, name)
			continue
		}
		for _, w := range p.Workers() {
			add(w.ID, max(w.Slots, 1), name)
		}
	}
	return out
}

// Handler returns the HTTP handler serving the inference service and gRPC
// health checks, and nothing else. Serve it over HTTP/2 (TLS, or h2c on a
// private network) so streams and concurrent calls share connections.
func (s *Server) Handler() http.Handler { return s.handler }

// service implements the generated handler interface, keeping its methods
// out of Server's API.
type service struct{ s *Server }

func (h service) Generate(ctx context.Context, req *connect.Request[inferencev1.GenerateRequest]) (*connect.Response[inferencev1.GenerateResponse], error) {
	f, info, err := h.s.start(ctx, req.Msg)
	if err != nil {
		return nil, h.s.fail(info.Name, err)
	}
	defer h.s.flights.leave(f)
	select {
	case <-ctx.Done():
		return nil, h.s.fail(info.Name, ctx.Err())
	case <-f.done:
	}
	if f.err != nil {
		return nil, h.s.fail(info.Name, f.err)
	}
	return connect.NewResponse(resultToProto(f.res, info, req.Msg.GetSeed())), nil
}

func (h service) GenerateStream(ctx context.Context, req *connect.Request[inferencev1.GenerateRequest], stream *connect.ServerStream[inferencev1.GenerateStreamResponse]) error {
	f, info, err := h.s.start(ctx, req.Msg)
	if err != nil {
		return h.s.fail(info.Name, err)
	}
	defer h.s.flights.leave(f)
	sent, sentPreview := -1, 0
	for {
		step, fraction, stage, changed := f.progress()
		if step > sent {
			sent = step
			p := &inferencev1.Progress{Fraction: fraction, Stage: stage}
			if seq, img, ct := f.latestPreview(); seq > sentPreview {
				sentPreview = seq
				p.PartialImage, p.PartialImageContentType = img, ct
			}
			err := stream.Send(&inferencev1.GenerateStreamResponse{
				Event: &inferencev1.GenerateStreamResponse_Progress{Progress: p},
			})
			if err != nil {
				return h.s.fail(info.Name, err)
			}
		}
		select {
		case <-ctx.Done():
			return h.s.fail(info.Name, ctx.Err())
		case <-f.done:
			if f.err != nil {
				return h.s.fail(info.Name, f.err)
			}
			return stream.Send(&inferencev1.GenerateStreamResponse{
				Event: &inferencev1.GenerateStreamResponse_Result{
					Result: resultToProto(f.res, info, req.Msg.GetSeed()),
				},
			})
		case <-changed:
		}
	}
}

func (h service) ListModels(context.Context, *connect.Request[inferencev1.ListModelsRequest]) (*connect.Response[inferencev1.ListModelsResponse], error) {
	res := &inferencev1.ListModelsResponse{}
	for _, info := range h.s.models {
		res.Models = append(res.Models, modelToProto(info, h.s.cfg.Terms[info.Name]))
	}
	return connect.NewResponse(res), nil
}

// start validates msg, resolves its backend and joins the identical
// generation in flight or starts one. The returned info names the backend
// once resolved, for metrics and the response. A generation started here
// keeps ctx's values but not its cancellation.
func (s *Server) start(ctx context.Context, msg *inferencev1.GenerateRequest) (*flight, ModelInfo, error) {
	info, b, ok := s.backend(msg.GetModel())
	if !ok {
		return nil, ModelInfo{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown model %q", msg.GetModel()))
	}
	if err := validateRequest(msg); err != nil {
		return nil, info, err
	}
	// Normalize before hashing so spelled-out defaults coalesce with
	// omitted ones. Scheduling is not part of what is generated: identical
	// requests from different gateways and accounts share one generation,
	// queued as the first of them. The message is this call's own, so
	// editing it is safe.
	job := sched.Job{
		Model: info.Name,
		Key:   string(msg.GetScheduling().GetFairnessKey()),
		Class: msg.GetScheduling().GetPlanClass(),
	}
	if deadline, ok := ctx.Deadline(); ok {
		job.AdmitBy = deadline
	}
	msg.Scheduling = nil
	msg.Model = info.Name
	if msg.OutputFormat == "" {
		msg.OutputFormat = "png"
	}
	key, err := requestKey(msg)
	if err != nil {
		return nil, info, err
	}
	req := requestFromProto(msg)
	weight := s.sched.Weight(job.Class)
	f, joined := s.flights.do(context.WithoutCancel(ctx), key, weight, func(ctx context.Context, progress ProgressFunc, preview PreviewFunc, promote <-chan sched.Job) (Result, error) {
		queued := job
		queued.Promote = promote
		return s.run(ctx, b, queued, req, progress, preview)
	})
	if joined {
		// A heavier class joining moves the shared work up the queue.
		f.offer(job, weight)
		s.metrics.coalesced.WithLabelValues(info.Name).Inc()
	}
	return f, info, nil
}

// requestKey hashes the deterministic encoding of a normalized request.
func requestKey(msg *inferencev1.GenerateRequest) (flightKey, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return flightKey{}, fmt.Errorf("inference: encode request: %w", err)
	}
	return sha256.Sum256(data), nil
}

// backend resolves a model name; empty means the default.
func (s *Server) backend(model string) (ModelInfo, Backend, bool) {
	i, ok := 0, true
	if model != "" {
		i, ok = s.byName[model]
	}
	if !ok {
		return ModelInfo{}, nil, false
	}
	return s.models[i], s.backends[i], true
}

// run is one shared generation: queued by the scheduler, tried on one
// worker after another while attempts fail retryably. detached carries no
// caller's cancellation; the generation timeout is its only deadline.
func (s *Server) run(detached context.Context, b Backend, job sched.Job, req Request, progress ProgressFunc, preview PreviewFunc) (Result, error) {
	ctx, cancel := context.WithTimeout(detached, s.cfg.GenerateTimeout)
	defer cancel()
	placed, isPlaced := b.(Placed)
	var res Result
	err := s.sched.Do(ctx, job, func(ctx context.Context, a sched.Attempt) error {
		beat := func(fraction float32, stage string) {
			a.Beat()
			if progress != nil {
				progress(fraction, stage)
			}
		}
		r, err := s.attempt(ctx, b, placed, a.Worker, job.Model, req, beat, preview)
		switch {
		case err == nil:
			res = r
			return nil
		case !isPlaced || errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrBackendConfig):
			// In-process backends fail the same way twice; bad requests
			// and bad deployments fail on every worker.
			return permanent{err}
		}
		return err
	})
	abandoned := errors.Is(ctx.Err(), context.Canceled)
	if err != nil && !abandoned && !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, sched.ErrOverloaded) {
		// Logged once per generation, not per waiter. Never the request:
		// it holds the prompt.
		s.logger.Error("generation failed", "model", job.Model, "err", err)
	}
	var p permanent
	switch {
	case err == nil, errors.As(err, &p), errors.Is(err, sched.ErrOverloaded), errors.Is(err, sched.ErrNoWorker), ctx.Err() != nil:
	default:
		err = fmt.Errorf("%w: %w", errWorkersFailed, err)
	}
	return res, err
}

// attempt is one try of a generation on one worker.
func (s *Server) attempt(ctx context.Context, b Backend, placed Placed, worker, model string, req Request, progress ProgressFunc, preview PreviewFunc) (res Result, err error) {
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	s.metrics.generations.WithLabelValues(model).Inc()
	began := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("backend panicked", "model", model, "panic", r, "stack", string(debug.Stack()))
			res, err = Result{}, permanent{fmt.Errorf("inference: backend %s panicked", model)}
		}
		s.metrics.duration.WithLabelValues(model).Observe(time.Since(began).Seconds())
	}()
	if placed != nil {
		res, err = placed.GenerateOn(ctx, worker, req, progress, preview)
	} else {
		res, err = b.Generate(ctx, req, progress)
	}
	if err == nil && len(res.Image) == 0 {
		err = fmt.Errorf("inference: backend %s returned no image", model)
	}
	return res, err
}

// fail converts err into the error the caller sees and counts it. Internal
// failures get a generic message: details stay in the server's log.
func (s *Server) fail(model string, err error) error {
	var cerr *connect.Error
	var overload *sched.OverloadError
	switch {
	case errors.As(err, &cerr):
	case errors.Is(err, ErrInvalidArgument):
		cerr = connect.NewError(connect.CodeInvalidArgument, err)
	case errors.As(err, &overload):
		// Busy, not broken: the pool tries another tier and, when all are
		// busy, the gateway answers 503 with this Retry-After.
		cerr = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("tier busy (%s)", overload.Reason))
		cerr.Meta().Set(retryAfterHeader, strconv.Itoa(int(overload.RetryAfter.Round(time.Second)/time.Second)))
	case errors.Is(err, errWorkersFailed):
		cerr = connect.NewError(connect.CodeAborted, errors.New("generation failed on every worker tried"))
	case errors.Is(err, context.DeadlineExceeded):
		cerr = connect.NewError(connect.CodeDeadlineExceeded, errors.New("generation timed out"))
	case errors.Is(err, context.Canceled):
		cerr = connect.NewError(connect.CodeCanceled, errors.New("generation canceled"))
	default:
		cerr = connect.NewError(connect.CodeInternal, errors.New("generation failed"))
	}
	if model == "" {
		model = "unknown"
	}
	s.metrics.errors.WithLabelValues(model, cerr.Code().String()).Inc()
	return cerr
}

// serverMetrics are the tier's Prometheus figures.
type serverMetrics struct {
	generations *prometheus.CounterVec
	coalesced   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	inFlight    prometheus.Gauge
	queue       queueMetrics
}

func newServerMetrics(models []ModelInfo) serverMetrics {
	m := serverMetrics{
		generations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_generations_total",
			Help: "Backend generations started (coalesced requests not included).",
		}, []string{"model"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_coalesced_total",
			Help: "Requests that joined an identical generation already in flight.",
		}, []string{"model"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_inference_generation_seconds",
			Help:    "Time backends spent on one generation.",
			Buckets: prometheus.ExponentialBucketsRange(0.01, 120, 12),
		}, []string{"model"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_errors_total",
			Help: "Failed requests by Connect error code.",
		}, []string{"model", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_inference_in_flight",
			Help: "Backend generations running now.",
		}),
		queue: newQueueMetrics(),
	}
	// Export zeros for every model so rates work from the first scrape.
	for _, info := range models {
		m.generations.WithLabelValues(info.Name)
		m.coalesced.WithLabelValues(info.Name)
	}
	return m
}

func (m serverMetrics) register(reg prometheus.Registerer) error {
	for _, c := range append([]prometheus.Collector{m.generations, m.coalesced, m.duration, m.errors, m.inFlight}, m.queue.collectors()...) {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("inference: register metrics: %w", err)
		}
	}
	return nil
}
