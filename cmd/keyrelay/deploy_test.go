package main

// Tests of the files a user deploys with (Dockerfile, deploy/): no Docker
// engine or AWS account is needed. They stand in for a Dockerfile linter and
// keep the deploy files in step with the code: variables, IAM actions,
// timeouts, the health check.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyrelay/keyrelay/sinks/sns"
	"github.com/keyrelay/keyrelay/sinks/sqs"
)

const repoRoot = "../.."

// requiredIAMActions is the union of what the sinks call.
var requiredIAMActions = slices.Concat(sqs.RequiredIAMActions, sns.RequiredIAMActions)

// iamAuthAction is granted only with ElastiCache IAM authentication.
const iamAuthAction = "elasticache:Connect"

// dockerInstruction is one instruction of a Dockerfile.
type dockerInstruction struct {
	Cmd  string // upper case
	Args string
	Line int
}

func parseDockerfile(t *testing.T, path string) []dockerInstruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		if !regexp.MustCompile(`^[A-Za-z]+$`).MatchString(cmd) {
			t.Fatalf("%s:%d: not an instruction: %q", path, start, cur.String())
		}
		out = append(out, dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: ends inside a continued line", path)
	}
	return out
}

// execForm parses a JSON-array (exec form) argument, or fails.
func execForm(t *testing.T, in dockerInstruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.Args), &v); err != nil {
		t.Errorf("line %d: %s %s is not in exec form (a JSON array): %v", in.Line, in.Cmd, in.Args, err)
	}
	return v
}

// goBuildFlags returns the go build command line with its output path
// removed, for comparing the Dockerfile with the Makefile.
func goBuildFlags(line string) string {
	line = regexp.MustCompile(`-o \S+ `).ReplaceAllString(line, "-o OUT ")
	return strings.Join(strings.Fields(line), " ")
}

// makeBuildLine returns the Makefile's build recipe with GO, LDFLAGS, BIN and
// VERSION expanded the way the Dockerfile spells them.
func makeBuildLine(t *testing.T) string {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(\w+)\s*[:?]?=\s*(.*)$`).FindAllStringSubmatch(string(mk), -1) {
		vars[m[1]] = strings.TrimSpace(m[2])
	}
	m := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindStringSubmatch(string(mk))
	if m == nil {
		t.Fatal("Makefile has no build target with a recipe")
	}
	line := m[1]
	line = strings.ReplaceAll(line, "$(LDFLAGS)", vars["LDFLAGS"])
	line = strings.ReplaceAll(line, "$(GO)", "go")
	line = strings.ReplaceAll(line, "$(VERSION)", "${VERSION}")
	return line
}

// spoolDir is where the image, the ECS task definitions and the systemd
// unit (StateDirectory=keyrelay) keep the durable spool.
const spoolDir = "/var/lib/keyrelay"

// TestDockerfile is the Dockerfile lint CI can run without a Docker engine:
// a multi-stage build whose go build line is the Makefile's, a static
// (CGO_ENABLED=0), trimmed, version-stamped binary on a distroless non-root
// runtime with CA certificates, exec-form ENTRYPOINT, the HTTP port exposed,
// SIGTERM and a health check through the healthcheck subcommand.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	var stages [][]dockerInstruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				t.Fatalf("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stage(s)", len(stages))
	}
	build, runtime := stages[0], stages[len(stages)-1]

	// Build stage: the Go release of go.mod, on bookworm.
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(gomod))
	// It runs on the builder's platform and cross-compiles for the target
	// (docker buildx build --platform linux/amd64,linux/arm64).
	if want := "--platform=$BUILDPLATFORM golang:" + goVer[1] + "-bookworm AS build"; build[0].Args != want {
		t.Errorf("build stage FROM %q, want %q (go.mod says go %s)", build[0].Args, want, goVer[1])
	}
	var buildLine string
	copied := map[string]bool{}
	buildArgs := map[string]bool{}
	for _, in := range build {
		switch {
		case in.Cmd == "ARG":
			for _, a := range strings.Fields(in.Args) {
				name, _, _ := strings.Cut(a, "=")
				buildArgs[name] = true
			}
		case in.Cmd == "RUN" && strings.Contains(in.Args, "go build"):
			buildLine = in.Args
		case in.Cmd == "COPY":
			for _, src := range strings.Fields(in.Args) {
				copied[strings.TrimSuffix(strings.TrimPrefix(src, "./"), "/")] = true
			}
		}
	}
	if buildLine == "" {
		t.Fatal("build stage has no go build")
	}
	for _, want := range []string{"CGO_ENABLED=0 ", " -trimpath ", "-X main.version=${VERSION}", " ./cmd/keyrelay"} {
		if !strings.Contains(buildLine, want) {
			t.Errorf("go build line %q lacks %q", buildLine, want)
		}
	}
	for _, a := range []string{"TARGETOS", "TARGETARCH", "VERSION"} {
		if !buildArgs[a] {
			t.Errorf("build stage declares no ARG %s", a)
		}
	}
	cross := "GOOS=${TARGETOS} GOARCH=${TARGETARCH} "
	if !strings.Contains(buildLine, cross) {
		t.Errorf("go build line %q does not build for the target platform (%s)", buildLine, cross)
	}
	buildLine = strings.Replace(buildLine, cross, "", 1)
	if got, want := goBuildFlags(buildLine), goBuildFlags(makeBuildLine(t)); got != want {
		t.Errorf("Dockerfile and Makefile build differently:\n Dockerfile: %s\n Makefile:   %s", got, want)
	}
	// Every top-level directory holding Go code is copied into the build.
	entries, err := os.ReadDir(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		hasGo := false
		_ = filepath.WalkDir(filepath.Join(repoRoot, e.Name()), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				hasGo = true
				return fs.SkipAll
			}
			return nil
		})
		if hasGo && !copied[e.Name()] {
			t.Errorf("%s/ holds Go code but the build stage does not COPY it", e.Name())
		}
	}

	// Runtime stage.
	if want := "gcr.io/distroless/static-debian12:nonroot"; runtime[0].Args != want {
		t.Errorf("runtime stage FROM %q, want %q (CA certificates, no shell, non-root)", runtime[0].Args, want)
	}
	got := map[string][]dockerInstruction{}
	for _, in := range runtime {
		got[in.Cmd] = append(got[in.Cmd], in)
	}
	// The binary, and the spool directory owned by the non-root user (no
	// shell to create it at run time).
	if c := got["COPY"]; len(c) != 2 || !strings.HasPrefix(c[0].Args, "--from=build ") || !strings.HasSuffix(c[0].Args, " /keyrelay") ||
		!strings.HasPrefix(c[1].Args, "--from=build --chown=65532:65532 ") || !strings.HasSuffix(c[1].Args, " /var/lib/keyrelay") {
		t.Errorf("runtime stage should COPY --from=build the binary to /keyrelay and the spool directory to /var/lib/keyrelay (owned by 65532): %v", c)
	}
	// The spool: set, declared a volume (ECS copies the image's directory,
	// its owner included, into a bind mount at the VOLUME path).
	if e := got["ENV"]; len(e) != 1 || e[0].Args != "KEYRELAY_SPOOL_DIR="+spoolDir {
		t.Errorf("want ENV KEYRELAY_SPOOL_DIR=%s (the spool), have %v", spoolDir, e)
	}
	if v := got["VOLUME"]; len(v) != 1 || v[0].Args != spoolDir {
		t.Errorf("want VOLUME %s (the spool), have %v", spoolDir, v)
	}
	if u := got["USER"]; len(u) != 1 {
		t.Error("runtime stage sets no USER")
	} else if user, _, _ := strings.Cut(u[0].Args, ":"); user == "root" || user == "0" {
		t.Errorf("USER %s is root", u[0].Args)
	} else if u[0].Args != "65532:65532" {
		t.Errorf("USER %s, want 65532:65532 (the owner of %s)", u[0].Args, spoolDir)
	}
	// OCI labels: where the image comes from, which version and commit.
	labels := map[string]string{}
	for _, in := range got["LABEL"] {
		for _, m := range regexp.MustCompile(`([\w.-]+)="([^"]*)"`).FindAllStringSubmatch(in.Args, -1) {
			labels[m[1]] = m[2]
		}
	}
	runtimeArgs := map[string]bool{}
	for _, in := range got["ARG"] {
		name, _, _ := strings.Cut(in.Args, "=")
		runtimeArgs[name] = true
	}
	for k, want := range map[string]string{
		"title": "keyrelay", "source": "https://github.com/keyrelay/keyrelay", "version": "${VERSION}", "revision": "${REVISION}",
		"licenses": "", "description": "", "url": "",
	} {
		v, ok := labels["org.opencontainers.image."+k]
		if !ok || v == "" || (want != "" && v != want) {
			t.Errorf("LABEL org.opencontainers.image.%s=%q, want %q", k, v, want)
		}
		if strings.HasPrefix(want, "${") && !runtimeArgs[strings.Trim(want, "${}")] {
			t.Errorf("the runtime stage declares no ARG %s for its label %s", strings.Trim(want, "${}"), k)
		}
	}
	if e := got["ENTRYPOINT"]; len(e) != 1 || !slices.Equal(execForm(t, e[0]), []string{"/keyrelay"}) {
		t.Errorf(`want ENTRYPOINT ["/keyrelay"], have %v`, e)
	}
	_, port, _ := net.SplitHostPort(defaultOf(t, "HTTPAddr"))
	if e := got["EXPOSE"]; len(e) != 1 || e[0].Args != port {
		t.Errorf("want EXPOSE %s (KEYRELAY_HTTP_ADDR's default port), have %v", port, e)
	}
	if s := got["STOPSIGNAL"]; len(s) != 1 || s[0].Args != "SIGTERM" {
		t.Errorf("want STOPSIGNAL SIGTERM, have %v", s)
	}
	if h := got["HEALTHCHECK"]; len(h) != 1 {
		t.Error("runtime stage has no HEALTHCHECK")
	} else {
		_, cmd, ok := strings.Cut(h[0].Args, "CMD ")
		if !ok || !slices.Equal(execForm(t, dockerInstruction{"HEALTHCHECK", cmd, h[0].Line}), []string{"/keyrelay", "healthcheck"}) {
			t.Errorf(`want HEALTHCHECK … CMD ["/keyrelay", "healthcheck"], have %s`, h[0].Args)
		}
	}
}

