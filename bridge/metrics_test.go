package bridge

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsExistFromTheStart: once the relay has started and a
// subscriber exists, every counter an alert takes increase() of is exported
// at 0 (so that its first increment is an increase), and the gauges alerts
// divide by or compare with hold their values.
func TestMetricsExistFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetBuildInfo("v9.9.9")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := NewRelay(RelayConfig{BufferRecords: 1234, BufferBytes: 5678, Overflow: DropNewest},
		[]Sink{&scriptedSink{lim: Limits{MaxEntries: 1, MaxInFlight: 1}}}, log, m)
	r.Start()
	defer r.Shutdown(context.Background())
	NewSubscriber(SubscriberConfig{Source: "n:6379"}, r, log, m)
	r.UpdateGauges()

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, lp := range s.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case s.Counter != nil:
				got[key] = s.GetCounter().GetValue()
			case s.Gauge != nil:
				got[key] = s.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"keyrelay_records_delivered_total{sink=scripted}":                         0,
		"keyrelay_records_retried_total{sink=scripted}":                           0,
		"keyrelay_records_rejected_total{reason=too_large,sink=scripted}":         0,
		"keyrelay_records_rejected_total{reason=refused,sink=scripted}":           0,
		"keyrelay_records_dropped_total{reason=overflow,sink=scripted}":           0,
		"keyrelay_records_dropped_total{reason=shutdown,sink=scripted}":           0,
		"keyrelay_records_dropped_total{reason=closed,sink=scripted}":             0,
		"keyrelay_sink_up{sink=scripted}":                                         1,
		"keyrelay_buffer_records{sink=scripted}":                                  0,
		"keyrelay_buffer_bytes{sink=scripted}":                                    0,
		"keyrelay_buffer_capacity_records{sink=scripted}":                         1234,
		"keyrelay_buffer_capacity_bytes{sink=scripted}":                           5678,
		"keyrelay_subscription_connected{node=n:6379}":                            0,
		"keyrelay_subscription_reconnects_total{node=n:6379,reason=reconnect}":    0,
		"keyrelay_subscription_reconnects_total{node=n:6379,reason=failover}":     0,
		"keyrelay_subscription_reconnects_total{node=n:6379,reason=planned}":      0,
		"keyrelay_alive_key_errors_total{node=n:6379,reason=noperm}":              0,
		"keyrelay_alive_key_errors_total{node=n:6379,reason=write}":               0,
		"keyrelay_notifications_flowing{node=n:6379}":                             1,
		"keyrelay_last_notification_timestamp_seconds{}":                          0,
		"keyrelay_restart_unknown_total{}":                                        0,
		"keyrelay_cluster_discovery_errors_total{}":                               0,
		"keyrelay_build_info{goversion=" + runtime.Version() + ",version=v9.9.9}": 1,
	}
	for _, reason := range GapReasons {
		want["keyrelay_gaps_total{reason="+reason+"}"] = 0
	}
	for key, v := range want {
		if g, ok := got[key]; !ok {
			t.Errorf("%s is not exported at the start", key)
		} else if g != v {
			t.Errorf("%s = %v at the start, want %v", key, g, v)
		}
	}
}

// TestGapReasonsComplete: GapReasons, the reasons exported at 0 from the
// start, names every Gap* string constant of the package, so that a new
// reason is not left to appear at its first gap.
func TestGapReasonsComplete(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !strings.HasPrefix(id.Name, "Gap") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					if !slices.Contains(GapReasons, v) {
						t.Errorf("%s: %s = %q is not in GapReasons", name, id.Name, v)
					}
				}
			}
		}
	}
}
