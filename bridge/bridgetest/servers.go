package bridgetest

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := servers.FreePort()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// Redis is a redis-server started for one test.
type Redis struct {
	*servers.Redis
	t testing.TB
}

// StartRedis starts redis-server on a free loopback port with
// notify-keyspace-events KEA (both channel kinds, every class) unless args
// set it, plus any extra args ("--requirepass", "x", …). It is stopped when
// the test ends.
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	r, err := servers.StartRedis(t.TempDir(), args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(r.Stop)
	return &Redis{Redis: r, t: t}
}

// Start (re)starts the server on the same port and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.Redis.Start(); err != nil {
		r.t.Fatalf("%v", err)
	}
}

// Restart stops and starts the server on the same port.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.Start()
}

// Client returns a go-redis client for the server, closed with the test.
func (r *Redis) Client(db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DB: db, Protocol: 2})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// Fauxqs is the fauxqs SQS/SNS emulator started for one test.
type Fauxqs struct {
	*servers.Fauxqs
}

// FauxqsBin finds the fauxqs executable: $KEYRELAY_TEST_FAUXQS, the copy
// `make test` installs under .ci/node_modules, or $PATH.
func FauxqsBin() (string, error) { return servers.FauxqsBin() }

// StartFauxqs starts fauxqs on a free loopback port, stopped when the test
// ends. It sets AWS_* variables (region, dummy keys, endpoint) for the test,
// so the SDK's standard configuration chain reaches the emulator.
func StartFauxqs(t testing.TB) *Fauxqs {
	t.Helper()
	f, err := servers.StartFauxqs(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(f.Stop)
	for _, kv := range servers.Env(f.Endpoint) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return &Fauxqs{Fauxqs: f}
}