// defaultOf returns the default tag of a Config field.
func defaultOf(t *testing.T, field string) string {
	t.Helper()
	f, ok := reflect.TypeOf(Config{}).FieldByName(field)
	if !ok {
		t.Fatalf("Config has no field %s", field)
	}
	return f.Tag.Get("default")
}

// TestHealthcheckCommand: the subcommand the container health checks run
// exits 0 when /healthz answers 200 and fails otherwise.
func TestHealthcheckCommand(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		fmt.Fprintln(w, "ok")
	}))
	defer srv.Close()
	clearKeyrelayEnv(t)
	t.Setenv("KEYRELAY_HTTP_ADDR", srv.Listener.Addr().String())
	if err := run(context.Background(), context.Background(), []string{"healthcheck"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := run(context.Background(), context.Background(), []string{"healthcheck"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unhealthy: healthcheck succeeded")
	}
}

// clearKeyrelayEnv unsets every KEYRELAY_ variable for the test.
func clearKeyrelayEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KEYRELAY_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// yamlToAny converts a CloudFormation YAML node into the JSON form of the
// template: short tags become intrinsic functions (!Ref x → {"Ref": x},
// !GetAtt a.b → {"Fn::GetAtt": [a, b]}, !Sub … → {"Fn::Sub": …}).
func yamlToAny(t *testing.T, n *yaml.Node) any {
	t.Helper()
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		return yamlToAny(t, n.Content[0])
	case yaml.AliasNode:
		return yamlToAny(t, n.Alias)
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = yamlToAny(t, n.Content[i+1])
		}
		v = m
	case yaml.SequenceNode:
		s := []any{}
		for _, c := range n.Content {
			s = append(s, yamlToAny(t, c))
		}
		v = s
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int":
			i, err := strconv.Atoi(n.Value)
			if err != nil {
				t.Fatalf("line %d: %v", n.Line, err)
			}
			v = i
		case "!!bool":
			v = n.Value == "true"
		case "!!null":
			v = nil
		default:
			v = n.Value
		}
	}
	switch tag := n.Tag; {
	case tag == "!Ref":
		return map[string]any{"Ref": v}
	case tag == "!GetAtt":
		if s, ok := v.(string); ok {
			res, attr, _ := strings.Cut(s, ".")
			return map[string]any{"Fn::GetAtt": []any{res, attr}}
		}
		return map[string]any{"Fn::GetAtt": v}
	case tag == "!Condition":
		return map[string]any{"Condition": v}
	case strings.HasPrefix(tag, "!") && !strings.HasPrefix(tag, "!!"):
		return map[string]any{"Fn::" + tag[1:]: v}
	}
	return v
}

func loadYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	m, ok := yamlToAny(t, &n).(map[string]any)
	if !ok {
		t.Fatalf("%s is not a mapping", path)
	}
	return m
}

func loadJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// branches returns v, or both branches of an Fn::If (AWS::NoValue dropped),
// with the condition that guards them ("" when unconditional).
func branches(v any) (cond string, out []any) {
	if m, ok := v.(map[string]any); ok {
		if args, ok := m["Fn::If"].([]any); ok && len(args) == 3 {
			cond, _ = args[0].(string)
			for _, b := range args[1:] {
				if r, ok := b.(map[string]any); ok && r["Ref"] == "AWS::NoValue" {
					continue
				}
				_, inner := branches(b)
				out = append(out, inner...)
			}
			return cond, out
		}
	}
	return "", []any{v}
}

// flatten returns the list items v stands for: both branches of an Fn::If,
// and the items of a list a branch holds.
func flatten(v any) []any {
	var out []any
	_, bs := branches(v)
	for _, b := range bs {
		if l, ok := b.([]any); ok {
			for _, x := range l {
				out = append(out, flatten(x)...)
			}
			continue
		}
		out = append(out, b)
	}
	return out
}

