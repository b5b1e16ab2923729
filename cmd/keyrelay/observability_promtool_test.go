//go:build integration

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDashboardPromQLParses has promtool (make deps installs it) parse every
// query of the Grafana dashboard, as recording rules, with Grafana's
// variables replaced by what they stand for; label_values() variable
// queries are Grafana's own syntax and are left out.
func TestDashboardPromQLParses(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (make deps installs it)")
	}
	exprs := dashboardExprs(t)
	var where []string
	for w := range exprs {
		if !strings.HasPrefix(w, "variable ") {
			where = append(where, w)
		}
	}
	sort.Strings(where)
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$job", ".*", "$instance", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, w := range where {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafana.Replace(exprs[w])})
	}
	doc, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		for i, w := range where {
			t.Logf("dashboard:query_%d = %s", i, w)
		}
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d rules found", len(rules))) {
		t.Fatalf("promtool did not check %d rules:\n%s", len(rules), out)
	}
}
