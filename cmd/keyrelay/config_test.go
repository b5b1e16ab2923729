package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigurationProblems runs keyrelay with a bad configuration: exit
// status 2 before anything starts, every message naming the variable and
// what is allowed, and never a secret.
func TestConfigurationProblems(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	const secret = "Tok^en99"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"password in an unparsable URL", map[string]string{"KEYRELAY_REDIS_URL": "redis://user:" + secret + "@host:6379"},
			[]string{"KEYRELAY_REDIS_URL", "redis://[user:password@]host:port"}},
		{"password with %", map[string]string{"KEYRELAY_REDIS_URL": "redis://user:Tok%zz" + secret + "@host:6379"},
			[]string{"KEYRELAY_REDIS_URL"}},
		{"skip_verify", map[string]string{"KEYRELAY_REDIS_URL": "rediss://host:6379?skip_verify=true"},
			[]string{"KEYRELAY_REDIS_URL", "never skips TLS verification", "KEYRELAY_REDIS_CA_FILE"}},
		{"port out of range", map[string]string{"KEYRELAY_REDIS_URL": "redis://host:99999"},
			[]string{"KEYRELAY_REDIS_URL", "1 to 65535"}},
		{"failover check too often", map[string]string{"KEYRELAY_REDIS_FAILOVER_CHECK_INTERVAL": "1ns"},
			[]string{`KEYRELAY_REDIS_FAILOVER_CHECK_INTERVAL="1ns"`, "0 (off) or from 100ms"}},
		{"marker interval", map[string]string{"KEYRELAY_MARKER_INTERVAL": "1ms"},
			[]string{`KEYRELAY_MARKER_INTERVAL="1ms"`, "0 (off) or from 100ms"}},
		{"name", map[string]string{"KEYRELAY_NAME": "a b"}, []string{`KEYRELAY_NAME="a b"`, "letters, digits"}},
		{"shutdown timeout", map[string]string{"KEYRELAY_SHUTDOWN_TIMEOUT": "1ms"}, []string{"KEYRELAY_SHUTDOWN_TIMEOUT", "from 1s"}},
		{"duration syntax", map[string]string{"KEYRELAY_BATCH_LINGER": "soon"}, []string{"KEYRELAY_BATCH_LINGER", "500ms, 5s or 1m"}},
		{"boolean syntax", map[string]string{"KEYRELAY_REDIS_IAM_AUTH": "yes please"}, []string{"KEYRELAY_REDIS_IAM_AUTH", "true or false"}},
		{"http address syntax", map[string]string{"KEYRELAY_HTTP_ADDR": "9180"}, []string{`KEYRELAY_HTTP_ADDR="9180"`, "host:port"}},
		{"http port out of range", map[string]string{"KEYRELAY_HTTP_ADDR": ":99999"}, []string{"KEYRELAY_HTTP_ADDR", "0 to 65535"}},
		{"http port taken", map[string]string{"KEYRELAY_HTTP_ADDR": taken.Addr().String(), "KEYRELAY_REDIS_URL": "redis://127.0.0.1:1"},
			[]string{"KEYRELAY_HTTP_ADDR", "address already in use"}},
		{"upper-case event", map[string]string{"KEYRELAY_EVENTS": "EXPIRED"}, []string{"KEYRELAY_EVENTS", "lower case (expired)"}},
		{"queue without the sqs sink", map[string]string{"KEYRELAY_SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q"},
			[]string{"KEYRELAY_SQS_QUEUE_URL", "only used when sqs is a sink"}},
		{"topic without the sns sink", map[string]string{"KEYRELAY_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t"},
			[]string{"KEYRELAY_SNS_TOPIC_ARN", "only used when sns is a sink"}},
		{"AWS options without an AWS sink", map[string]string{"KEYRELAY_PACK": "ndjson"},
			[]string{`KEYRELAY_PACK="ndjson"`, "only used with an sqs or sns sink"}},
		{"channel kind decoded at load", map[string]string{"KEYRELAY_CHANNELS": "both"},
			[]string{`KEYRELAY_CHANNELS="both"`, "keyevent or keyspace"}},
		{"password and password file", map[string]string{"KEYRELAY_REDIS_PASSWORD": secret, "KEYRELAY_REDIS_PASSWORD_FILE": "/run/secrets/pw"},
			[]string{`KEYRELAY_REDIS_PASSWORD_FILE="/run/secrets/pw"`, "either KEYRELAY_REDIS_PASSWORD or KEYRELAY_REDIS_PASSWORD_FILE, not both"}},
		{"password file missing", map[string]string{"KEYRELAY_REDIS_PASSWORD_FILE": "/nonexistent/keyrelay/pw"},
			[]string{`KEYRELAY_REDIS_PASSWORD_FILE="/nonexistent/keyrelay/pw"`, "cannot read the password file: no such file"}},
		{"password file with IAM", map[string]string{"KEYRELAY_REDIS_PASSWORD_FILE": "/run/secrets/pw", "KEYRELAY_REDIS_IAM_AUTH": "true",
			"KEYRELAY_REDIS_URL": "rediss://u@host:6379", "KEYRELAY_REDIS_IAM_CACHE_ID": "my-cache"},
			[]string{`KEYRELAY_REDIS_PASSWORD_FILE="/run/secrets/pw"`, "must be empty with KEYRELAY_REDIS_IAM_AUTH=true"}},
		{"unclosed class in a key pattern", map[string]string{"KEYRELAY_KEYS": "session:*,user:[0-9"},
			[]string{`KEYRELAY_KEYS="session:*,user:[0-9"`, `pattern "user:[0-9"`, "never closed"}},
		{"queue ARN for a queue URL", map[string]string{"KEYRELAY_SINKS": "sqs", "KEYRELAY_SQS_QUEUE_URL": "arn:aws:sqs:us-east-1:123456789012:q"},
			[]string{"KEYRELAY_SQS_QUEUE_URL", "is a queue ARN: give the queue URL"}},
		{"not a topic ARN", map[string]string{"KEYRELAY_SINKS": "sns", "KEYRELAY_SNS_TOPIC_ARN": "arn:aws:sqs:us-east-1:123456789012:q"},
			[]string{"KEYRELAY_SNS_TOPIC_ARN", `the service is "sqs", not sns`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := command(t, tc.env, "run")
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := exitStatus(err); code != 2 {
				t.Fatalf("exit status %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), secret) || strings.Contains(stderr.String(), "Tok%zz") {
				t.Errorf("the password leaked:\n%s", stderr.String())
			}
		})
	}
}

