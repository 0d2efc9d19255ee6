package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/cache"
)

// metrics are the gateway's Prometheus series. Labels are route patterns,
// methods and status codes only: never a URL, prompt or client detail
// (promise C4).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// undeclaredCookies counts Set-Cookies dropped because their name is
	// not in the cookie registry: always a bug, and tests assert zero.
	undeclaredCookies prometheus.Counter
	// cached maps seriesKey to *requestSeries.
	cached sync.Map
	// fast are the hit path's series.
	fast fastSeries
}

func newMetrics(reg prometheus.Registerer, c *cache.Cache) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_http_requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		undeclaredCookies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_undeclared_cookies_total",
			Help: "Set-Cookie headers dropped because the cookie is not declared in the registry.",
		}),
	}
	collectors := []prometheus.Collector{m.requests, m.duration, m.undeclaredCookies}
	for _, tier := range []struct {
		name string
		get  func(cache.Stats) uint64
	}{
		{"l1", func(s cache.Stats) uint64 { return s.HitsL1 }},
		{"l2", func(s cache.Stats) uint64 { return s.HitsL2 }},
		{"l3", func(s cache.Stats) uint64 { return s.HitsL3 }},
		{"miss", func(s cache.Stats) uint64 { return s.Misses }},
	} {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "imagegate_cache_results_total",
			Help:        "Cache lookups by the tier that answered (miss: went to inference).",
			ConstLabels: prometheus.Labels{"tier": tier.name},
		}, func() float64 { return float64(tier.get(c.Stats())) }))
	}
	for name, get := range map[string]func(cache.Stats) uint64{
		"imagegate_cache_coalesced_total":   func(s cache.Stats) uint64 { return s.Coalesced },
		"imagegate_cache_loads_total":       func(s cache.Stats) uint64 { return s.Loads },
		"imagegate_cache_load_errors_total": func(s cache.Stats) uint64 { return s.LoadErrors },
		"imagegate_cache_errors_total":      func(s cache.Stats) uint64 { return s.Errors },
	} {
		help := map[string]string{
			"imagegate_cache_coalesced_total":   "Requests that joined an identical in-flight generation instead of starting one.",
			"imagegate_cache_loads_total":       "Generations started on a cache miss.",
			"imagegate_cache_load_errors_total": "Generations that failed.",
			"imagegate_cache_errors_total":      "Cache tier read/write failures (served as misses).",
		}[name]
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(c.Stats())) }))
	}
	for _, col := range collectors {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) middleware(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		// The error handler runs after us; count the status it will send.
		status = classify(err).Status
	}
	route := routeOf(c)
	m.series(route, methodLabel(c.Method()), status).observe(time.Since(start))
	return err
}

// seriesKey names one (route, method, status) combination.
type seriesKey struct {
	route, method string
	status        int
}

// requestSeries are the series one combination updates, looked up once:
// resolving label values hashes and locks on every call, which the hot
// path should not pay.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func (s *requestSeries) observe(d time.Duration) {
	s.count.Inc()
	s.duration.Observe(d.Seconds())
}

// series returns the cached series of a combination. Routes and methods
// are the registered patterns and a fixed set, so the cache stays small.
func (m *metrics) series(route, method string, status int) *requestSeries {
	k := seriesKey{route, method, status}
	if s, ok := m.cached.Load(k); ok {
		return s.(*requestSeries)
	}
	s := &requestSeries{
		count:    m.requests.WithLabelValues(route, method, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(route),
	}
	m.cached.Store(k, s)
	return s
}

// methodLabel returns a constant for the method: Fiber's strings point into
// reused buffers, and Prometheus keeps label values.
func methodLabel(m string) string {
	switch m {
	case fiber.MethodGet:
		return fiber.MethodGet
	case fiber.MethodHead:
		return fiber.MethodHead
	case fiber.MethodPost:
		return fiber.MethodPost
	case fiber.MethodPut:
		return fiber.MethodPut
	case fiber.MethodDelete:
		return fiber.MethodDelete
	case fiber.MethodPatch:
		return fiber.MethodPatch
	case fiber.MethodOptions:
		return fiber.MethodOptions
	}
	return "OTHER"
}

// registerWorkerMetrics exports what the background workers did: the
// lifecycle (retention and erasure) and the rate limiter's memory.
func (g *Gateway) registerWorkerMetrics(reg prometheus.Registerer) error {
	counter := func(name, help string, get func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(get()) })
	}
	st := &g.life.stats
	for _, col := range []prometheus.Collector{
		counter("imagegate_retention_references_expired_total", "Output references ended by their plan's retention.", st.referencesExpired.Load),
		counter("imagegate_retention_objects_deleted_total", "Outputs nobody referenced, deleted from the object store, the caches and the CDN.", st.objectsDeleted.Load),
		counter("imagegate_erasures_completed_total", "Account erasures carried to the end.", st.accountsErased.Load),
		counter("imagegate_lifecycle_failures_total", "Lifecycle passes that hit an error (retried on the next pass).", st.failures.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "imagegate_ratelimit_keys", Help: "Rate-limit buckets held in memory."},
			func() float64 { return float64(g.limiter.Stats().Keys) }),
		counter("imagegate_ratelimit_refused_total", "Requests refused by a rate limit.", func() uint64 { return g.limiter.Stats().Refused }),
		counter("imagegate_ratelimit_evicted_live_total", "Rate-limit buckets forgotten at the memory cap before they refilled.", func() uint64 { return g.limiter.Stats().EvictedLive }),
		counter("imagegate_credential_lookups_refused_total", "Requests whose API key or session cookie was refused before the store lookup: too many unknown credentials from their address.", func() uint64 {
			if g.creds == nil {
				return 0
			}
			return g.creds.Refused()
		}),
	} {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}
