package bridgetest

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// Sample is one sample of a Prometheus text exposition: see
// servers.ParseMetrics for how histograms and summaries are spelled.
type Sample = servers.Sample

// ParseMetrics parses a Prometheus text exposition (what keyrelay's /metrics
// serves) with the Prometheus text parser, failing t when it is malformed.
func ParseMetrics(t testing.TB, r io.Reader) []Sample {
	t.Helper()
	samples, err := servers.ParseMetrics(r)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return samples
}

// MetricValue sums the samples named name whose labels include every
// "label=value" in labels; ok is false when no sample matches.
func MetricValue(samples []Sample, name string, labels ...string) (sum float64, ok bool) {
	return servers.MetricValue(samples, name, labels...)
}

// ScrapeMetrics fetches http://addr/metrics and parses it, failing t unless
// the answer is 200 and a well-formed exposition.
func ScrapeMetrics(t testing.TB, addr string) []Sample {
	t.Helper()
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return ParseMetrics(t, io.LimitReader(resp.Body, 8<<20))
}
