package inference

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// retryAfterHeader carries, in a ResourceExhausted error's metadata, the
// seconds the tier asks callers to wait before trying again.
const retryAfterHeader = "Retry-After"

// queueMetrics are the scheduler's figures. Labels are model names and plan
// classes from the tier's configuration, never a fairness key: nothing in
// them tells whose job it was (promise X1).
type queueMetrics struct {
	depth         *prometheus.GaugeVec
	wait          *prometheus.HistogramVec
	run           *prometheus.HistogramVec
	workerSeconds *prometheus.CounterVec
	retries       *prometheus.CounterVec
	cancellations *prometheus.CounterVec
	rejected      *prometheus.CounterVec
}

func newQueueMetrics() queueMetrics {
	buckets := prometheus.ExponentialBucketsRange(0.01, 600, 14)
	return queueMetrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imagegate_inference_queue_depth",
			Help: "Generations waiting for a worker, by model and plan class.",
		}, []string{"model", "plan"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_inference_queue_wait_seconds",
			Help:    "Time a generation waited before an attempt started, by model and plan class.",
			Buckets: buckets,
		}, []string{"model", "plan"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegate_inference_run_seconds",
			Help:    "Time one attempt held a worker slot, by model and plan class.",
			Buckets: buckets,
		}, []string{"model", "plan"}),
		workerSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_worker_seconds_total",
			Help: "Worker slot-seconds used, by plan class and model: GPU-seconds for GPU backends, CPU slot-seconds for in-process ones.",
		}, []string{"model", "plan"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_tier_retries_total",
			Help: "Attempts the tier retried on another worker after one failed or stalled.",
		}, []string{"model", "plan"}),
		cancellations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_cancellations_total",
			Help: "Generations whose deadline passed or that were canceled, by where they were (queued or running).",
		}, []string{"model", "plan", "stage"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_inference_rejected_total",
			Help: "Generations refused at admission, by reason (queue_full, class_full, wait, deadline).",
		}, []string{"model", "plan", "reason"}),
	}
}

func (m queueMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.depth, m.wait, m.run, m.workerSeconds, m.retries, m.cancellations, m.rejected}
}

// schedObserver feeds the scheduler's events to the server's metrics.
type schedObserver struct{ s *Server }

func (o schedObserver) Queued(model, class string, depth int) {
	o.s.metrics.queue.depth.WithLabelValues(model, class).Set(float64(depth))
	if depth > 0 && o.s.queued != nil {
		o.s.queued()
	}
}

func (o schedObserver) Started(model, class, worker string, wait time.Duration, attempt int) {
	o.s.metrics.queue.wait.WithLabelValues(model, class).Observe(wait.Seconds())
	if attempt > 1 {
		o.s.metrics.queue.retries.WithLabelValues(model, class).Inc()
	}
}

func (o schedObserver) Finished(model, class, worker string, run time.Duration, err error) {
	o.s.metrics.queue.run.WithLabelValues(model, class).Observe(run.Seconds())
	o.s.metrics.queue.workerSeconds.WithLabelValues(model, class).Add(run.Seconds())
}

func (o schedObserver) Rejected(model, class, reason string) {
	o.s.metrics.queue.rejected.WithLabelValues(model, class, reason).Inc()
}

func (o schedObserver) Canceled(model, class string, running bool) {
	stage := "queued"
	if running {
		stage = "running"
	}
	o.s.metrics.queue.cancellations.WithLabelValues(model, class, stage).Inc()
}
