package main

// Tests that the alert rules (deploy/prometheus), the Grafana dashboard
// (deploy/grafana) and the docs name only metrics keyrelay registers, and
// that the docs describe every one it registers. promtool checks the rules'
// syntax and behaviour (make lint); TestDashboardPromQLParses has promtool
// parse the dashboard's queries (-tags integration).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/keyrelay/keyrelay/bridge"
)

const (
	alertRulesFile = "deploy/prometheus/keyrelay-alerts.yaml"
	alertTestsFile = "deploy/prometheus/keyrelay-alerts.test.yaml"
	dashboardFile  = "deploy/grafana/keyrelay-dashboard.json"
)

// describingRegisterer records the names of the metrics registered with it.
type describingRegisterer struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *describingRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *describingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *describingRegisterer) Unregister(prometheus.Collector) bool { return false }

// registeredMetrics are the names of every keyrelay_ metric bridge.NewMetrics
// and bridge.NewHAMetrics register.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	r := &describingRegisterer{names: map[string]bool{}}
	bridge.NewMetrics(r)
	bridge.NewHAMetrics(r)
	if len(r.names) < 20 {
		t.Fatalf("only %d metrics described: %v", len(r.names), r.names)
	}
	return r.names
}

var metricName = regexp.MustCompile(`\bkeyrelay_[a-z_]+[a-z]`)

// unknownMetrics returns the keyrelay_ names in text that are not
// registered, a histogram's _bucket, _sum and _count series allowed.
func unknownMetrics(text string, registered map[string]bool) []string {
	var bad []string
	for _, name := range metricName.FindAllString(text, -1) {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] {
				base = b
			}
		}
		if !registered[base] && !slices.Contains(bad, name) {
			bad = append(bad, name)
		}
	}
	return bad
}

func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// alertRules is the part of a Prometheus rules file the tests read.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRulesUseRegisteredMetrics: every keyrelay_ metric an alert
// queries is registered; each alert has a severity, a summary and a
// description, and promtool unit tests in which it fires.
func TestAlertRulesUseRegisteredMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	var rules alertRules
	if err := yaml.Unmarshal([]byte(readRepoFile(t, alertRulesFile)), &rules); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, alertTestsFile)), &tests); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if bad := unknownMetrics(r.Expr, registered); len(bad) > 0 {
				t.Errorf("alert %s queries metrics keyrelay does not register: %v", r.Alert, bad)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs labels.severity, annotations.summary and annotations.description", r.Alert)
			}
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in %s in which it fires", r.Alert, alertTestsFile)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s has no rules", alertRulesFile)
	}
}

// dashboardExprs returns every PromQL expression of the dashboard: panel
// targets, annotations and template variable queries, by where they are.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(readRepoFile(t, dashboardFile)), &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("%s: panel id %d used twice", dashboardFile, p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for i, tg := range p.Targets {
			out["panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, a := range dash.Annotations.List {
		if a.Expr != "" {
			out["annotation "+a.Name] = a.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			out["variable "+v.Name] = v.Definition
		}
	}
	return out
}

// TestDashboardUsesRegisteredMetrics: every keyrelay_ metric the dashboard
// queries is registered, and it shows what the issue asks for.
func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	exprs := dashboardExprs(t)
	all := ""
	for where, e := range exprs {
		if strings.TrimSpace(e) == "" {
			t.Errorf("%s: %s has an empty query", dashboardFile, where)
		}
		if bad := unknownMetrics(e, registered); len(bad) > 0 {
			t.Errorf("%s: %s queries metrics keyrelay does not register: %v", dashboardFile, where, bad)
		}
		all += e + "\n"
	}
	for _, want := range []string{"keyrelay_notifications_received_total", "keyrelay_records_delivered_total",
		"keyrelay_buffer_capacity_records", "keyrelay_records_dropped_total", "keyrelay_records_rejected_total",
		"keyrelay_publish_duration_seconds_bucket", "keyrelay_subscription_connected", "keyrelay_spool_lag_seconds"} {
		if !strings.Contains(all, want) {
			t.Errorf("%s queries no %s", dashboardFile, want)
		}
	}
	var gapAnnotation bool
	for where, e := range exprs {
		gapAnnotation = gapAnnotation || (strings.HasPrefix(where, "annotation ") && strings.Contains(e, "keyrelay_gaps_total"))
	}
	if !gapAnnotation {
		t.Errorf("%s: no annotation on keyrelay_gaps_total", dashboardFile)
	}
}

// TestDocsNameRegisteredMetrics: the README and docs/*.md name only
// registered metrics (a renamed metric leaves no stale alert behind), and
// docs/operations.md's metric table has a row for each registered one.
func TestDocsNameRegisteredMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repoRoot, "README.md"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Anchors such as #the-durable-spool-keyrelay_spool_dir are not
		// metric names.
		text := regexp.MustCompile(`\(#?[a-z0-9./-]*#[a-z0-9_-]+\)`).ReplaceAllString(string(b), "")
		// keyrelay_markers_* names a family of registered metrics.
		text = strings.ReplaceAll(text, "keyrelay_markers_*", "")
		if bad := unknownMetrics(text, registered); len(bad) > 0 {
			t.Errorf("%s names metrics keyrelay does not register: %v", filepath.Base(f), bad)
		}
	}
	ops := readRepoFile(t, "docs/operations.md")
	var missing []string
	for name := range registered {
		if !strings.Contains(ops, "| `"+name+"` |") {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/operations.md's metric table has no row for %v", missing)
	}
}

// TestEMFIntervalBounds: KEYRELAY_EMF_INTERVAL is 0 (off) or 1s..1h.
func TestEMFIntervalBounds(t *testing.T) {
	for value, ok := range map[string]bool{"0": true, "1s": true, "60s": true, "1h": true, "500ms": false, "2h": false, "-1s": false} {
		t.Run(value, func(t *testing.T) {
			t.Setenv("KEYRELAY_EMF_INTERVAL", value)
			_, err := loadConfig()
			switch {
			case ok && err != nil:
				t.Errorf("KEYRELAY_EMF_INTERVAL=%s refused: %v", value, err)
			case !ok && (err == nil || !strings.Contains(err.Error(), "KEYRELAY_EMF_INTERVAL") || !strings.Contains(err.Error(), "0 (off) or from 1s to 1h0m0s")):
				t.Errorf("KEYRELAY_EMF_INTERVAL=%s: error %v, want one naming the variable and its bounds", value, err)
			}
		})
	}
}