func asList(v any) []any {
	switch x := v.(type) {
	case []any:
		return x
	case nil:
		return nil
	}
	return []any{v}
}

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// iamActions returns the actions of a policy document's statements, by the
// condition (Fn::If) that guards each statement.
func iamActions(t *testing.T, doc any) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, st := range asList(get(doc, "Statement")) {
		cond, sts := branches(st)
		for _, s := range sts {
			if get(s, "Effect") != "Allow" {
				t.Errorf("statement %v is not an Allow", s)
			}
			// Only ecr:GetAuthorizationToken has no resource to name.
			if res := get(s, "Resource"); (res == "*" || slices.Contains(asList(res), any("*"))) &&
				!slices.Equal(asList(get(s, "Action")), []any{"ecr:GetAuthorizationToken"}) {
				t.Errorf("statement %v grants on every resource", get(s, "Sid"))
			}
			for _, a := range asList(get(s, "Action")) {
				out[cond] = append(out[cond], a.(string))
			}
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// containerEnv returns an ECS container definition's environment and secrets
// (both spellings: CloudFormation's Name/Value and the API's name/value), by
// variable; values may be intrinsic functions.
func containerEnv(c any) map[string]any {
	env := map[string]any{}
	for _, key := range []string{"Environment", "environment", "Secrets", "secrets"} {
		for _, item := range asList(get(c, key)) {
			for _, it := range flatten(item) {
				name, _ := get(it, "Name").(string)
				if name == "" {
					name, _ = get(it, "name").(string)
				}
				val := get(it, "Value")
				for _, k := range []string{"value", "ValueFrom", "valueFrom"} {
					if val == nil {
						val = get(it, k)
					}
				}
				env[name] = val
			}
		}
	}
	return env
}

// shutdownTimeout returns the KEYRELAY_SHUTDOWN_TIMEOUT a file sets, or the
// default.
func shutdownTimeout(t *testing.T, env map[string]any) time.Duration {
	t.Helper()
	v, ok := env["KEYRELAY_SHUTDOWN_TIMEOUT"].(string)
	if !ok {
		v = defaultOf(t, "ShutdownTimeout")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("KEYRELAY_SHUTDOWN_TIMEOUT=%q: %v", v, err)
	}
	return d
}

// checkContainer checks an ECS container definition: known variables, the
// healthcheck subcommand, a stop timeout above the shutdown timeout.
func checkContainer(t *testing.T, file string, c any, key func(string) string) {
	t.Helper()
	env := containerEnv(c)
	for name := range env {
		if strings.HasPrefix(name, "KEYRELAY_") && !slices.Contains(configVariables(), name) {
			t.Errorf("%s sets %s, which keyrelay does not know", file, name)
		}
	}
	if _, ok := env["KEYRELAY_REDIS_URL"]; !ok {
		t.Errorf("%s does not set KEYRELAY_REDIS_URL", file)
	}
	hc := asList(get(c, key("HealthCheck"), key("Command")))
	if !reflect.DeepEqual(hc, []any{"CMD", "/keyrelay", "healthcheck"}) {
		t.Errorf("%s: health check command %v, want [CMD /keyrelay healthcheck]", file, hc)
	}
	stop, ok := get(c, key("StopTimeout")).(int)
	if f, isFloat := get(c, key("StopTimeout")).(float64); isFloat {
		stop, ok = int(f), true
	}
	if !ok {
		t.Errorf("%s: no stopTimeout (ECS defaults to 30 s)", file)
	} else if sd := shutdownTimeout(t, env); time.Duration(stop)*time.Second <= sd {
		t.Errorf("%s: stopTimeout %ds is not above KEYRELAY_SHUTDOWN_TIMEOUT %s", file, stop, sd)
	} else if stop > 120 {
		t.Errorf("%s: stopTimeout %ds is above Fargate's maximum of 120 s", file, stop)
	}
	// CloudWatch metrics without a collector: one EMF line a minute, the
	// period of the stack's alarms.
	if v := env["KEYRELAY_EMF_INTERVAL"]; v != "60s" {
		t.Errorf("%s: KEYRELAY_EMF_INTERVAL=%v, want 60s (the awslogs driver turns the lines into the alarms' metrics)", file, v)
	}
	if get(c, key("ReadonlyRootFilesystem")) != true {
		t.Errorf("%s: the root file system should be read-only (keyrelay writes only its spool, on a volume)", file)
	}
}

// checkMemoryLimit: the task definition sets GOMEMLIMIT to about 90 % of the
// task's memory (MiB), so the garbage collector works harder before the
// task is killed for memory.
func checkMemoryLimit(t *testing.T, file string, td, c any, key func(string) string) {
	t.Helper()
	mem, err := strconv.Atoi(fmt.Sprint(get(td, key("Memory"))))
	if err != nil {
		t.Fatalf("%s: task memory %v: %v", file, get(td, key("Memory")), err)
	}
	lim, _ := containerEnv(c)["GOMEMLIMIT"].(string)
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB)?$`).FindStringSubmatch(lim)
	if m == nil {
		t.Errorf("%s: GOMEMLIMIT=%q, want about 90 %% of the task's %d MiB (e.g. %dMiB)", file, lim, mem, mem*9/10)
		return
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	n *= map[string]float64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
	if r := n / float64(mem<<20); r < 0.85 || r > 0.95 {
		t.Errorf("%s: GOMEMLIMIT=%s is %.0f %% of the task's %d MiB, want about 90 %%", file, lim, r*100, mem)
	}
}

// checkSpool checks that an ECS task definition mounts task storage at the
// spool directory and restarts a crashed container in its task: the spool
// variable names the mount; the volume has only a name (a bind mount of the
// task's storage: no host path, EFS or Docker volume) and is mounted at the
// image's VOLUME path, so that ECS copies the image's directory and its
// owner; the restart policy is on with the shortest attempt period.
func checkSpool(t *testing.T, file string, td, c any, key func(string) string) {
	t.Helper()
	if dir := containerEnv(c)["KEYRELAY_SPOOL_DIR"]; dir != spoolDir {
		t.Errorf("%s: KEYRELAY_SPOOL_DIR=%v, want %s", file, dir, spoolDir)
	}
	var source any
	for _, m := range asList(get(c, key("MountPoints"))) {
		if get(m, key("ContainerPath")) == spoolDir {
			source = get(m, key("SourceVolume"))
			if ro := get(m, key("ReadOnly")); ro != nil && ro != false {
				t.Errorf("%s: the spool's mount point is read-only", file)
			}
		}
	}
	if source == nil {
		t.Errorf("%s: nothing is mounted at %s", file, spoolDir)
	}
	found := false
	for _, v := range asList(get(td, key("Volumes"))) {
		if get(v, key("Name")) != source {
			continue
		}
		found = true
		if m, _ := v.(map[string]any); len(m) != 1 {
			t.Errorf("%s: volume %v: %v, want only a name (a bind mount of the task's storage: no host path, EFS or Docker volume)", file, source, v)
		}
	}
	if !found {
		t.Errorf("%s: the spool's mount names volume %v, which the task definition does not declare", file, source)
	}
	rp := get(c, key("RestartPolicy"))
	if get(rp, key("Enabled")) != true {
		t.Errorf("%s: no container restart policy (a crash would replace the task and lose its spool)", file)
	}
	if p := fmt.Sprint(get(rp, key("RestartAttemptPeriod"))); p != "60" {
		t.Errorf("%s: restartAttemptPeriod %s, want 60 (the shortest ECS allows; default 300)", file, p)
	}
	if codes := fmt.Sprint(get(rp, key("IgnoredExitCodes"))); codes != "[0 2]" {
		t.Errorf("%s: ignoredExitCodes %s, want [0 2] (a stop keyrelay was asked for; a configuration error, which a restart does not fix)", file, codes)
	}
}

// TestDeployCloudFormation checks the template: the variables it sets exist,
// the task role grants exactly the sinks' actions (elasticache:Connect only
// with IAM auth) on named resources, the secret is the only one readable, a
// single task that is never doubled during deployments, the health check,
// the stop timeout, the cache ingress and the optional parameter group.
func TestDeployCloudFormation(t *testing.T) {
	file := "deploy/cloudformation/keyrelay.yaml"
	tpl := loadYAML(t, filepath.Join(repoRoot, file))
	res := func(name string) any {
		r := get(tpl, "Resources", name)
		if r == nil {
			t.Fatalf("%s has no resource %s", file, name)
		}
		return r
	}
	ident := func(s string) string { return s }

	// Task role: exactly what the sinks call.
	taskPolicies := asList(get(res("TaskRole"), "Properties", "Policies"))
	if len(taskPolicies) != 1 || get(res("TaskRole"), "Properties", "ManagedPolicyArns") != nil {
		t.Fatalf("task role: want one inline policy and no managed policies")
	}
	byCond := iamActions(t, get(taskPolicies[0], "PolicyDocument"))
	var sinkActions []string
	for cond, acts := range byCond {
		for _, a := range acts {
			if a == iamAuthAction {
				if cond != "UseIAM" {
					t.Errorf("task role grants %s under condition %q, want only under UseIAM", a, cond)
				}
				continue
			}
			sinkActions = append(sinkActions, a)
		}
	}
	if !sameSet(sinkActions, requiredIAMActions) {
		t.Errorf("task role grants %v, want exactly the sinks' %v", sinkActions, requiredIAMActions)
	}
	if !slices.Contains(byCond["UseIAM"], iamAuthAction) {
		t.Errorf("task role never grants %s for IAM authentication", iamAuthAction)
	}

	// Execution role: pull, logs, the one secret.
	execActions := iamActions(t, get(asList(get(res("ExecutionRole"), "Properties", "Policies"))[0], "PolicyDocument"))
	if !slices.Contains(execActions["UseSecret"], "secretsmanager:GetSecretValue") {
		t.Error("execution role cannot read the AUTH token secret")
	}
	for _, st := range asList(get(asList(get(res("ExecutionRole"), "Properties", "Policies"))[0], "PolicyDocument", "Statement")) {
		_, sts := branches(st)
		for _, s := range sts {
			if slices.Contains(asList(get(s, "Action")), any("secretsmanager:GetSecretValue")) &&
				!reflect.DeepEqual(get(s, "Resource"), map[string]any{"Ref": "AuthTokenSecretArn"}) {
				t.Errorf("GetSecretValue granted on %v, want only the AuthTokenSecretArn secret", get(s, "Resource"))
			}
		}
	}

	// Task definition.
	td := get(res("TaskDefinition"), "Properties")
	containers := asList(get(td, "ContainerDefinitions"))
	if len(containers) != 1 {
		t.Fatalf("want one container, have %d", len(containers))
	}
	checkContainer(t, file, containers[0], ident)
	checkSpool(t, file, td, containers[0], ident)
	checkMemoryLimit(t, file, td, containers[0], ident)
	env := containerEnv(containers[0])
	if !reflect.DeepEqual(env["KEYRELAY_REDIS_PASSWORD"], map[string]any{"Fn::If": []any{"SecretIsJson",
		map[string]any{"Fn::Sub": "${AuthTokenSecretArn}:${AuthTokenSecretJsonKey}::"}, map[string]any{"Ref": "AuthTokenSecretArn"}}}) {
		t.Errorf("KEYRELAY_REDIS_PASSWORD should come from the AuthTokenSecretArn secret, is %v", env["KEYRELAY_REDIS_PASSWORD"])
	}
	if env["KEYRELAY_REDIS_IAM_AUTH"] != "true" || env["KEYRELAY_REDIS_IAM_CACHE_ID"] == nil {
		t.Error("IAM mode should set KEYRELAY_REDIS_IAM_AUTH=true and KEYRELAY_REDIS_IAM_CACHE_ID")
	}
	if get(td, "NetworkMode") != "awsvpc" || !slices.Contains(asList(get(td, "RequiresCompatibilities")), any("FARGATE")) {
		t.Error("task definition should be Fargate with awsvpc networking")
	}

	// Service: one task, never two at once (one instance must not publish
	// beside another); with HighAvailability two (KEYRELAY_HA: one leader
	// publishes), new tasks started before the old ones stop.
	svc := get(res("Service"), "Properties")
	ha := func(on, off any) any { return map[string]any{"Fn::If": []any{"HA", on, off}} }
	if !reflect.DeepEqual(get(svc, "DesiredCount"), ha(2, 1)) {
		t.Errorf("DesiredCount %v, want 2 with HA, else 1", get(svc, "DesiredCount"))
	}
	if !reflect.DeepEqual(get(svc, "DeploymentConfiguration", "MaximumPercent"), ha(200, 100)) ||
		!reflect.DeepEqual(get(svc, "DeploymentConfiguration", "MinimumHealthyPercent"), ha(100, 0)) {
		t.Errorf("deployments: want MaximumPercent 200 / MinimumHealthyPercent 100 with HA, else 100 / 0 (the old task stops first): %v",
			get(svc, "DeploymentConfiguration"))
	}
	if !reflect.DeepEqual(get(svc, "AvailabilityZoneRebalancing"), ha("ENABLED", "DISABLED")) {
		t.Errorf("AvailabilityZoneRebalancing %v, want ENABLED with HA", get(svc, "AvailabilityZoneRebalancing"))
	}
	haEnv := false
	for _, item := range asList(get(containers[0], "Environment")) {
		if cond, bs := branches(item); len(bs) == 1 && get(bs[0], "Name") == "KEYRELAY_HA" {
			haEnv = cond == "HA" && get(bs[0], "Value") == "true"
		}
	}
	if !haEnv {
		t.Error("the task should set KEYRELAY_HA=true exactly when HighAvailability is true (condition HA)")
	}
	if get(tpl, "Conditions", "HA") == nil || get(tpl, "Parameters", "HighAvailability", "Default") != "false" {
		t.Error("want a HighAvailability parameter, false by default, and the condition HA")
	}

	// Network: the cache's security group admits the task's on the cache port.
	in := get(res("CacheIngressFromTask"), "Properties")
	if !reflect.DeepEqual(get(in, "GroupId"), map[string]any{"Ref": "CacheSecurityGroupId"}) ||
		!reflect.DeepEqual(get(in, "SourceSecurityGroupId"), map[string]any{"Ref": "TaskSecurityGroup"}) ||
		!reflect.DeepEqual(get(in, "FromPort"), map[string]any{"Ref": "CachePort"}) {
		t.Errorf("cache ingress rule: %v", in)
	}

	// Optional parameter group with notify-keyspace-events.
	pg := res("CacheParameterGroup")
	if get(pg, "Type") != "AWS::ElastiCache::ParameterGroup" || get(pg, "Condition") != "CreateParamGroup" ||
		get(pg, "Properties", "Properties", "notify-keyspace-events") == nil {
		t.Errorf("parameter group: %v", pg)
	}

	// The conditions the resources use exist.
	conds := get(tpl, "Conditions").(map[string]any)
	for _, c := range []string{"CreateQueue", "CreateTopic", "UseSecret", "UseIAM", "UseTLS", "CreateParamGroup"} {
		if conds[c] == nil {
			t.Errorf("condition %s is missing", c)
		}
	}

	// Outputs: the task definition, and a check command that runs as written.
	outputs := get(tpl, "Outputs").(map[string]any)
	if !reflect.DeepEqual(get(outputs, "TaskDefinitionArn", "Value"), map[string]any{"Ref": "TaskDefinition"}) {
		t.Errorf("output TaskDefinitionArn: %v", get(outputs, "TaskDefinitionArn"))
	}
	vars := map[string]string{
		"AWS::Region": "us-east-1", "Cluster": "keyrelay-my-cache-Cluster-AbC123", "SubnetIds": "subnet-0aaaaaaaaaaaaaaaa",
		"TaskDefinition":    "arn:aws:ecs:us-east-1:123456789012:task-definition/keyrelay-my-cache-keyrelay:1",
		"TaskSecurityGroup": "sg-0123456789abcdef0", "AssignPublicIp": "DISABLED", "LogGroup": "/ecs/keyrelay-my-cache/keyrelay",
	}
	check := cfnString(t, get(outputs, "CheckCommand", "Value"), nil, vars)
	for _, want := range []string{
		"aws ecs run-task ", " --cluster " + vars["Cluster"] + " ", " --launch-type FARGATE ", " --task-definition " + vars["TaskDefinition"] + " ",
		" --network-configuration 'awsvpcConfiguration={subnets=[" + vars["SubnetIds"] + "],securityGroups=[" + vars["TaskSecurityGroup"] + "],assignPublicIp=DISABLED}' ",
	} {
		if !strings.Contains(check, want) {
			t.Errorf("CheckCommand lacks %q:\n%s", want, check)
		}
	}
	if m := regexp.MustCompile(`--overrides '([^']*)'`).FindStringSubmatch(check); m == nil {
		t.Errorf("CheckCommand has no --overrides: %s", check)
	} else {
		var o struct {
			ContainerOverrides []struct {
				Name    string
				Command []string
			}
		}
		if err := json.Unmarshal([]byte(m[1]), &o); err != nil || len(o.ContainerOverrides) != 1 ||
			o.ContainerOverrides[0].Name != get(containers[0], "Name") || !slices.Equal(o.ContainerOverrides[0].Command, []string{"check"}) {
			t.Errorf("CheckCommand overrides %s (%v): want the container %v with command [check]", m[1], err, get(containers[0], "Name"))
		}
	}
	// The AWS CLI, where installed, validates the parameters before it
	// looks for credentials: with none, a valid command fails only there.
	if path, err := exec.LookPath("aws"); err == nil {
		home := t.TempDir()
		cmd := exec.Command("sh", "-c", strings.Replace(check, "aws ", path+" ", 1))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AWS_CONFIG_FILE=" + filepath.Join(home, "none"),
			"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none"), "AWS_EC2_METADATA_DISABLED=true"}
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "Unable to locate credentials") {
			t.Errorf("aws rejects CheckCommand:\n%s\n%s", check, out)
		}
	}

	// cfn-lint, where installed (not in CI): the resource schemas, the
	// intrinsic functions, the parameters' use.
	if path, err := exec.LookPath("cfn-lint"); err == nil {
		cmd := exec.Command(path, file)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cfn-lint %s: %v\n%s", file, err, out)
		}
	}
}