// TestUnknownEventWarns: an event name Redis never publishes is allowed (a
// module may) but warned about.
func TestUnknownEventWarns(t *testing.T) {
	clearKeyrelayEnv(t)
	t.Setenv("KEYRELAY_EVENTS", "expired,expird")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	if !strings.Contains(w, `"expird"`) || strings.Contains(w, `"expired"`) {
		t.Errorf("warnings = %q, want one about expird only", w)
	}
}

// TestIAMAuthConfig: IAM authentication needs rediss://, a user and a cache
// id, and no password; with them, every new connection gets a fresh SigV4
// token for the cache as the user's password.
func TestIAMAuthConfig(t *testing.T) {
	base := map[string]string{
		"KEYRELAY_REDIS_URL":          "rediss://master.my-cache.abc123.use1.cache.amazonaws.com:6379",
		"KEYRELAY_REDIS_IAM_AUTH":     "true",
		"KEYRELAY_REDIS_USERNAME":     "keyrelay",
		"KEYRELAY_REDIS_IAM_CACHE_ID": "My-Cache",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"plain redis://", with("KEYRELAY_REDIS_URL", "redis://my-cache:6379"), "KEYRELAY_REDIS_IAM_AUTH=\"true\": needs a rediss://"},
		{"no user", with("KEYRELAY_REDIS_USERNAME", ""), "KEYRELAY_REDIS_USERNAME=\"\": required with KEYRELAY_REDIS_IAM_AUTH=true"},
		{"a password", with("KEYRELAY_REDIS_PASSWORD", "x"), "KEYRELAY_REDIS_PASSWORD: must be empty"},
		{"no cache id", with("KEYRELAY_REDIS_IAM_CACHE_ID", ""), "KEYRELAY_REDIS_IAM_CACHE_ID=\"\": required"},
		{"an endpoint as cache id", with("KEYRELAY_REDIS_IAM_CACHE_ID", "my-cache.abc123.use1.cache.amazonaws.com"), "KEYRELAY_REDIS_IAM_CACHE_ID=\"my-cache.abc123.use1.cache.amazonaws.com\": must be a replication group id"},
		{"cache id without IAM", map[string]string{"KEYRELAY_REDIS_IAM_CACHE_ID": "my-cache"}, "KEYRELAY_REDIS_IAM_CACHE_ID=\"my-cache\": only used with KEYRELAY_REDIS_IAM_AUTH=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearKeyrelayEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig()
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a configuration error containing %q", err, tc.want)
			}
		})
	}

	clearKeyrelayEnv(t)
	for k, v := range base {
		t.Setenv(k, v)
	}
	for k, v := range map[string]string{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull} {
		t.Setenv(k, v)
	}
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	opt, err := cfg.redisOptions()
	if err != nil || opt.CredentialsProviderContext == nil {
		t.Fatalf("redisOptions: %v; credentials provider set: %v", err, opt != nil && opt.CredentialsProviderContext != nil)
	}
	user, tok, err := opt.CredentialsProviderContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	host, rawQuery, _ := strings.Cut(tok, "/?")
	q, _ := url.ParseQuery(rawQuery)
	if user != "keyrelay" || host != "my-cache" || q.Get("User") != "keyrelay" || q.Get("Action") != "connect" ||
		!strings.Contains(q.Get("X-Amz-Credential"), "/eu-west-1/elasticache/aws4_request") {
		t.Errorf("credentials: user %q, token %q", user, tok)
	}
}

