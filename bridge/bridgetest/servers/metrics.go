package servers

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one sample of a Prometheus text exposition (what keyrelay's
// /metrics serves), as a line of it shows it: name, labels, value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseMetrics parses a Prometheus text exposition with the Prometheus text
// parser (github.com/prometheus/common/expfmt), so a malformed exposition
// is an error, and returns its samples as the exposition's lines show them:
// a histogram is its name_bucket{le="…"} samples (+Inf included), name_sum
// and name_count; a summary its name{quantile="…"} samples, name_sum and
// name_count. Families come in name order, samples of a family in the
// exposition's order.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []Sample
	for _, name := range names {
		mf := families[name]
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			// add appends name+suffix with the metric's labels and any
			// extra label ("le", "0.5").
			add := func(suffix string, v float64, extra ...string) {
				ls := maps.Clone(labels)
				for i := 0; i+1 < len(extra); i += 2 {
					ls[extra[i]] = extra[i+1]
				}
				out = append(out, Sample{Name: name + suffix, Labels: ls, Value: v})
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add("", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add("", m.GetUntyped().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add("", q.GetValue(), "quantile", formatFloat(q.GetQuantile()))
				}
				add("_sum", s.GetSampleSum())
				add("_count", float64(s.GetSampleCount()))
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					n := b.GetCumulativeCountFloat()
					if n == 0 {
						n = float64(b.GetCumulativeCount())
					}
					add("_bucket", n, "le", formatFloat(b.GetUpperBound()))
				}
				add("_sum", h.GetSampleSum())
				n := h.GetSampleCountFloat()
				if n == 0 {
					n = float64(h.GetSampleCount())
				}
				add("_count", n)
			default:
				return nil, fmt.Errorf("metrics: %s has type %s, which the text format does not have", name, mf.GetType())
			}
		}
	}
	return out, nil
}

// formatFloat spells a le or quantile label value as the text format does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// MetricValue sums the samples named name whose labels include every
// "label=value" in labels ("label=" matches a sample without the label, as
// in Prometheus); ok is false when no sample matches.
func MetricValue(samples []Sample, name string, labels ...string) (sum float64, ok bool) {
next:
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if s.Labels[k] != v {
				continue next
			}
		}
		sum, ok = sum+s.Value, true
	}
	return sum, ok
}