// TestDeployECSTaskDefinition checks the plain task definition.
func TestDeployECSTaskDefinition(t *testing.T) {
	file := "deploy/ecs/task-definition.json"
	td := loadJSON(t, filepath.Join(repoRoot, file))
	containers := asList(td["containerDefinitions"])
	if len(containers) != 1 {
		t.Fatalf("want one container, have %d", len(containers))
	}
	lower := func(s string) string { return strings.ToLower(s[:1]) + s[1:] }
	checkContainer(t, file, containers[0], lower)
	checkSpool(t, file, td, containers[0], lower)
	checkMemoryLimit(t, file, td, containers[0], lower)
	if _, ok := containerEnv(containers[0])["KEYRELAY_REDIS_PASSWORD"]; !ok {
		t.Error("the AUTH token should come from Secrets Manager as KEYRELAY_REDIS_PASSWORD")
	}
	for _, s := range asList(get(containers[0], "secrets")) {
		if !strings.HasPrefix(get(s, "valueFrom").(string), "arn:aws:secretsmanager:") {
			t.Errorf("secret %v is not a Secrets Manager ARN", s)
		}
	}
}

// TestDeployIAMPolicies: the EC2 policy grants exactly the sinks' actions;
// the IAM-auth policy only elasticache:Connect on a replication group and a
// user.
func TestDeployIAMPolicies(t *testing.T) {
	var got []string
	for _, acts := range iamActions(t, loadJSON(t, filepath.Join(repoRoot, "deploy/iam/ec2-policy.json"))) {
		got = append(got, acts...)
	}
	if !sameSet(got, requiredIAMActions) {
		t.Errorf("ec2-policy.json grants %v, want exactly %v", got, requiredIAMActions)
	}
	doc := loadJSON(t, filepath.Join(repoRoot, "deploy/iam/elasticache-iam-auth-policy.json"))
	if acts := iamActions(t, doc)[""]; !slices.Equal(acts, []string{iamAuthAction}) {
		t.Errorf("elasticache-iam-auth-policy.json grants %v, want only %s", acts, iamAuthAction)
	}
	res := fmt.Sprint(get(asList(doc["Statement"])[0], "Resource"))
	if !strings.Contains(res, ":replicationgroup:") || !strings.Contains(res, ":user:") {
		t.Errorf("elasticache:Connect needs the replication group and the user ARN, has %s", res)
	}

	// The plain task definition's execution role: what the stack's grants,
	// on the log group and the secret the task definition names.
	tpl := loadYAML(t, filepath.Join(repoRoot, "deploy/cloudformation/keyrelay.yaml"))
	var stackExec []string
	for _, acts := range iamActions(t, get(asList(get(tpl, "Resources", "ExecutionRole", "Properties", "Policies"))[0], "PolicyDocument")) {
		stackExec = append(stackExec, acts...)
	}
	execDoc := loadJSON(t, filepath.Join(repoRoot, "deploy/iam/ecs-execution-policy.json"))
	var execActs []string
	for _, acts := range iamActions(t, execDoc) {
		execActs = append(execActs, acts...)
	}
	if !sameSet(execActs, stackExec) {
		t.Errorf("ecs-execution-policy.json grants %v, want the stack's execution role's %v", execActs, stackExec)
	}
	td := loadJSON(t, filepath.Join(repoRoot, "deploy/ecs/task-definition.json"))
	c := asList(td["containerDefinitions"])[0]
	logGroup := fmt.Sprint(get(c, "logConfiguration", "options", "awslogs-group"))
	secret := fmt.Sprint(get(asList(get(c, "secrets"))[0], "valueFrom"))
	for _, st := range asList(execDoc["Statement"]) {
		res := fmt.Sprint(get(st, "Resource"))
		switch acts := asList(get(st, "Action")); {
		case slices.Contains(acts, any("logs:PutLogEvents")) && !strings.HasSuffix(res, ":log-group:"+logGroup+":*"):
			t.Errorf("ecs-execution-policy.json: logs on %s, want the task definition's log group %s", res, logGroup)
		case slices.Contains(acts, any("secretsmanager:GetSecretValue")) && res != secret:
			t.Errorf("ecs-execution-policy.json: GetSecretValue on %s, want the task definition's secret %s", res, secret)
		case slices.Contains(acts, any("ecr:BatchGetImage")) && !strings.HasSuffix(res, ":repository/keyrelay"):
			t.Errorf("ecs-execution-policy.json: pulls from %s, want the repository keyrelay", res)
		}
	}
	for _, role := range []string{"executionRoleArn", "taskRoleArn"} {
		if !regexp.MustCompile(`^arn:aws:iam::<ACCOUNT_ID>:role/keyrelay-(execution|task)$`).MatchString(fmt.Sprint(td[role])) {
			t.Errorf("task-definition.json %s %v: want the role docs/deployment.md creates", role, td[role])
		}
	}

	// The roles' trust policy: ECS tasks, as in the stack.
	trust := asList(loadJSON(t, filepath.Join(repoRoot, "deploy/iam/ecs-tasks-trust-policy.json"))["Statement"])
	stackTrust := asList(get(tpl, "Resources", "ExecutionRole", "Properties", "AssumeRolePolicyDocument", "Statement"))
	if len(trust) != 1 || get(trust[0], "Effect") != "Allow" || get(trust[0], "Action") != "sts:AssumeRole" ||
		!reflect.DeepEqual(get(trust[0], "Principal"), get(stackTrust[0], "Principal")) ||
		get(trust[0], "Condition", "ArnLike", "aws:SourceArn") == nil {
		t.Errorf("ecs-tasks-trust-policy.json: %v, want ecs-tasks.amazonaws.com may assume the role, for this account's tasks", trust)
	}
}