// TestKubernetesServiceLinksIgnored: a Service named keyrelay makes
// Kubernetes inject KEYRELAY_SERVICE_* and KEYRELAY_PORT* into the pod; they
// are not unknown variables. A typo still is.
func TestKubernetesServiceLinksIgnored(t *testing.T) {
	clearKeyrelayEnv(t)
	for k, v := range map[string]string{
		"KEYRELAY_SERVICE_HOST": "10.0.0.1", "KEYRELAY_SERVICE_PORT": "9180", "KEYRELAY_SERVICE_PORT_HTTP": "9180",
		"KEYRELAY_PORT": "tcp://10.0.0.1:9180", "KEYRELAY_PORT_9180_TCP": "tcp://10.0.0.1:9180",
		"KEYRELAY_PORT_9180_TCP_ADDR": "10.0.0.1", "KEYRELAY_PORT_9180_TCP_PORT": "9180", "KEYRELAY_PORT_9180_TCP_PROTO": "tcp",
	} {
		t.Setenv(k, v)
	}
	if _, err := loadConfig(); err != nil {
		t.Fatalf("loadConfig = %v", err)
	}
	// A Service named keyrelay-metrics (or keyrelay-redis, …) in the
	// namespace: its name becomes the prefix.
	for k, v := range map[string]string{
		"KEYRELAY_METRICS_SERVICE_HOST": "10.0.0.2", "KEYRELAY_METRICS_SERVICE_PORT": "9180",
		"KEYRELAY_METRICS_PORT": "tcp://10.0.0.2:9180", "KEYRELAY_METRICS_PORT_9180_TCP_ADDR": "10.0.0.2",
		"KEYRELAY_REDIS_SERVICE_HOST": "10.0.0.3", "KEYRELAY_REDIS_PORT_6379_TCP": "tcp://10.0.0.3:6379",
	} {
		t.Setenv(k, v)
	}
	if _, err := loadConfig(); err != nil {
		t.Fatalf("loadConfig = %v", err)
	}
	t.Setenv("KEYRELAY_PORTS", "1")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "KEYRELAY_PORTS: unknown variable") {
		t.Fatalf("loadConfig = %v, want KEYRELAY_PORTS refused", err)
	}
}

// TestRedisPasswordFile: KEYRELAY_REDIS_PASSWORD_FILE is the password with
// one trailing newline removed (echo's, CRLF too); an empty, multi-line or
// unreadable file is a problem naming the variable and the path, never the
// content.
func TestRedisPasswordFile(t *testing.T) {
	const secret = "Tok^en99&<>$x"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, content := range []string{secret, secret + "\n", secret + "\r\n"} {
		clearKeyrelayEnv(t)
		t.Setenv("KEYRELAY_REDIS_URL", "redis://user:fromurl@localhost:6379")
		t.Setenv("KEYRELAY_REDIS_PASSWORD_FILE", write("pw", content))
		cfg, err := loadConfig()
		if err != nil {
			t.Fatalf("%q: loadConfig = %v", content, err)
		}
		opt, err := cfg.redisOptions()
		if err != nil || opt.Password != secret || opt.Username != "user" {
			t.Fatalf("%q: password %q, user %q, err %v; want the file's, overriding the URL's", content, opt.Password, opt.Username, err)
		}
	}
	// A systemd credential's name alone: taken in $CREDENTIALS_DIRECTORY.
	clearKeyrelayEnv(t)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	t.Setenv("KEYRELAY_REDIS_PASSWORD_FILE", filepath.Base(write("redis-password", secret+"\n")))
	if cfg, err := loadConfig(); err != nil {
		t.Fatalf("a credential name: %v", err)
	} else if opt, err := cfg.redisOptions(); err != nil || opt.Password != secret {
		t.Fatalf("a credential name: password %q, %v", opt.Password, err)
	}
	t.Setenv("KEYRELAY_REDIS_PASSWORD_FILE", "absent")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "absent")+" ($CREDENTIALS_DIRECTORY): cannot read") {
		t.Fatalf("a missing credential: %v, want its path in $CREDENTIALS_DIRECTORY", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")

	for _, tc := range []struct{ path, want string }{
		{write("empty", "\n"), "is empty"},
		{write("twolines", secret+"\n"+secret+"\n"), "more than one line"},
		{dir, "is a directory"},
	} {
		clearKeyrelayEnv(t)
		t.Setenv("KEYRELAY_REDIS_PASSWORD_FILE", tc.path)
		_, err := loadConfig()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("KEYRELAY_REDIS_PASSWORD_FILE=%q", tc.path)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: loadConfig = %v, want the variable, the path and %q", tc.path, err, tc.want)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("the password leaked: %v", err)
		}
	}
}
