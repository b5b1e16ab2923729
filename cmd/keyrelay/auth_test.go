//go:build integration

package main

// ElastiCache authentication modes, against a local redis-server standing in
// for the cache: in-transit encryption with a private CA, AUTH token, RBAC
// users (and a user without channel permission). IAM configuration, which
// needs no server, is tested in config_test.go.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// writeTLSFiles writes a private CA, and a server certificate for 127.0.0.1
// signed by it, into a temporary directory (servers.WriteTLSFiles).
func writeTLSFiles(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	caFile, certFile, keyFile, err := servers.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return caFile, certFile, keyFile
}

// runOnce runs one keyrelay command in-process with env on top of a clean
// KEYRELAY_ environment; the daemon is stopped when ctx ends.
func runOnce(ctx context.Context, t *testing.T, env map[string]string, args ...string) (stdout, stderr *syncBuffer, err error) {
	t.Helper()
	clearKeyrelayEnv(t)
	t.Setenv("KEYRELAY_HTTP_ADDR", "")
	for k, v := range env {
		t.Setenv(k, v)
	}
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	err = run(ctx, context.Background(), args, stdout, stderr)
	return stdout, stderr, err
}

// waitForRecord writes with c until the daemon relays a record for key.
func waitForRecord(t *testing.T, d *daemon, c *redis.Client, key string) {
	t.Helper()
	if err := c.Set(context.Background(), key, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d.waitRecords(10*time.Second, func(recs []testRecord) bool {
		for _, r := range recs {
			if r.Type == "keyevent" && r.Event == "set" && r.Key != nil && *r.Key == key {
				return true
			}
		}
		return false
	})
}

// TestTLSPrivateCA: with rediss:// and KEYRELAY_REDIS_CA_FILE, keyrelay
// verifies the server certificate against the private CA and relays events
// over TLS; without the CA file the certificate is rejected (system roots),
// `keyrelay check` says so and `keyrelay run` never subscribes.
//
// bridgetest.StartRedis waits for a plain-text PING on its own port, so the
// server keeps that port (for the harness and nothing else) beside the TLS
// port keyrelay and the writer use.
func TestTLSPrivateCA(t *testing.T) {
	caFile, certFile, keyFile := writeTLSFiles(t)
	tlsPort := bridgetest.FreePort(t)
	bridgetest.StartRedis(t, "--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort)

	t.Run("with the CA file", func(t *testing.T) {
		d := startDaemon(t, map[string]string{"KEYRELAY_REDIS_URL": url, "KEYRELAY_REDIS_CA_FILE": caFile, "KEYRELAY_EVENTS": "set"})
		if !strings.Contains(d.Stderr.String(), `"tls":true`) {
			t.Errorf("start-up log does not say tls: %s", d.Stderr.String())
		}
		pem, _ := os.ReadFile(caFile)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		w := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(tlsPort), Protocol: 2,
			TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
		defer w.Close()
		waitForRecord(t, d, w, "tls:session:1")
		if err := d.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})

	t.Run("without the CA file", func(t *testing.T) {
		env := map[string]string{"KEYRELAY_REDIS_URL": url}
		out, _, err := runOnce(context.Background(), t, env, "check")
		if err == nil || !strings.Contains(out.String(), "FAIL redis 127.0.0.1:"+strconv.Itoa(tlsPort)) ||
			!strings.Contains(out.String(), "x509: certificate signed by unknown authority") {
			t.Errorf("check: err %v, output:\n%s", err, out)
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		var stderr *syncBuffer
		clearKeyrelayEnv(t)
		t.Setenv("KEYRELAY_HTTP_ADDR", "")
		t.Setenv("KEYRELAY_REDIS_URL", url)
		stderr = &syncBuffer{}
		go func() { done <- run(ctx, context.Background(), []string{"run"}, io.Discard, stderr) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(stderr.String(), "certificate signed by unknown authority") {
			if time.Now().After(deadline) {
				t.Fatalf("run did not report the certificate error:\n%s", stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
		if strings.Contains(stderr.String(), `"msg":"subscribed"`) {
			t.Errorf("subscribed without verifying the certificate:\n%s", stderr)
		}
	})
}

// TestAuthToken: the AUTH token in KEYRELAY_REDIS_PASSWORD overrides the
// URL's; a wrong or missing token stops `keyrelay run` with an error that
// names the variable to fix.
func TestAuthToken(t *testing.T) {
	const token = "0123456789abcdef-token!"
	r := bridgetest.StartRedis(t, "--requirepass", token)
	w := redis.NewClient(&redis.Options{Addr: r.Addr, Password: token, Protocol: 2})
	defer w.Close()

	d := startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL":      "redis://:stale-url-password@" + r.Addr,
		"KEYRELAY_REDIS_PASSWORD": token,
		"KEYRELAY_EVENTS":         "set",
	})
	waitForRecord(t, d, w, "auth:token")
	if strings.Contains(d.Stderr.String(), token) {
		t.Error("the token appears in the log")
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, password, want string
	}{
		{"wrong token", "not-the-token-000", "KEYRELAY_REDIS_PASSWORD"},
		{"no token", "", "set KEYRELAY_REDIS_PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, _, err := runOnce(ctx, t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + r.Addr, "KEYRELAY_REDIS_PASSWORD": tc.password}, "run")
			if ctx.Err() != nil {
				t.Fatal("keyrelay run kept retrying a refused AUTH")
			}
			if err == nil || exitCode(err, io.Discard) != 1 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want exit status 1 naming %q", err, tc.want)
			}
			if tc.password != "" && strings.Contains(err.Error(), tc.password) {
				t.Error("the error shows the password")
			}
		})
	}
}

// TestAuthTokenFile: the AUTH token from KEYRELAY_REDIS_PASSWORD_FILE, a
// systemd credential or Kubernetes secret file with echo's trailing newline
// and a token holding & < > $ (ElastiCache allows them), against a
// redis-server with requirepass; a token file that is not there stops
// start-up with exit status 2 naming the variable and the path.
func TestAuthTokenFile(t *testing.T) {
	const token = "0123456789&<>$abcdef"
	r := bridgetest.StartRedis(t, "--requirepass", token)
	w := redis.NewClient(&redis.Options{Addr: r.Addr, Password: token, Protocol: 2})
	defer w.Close()
	file := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL":           "redis://" + r.Addr,
		"KEYRELAY_REDIS_PASSWORD_FILE": file,
		"KEYRELAY_EVENTS":              "set",
	})
	waitForRecord(t, d, w, "auth:tokenfile")
	if strings.Contains(d.Stderr.String(), token) {
		t.Error("the token appears in the log")
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}

	missing := filepath.Join(t.TempDir(), "absent")
	_, _, err := runOnce(context.Background(), t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + r.Addr, "KEYRELAY_REDIS_PASSWORD_FILE": missing}, "run")
	if err == nil || exitCode(err, io.Discard) != 2 || !strings.Contains(err.Error(), "KEYRELAY_REDIS_PASSWORD_FILE="+strconv.Quote(missing)) {
		t.Fatalf("err = %v, want exit status 2 naming KEYRELAY_REDIS_PASSWORD_FILE and its path", err)
	}
}