// TestDeployCheckCommands: the documented EC2 check runs keyrelay check with
// the unit's environment file through systemd (which reads the file as the
// unit does: AUTH tokens may hold & < > $), never by a shell sourcing it.
func TestDeployCheckCommands(t *testing.T) {
	for _, file := range []string{"deploy/systemd/keyrelay.env.example", "docs/deployment.md", "deploy/systemd/keyrelay.service"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		if regexp.MustCompile(`(?m)\. /etc/keyrelay/keyrelay\.env|source /etc/keyrelay`).MatchString(text) {
			t.Errorf("%s sources the environment file with a shell", file)
		}
		found := false
		for _, line := range strings.Split(text, "\n") {
			if !strings.Contains(line, "keyrelay check") || !strings.Contains(line, "systemd-run") {
				continue
			}
			found = true
			for _, want := range []string{"--wait", "--pipe", "--property=EnvironmentFile=/etc/keyrelay/keyrelay.env", "--property=DynamicUser=yes"} {
				if !strings.Contains(line, want) {
					t.Errorf("%s: the check command lacks %s: %s", file, want, strings.TrimSpace(line))
				}
			}
		}
		if !found && file != "deploy/systemd/keyrelay.service" {
			t.Errorf("%s shows no systemd-run … keyrelay check", file)
		}
	}
}

// systemdTime parses a systemd time span such as 35s, 1min 30s or 90.
func systemdTime(t *testing.T, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	s = strings.NewReplacer("min", "m", " ", "").Replace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("time span %q: %v", s, err)
	}
	return d
}

// readEnvFile returns the variables an environment file sets; commented
// assignments (#NAME=value) are returned separately.
func readEnvFile(t *testing.T, path string) (set, commented map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set, commented = map[string]string{}, map[string]string{}
	assign := regexp.MustCompile(`^(#)?([A-Z][A-Z0-9_]*)=(.*)$`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := assign.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			if m[1] == "#" {
				commented[m[2]] = m[3]
			} else {
				set[m[2]] = m[3]
			}
		}
	}
	return set, commented
}

