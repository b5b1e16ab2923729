package bridge

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// EMFNamespace is the CloudWatch namespace of keyrelay's embedded-metric-
// format lines.
const EMFNamespace = "keyrelay"

// EMFConfig configures an EMF writer.
type EMFConfig struct {
	Interval time.Duration // one line per interval; a final one when Run ends
	Service  string        // the Service dimension's value: KEYRELAY_NAME
	// Gatherer is the registry NewMetrics registered with: every figure of
	// a line is read from it, so a line and a /metrics scrape agree.
	Gatherer prometheus.Gatherer
	// Refresh, if set, brings the gauges computed on demand up to date
	// before each line (Relay.UpdateGauges, as /metrics does).
	Refresh func()
	// Leader, if set and its ok is true, adds the Leader metric (1 or 0).
	// Unset, or ok false: no Leader member at all (no high availability).
	Leader func() (leader, ok bool)
	Out    io.Writer    // stderr: the awslogs driver reads it
	Log    *slog.Logger // for a line that cannot be built or written; nil: slog.Default
}

// EMF writes CloudWatch embedded-metric-format documents, one JSON line each,
// from keyrelay's Prometheus metrics: counters as deltas since the previous
// line, gauges as they are.
type EMF struct {
	cfg  EMFConfig
	mu   sync.Mutex
	prev map[string]float64 // counter totals at the previous line
}

// NewEMF returns a writer; Run starts it.
func NewEMF(cfg EMFConfig) *EMF {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &EMF{cfg: cfg, prev: map[string]float64{}}
}

// emfMetric is one member of the directive's Metrics: name and CloudWatch
// unit.
type emfMetric struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

// emfMetrics are the metrics of every line, in order; Leader is added when
// known.
var emfMetrics = []emfMetric{
	{"Received", "Count"},
	{"Delivered", "Count"},
	{"Dropped", "Count"},
	{"Rejected", "Count"},
	{"Gaps", "Count"},
	{"BufferFill", "Percent"},
	{"Subscribed", "None"},
	{"SinksUp", "None"},
}

// Run writes a line every interval until ctx ends, then a final line (the
// counts since the last one) and returns.
func (e *EMF) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.write(time.Now())
			return
		case now := <-t.C:
			e.write(now)
		}
	}
}

// Start runs the writer in a goroutine; the returned stop ends it, waits for
// the final line and may be called more than once.
func (e *EMF) Start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return func() { cancel(); <-done }
}

func (e *EMF) write(now time.Time) {
	line, err := e.Line(now)
	if err == nil {
		_, err = e.cfg.Out.Write(line)
	}
	if err != nil {
		e.cfg.Log.Warn("emf: metrics line not written", "err", err)
	}
}

// Line returns the next document as one line ending in a newline: the
// counters' increase since the previous call (since the start for the first)
// and the gauges now.
func (e *EMF) Line(now time.Time) ([]byte, error) {
	if e.cfg.Refresh != nil {
		e.cfg.Refresh()
	}
	mfs, err := e.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, err
	}
	fams := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		fams[mf.GetName()] = mf
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// delta returns the increase of the family's series since the last line,
	// in total and by the value of label by (nil when by is "").
	delta := func(name, by string) (float64, map[string]float64) {
		var total float64
		var parts map[string]float64
		if by != "" {
			parts = map[string]float64{}
		}
		mf := fams[name]
		if mf == nil {
			return 0, parts
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			key := name + seriesKey(m)
			d := max(v-e.prev[key], 0) // counters of a process never go down
			e.prev[key] = v
			total += d
			if by != "" {
				parts[label(m, by)] += d
			}
		}
		return total, parts
	}
	doc := map[string]any{"Service": e.cfg.Service, "msg": "metrics"}
	doc["Received"], _ = delta("keyrelay_notifications_received_total", "")
	var delivered, dropped, rejected, gaps map[string]float64
	doc["Delivered"], delivered = delta("keyrelay_records_delivered_total", "sink")
	doc["Dropped"], dropped = delta("keyrelay_records_dropped_total", "reason")
	doc["Rejected"], rejected = delta("keyrelay_records_rejected_total", "reason")
	doc["Gaps"], gaps = delta("keyrelay_gaps_total", "reason")
	doc["DeliveredBySink"], doc["DroppedByReason"], doc["RejectedByReason"], doc["GapsByReason"] = delivered, dropped, rejected, gaps

	// BufferFill: the fullest sink, by records or by bytes, whichever bound
	// is nearer.
	fill := 0.0
	for _, pair := range [][2]string{{"keyrelay_buffer_records", "keyrelay_buffer_capacity_records"}, {"keyrelay_buffer_bytes", "keyrelay_buffer_capacity_bytes"}} {
		capacity := gaugesBy(fams[pair[1]], "sink")
		for sink, n := range gaugesBy(fams[pair[0]], "sink") {
			if c := capacity[sink]; c > 0 {
				fill = max(fill, n/c*100)
			}
		}
	}
	doc["BufferFill"] = math.Round(fill*100) / 100
	doc["Subscribed"] = allOne(fams["keyrelay_subscription_connected"])
	doc["SinksUp"] = allOne(fams["keyrelay_sink_up"])
	if lag := gaugesBy(fams["keyrelay_spool_lag_seconds"], "sink"); len(lag) > 0 {
		doc["SpoolLagSeconds"] = lag
	}
	if mf := fams["keyrelay_build_info"]; mf != nil && len(mf.GetMetric()) > 0 {
		doc["Version"] = label(mf.GetMetric()[0], "version")
	}
	metrics := emfMetrics
	if e.cfg.Leader != nil {
		if leader, ok := e.cfg.Leader(); ok {
			metrics = append(metrics[:len(metrics):len(metrics)], emfMetric{"Leader", "None"})
			doc["Leader"] = b2f(leader)
		}
	}
	doc["_aws"] = map[string]any{
		"Timestamp": now.UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace":  EMFNamespace,
			"Dimensions": [][]string{{"Service"}},
			"Metrics":    metrics,
		}},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// seriesKey identifies a series within its family by its label pairs.
func seriesKey(m *dto.Metric) string {
	var k []byte
	for _, lp := range m.GetLabel() {
		k = append(k, '\x00')
		k = append(k, lp.GetName()...)
		k = append(k, '=')
		k = append(k, lp.GetValue()...)
	}
	return string(k)
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// gaugesBy returns the family's gauge values by the value of label by.
func gaugesBy(mf *dto.MetricFamily, by string) map[string]float64 {
	out := map[string]float64{}
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		out[label(m, by)] = m.GetGauge().GetValue()
	}
	return out
}

// allOne is 1 when the family has series and each is 1, else 0.
func allOne(mf *dto.MetricFamily) float64 {
	if mf == nil || len(mf.GetMetric()) == 0 {
		return 0
	}
	for _, m := range mf.GetMetric() {
		if m.GetGauge().GetValue() != 1 {
			return 0
		}
	}
	return 1
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
