//go:build integration

package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// TestTakeoverTLS: the connection handed over is go-redis's TLS connection.
// Reads time out and go on (an idle subscription's health pings), and a
// frame larger than a TLS record and than the read buffer arrives whole.
func TestTakeoverTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile, err := servers.WriteTLSFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tlsPort, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r, err := servers.StartRedis(dir, "--notify-keyspace-events", "E$", "--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	ctx := context.Background()
	w := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer w.Close()

	opt := redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(tlsPort), Protocol: 2, DisableIdentity: true,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	client, c, err := takeover(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer c.Close()
	if _, ok := c.conn.(*tls.Conn); !ok {
		t.Fatalf("the connection handed over is a %T, want *tls.Conn", c.conn)
	}
	expect := func(want any) {
		t.Helper()
		got, err := c.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !equalFrame(got, want) {
			t.Fatalf("got %#v, want %#v", got, want)
		}
	}
	if err := c.PSubscribe(ctx, "__keyevent@*__:*"); err != nil {
		t.Fatal(err)
	}
	expect(&redis.Subscription{Kind: "psubscribe", Channel: "__keyevent@*__:*", Count: 1})
	for i := range 3 {
		_, err := c.ReceiveTimeout(ctx, 50*time.Millisecond)
		if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
			t.Fatalf("idle read %d: got %v, want a net.Error timeout", i, err)
		}
		if err := c.Ping(ctx, "keyrelay "+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		expect(&redis.Pong{Payload: "keyrelay " + strconv.Itoa(i)})
	}
	long := strings.Repeat("k", 3*respBufSize)
	for _, k := range []string{"a", long, "b"} {
		if err := w.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"a", long, "b"} {
		expect(&redis.Message{Pattern: "__keyevent@*__:*", Channel: "__keyevent@0__:set", Payload: k})
	}
}