// TestDeploySystemd: restart on failure, the environment file, an
// unprivileged user, a stop timeout above the shutdown timeout; the example
// environment file names only known variables and is a valid configuration.
func TestDeploySystemd(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/systemd/keyrelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	one := func(k string) string {
		if len(unit[k]) != 1 {
			t.Errorf("keyrelay.service: want one %s=, have %v", k, unit[k])
			return ""
		}
		return unit[k][0]
	}
	if one("Restart") != "on-failure" {
		t.Errorf("Restart=%s, want on-failure", one("Restart"))
	}
	if one("EnvironmentFile") != "/etc/keyrelay/keyrelay.env" {
		t.Errorf("EnvironmentFile=%s", one("EnvironmentFile"))
	}
	if user := unit["User"]; one("DynamicUser") != "yes" && (len(user) == 0 || user[0] == "root" || user[0] == "0") {
		t.Error("the unit should run as an unprivileged user (DynamicUser=yes or User=)")
	}
	if !strings.HasSuffix(one("ExecStart"), "/keyrelay run") {
		t.Errorf("ExecStart=%s", one("ExecStart"))
	}
	set, commented := readEnvFile(t, filepath.Join(repoRoot, "deploy/systemd/keyrelay.env.example"))
	env := map[string]any{}
	for k, v := range set {
		env[k] = v
	}
	if stop, sd := systemdTime(t, one("TimeoutStopSec")), shutdownTimeout(t, env); stop <= sd {
		t.Errorf("TimeoutStopSec=%s is not above KEYRELAY_SHUTDOWN_TIMEOUT %s", stop, sd)
	}
	// The spool in the unit's state directory: created by systemd for the
	// dynamic user, kept across restarts and reboots.
	if dir := "/var/lib/" + one("StateDirectory"); set["KEYRELAY_SPOOL_DIR"] != dir || dir != spoolDir {
		t.Errorf("KEYRELAY_SPOOL_DIR=%s in keyrelay.env.example, StateDirectory=%s: want both %s", set["KEYRELAY_SPOOL_DIR"], one("StateDirectory"), spoolDir)
	}
	for _, m := range []map[string]string{set, commented} {
		for k := range m {
			if strings.HasPrefix(k, "KEYRELAY_") && !slices.Contains(configVariables(), k) {
				t.Errorf("keyrelay.env.example names %s, which keyrelay does not know", k)
			}
		}
	}
	// The example, as shipped, is a configuration keyrelay accepts.
	clearKeyrelayEnv(t)
	for k, v := range set {
		t.Setenv(k, v)
	}
	if _, err := loadConfig(); err != nil {
		t.Errorf("keyrelay.env.example is rejected: %v", err)
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		// Checks the syntax without the binary installed.
		unitCopy := filepath.Join(t.TempDir(), "keyrelay.service")
		_ = os.WriteFile(unitCopy, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/keyrelay", "/bin/true")), 0o644)
		if out, err := exec.Command(path, "verify", unitCopy).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}

// TestDeployFilesKnown: every file in deploy/ is covered by a test above, and
// every KEYRELAY_ name any of them mentions (in values, descriptions or
// comments) is a variable keyrelay reads.
func TestDeployFilesKnown(t *testing.T) {
	covered := []string{
		"cloudformation/keyrelay.yaml", "ecs/task-definition.json",
		"iam/ec2-policy.json", "iam/elasticache-iam-auth-policy.json",
		"iam/ecs-execution-policy.json", "iam/ecs-tasks-trust-policy.json",
		"systemd/keyrelay.service", "systemd/keyrelay.env.example",
		// Checked by observability_test.go and promtool (make lint).
		"prometheus/keyrelay-alerts.yaml", "prometheus/keyrelay-alerts.test.yaml", "grafana/keyrelay-dashboard.json",
		// kubernetes_test.go
		"kubernetes/deployment.yaml", "kubernetes/service.yaml", "kubernetes/serviceaccount.yaml",
		"kubernetes/servicemonitor.yaml", "kubernetes/secret.example.yaml", "kubernetes/kustomization.yaml",
		"release/goreleaser.yaml", "release/keyrelay-package.conf",
	}
	root := filepath.Join(repoRoot, "deploy")
	name := regexp.MustCompile(`KEYRELAY_[A-Z0-9_]*[A-Z0-9]`)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if !slices.Contains(covered, filepath.ToSlash(rel)) {
			t.Errorf("deploy/%s is not checked by deploy_test.go", rel)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, v := range name.FindAllString(string(b), -1) {
			if !slices.Contains(configVariables(), v) {
				t.Errorf("deploy/%s mentions %s, which keyrelay does not know", rel, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// emfMetrics are the metrics of keyrelay's CloudWatch embedded-metric-format
// line (namespace keyrelay, dimension Service=KEYRELAY_NAME), by the
// statistic the stack reads them with: counters per interval, states 1/0.
var emfMetrics = map[string]string{
	"Received": "Sum", "Delivered": "Sum", "Dropped": "Sum", "Rejected": "Sum", "Gaps": "Sum",
	"BufferFill": "Maximum", "Subscribed": "Minimum", "SinksUp": "Minimum", "Leader": "Maximum",
}

// cfnString renders a template value the way CloudFormation would, for the
// given condition values: Fn::Join, Fn::Sub (with its variable map), Fn::If;
// a Ref, Fn::GetAtt, Fn::Select or an unknown ${name} becomes <name>.
func cfnString(t *testing.T, v any, conds map[string]bool, vars map[string]string) string {
	t.Helper()
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case map[string]any:
		if len(x) != 1 {
			break
		}
		for fn, arg := range x {
			args := asList(arg)
			switch fn {
			case "Ref":
				if s, ok := vars[arg.(string)]; ok {
					return s
				}
				return "<" + arg.(string) + ">"
			case "Fn::GetAtt":
				return "<" + fmt.Sprint(args...) + ">"
			case "Fn::If":
				if conds[args[0].(string)] {
					return cfnString(t, args[1], conds, vars)
				}
				return cfnString(t, args[2], conds, vars)
			case "Fn::Join":
				var parts []string
				for _, p := range asList(args[1]) {
					parts = append(parts, cfnString(t, p, conds, vars))
				}
				return strings.Join(parts, args[0].(string))
			case "Fn::Select":
				return "<selected>"
			case "Fn::Sub":
				local := map[string]string{}
				for k, v := range vars {
					local[k] = v
				}
				if len(args) == 2 {
					for k, v := range args[1].(map[string]any) {
						local[k] = cfnString(t, v, conds, vars)
					}
				}
				return regexp.MustCompile(`\$\{([^}!]+)\}`).ReplaceAllStringFunc(args[0].(string), func(m string) string {
					name := m[2 : len(m)-1]
					if s, ok := local[name]; ok {
						return s
					}
					return "<" + name + ">"
				})
			}
		}
	}
	t.Fatalf("cannot render %v", v)
	return ""
}

// TestDeployCloudWatch checks the stack's alarms and dashboard against the
// EMF metrics: every keyrelay alarm and widget names a metric keyrelay writes,
// with the dimension Service=KEYRELAY_NAME as the task sets it; the alarms
// are the ones the contract lists (gaps, dropped, rejected: Sum > 0; sinks
// up, subscribed: Minimum < 1 for 3 × 60 s, missing data breaching; the
// dead-letter queue's depth and the queue's oldest message) and notify the
// optional topic; the dashboard body is JSON for every condition.
func TestDeployCloudWatch(t *testing.T) {
	file := "deploy/cloudformation/keyrelay.yaml"
	tpl := loadYAML(t, filepath.Join(repoRoot, file))
	resources := get(tpl, "Resources").(map[string]any)
	container := asList(get(resources, "TaskDefinition", "Properties", "ContainerDefinitions"))[0]
	name := containerEnv(container)["KEYRELAY_NAME"]
	if name == nil {
		t.Fatal("the task does not set KEYRELAY_NAME, the metrics' Service dimension")
	}
	topic := map[string]any{"Fn::If": []any{"HasAlarmTopic", []any{map[string]any{"Ref": "AlarmTopicArn"}}, map[string]any{"Ref": "AWS::NoValue"}}}

	type alarm struct{ stat, op, threshold, periods, missing, condition string }
	alarms := map[string]alarm{}
	for id, r := range resources {
		if get(r, "Type") != "AWS::CloudWatch::Alarm" {
			continue
		}
		p := get(r, "Properties")
		ns, metric := get(p, "Namespace"), fmt.Sprint(get(p, "MetricName"))
		dims := asList(get(p, "Dimensions"))
		switch ns {
		case "keyrelay":
			if _, ok := emfMetrics[metric]; !ok {
				t.Errorf("alarm %s: keyrelay writes no metric %s", id, metric)
			}
			if len(dims) != 1 || get(dims[0], "Name") != "Service" || !reflect.DeepEqual(get(dims[0], "Value"), name) {
				t.Errorf("alarm %s: dimensions %v, want Service = the task's KEYRELAY_NAME %v", id, dims, name)
			}
		case "AWS/SQS":
			if len(dims) != 1 || get(dims[0], "Name") != "QueueName" {
				t.Errorf("alarm %s: dimensions %v, want QueueName", id, dims)
			}
		default:
			t.Errorf("alarm %s: namespace %v", id, ns)
		}
		if fmt.Sprint(get(p, "Period")) != "60" {
			t.Errorf("alarm %s: period %v, want 60 s (the metric interval)", id, get(p, "Period"))
		}
		if !reflect.DeepEqual(get(p, "AlarmActions"), topic) || !reflect.DeepEqual(get(p, "OKActions"), topic) {
			t.Errorf("alarm %s: AlarmActions and OKActions should be the AlarmTopicArn when given", id)
		}
		key := fmt.Sprint(ns, " ", metric)
		if _, dup := alarms[key]; dup {
			t.Errorf("two alarms on %s", key)
		}
		cond, _ := get(r, "Condition").(string)
		alarms[key] = alarm{fmt.Sprint(get(p, "Statistic")), fmt.Sprint(get(p, "ComparisonOperator")), fmt.Sprint(get(p, "Threshold")),
			fmt.Sprint(get(p, "EvaluationPeriods"), "/", get(p, "DatapointsToAlarm")), fmt.Sprint(get(p, "TreatMissingData")), cond}
	}
	want := map[string]alarm{
		"keyrelay Gaps":     {"Sum", "GreaterThanThreshold", "0", "1/<nil>", "notBreaching", ""},
		"keyrelay Dropped":  {"Sum", "GreaterThanThreshold", "0", "1/<nil>", "notBreaching", ""},
		"keyrelay Rejected": {"Sum", "GreaterThanThreshold", "0", "1/<nil>", "notBreaching", ""},
		// No metric line for 3 minutes means keyrelay is not running.
		"keyrelay SinksUp":                           {"Minimum", "LessThanThreshold", "1", "3/3", "breaching", ""},
		"keyrelay Subscribed":                        {"Minimum", "LessThanThreshold", "1", "3/3", "breaching", ""},
		"AWS/SQS ApproximateNumberOfMessagesVisible": {"Maximum", "GreaterThanThreshold", "0", "1/<nil>", "notBreaching", "CreateQueue"},
		"AWS/SQS ApproximateAgeOfOldestMessage":      {"Maximum", "GreaterThanThreshold", "map[Ref:OldestMessageAgeSeconds]", "5/5", "notBreaching", ""},
		// HighAvailability: no instance leads (or none runs).
		"keyrelay Leader": {"Maximum", "LessThanThreshold", "1", "3/3", "breaching", "HA"},
	}
	for k, w := range want {
		if g, ok := alarms[k]; !ok {
			t.Errorf("no alarm on %s", k)
		} else if g != w {
			t.Errorf("alarm on %s: %+v, want %+v", k, g, w)
		}
	}
	for k := range alarms {
		if _, ok := want[k]; !ok {
			t.Errorf("alarm on %s is not checked here", k)
		}
	}

	// The dashboard, rendered for each way the queue and the name can be set.
	body := get(resources, "Dashboard", "Properties", "DashboardBody")
	for _, c := range []struct{ createQueue, ha bool }{{true, false}, {false, false}, {true, true}} {
		createQueue := c.createQueue
		conds := map[string]bool{"CreateQueue": createQueue, "NameIsStackName": true, "HA": c.ha}
		wantName := cfnString(t, name, conds, nil)
		rendered := cfnString(t, body, conds, nil)
		var dash struct {
			Widgets []struct {
				Type       string
				Properties struct {
					Title, Region, Stat string
					Metrics             [][]any
				}
			}
		}
		if err := json.Unmarshal([]byte(rendered), &dash); err != nil {
			t.Fatalf("CreateQueue=%v: the dashboard body is not JSON: %v\n%s", createQueue, err, rendered)
		}
		seen := map[string]bool{}
		for _, w := range dash.Widgets {
			if w.Type != "metric" || w.Properties.Region != "<AWS::Region>" || w.Properties.Title == "" {
				t.Errorf("widget %q: type %s, region %s", w.Properties.Title, w.Type, w.Properties.Region)
			}
			for _, m := range w.Properties.Metrics {
				if len(m) < 4 {
					t.Errorf("widget %q: metric %v", w.Properties.Title, m)
					continue
				}
				ns, metric, dim, val := m[0], fmt.Sprint(m[1]), m[2], m[3]
				seen[fmt.Sprint(ns, " ", metric)] = true
				switch ns {
				case "keyrelay":
					if stat, ok := emfMetrics[metric]; !ok {
						t.Errorf("widget %q: keyrelay writes no metric %s", w.Properties.Title, metric)
					} else if stat != w.Properties.Stat {
						t.Errorf("widget %q: %s read with %s, want %s", w.Properties.Title, metric, w.Properties.Stat, stat)
					}
					if dim != "Service" || val != wantName {
						t.Errorf("widget %q: %s %v=%v, want Service=%s", w.Properties.Title, metric, dim, val, wantName)
					}
				case "AWS/SQS":
					if dim != "QueueName" {
						t.Errorf("widget %q: %s by %v", w.Properties.Title, metric, dim)
					}
				default:
					t.Errorf("widget %q: namespace %v", w.Properties.Title, ns)
				}
			}
		}
		for _, m := range []string{"Received", "Delivered", "Gaps", "Dropped", "Rejected", "BufferFill", "Subscribed", "SinksUp"} {
			if !seen["keyrelay "+m] {
				t.Errorf("the dashboard does not show %s", m)
			}
		}
		if !seen["AWS/SQS ApproximateAgeOfOldestMessage"] || seen["AWS/SQS ApproximateNumberOfMessagesVisible"] != createQueue ||
			seen["keyrelay Leader"] != c.ha {
			t.Errorf("CreateQueue=%v HA=%v: the dashboard shows %v", createQueue, c.ha, seen)
		}
	}
}

// goreleaserConfig is the part of a GoReleaser v2 configuration that
// deploy/release/goreleaser.yaml uses (decoded with KnownFields: a key
// outside it fails the test, so a typo cannot hide).
type goreleaserConfig struct {
	Version     int    `yaml:"version"`
	ProjectName string `yaml:"project_name"`
	Before      struct {
		Hooks []string `yaml:"hooks"`
	} `yaml:"before"`
	Builds []struct {
		ID      string   `yaml:"id"`
		Main    string   `yaml:"main"`
		Binary  string   `yaml:"binary"`
		Env     []string `yaml:"env"`
		Flags   []string `yaml:"flags"`
		Ldflags []string `yaml:"ldflags"`
		Goos    []string `yaml:"goos"`
		Goarch  []string `yaml:"goarch"`
	} `yaml:"builds"`
	Archives []struct {
		ID           string   `yaml:"id"`
		Formats      []string `yaml:"formats"`
		NameTemplate string   `yaml:"name_template"`
		Files        []string `yaml:"files"`
	} `yaml:"archives"`
	Checksum struct {
		NameTemplate string `yaml:"name_template"`
	} `yaml:"checksum"`
	Nfpms []struct {
		ID               string   `yaml:"id"`
		PackageName      string   `yaml:"package_name"`
		FileNameTemplate string   `yaml:"file_name_template"`
		Homepage         string   `yaml:"homepage"`
		Maintainer       string   `yaml:"maintainer"`
		Description      string   `yaml:"description"`
		Formats          []string `yaml:"formats"`
		Section          string   `yaml:"section"`
		Bindir           string   `yaml:"bindir"`
		Contents         []struct {
			Src      string `yaml:"src"`
			Dst      string `yaml:"dst"`
			Type     string `yaml:"type"`
			FileInfo struct {
				Mode os.FileMode `yaml:"mode"`
			} `yaml:"file_info"`
		} `yaml:"contents"`
	} `yaml:"nfpms"`
	Dockers []struct {
		ID                 string   `yaml:"id"`
		Goos               string   `yaml:"goos"`
		Goarch             string   `yaml:"goarch"`
		Use                string   `yaml:"use"`
		Dockerfile         string   `yaml:"dockerfile"`
		ImageTemplates     []string `yaml:"image_templates"`
		BuildFlagTemplates []string `yaml:"build_flag_templates"`
		ExtraFiles         []string `yaml:"extra_files"`
	} `yaml:"dockers"`
	DockerManifests []struct {
		NameTemplate   string   `yaml:"name_template"`
		ImageTemplates []string `yaml:"image_templates"`
	} `yaml:"docker_manifests"`
}

// TestDeployRelease checks the GoReleaser configuration without GoReleaser:
// one build for linux amd64 and arm64 whose go build line is the Makefile's,
// every file it archives or packages exists, the packages install the
// systemd unit (with a drop-in for their binary's path) and the example
// environment file as a kept configuration file, and one image per
// architecture from the Dockerfile with the sources it copies, joined in a
// manifest list.
func TestDeployRelease(t *testing.T) {
	file := filepath.Join(repoRoot, "deploy/release/goreleaser.yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg goreleaserConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if cfg.Version != 2 {
		t.Errorf("version %d, want 2 (GoReleaser v2)", cfg.Version)
	}
	arches := []string{"amd64", "arm64"}
	exists := func(what, p string) {
		t.Helper()
		if m, err := filepath.Glob(filepath.Join(repoRoot, p)); err != nil || len(m) == 0 {
			t.Errorf("%s %s: no such file", what, p)
		}
	}

	// The build: the Makefile's flags, for both architectures.
	if len(cfg.Builds) != 1 {
		t.Fatalf("want one build, have %d", len(cfg.Builds))
	}
	bd := cfg.Builds[0]
	if !slices.Equal(bd.Goos, []string{"linux"}) || !sameSet(bd.Goarch, arches) {
		t.Errorf("build for %v %v, want linux %v", bd.Goos, bd.Goarch, arches)
	}
	if bd.Binary != "keyrelay" {
		t.Errorf("binary %q", bd.Binary)
	}
	line := fmt.Sprintf(`%s go build %s -ldflags "%s" -o OUT %s`, strings.Join(bd.Env, " "), strings.Join(bd.Flags, " "),
		strings.ReplaceAll(strings.Join(bd.Ldflags, " "), "{{ .Tag }}", "${VERSION}"), bd.Main)
	if got, want := goBuildFlags(line), goBuildFlags(makeBuildLine(t)); got != want {
		t.Errorf("goreleaser and the Makefile build differently:\n goreleaser: %s\n Makefile:   %s", got, want)
	}

	for _, a := range cfg.Archives {
		for _, f := range a.Files {
			exists("archive file", f)
		}
	}

	// Packages: deb and rpm, the unit, its drop-in, the configuration.
	if len(cfg.Nfpms) != 1 {
		t.Fatalf("want one nfpms entry, have %d", len(cfg.Nfpms))
	}
	pkg := cfg.Nfpms[0]
	if !sameSet(pkg.Formats, []string{"deb", "rpm"}) {
		t.Errorf("package formats %v, want deb and rpm", pkg.Formats)
	}
	dst := map[string]string{}
	for _, c := range pkg.Contents {
		exists("packaged file", c.Src)
		dst[c.Dst] = c.Src
		if c.Dst == "/etc/keyrelay/keyrelay.env" && (c.Type != "config|noreplace" || c.FileInfo.Mode != 0o600) {
			t.Errorf("%s: type %q mode %o, want config|noreplace 0600 (kept on upgrade; may hold the AUTH token)", c.Dst, c.Type, c.FileInfo.Mode)
		}
	}
	unit := "/usr/lib/systemd/system/keyrelay.service"
	dropIn := "/usr/lib/systemd/system/keyrelay.service.d/package.conf"
	if dst[unit] != "deploy/systemd/keyrelay.service" || dst["/etc/keyrelay/keyrelay.env"] != "deploy/systemd/keyrelay.env.example" || dst[dropIn] == "" {
		t.Errorf("the packages should install the unit at %s, a drop-in at %s and the example as /etc/keyrelay/keyrelay.env: %v", unit, dropIn, dst)
	}
	// The drop-in starts the package's binary, as the unit starts its own.
	unitText, err := os.ReadFile(filepath.Join(repoRoot, dst[unit]))
	if err != nil {
		t.Fatal(err)
	}
	dropText, err := os.ReadFile(filepath.Join(repoRoot, dst[dropIn]))
	if err != nil {
		t.Fatal(err)
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=(.*)$`)
	unitExec := execStart.FindAllStringSubmatch(string(unitText), -1)
	dropExec := execStart.FindAllStringSubmatch(string(dropText), -1)
	if len(unitExec) != 1 || len(dropExec) != 2 || dropExec[0][1] != "" ||
		dropExec[1][1] != pkg.Bindir+"/keyrelay"+strings.TrimPrefix(unitExec[0][1], "/usr/local/bin/keyrelay") {
		t.Errorf("the drop-in should reset ExecStart= and start %s/keyrelay as the unit does (%v): %v", pkg.Bindir, unitExec, dropExec)
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		_ = os.WriteFile(filepath.Join(dir, "keyrelay.service"), []byte(strings.ReplaceAll(string(unitText), "/usr/local/bin/keyrelay", "/bin/true")), 0o644)
		_ = os.Mkdir(filepath.Join(dir, "keyrelay.service.d"), 0o755)
		_ = os.WriteFile(filepath.Join(dir, "keyrelay.service.d", "package.conf"), []byte(strings.ReplaceAll(string(dropText), pkg.Bindir+"/keyrelay", "/bin/true")), 0o644)
		if out, err := exec.Command(path, "verify", filepath.Join(dir, "keyrelay.service")).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify of the unit with the packages' drop-in: %v\n%s", err, out)
		}
	}

	// Images: one per architecture from the Dockerfile, with what its build
	// stage copies, joined into one manifest list.
	var copies []string
	for _, in := range parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile")) {
		if in.Cmd == "COPY" && !strings.HasPrefix(in.Args, "--from=") {
			f := strings.Fields(in.Args)
			for _, src := range f[:len(f)-1] {
				copies = append(copies, strings.TrimSuffix(src, "/"))
			}
		}
	}
	var images, built []string
	for _, d := range cfg.Dockers {
		built = append(built, d.Goarch)
		if d.Goos != "linux" || d.Use != "buildx" || d.Dockerfile != "Dockerfile" {
			t.Errorf("docker %s: goos %s, use %s, dockerfile %s; want linux, buildx, Dockerfile", d.ID, d.Goos, d.Use, d.Dockerfile)
		}
		if !slices.Contains(d.BuildFlagTemplates, "--platform=linux/"+d.Goarch) {
			t.Errorf("docker %s: no --platform=linux/%s in %v", d.ID, d.Goarch, d.BuildFlagTemplates)
		}
		for _, arg := range []string{"--build-arg=VERSION={{ .Tag }}", "--build-arg=REVISION={{ .FullCommit }}"} {
			if !slices.Contains(d.BuildFlagTemplates, arg) {
				t.Errorf("docker %s: no %s (the version and the OCI revision label)", d.ID, arg)
			}
		}
		for _, c := range copies {
			if !slices.Contains(d.ExtraFiles, c) {
				t.Errorf("docker %s: the Dockerfile copies %s, which extra_files does not put in the build context", d.ID, c)
			}
		}
		for _, f := range d.ExtraFiles {
			exists("docker extra file", f)
		}
		images = append(images, d.ImageTemplates...)
	}
	if !sameSet(built, arches) || len(built) != len(arches) {
		t.Errorf("images for %v, want one for each of %v", built, arches)
	}
	if len(cfg.DockerManifests) != 1 || !sameSet(cfg.DockerManifests[0].ImageTemplates, images) {
		t.Errorf("want one manifest list of the images %v: %+v", images, cfg.DockerManifests)
	}
}
