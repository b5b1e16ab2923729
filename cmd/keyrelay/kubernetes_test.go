package main

// Tests of deploy/kubernetes/: no cluster is needed. Each manifest is
// decoded strictly (a misspelt field fails) into the part of the Kubernetes
// API it uses, and checked against the code: variables, probe paths and
// port, the image's user, the spool, the stop timeout, the service links.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sHeader struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sDeployment struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		Replicas int `yaml:"replicas"`
		Strategy struct {
			Type          string         `yaml:"type"`
			RollingUpdate map[string]any `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Selector k8sSelector `yaml:"selector"`
		Template struct {
			Metadata k8sMeta    `yaml:"metadata"`
			Spec     k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	ServiceAccountName            string `yaml:"serviceAccountName"`
	TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
	EnableServiceLinks            *bool  `yaml:"enableServiceLinks"`
	SecurityContext               struct {
		RunAsNonRoot   bool `yaml:"runAsNonRoot"`
		RunAsUser      int  `yaml:"runAsUser"`
		RunAsGroup     int  `yaml:"runAsGroup"`
		FSGroup        int  `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name     string `yaml:"name"`
		EmptyDir *struct {
			Medium    string `yaml:"medium"`
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string         `yaml:"name"`
		Value     string         `yaml:"value"`
		ValueFrom map[string]any `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports          []k8sContainerPort `yaml:"ports"`
	LivenessProbe  *k8sProbe          `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe          `yaml:"readinessProbe"`
	StartupProbe   *k8sProbe          `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sContainerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sServicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"` // a number or a port name
	Protocol   string `yaml:"protocol"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
	SuccessThreshold    int `yaml:"successThreshold"`
}

type k8sService struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		Type                     string            `yaml:"type"`
		Selector                 map[string]string `yaml:"selector"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Ports                    []k8sServicePort  `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sServiceMonitor struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		Selector  k8sSelector `yaml:"selector"`
		Endpoints []struct {
			Port     string `yaml:"port"`
			Path     string `yaml:"path"`
			Interval string `yaml:"interval"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type k8sSecret struct {
	k8sHeader  `yaml:",inline"`
	Type       string            `yaml:"type"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type k8sKustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Resources  []string `yaml:"resources"`
}

// k8sManifests is deploy/kubernetes/, decoded.
type k8sManifests struct {
	files          map[string][]string // file → kinds
	deployment     k8sDeployment
	services       []k8sService
	serviceMonitor k8sServiceMonitor
	secret         k8sSecret
	serviceAccount k8sHeader
	kustomization  k8sKustomization
}

// strictDecode decodes one YAML document into v, refusing unknown fields.
func strictDecode(doc *yaml.Node, v any) error {
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadK8sManifests(t *testing.T) *k8sManifests {
	t.Helper()
	dir := filepath.Join(repoRoot, "deploy/kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	m := &k8sManifests{files: map[string][]string{}}
	count := map[string]int{}
	for _, f := range files {
		name := filepath.Base(f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var h k8sHeader
			if err := doc.Decode(&h); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			m.files[name] = append(m.files[name], h.Kind)
			count[h.Kind]++
			var target any
			switch h.APIVersion + " " + h.Kind {
			case "apps/v1 Deployment":
				target = &m.deployment
			case "v1 Service":
				m.services = append(m.services, k8sService{})
				target = &m.services[len(m.services)-1]
			case "monitoring.coreos.com/v1 ServiceMonitor":
				target = &m.serviceMonitor
			case "v1 Secret":
				target = &m.secret
			case "v1 ServiceAccount":
				target = &m.serviceAccount
			case "kustomize.config.k8s.io/v1beta1 Kustomization":
				target = &m.kustomization
			default:
				t.Fatalf("%s: unexpected %s %s", name, h.APIVersion, h.Kind)
			}
			if err := strictDecode(&doc, target); err != nil {
				t.Fatalf("%s: %s: %v", name, h.Kind, err)
			}
		}
	}
	for _, kind := range []string{"Deployment", "Service", "ServiceMonitor", "Secret", "ServiceAccount", "Kustomization"} {
		if count[kind] != 1 {
			t.Errorf("deploy/kubernetes: want one %s, have %d", kind, count[kind])
		}
	}
	return m
}

// env is the keyrelay container's environment, and the container.
func (m *k8sManifests) container(t *testing.T) (*k8sContainer, map[string]string) {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want one container, have %d", len(cs))
	}
	env := map[string]string{}
	for _, e := range cs[0].Env {
		if e.ValueFrom != nil {
			t.Errorf("env %s: valueFrom; keyrelay's settings are plain values (the password is a file)", e.Name)
		}
		env[e.Name] = e.Value
	}
	return &cs[0], env
}

// mountOf returns the volume mounted at dir (or above it) and its mount path.
func (m *k8sManifests) mountOf(t *testing.T, c *k8sContainer, dir string) (volume, mountPath string) {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if dir == vm.MountPath || strings.HasPrefix(dir, vm.MountPath+"/") {
			return vm.Name, vm.MountPath
		}
	}
	t.Fatalf("nothing is mounted at %s", dir)
	return "", ""
}

// TestDeployKubernetesDeployment: one replica replaced by Recreate, a non-root
// user that is the image's, a read-only root file system, the spool on an
// emptyDir at the image's volume, the password from the Secret through
// KEYRELAY_REDIS_PASSWORD_FILE, a stop grace period above the shutdown
// timeout, and an environment keyrelay accepts.
func TestDeployKubernetesDeployment(t *testing.T) {
	m := loadK8sManifests(t)
	d := m.deployment
	if d.Metadata.Name != "keyrelay" || d.Spec.Replicas != 1 || d.Spec.Strategy.Type != "Recreate" {
		t.Errorf("deployment %s: replicas %d, strategy %s; want keyrelay, 1, Recreate (never two at once)", d.Metadata.Name, d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("the selector %s=%s does not select the pod template", k, v)
		}
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != m.serviceAccount.Metadata.Name {
		t.Errorf("serviceAccountName %q, the manifest's is %q", pod.ServiceAccountName, m.serviceAccount.Metadata.Name)
	}

	// The image's user.
	var user string
	for _, in := range parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile")) {
		switch in.Cmd {
		case "FROM":
			user = ""
		case "USER":
			user = in.Args
		}
	}
	uid, gid, _ := strings.Cut(user, ":")
	sc := pod.SecurityContext
	if !sc.RunAsNonRoot || strconv.Itoa(sc.RunAsUser) != uid || strconv.Itoa(sc.RunAsGroup) != gid || strconv.Itoa(sc.FSGroup) != gid {
		t.Errorf("pod securityContext %+v; want runAsNonRoot and the Dockerfile's USER %s (fsGroup its group)", sc, user)
	}
	c, env := m.container(t)
	if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation == nil ||
		*c.SecurityContext.AllowPrivilegeEscalation || !slices.Equal(c.SecurityContext.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v; want a read-only root, no privilege escalation, every capability dropped", c.SecurityContext)
	}
	if !slices.Equal(c.Args, []string{"run"}) {
		t.Errorf("args %q, want [run]", c.Args)
	}

	// Every variable is keyrelay's (or Go's).
	for name := range env {
		if strings.HasPrefix(name, envPrefix+"_") && !slices.Contains(configVariables(), name) {
			t.Errorf("env %s: keyrelay has no such variable", name)
		}
		if !strings.HasPrefix(name, envPrefix+"_") && name != "GOMEMLIMIT" {
			t.Errorf("env %s: not a keyrelay variable", name)
		}
	}
	if _, ok := env[envPrefix+"_REDIS_PASSWORD"]; ok {
		t.Error("the password is a plain variable: use KEYRELAY_REDIS_PASSWORD_FILE and the Secret")
	}

	// The spool: an emptyDir at the image's volume, bounded above the
	// spool's own bound.
	spoolDir := env[envPrefix+"_SPOOL_DIR"]
	if spoolDir != "/var/lib/keyrelay" {
		t.Errorf("KEYRELAY_SPOOL_DIR=%q, want the image's volume /var/lib/keyrelay", spoolDir)
	}
	spoolVol, _ := m.mountOf(t, c, spoolDir)
	// The password: a key of the Secret, mounted read-only.
	passFile := env[envPrefix+"_REDIS_PASSWORD_FILE"]
	passVol, passMount := m.mountOf(t, c, passFile)
	for _, v := range pod.Volumes {
		switch v.Name {
		case spoolVol:
			if v.EmptyDir == nil {
				t.Errorf("volume %s at %s is not an emptyDir", v.Name, spoolDir)
			}
		case passVol:
			if v.Secret == nil || v.Secret.SecretName != m.secret.Metadata.Name {
				t.Errorf("volume %s at %s is not the Secret %s", v.Name, passMount, m.secret.Metadata.Name)
			} else if v.Secret.DefaultMode&0o040 == 0 || v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("secret defaultMode %#o: want readable by the group (fsGroup), not by others", v.Secret.DefaultMode)
			}
			if _, ok := m.secret.StringData[path.Base(passFile)]; !ok {
				t.Errorf("KEYRELAY_REDIS_PASSWORD_FILE=%s: the Secret example has no key %s", passFile, path.Base(passFile))
			}
		}
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name == passVol && !vm.ReadOnly {
			t.Errorf("the Secret is mounted read-write")
		}
	}

	// The environment, with the Secret's file in place, is a configuration
	// keyrelay accepts; the pod waits for its stop.
	clearKeyrelayEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	tmp := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(tmp, []byte(m.secret.StringData[path.Base(passFile)]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envPrefix+"_REDIS_PASSWORD_FILE", tmp)
	cfg, err := loadConfig()
	if err != nil {
		t.Fatalf("the Deployment's environment is rejected: %v", err)
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %s is not above KEYRELAY_SHUTDOWN_TIMEOUT %s", grace, cfg.ShutdownTimeout)
	}
	if limit, gomem := mebibytes(t, c.Resources.Limits["memory"]), mebibytes(t, env["GOMEMLIMIT"]); gomem >= limit {
		t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", env["GOMEMLIMIT"], c.Resources.Limits["memory"])
	}
}

// mebibytes parses "256Mi" (Kubernetes) or "230MiB" (GOMEMLIMIT).
func mebibytes(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "Mi"))
	if err != nil || !strings.Contains(s, "Mi") {
		t.Fatalf("%q: want a quantity in Mi", s)
	}
	return n
}

// TestDeployKubernetesProbes: liveness is /healthz and readiness /readyz, served
// by keyrelay's handler on the port KEYRELAY_HTTP_ADDR listens on; a failing
// liveness check fails the liveness probe only.
func TestDeployKubernetesProbes(t *testing.T) {
	m := loadK8sManifests(t)
	c, env := m.container(t)
	clearKeyrelayEnv(t)
	addr := env[envPrefix+"_HTTP_ADDR"]
	if addr == "" {
		cfg, err := loadConfig() // the default
		if err != nil {
			t.Fatal(err)
		}
		addr = cfg.HTTPAddr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	probePort := func(p *k8sProbe) string {
		if p.HTTPGet == nil {
			t.Fatal("probe is not an httpGet")
		}
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port {
				return strconv.Itoa(cp.ContainerPort)
			}
		}
		return p.HTTPGet.Port
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Fatal("want a liveness and a readiness probe")
	}
	for _, p := range []*k8sProbe{c.LivenessProbe, c.ReadinessProbe} {
		if got := probePort(p); got != port {
			t.Errorf("probe %s on port %s; keyrelay listens on %s", p.HTTPGet.Path, got, port)
		}
	}
	var aliveErr error
	h := httpHandler(nil, func() error { return aliveErr }, func() error { return nil }, nil)
	status := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	live, ready := c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path
	if status(live) != http.StatusOK || status(ready) != http.StatusOK {
		t.Fatalf("liveness %s → %d, readiness %s → %d; want 200 from keyrelay's handler", live, status(live), ready, status(ready))
	}
	aliveErr = errors.New("reader loop stuck")
	if status(live) != http.StatusServiceUnavailable || status(ready) != http.StatusOK {
		t.Errorf("with the reader loop stuck: liveness %s → %d, readiness %s → %d; want 503 and 200 (liveness is /healthz)", live, status(live), ready, status(ready))
	}
	if live != "/healthz" || ready != "/readyz" {
		t.Errorf("liveness %s, readiness %s; want /healthz and /readyz", live, ready)
	}
}

// TestDeployKubernetesServices: the Service and the ServiceMonitor find the pod's
// metrics port, and the service links every Service of deploy/kubernetes
// injects into the pod (Kubernetes names them after the Service) leave
// keyrelay's start-up alone.
func TestDeployKubernetesServices(t *testing.T) {
	m := loadK8sManifests(t)
	c, env := m.container(t)
	podLabels := m.deployment.Spec.Template.Metadata.Labels
	links := map[string]string{}
	for _, s := range m.services {
		for k, v := range s.Spec.Selector {
			if podLabels[k] != v {
				t.Errorf("service %s: selector %s=%s does not select keyrelay's pod", s.Metadata.Name, k, v)
			}
		}
		prefix := strings.ToUpper(strings.ReplaceAll(s.Metadata.Name, "-", "_"))
		ip := "10.96.0.10"
		links[prefix+"_SERVICE_HOST"] = ip
		for i, p := range s.Spec.Ports {
			if !slices.ContainsFunc(c.Ports, func(cp k8sContainerPort) bool {
				return cp.Name == p.TargetPort || strconv.Itoa(cp.ContainerPort) == p.TargetPort
			}) {
				t.Errorf("service %s: targetPort %s is not a container port", s.Metadata.Name, p.TargetPort)
			}
			proto := "TCP"
			if p.Protocol != "" {
				proto = p.Protocol
			}
			portURL := strings.ToLower(proto) + "://" + ip + ":" + strconv.Itoa(p.Port)
			if i == 0 {
				links[prefix+"_SERVICE_PORT"] = strconv.Itoa(p.Port)
				links[prefix+"_PORT"] = portURL
			}
			if p.Name != "" {
				links[prefix+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = strconv.Itoa(p.Port)
			}
			base := prefix + "_PORT_" + strconv.Itoa(p.Port) + "_" + proto
			links[base] = portURL
			links[base+"_PROTO"] = strings.ToLower(proto)
			links[base+"_PORT"] = strconv.Itoa(p.Port)
			links[base+"_ADDR"] = ip
		}
		if s.Metadata.Name == "keyrelay" && !s.Spec.PublishNotReadyAddresses {
			t.Errorf("service keyrelay: a pod that is not ready drops out of the scraped endpoints (publishNotReadyAddresses)")
		}
	}
	if _, ok := links["KEYRELAY_SERVICE_HOST"]; !ok {
		t.Error("no Service named keyrelay: the service links it injects are what this test is for")
	}
	sm := m.serviceMonitor
	var svc *k8sService
	for i, s := range m.services {
		match := len(sm.Spec.Selector.MatchLabels) > 0
		for k, v := range sm.Spec.Selector.MatchLabels {
			match = match && s.Metadata.Labels[k] == v
		}
		if match {
			svc = &m.services[i]
		}
	}
	if svc == nil || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("the ServiceMonitor selects no Service, or has %d endpoints", len(sm.Spec.Endpoints))
	}
	if ep := sm.Spec.Endpoints[0]; ep.Path != "/metrics" || !slices.ContainsFunc(svc.Spec.Ports, func(p k8sServicePort) bool {
		return p.Name == ep.Port
	}) {
		t.Errorf("ServiceMonitor endpoint %+v: want path /metrics on a named port of service %s", ep, svc.Metadata.Name)
	}

	clearKeyrelayEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	t.Setenv(envPrefix+"_REDIS_PASSWORD_FILE", "")
	for k, v := range links {
		t.Setenv(k, v)
	}
	if _, err := loadConfig(); err != nil {
		t.Errorf("with the service links %v: %v", links, err)
	}
}

// TestDeployKubernetesKustomization: the kustomization names files that exist,
// leaves out the Secret example (apply -k must not overwrite the real one)
// and the ServiceMonitor (it needs the operator's CRDs); kubectl builds it
// where kubectl is installed.
func TestDeployKubernetesKustomization(t *testing.T) {
	m := loadK8sManifests(t)
	for _, r := range m.kustomization.Resources {
		kinds, ok := m.files[r]
		if !ok {
			t.Errorf("kustomization: %s is not in deploy/kubernetes", r)
		}
		if slices.Contains(kinds, "Secret") || slices.Contains(kinds, "ServiceMonitor") {
			t.Errorf("kustomization: %s (%v) must be applied apart", r, kinds)
		}
	}
	for f, kinds := range m.files {
		if !slices.Contains(m.kustomization.Resources, f) && !slices.Contains(kinds, "Secret") &&
			!slices.Contains(kinds, "ServiceMonitor") && !slices.Contains(kinds, "Kustomization") {
			t.Errorf("kustomization leaves out %s", f)
		}
	}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(kubectl, "kustomize", filepath.Join(repoRoot, "deploy/kubernetes")).CombinedOutput()
		if err != nil || !regexp.MustCompile(`(?m)^kind: Deployment$`).Match(out) {
			t.Errorf("kubectl kustomize: %v\n%s", err, out)
		}
	}
}