// TestRBACUser: an RBAC user with a minimal access string, given by
// KEYRELAY_REDIS_USERNAME / KEYRELAY_REDIS_PASSWORD over the URL's
// credentials, relays events. A user without permission for the channels
// keyrelay subscribes to stops `keyrelay run` (exit status 1) with an error
// naming the exact channel permission to add, and `keyrelay check` says so.
func TestRBACUser(t *testing.T) {
	r := bridgetest.StartRedis(t)
	admin := r.Client(0)
	ctx := context.Background()
	acl := func(args ...any) {
		t.Helper()
		if err := admin.Do(ctx, append([]any{"ACL", "SETUSER"}, args...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The access string docs/deployment.md recommends.
	acl("keyrelay", "reset", "on", ">relay-pass", "-@all", "+psubscribe", "+punsubscribe", "+subscribe", "+unsubscribe",
		"+publish", "+set", "+get", "+ping", "+info", "+role", "&__keyevent@*__:*", "&__keyspace@*__:*", "&keyrelay:*", "~keyrelay:*")
	acl("nochannels", "reset", "on", ">relay-pass", "~*", "+@all", "resetchannels")

	d := startDaemon(t, map[string]string{
		"KEYRELAY_REDIS_URL":      "redis://someone:stale@" + r.Addr,
		"KEYRELAY_REDIS_USERNAME": "keyrelay",
		"KEYRELAY_REDIS_PASSWORD": "relay-pass",
	})
	waitForRecord(t, d, admin, "rbac:key")
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.Stderr.String(), "continuity markers are off") || strings.Contains(d.Stderr.String(), "alive key off") {
		t.Errorf("the recommended access string does not allow markers:\n%s", d.Stderr.String())
	}

	for _, tc := range []struct {
		name, user, events string
		want               []string
	}{
		{"no channel permission", "nochannels", "", []string{"NOPERM", "&*", "&__keyevent@*__:*"}},
		// PSUBSCRIBE patterns are matched literally: &__keyevent@*__:* does
		// not cover the pattern keyrelay uses for KEYRELAY_EVENTS=expired.
		{"pattern not granted literally", "keyrelay", "expired", []string{"NOPERM", "&*", "&__keyevent@*__:expired"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{
				"KEYRELAY_REDIS_URL": "redis://" + r.Addr, "KEYRELAY_REDIS_USERNAME": tc.user,
				"KEYRELAY_REDIS_PASSWORD": "relay-pass", "KEYRELAY_EVENTS": tc.events,
			}
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, _, err := runOnce(rctx, t, env, "run")
			if rctx.Err() != nil {
				t.Fatal("keyrelay run kept retrying a missing channel permission")
			}
			if err == nil || exitCode(err, io.Discard) != 1 {
				t.Fatalf("run: err = %v, want exit status 1", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run error lacks %q: %v", w, err)
				}
			}
		})
	}

	out, _, err := runOnce(ctx, t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + r.Addr,
		"KEYRELAY_REDIS_USERNAME": "nochannels", "KEYRELAY_REDIS_PASSWORD": "relay-pass"}, "check")
	if err == nil {
		t.Fatal("check passed for a user without channel permission")
	}
	for _, w := range []string{"ok   redis " + r.Addr + " reachable and authenticated", "FAIL subscribe to notification channels", "NOPERM", "&*", "&__keyevent@*__:*"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("check output lacks %q:\n%s", w, out)
		}
	}
}
