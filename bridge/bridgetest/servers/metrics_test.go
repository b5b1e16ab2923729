package servers

import (
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestParseMetrics parses what promhttp serves for a registry like
// keyrelay's: counters and gauges with labels, a NaN gauge, a histogram
// (flattened to _bucket, _sum, _count), a summary; and refuses what is not
// an exposition.
func TestParseMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "h"}, []string{"sink", "reason"})
	c.WithLabelValues("stdout", "overflow").Add(3)
	c.WithLabelValues("sqs", "overflow").Add(4)
	c.WithLabelValues("sqs", `odd "quoted" \ value`).Add(1)
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x_seconds", Help: "h"}, func() float64 { return math.NaN() })
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_batch", Help: "h", Buckets: []float64{1, 10}}, []string{"sink"})
	h.WithLabelValues("stdout").Observe(5)
	h.WithLabelValues("stdout").Observe(50)
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "x_sum", Help: "h", Objectives: map[float64]float64{0.5: 0.05}})
	s.Observe(2)
	reg.MustRegister(c, g, h, s)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples, err := ParseMetrics(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"x_total", nil, 8},
		{"x_total", []string{"sink=sqs"}, 5},
		{"x_total", []string{"sink=sqs", "reason=overflow"}, 4},
		{"x_total", []string{`reason=odd "quoted" \ value`}, 1},
		{"x_batch_count", []string{"sink=stdout"}, 2},
		{"x_batch_sum", []string{"sink=stdout"}, 55},
		{"x_batch_bucket", []string{"sink=stdout", "le=1"}, 0},
		{"x_batch_bucket", []string{"sink=stdout", "le=10"}, 1},
		{"x_batch_bucket", []string{"sink=stdout", "le=+Inf"}, 2},
		{"x_sum", []string{"quantile=0.5"}, 2},
		{"x_sum_count", nil, 1},
	} {
		if got, ok := MetricValue(samples, tc.name, tc.labels...); !ok || got != tc.want {
			t.Errorf("%s%v = %v (found %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if v, ok := MetricValue(samples, "x_seconds"); !ok || !math.IsNaN(v) {
		t.Errorf("x_seconds = %v (found %v), want NaN", v, ok)
	}
	if _, ok := MetricValue(samples, "x_total", "sink=kafka"); ok {
		t.Error("a sample matched a label value it does not have")
	}
	if _, ok := MetricValue(samples, "x_total", "sink=sqs", "node="); !ok {
		t.Error(`"node=" does not match samples without the label`)
	}

	for _, bad := range []string{"x_total{sink=\"a\" 1\n", "x_total one\n", "# TYPE x_total counter\n# TYPE x_total gauge\n"} {
		if _, err := ParseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
