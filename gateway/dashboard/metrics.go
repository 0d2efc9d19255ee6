package dashboard

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics are the figures the dashboard reads from the process's own
// Prometheus registry: the same numbers /metrics exports, so the two
// never disagree.
type Metrics struct {
	// Requests counts HTTP requests by route pattern and by status class.
	RequestsByRoute map[string]float64
	RequestsByClass map[string]float64
	// GenerationRequests are answered generation and edit requests (2xx).
	GenerationRequests float64
	// CacheResults counts which tier answered (l1, l2, l3, miss).
	CacheResults map[string]float64
	// Coalesced requests joined an identical in-flight generation; Loads
	// are generations started on a miss, LoadErrors those that failed.
	Coalesced, Loads, LoadErrors float64
	// Inference is the gateway → inference tier call latency.
	Inference Histogram
}

// Histogram is a Prometheus histogram summed over its series, with
// per-bucket (not cumulative) counts.
type Histogram struct {
	Count float64
	Sum   float64
	// Buckets are upper bounds (seconds) with the observations that fell
	// between the previous bound and this one.
	Buckets []Bucket
}

// Bucket is one histogram bucket.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Mean is the average observation, 0 without any.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / h.Count
}

// Quantile estimates quantile q (0–1) by linear interpolation within the
// bucket it falls in, as Prometheus's histogram_quantile does.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := q * h.Count
	seen, lower := 0.0, 0.0
	for _, b := range h.Buckets {
		if seen+b.Count >= rank && b.Count > 0 {
			if math.IsInf(b.UpperBound, 1) {
				return lower
			}
			return lower + (b.UpperBound-lower)*(rank-seen)/b.Count
		}
		seen += b.Count
		lower = b.UpperBound
	}
	return lower
}

// ReadMetrics gathers g once and sums the series the dashboard shows.
func ReadMetrics(g prometheus.Gatherer) (Metrics, error) {
	m := Metrics{RequestsByRoute: map[string]float64{}, RequestsByClass: map[string]float64{}, CacheResults: map[string]float64{}}
	if g == nil {
		return m, nil
	}
	mfs, err := g.Gather()
	if err != nil {
		return m, fmt.Errorf("dashboard: gather metrics: %w", err)
	}
	cumulative := map[float64]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			v := s.GetCounter().GetValue()
			switch mf.GetName() {
			case "imagegate_http_requests_total":
				route, code := label(s, "route"), label(s, "code")
				m.RequestsByRoute[route] += v
				if code != "" {
					m.RequestsByClass[code[:1]+"xx"] += v
				}
				if (route == "/v1/images/generations" || route == "/v1/images/edits") && strings.HasPrefix(code, "2") {
					m.GenerationRequests += v
				}
			case "imagegate_cache_results_total":
				m.CacheResults[label(s, "tier")] += v
			case "imagegate_cache_coalesced_total":
				m.Coalesced += v
			case "imagegate_cache_loads_total":
				m.Loads += v
			case "imagegate_cache_load_errors_total":
				m.LoadErrors += v
			case "imagegate_inference_request_duration_seconds":
				h := s.GetHistogram()
				m.Inference.Count += float64(h.GetSampleCount())
				m.Inference.Sum += h.GetSampleSum()
				for _, b := range h.GetBucket() {
					cumulative[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
				cumulative[math.Inf(1)] += float64(h.GetSampleCount())
			}
		}
	}
	bounds := make([]float64, 0, len(cumulative))
	for b := range cumulative {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	prev := 0.0
	for _, b := range bounds {
		m.Inference.Buckets = append(m.Inference.Buckets, Bucket{UpperBound: b, Count: cumulative[b] - prev})
		prev = cumulative[b]
	}
	return m, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
