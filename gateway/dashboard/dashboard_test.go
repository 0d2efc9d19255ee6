package dashboard

import (
	"bytes"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBarChartSVG(t *testing.T) {
	t.Parallel()
	svg := string(BarChart{Title: "Requests <by> route", Bars: []Bar{
		{Label: "/v1/images/generations", Value: 40}, {Label: `<script>alert(1)</script>`, Value: 10}, {Label: "zero", Value: 0},
	}}.SVG())
	if strings.Contains(svg, "<script>") {
		t.Fatalf("a label was not escaped: %s", svg)
	}
	widths := regexp.MustCompile(`width="([0-9.]+)" height="22" data-value="([0-9]+)"`).FindAllStringSubmatch(svg, -1)
	if len(widths) != 3 || widths[0][1] != "190.0" || widths[1][1] != "47.5" || widths[2][1] != "0.0" {
		t.Errorf("bar widths %v, want proportional to 40:10:0 over 190 px", widths)
	}
	if !strings.Contains(svg, `aria-labelledby="chart-requests-by-route"`) || !strings.Contains(svg, `<title id="chart-requests-by-route">Requests &lt;by&gt; route</title>`) {
		t.Errorf("no accessible title: %s", svg)
	}
	if empty := string(BarChart{Title: "x"}.SVG()); !strings.Contains(empty, "No data yet") {
		t.Errorf("empty chart: %s", empty)
	}
}

func TestReadMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imagegate_http_requests_total"}, []string{"route", "method", "code"})
	tiers := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imagegate_cache_results_total"}, []string{"tier"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imagegate_inference_request_duration_seconds", Buckets: []float64{0.1, 1, 10}}, []string{"outcome"})
	reg.MustRegister(reqs, tiers, lat)
	reqs.WithLabelValues("/v1/images/generations", "POST", "200").Add(5)
	reqs.WithLabelValues("/v1/images/generations", "POST", "429").Add(2)
	reqs.WithLabelValues("/healthz", "GET", "200").Add(1)
	tiers.WithLabelValues("l1").Add(3)
	tiers.WithLabelValues("miss").Add(1)
	for _, v := range []float64{0.05, 0.5, 0.5, 5} {
		lat.WithLabelValues("ok").Observe(v)
	}
	lat.WithLabelValues("error").Observe(20)

	m, err := ReadMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if m.GenerationRequests != 5 || m.RequestsByRoute["/v1/images/generations"] != 7 || m.RequestsByClass["4xx"] != 2 || m.CacheResults["l1"] != 3 {
		t.Errorf("metrics %+v", m)
	}
	want := []Bucket{{0.1, 1}, {1, 2}, {10, 1}, {math.Inf(1), 1}}
	if len(m.Inference.Buckets) != len(want) {
		t.Fatalf("buckets %v", m.Inference.Buckets)
	}
	for i, b := range want {
		if m.Inference.Buckets[i] != b {
			t.Errorf("bucket %d = %v, want %v (summed over outcomes, not cumulative)", i, m.Inference.Buckets[i], b)
		}
	}
	if got := m.Inference.Quantile(0.5); got < 0.1 || got > 1 {
		t.Errorf("median %v, want within the (0.1, 1] bucket", got)
	}
	if got := m.Inference.Mean(); math.Abs(got-26.05/5) > 1e-9 {
		t.Errorf("mean %v", got)
	}
}

func TestPagesRender(t *testing.T) {
	t.Parallel()
	d, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for page, data := range map[string]any{"login": Login{Error: "<b>no</b>"}, "overview": Overview{}, "partners": Partners{Items: []PartnerRow{{Name: "<i>Shop</i>", Snippet: `<script src="x"></script>`}}}} {
		var buf bytes.Buffer
		if err := d.Render(&buf, page, Page{Title: page, Nonce: "n0nce", SignedIn: page != "login", Data: data}); err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		out := buf.String()
		if strings.Contains(out, "<b>no</b>") || strings.Contains(out, "<i>Shop</i>") || strings.Contains(out, `<script src="x">`) {
			t.Errorf("%s: data not escaped", page)
		}
		if !strings.Contains(out, `<script nonce="n0nce" src="/admin/assets/dashboard.js?v=`) {
			t.Errorf("%s: no nonce'd script", page)
		}
	}
}
