package bridge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// checkEMFAt checks the line against the specification and its timestamp.
func checkEMFAt(t *testing.T, line []byte, now time.Time) map[string]any {
	t.Helper()
	root, ts := bridgetest.CheckEMF(t, line)
	if ts.UnixMilli() != now.UnixMilli() {
		t.Errorf("_aws.Timestamp = %d, want %d", ts.UnixMilli(), now.UnixMilli())
	}
	return root
}

// emfMetricNames are the Names of the line's first directive.
func emfMetricNames(root map[string]any) map[string]string {
	out := map[string]string{}
	dir := root["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
	for _, m := range dir["Metrics"].([]any) {
		def := m.(map[string]any)
		out[def["Name"].(string)] = def["Unit"].(string)
	}
	return out
}

func num(t *testing.T, root map[string]any, name string) float64 {
	t.Helper()
	n, ok := root[name].(json.Number)
	if !ok {
		t.Fatalf("%s is not a number: %v", name, root[name])
	}
	f, _ := n.Float64()
	return f
}

// TestEMFLine checks lines against the specification and the contract:
// namespace keyrelay, dimension Service, the metrics with their units,
// counters as deltas since the previous line, gauges as they are, Leader
// only when the hook says it is known.
func TestEMFLine(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := bridge.NewMetrics(reg)
	m.SetBuildInfo("v1.2.3")
	for _, sink := range []string{"sqs", "stdout"} {
		m.BufferCapacityRecords.WithLabelValues(sink).Set(1000)
		m.BufferCapacityBytes.WithLabelValues(sink).Set(1 << 20)
		m.SinkUp.WithLabelValues(sink).Set(1)
	}
	m.Connected.WithLabelValues("a:6379").Set(1)
	m.Connected.WithLabelValues("b:6379").Set(1)
	m.Received.WithLabelValues("expired").Add(7)
	m.Received.WithLabelValues("set").Add(3)
	m.Delivered.WithLabelValues("sqs").Add(10)
	m.Delivered.WithLabelValues("stdout").Add(11)
	m.Gaps.WithLabelValues(bridge.GapRestart).Inc()
	m.Dropped.WithLabelValues("sqs", bridge.GapOverflow).Add(4)
	m.BufferRecords.WithLabelValues("sqs").Set(250)        // 25 %
	m.BufferBytes.WithLabelValues("stdout").Set(512 << 10) // 50 %: the fuller bound
	var leader struct {
		sync.Mutex
		set, is bool
	}
	refreshed := 0
	e := bridge.NewEMF(bridge.EMFConfig{Interval: time.Second, Service: "orders", Gatherer: reg,
		Refresh: func() { refreshed++ },
		Leader: func() (bool, bool) {
			leader.Lock()
			defer leader.Unlock()
			return leader.is, leader.set
		}})

	now := time.UnixMilli(1_780_000_000_123)
	line, err := e.Line(now)
	if err != nil {
		t.Fatal(err)
	}
	root := checkEMFAt(t, line, now)
	if refreshed != 1 {
		t.Errorf("Refresh called %d times for one line, want 1", refreshed)
	}
	dir := root["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
	if dir["Namespace"] != "keyrelay" {
		t.Errorf("Namespace = %v, want keyrelay", dir["Namespace"])
	}
	if got := fmt.Sprint(dir["Dimensions"]); got != "[[Service]]" {
		t.Errorf("Dimensions = %s, want [[Service]]", got)
	}
	if root["Service"] != "orders" {
		t.Errorf("Service = %v, want orders (KEYRELAY_NAME)", root["Service"])
	}
	wantUnits := map[string]string{"Received": "Count", "Delivered": "Count", "Dropped": "Count", "Rejected": "Count",
		"Gaps": "Count", "BufferFill": "Percent", "Subscribed": "None", "SinksUp": "None"}
	if got := emfMetricNames(root); fmt.Sprint(got) != fmt.Sprint(wantUnits) {
		t.Errorf("metrics = %v, want %v (no Leader while the hook says unknown)", got, wantUnits)
	}
	if _, has := root["Leader"]; has {
		t.Error("Leader present while the hook says unknown")
	}
	for name, want := range map[string]float64{"Received": 10, "Delivered": 21, "Dropped": 4, "Rejected": 0,
		"Gaps": 1, "BufferFill": 50, "Subscribed": 1, "SinksUp": 1} {
		if got := num(t, root, name); got != want {
			t.Errorf("first line: %s = %v, want %v", name, got, want)
		}
	}
	if got := fmt.Sprint(root["GapsByReason"].(map[string]any)[bridge.GapRestart]); got != "1" {
		t.Errorf("GapsByReason.restart = %s, want 1", got)
	}
	if root["Version"] != "v1.2.3" {
		t.Errorf("Version = %v, want v1.2.3", root["Version"])
	}

	// The second line: deltas since the first; gauges as they are now.
	m.Received.WithLabelValues("expired").Add(5)
	m.Delivered.WithLabelValues("sqs").Add(2)
	m.Rejected.WithLabelValues("sqs", "too_large").Inc()
	m.Connected.WithLabelValues("b:6379").Set(0)
	m.SinkUp.WithLabelValues("stdout").Set(0)
	m.BufferBytes.WithLabelValues("stdout").Set(0)
	leader.Lock()
	leader.set, leader.is = true, true
	leader.Unlock()
	now = now.Add(time.Second)
	line, err = e.Line(now)
	if err != nil {
		t.Fatal(err)
	}
	root = checkEMFAt(t, line, now)
	for name, want := range map[string]float64{"Received": 5, "Delivered": 2, "Dropped": 0, "Rejected": 1,
		"Gaps": 0, "BufferFill": 25, "Subscribed": 0, "SinksUp": 0, "Leader": 1} {
		if got := num(t, root, name); got != want {
			t.Errorf("second line: %s = %v, want %v", name, got, want)
		}
	}
	if u := emfMetricNames(root)["Leader"]; u != "None" {
		t.Errorf("Leader's unit = %q once the hook knows, want None", u)
	}
}

// TestEMFNothingSubscribedYet: before the mode is known there is no
// subscription series: Subscribed is 0, not 1.
func TestEMFNothingSubscribedYet(t *testing.T) {
	reg := prometheus.NewRegistry()
	bridge.NewMetrics(reg)
	now := time.Now()
	line, err := bridge.NewEMF(bridge.EMFConfig{Interval: time.Second, Service: "keyrelay", Gatherer: reg}).Line(now)
	if err != nil {
		t.Fatal(err)
	}
	root := checkEMFAt(t, line, now)
	if num(t, root, "Subscribed") != 0 || num(t, root, "SinksUp") != 0 {
		t.Errorf("Subscribed, SinksUp = %v, %v without any series, want 0, 0", root["Subscribed"], root["SinksUp"])
	}
}

// TestEMFRunWritesFinalLine: Run writes one line per interval and a final
// one when its context ends, each a whole line of its own.
func TestEMFRunWritesFinalLine(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := bridge.NewMetrics(reg)
	var out syncWriter
	stop := bridge.NewEMF(bridge.EMFConfig{Interval: time.Hour, Service: "keyrelay", Gatherer: reg, Out: &out}).Start()
	m.Received.WithLabelValues("expired").Add(3)
	stop()
	stop() // a second call is harmless
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines after a stop within the first interval, want the final one: %q", len(lines), out.String())
	}
	root, _ := bridgetest.CheckEMF(t, []byte(lines[0]+"\n"))
	if num(t, root, "Received") != 3 {
		t.Errorf("final line Received = %v, want 3", root["Received"])
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// failureTB records the failures of a check instead of failing the test.
type failureTB struct {
	testing.TB
	msgs []string
}

func (f *failureTB) Helper() {}
func (f *failureTB) Errorf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}
func (f *failureTB) Fatalf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// TestCheckEMFRejects: the specification check used above fails documents
// that break the format, one fault at a time.
func TestCheckEMFRejects(t *testing.T) {
	reg := prometheus.NewRegistry()
	bridge.NewMetrics(reg)
	good, err := bridge.NewEMF(bridge.EMFConfig{Interval: time.Second, Service: "keyrelay", Gatherer: reg}).Line(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	many := func(n int, f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return strings.Join(parts, ",")
	}
	for name, doc := range map[string]string{
		"two lines":                `{"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[]}}` + "\n" + string(good),
		"not JSON":                 `_aws` + "\n",
		"no _aws":                  `{"Received":1}` + "\n",
		"timestamp in s":           `{"Received":1,"_aws":{"Timestamp":1796195852,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[{"Name":"Received","Unit":"Count"}]}]}}` + "\n",
		"no directive":             `{"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[]}}` + "\n",
		"unknown unit":             `{"Received":1,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[{"Name":"Received","Unit":"Counts"}]}]}}` + "\n",
		"metric not a root member": `{"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[{"Name":"Received","Unit":"Count"}]}]}}` + "\n",
		"metric a string":          `{"Received":"1","_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[{"Name":"Received"}]}]}}` + "\n",
		"dimension missing":        `{"Received":1,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[["Service"]],"Metrics":[{"Name":"Received"}]}]}}` + "\n",
		"dimension a number":       `{"Service":3,"Received":1,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[["Service"]],"Metrics":[{"Name":"Received"}]}]}}` + "\n",
		"empty namespace":          `{"Received":1,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"","Dimensions":[],"Metrics":[{"Name":"Received"}]}]}}` + "\n",
		"extra directive member":   `{"Received":1,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[{"Name":"Received"}],"Unit":"Count"}]}}` + "\n",
		"101 metrics": `{` + many(101, func(i int) string { return fmt.Sprintf(`"M%d":1`, i) }) +
			`,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[],"Metrics":[` +
			many(101, func(i int) string { return fmt.Sprintf(`{"Name":"M%d"}`, i) }) + `]}]}}` + "\n",
		"31 dimensions": `{"Received":1,` + many(31, func(i int) string { return fmt.Sprintf(`"D%d":"v"`, i) }) +
			`,"_aws":{"Timestamp":1796195852576,"CloudWatchMetrics":[{"Namespace":"k","Dimensions":[[` +
			many(31, func(i int) string { return fmt.Sprintf(`"D%d"`, i) }) + `]],"Metrics":[{"Name":"Received"}]}]}}` + "\n",
	} {
		f := &failureTB{}
		done := make(chan struct{})
		go func() { defer close(done); bridgetest.CheckEMF(f, []byte(doc)) }()
		<-done
		if len(f.msgs) == 0 {
			t.Errorf("%s: CheckEMF accepted %s", name, doc)
		}
	}
	f := &failureTB{}
	done := make(chan struct{})
	go func() { defer close(done); bridgetest.CheckEMF(f, good) }()
	<-done
	if len(f.msgs) > 0 {
		t.Errorf("CheckEMF rejected keyrelay's own line: %v\n%s", f.msgs, good)
	}
}

// BenchmarkEMFLine measures one line: a Gather of every keyrelay metric
// (three sinks, three cluster nodes) and the JSON document.
func BenchmarkEMFLine(b *testing.B) {
	reg := prometheus.NewRegistry()
	m := bridge.NewMetrics(reg)
	m.SetBuildInfo("bench")
	for _, sink := range []string{"sqs", "sns", "stdout"} {
		m.BufferCapacityRecords.WithLabelValues(sink).Set(100000)
		m.BufferCapacityBytes.WithLabelValues(sink).Set(64 << 20)
		m.BufferRecords.WithLabelValues(sink).Set(10)
		m.BufferBytes.WithLabelValues(sink).Set(1000)
		m.SinkUp.WithLabelValues(sink).Set(1)
		m.Delivered.WithLabelValues(sink).Add(1e6)
		m.PublishTime.WithLabelValues(sink).Observe(0.01)
		m.BatchSize.WithLabelValues(sink).Observe(10)
	}
	for _, node := range []string{"a:6379", "b:6379", "c:6379"} {
		m.Connected.WithLabelValues(node).Set(1)
		m.MarkersSent.WithLabelValues(node).Add(1000)
	}
	e := bridge.NewEMF(bridge.EMFConfig{Interval: time.Minute, Service: "keyrelay", Gatherer: reg})
	now := time.Now()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		line, err := e.Line(now)
		if err != nil {
			b.Fatal(err)
		}
		n = len(line)
	}
	b.ReportMetric(float64(n), "bytes/line")
}
