//go:build integration

package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// The tests in this file run keyrelay against a real local cluster: 3
// primaries with a replica each on loopback. One cluster serves the whole
// sequence of scenarios, from the quiet ones to the destructive ones.

// clusterEnv is the configuration of a keyrelay relaying a cluster: the URL
// names one node, like a configuration endpoint.
//
// Each gets its own KEYRELAY_NAME, so that one scenario's alive keys do not
// make the next one's start a restart.
func clusterEnv(seed string, extra ...string) map[string]string {
	clusterRuns++
	env := resilienceEnv(seed, "KEYRELAY_CLUSTER_REFRESH_INTERVAL", "1s", "KEYRELAY_MARKER_INTERVAL", "200ms",
		"KEYRELAY_LOG_LEVEL", "info", "KEYRELAY_NAME", fmt.Sprintf("run%d", clusterRuns))
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

var clusterRuns int

// clusterWriter returns a cluster client that never retries a write on its
// own (one successful SET is one event) but follows MOVED and ASK.
func clusterWriter(t *testing.T, c *bridgetest.Cluster) *redis.ClusterClient {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Protocol: 2, MaxRedirects: 8})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// ownerOf returns the address of the primary that owns key.
func ownerOf(t *testing.T, cc *redis.ClusterClient, key string) string {
	t.Helper()
	cc.ReloadState(context.Background())
	m, err := cc.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return m.Options().Addr
}

// replicaOfNode returns the member that replicates primary.
func replicaOfNode(t *testing.T, c *bridgetest.Cluster, primary *servers.Redis) *servers.Redis {
	t.Helper()
	id := c.ID(context.Background(), primary)
	for _, n := range c.Nodes {
		if n == primary {
			continue
		}
		info, err := c.Client(n).Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "role:slave") &&
			strings.Contains(info, fmt.Sprintf("master_port:%d", primary.Port)) {
			return n
		}
	}
	t.Fatalf("no replica of %s (%s)", primary.Addr, id)
	return nil
}

// settle waits until the daemon's record count stops growing.
func settle(d *daemon) []testRecord {
	last := -1
	return d.waitRecords(30*time.Second, func(recs []testRecord) bool {
		n := len(recs)
		ok := n == last
		last = n
		time.Sleep(300 * time.Millisecond)
		return ok
	})
}

// sources returns the sources of the gap records of one reason.
func gapsOf(recs []testRecord, reason string) []testRecord {
	var out []testRecord
	for _, r := range ofType(recs, "gap") {
		if r.Reason == reason {
			out = append(out, r)
		}
	}
	return out
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	c := bridgetest.StartCluster(t, 3, 1)
	seed := c.Nodes[0].Addr
	cc := clusterWriter(t, c)

	t.Run("every key from its own primary", func(t *testing.T) {
		addr := httpAddr(t)
		d := startDaemon(t, clusterEnv(seed, "KEYRELAY_HTTP_ADDR", addr))
		waitUntil(t, 15*time.Second, "ready", func() bool { code, _ := getHTTP("http://" + addr + "/readyz"); return code == 200 })
		const n = 300
		want := map[string]string{}
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("all:%d", i)
			if err := cc.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			want[k] = ownerOf(t, cc, k)
		}
		recs := d.waitRecords(15*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "set")) >= n })
		sources := map[string]bool{}
		for _, r := range recs {
			if r.Type != "keyevent" || r.Event != "set" {
				continue
			}
			if owner := want[*r.Key]; owner != r.Source {
				t.Errorf("%s: source %s, want its primary %s", *r.Key, r.Source, owner)
			}
			sources[r.Source] = true
		}
		checkUnique(t, recs, "set")
		if len(sources) != 3 {
			t.Errorf("records from %d primaries, want 3", len(sources))
		}
		if gaps := ofType(recs, "gap"); len(gaps) > 0 {
			t.Errorf("gap records on a quiet cluster: %+v", gaps)
		}
		m := scrapeMetrics(t, addr)
		if v, _ := metricValue(m, "keyrelay_cluster_primaries"); v != 3 {
			t.Errorf("keyrelay_cluster_primaries = %v, want 3", v)
		}

		// Expiry on every shard: only expired, never a replica's del.
		var keys []string
		for i := 0; i < 60; i++ {
			k := fmt.Sprintf("ttl:%d", i)
			keys = append(keys, k)
			if err := cc.Set(ctx, k, "v", 300*time.Millisecond).Err(); err != nil {
				t.Fatal(err)
			}
		}
		recs = d.waitRecords(20*time.Second, func(recs []testRecord) bool { return len(keysOf(recs, "expired")) >= len(keys) })
		if dels := keysOf(recs, "del"); len(dels) > 0 {
			t.Errorf("del records for expiring keys (a replica subscribed?): %v", dels)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("check proves every primary", func(t *testing.T) {
		out, _, err := runOnce(ctx, t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + seed}, "check")
		if err != nil {
			t.Fatalf("check failed: %v\n%s", err, out)
		}
		for _, p := range c.Primaries(ctx) {
			for _, want := range []string{"ok   keyevent notifications flowing on " + p.Addr, "primary " + c.ID(ctx, p) + " " + p.Addr} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("check output lacks %q:\n%s", want, out)
				}
			}
		}
		for _, want := range []string{"ok   cluster primaries: 3", "ok   continuity markers", "ok   alive key", "all checks passed"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("check output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out.String(), "MOVED") {
			t.Errorf("a raw MOVED:\n%s", out)
		}
		out, _, err = runOnce(ctx, t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + seed, "KEYRELAY_REDIS_MODE": "standalone"}, "check")
		if err == nil || !strings.Contains(out.String(), "FAIL KEYRELAY_REDIS_MODE") {
			t.Errorf("check with the wrong mode: %v\n%s", err, out)
		}
	})

	t.Run("a broken subscription is one node's gap", func(t *testing.T) {
		d := startDaemon(t, clusterEnv(seed))
		waitUntil(t, 15*time.Second, "three subscriptions", func() bool {
			return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 3
		})
		victim := c.Primaries(ctx)[1]
		if n, err := c.Client(victim).ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n < 1 {
			t.Fatalf("CLIENT KILL = %d, %v", n, err)
		}
		recs := d.waitRecords(10*time.Second, func(recs []testRecord) bool { return len(ofType(recs, "gap")) > 0 })
		time.Sleep(time.Second)
		recs = d.records()
		gaps := ofType(recs, "gap")
		if len(gaps) != 1 || gaps[0].Reason != "reconnect" || gaps[0].Source != victim.Addr {
			t.Errorf("gaps %+v, want one reconnect gap from %s only", gaps, victim.Addr)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("mode contradicting the server exits 2", func(t *testing.T) {
		cmd := command(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://" + seed, "KEYRELAY_REDIS_MODE": "standalone",
			"KEYRELAY_HTTP_ADDR": ""}, "run")
		var stderr syncBuffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := exitStatus(err); code != 2 {
			t.Fatalf("exit status %d, want 2:\n%s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "cluster mode enabled") {
			t.Errorf("stderr does not say why:\n%s", stderr.String())
		}
	})

	t.Run("a user without cluster|shards is told what to grant", func(t *testing.T) {
		for _, n := range c.Nodes {
			err := c.Client(n).Do(ctx, "ACL", "SETUSER", "noshards", "on", ">pw", "~*", "&*", "+@all", "-cluster|shards", "-cluster|nodes").Err()
			if err != nil {
				t.Fatal(err)
			}
		}
		code, stderr := runToExit(t, map[string]string{"KEYRELAY_REDIS_URL": "redis://noshards:pw@" + seed, "KEYRELAY_HTTP_ADDR": ""}, 20*time.Second)
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		if !strings.Contains(stderr, "+cluster|nodes or +cluster|shards") || strings.Contains(stderr, "MOVED") {
			t.Errorf("stderr does not name the permission:\n%s", stderr)
		}
	})

	t.Run("a restart is a gap on every primary", func(t *testing.T) {
		env := clusterEnv(seed, "KEYRELAY_NAME", "restart")
		d := startDaemon(t, env)
		waitUntil(t, 15*time.Second, "three subscriptions", func() bool {
			return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 3
		})
		time.Sleep(time.Second) // the alive keys are written
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		var writes timedWrites
		stop := make(chan struct{})
		paced := pace(cc, "restart:", &writes, stop)
		time.Sleep(500 * time.Millisecond)
		close(stop)
		<-paced
		d2 := startDaemon(t, env)
		recs := d2.waitRecords(15*time.Second, func(recs []testRecord) bool { return len(gapsOf(recs, "restart")) >= 3 })
		sources := map[string]bool{}
		for _, g := range gapsOf(recs, "restart") {
			since, _ := checkGap(t, g, "restart")
			if since.After(down) || down.Sub(since) > time.Second {
				t.Errorf("restart gap %+v: since should be within a second before the stop (%s)", g, down)
			}
			sources[g.Source] = true
		}
		for _, p := range c.Primaries(ctx) {
			if !sources[p.Addr] {
				t.Errorf("no restart gap from %s", p.Addr)
			}
		}
		checkLossInGaps(t, writes.all(), recs)
		if err := d2.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("HA: kill -9 of the leader", func(t *testing.T) {
		env := func() map[string]string {
			e := clusterEnv(seed, "KEYRELAY_NAME", "ha", "KEYRELAY_EVENTS", "set", "KEYRELAY_HA", "true",
				"KEYRELAY_HA_LEASE", haLease.String(), "KEYRELAY_SPOOL_DIR", t.TempDir(), "KEYRELAY_HTTP_ADDR", "")
			return e
		}
		a := startInstance(t, "A", env())
		a.waitLog(`"msg":"ha: leading`, 5*time.Second)
		b := startInstance(t, "B", env())
		for _, in := range []*instance{a, b} {
			waitUntil(t, 15*time.Second, in.name+"'s three subscriptions", func() bool {
				return strings.Count(in.stderr.String(), `"msg":"subscribed"`) >= 3
			})
		}
		time.Sleep(time.Second)
		writes := underLoad(t, cc, func() {
			a.signal(syscall.SIGKILL)
			a.wait(5 * time.Second)
			waitUntil(t, 3*haLease, "B to take over", b.leading)
		})
		waitDelivered(t, writes, 10*time.Second, a, b)
		dups := checkUnion(t, writes, a, b)
		t.Logf("%d writes across 3 primaries, %d delivered twice (same id)", len(writes), dups)
	})

	t.Run("failover under load", func(t *testing.T) {
		d := startDaemon(t, clusterEnv(seed))
		waitUntil(t, 15*time.Second, "three subscriptions", func() bool {
			return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 3
		})
		var writes timedWrites
		stop := make(chan struct{})
		paced := pace(cc, "fo:", &writes, stop)
		time.Sleep(500 * time.Millisecond)
		old := c.Primaries(ctx)[0]
		replica := replicaOfNode(t, c, old)
		c.Failover(ctx, replica)
		demotedAt := time.Now()
		time.Sleep(2 * time.Second)
		close(stop)
		<-paced
		recs := settle(d)
		lost, gaps := checkLossInGaps(t, writes.all(), recs)
		fo := gapsOf(recs, "failover")
		if len(fo) != 1 || fo[0].Source != replica.Addr {
			t.Errorf("failover gaps %+v, want one with source %s (the new primary); all gaps %v", fo, replica.Addr, gaps)
		}
		// Nothing from the demoted node once it was noticed (a second).
		for _, r := range recs {
			if r.Type == "keyevent" && r.Source == old.Addr {
				if at, _ := time.Parse(time.RFC3339Nano, r.Time); at.After(demotedAt.Add(1500 * time.Millisecond)) {
					t.Errorf("record from the demoted node %s at %s", old.Addr, r.Time)
				}
			}
		}
		t.Logf("%d writes, %d lost inside %d gap windows", len(writes.all()), lost, len(gaps))
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("add-node, reshard, del-node under load", func(t *testing.T) {
		d := startDaemon(t, clusterEnv(seed))
		waitUntil(t, 15*time.Second, "three subscriptions", func() bool {
			return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 3
		})
		var writes timedWrites
		stop := make(chan struct{})
		paced := pace(cc, "rs:", &writes, stop)
		added := c.AddNode(ctx, "")
		waitUntil(t, 10*time.Second, "the new node subscribed", func() bool {
			return strings.Contains(d.Stderr.String(), `"node":"`+added.Addr+`","patterns"`)
		})
		from := c.Primaries(ctx)[0]
		c.Reshard(ctx, from, added, 200)
		time.Sleep(500 * time.Millisecond)
		c.Reshard(ctx, added, from, 200)
		close(stop)
		<-paced
		c.DelNode(ctx, added)
		waitUntil(t, 10*time.Second, "the removed node left", func() bool {
			return strings.Contains(d.Stderr.String(), "slot-less primary left") || strings.Contains(d.Stderr.String(), "primary left after its slots moved")
		})
		recs := settle(d)
		if gaps := ofType(recs, "gap"); len(gaps) > 0 {
			t.Errorf("gap records for a reshard and a del-node: %+v", gaps)
		}
		got := keysOf(recs, "set")
		missing := 0
		for _, w := range writes.all() {
			if got[w.key] == 0 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d writes during the reshard not delivered", missing, len(writes.all()))
		}
		sawNew := false
		for _, r := range recs {
			if r.Source == added.Addr {
				sawNew = true
			}
		}
		if !sawNew {
			t.Errorf("no record from the importing node %s", added.Addr)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kill -9 of a primary", func(t *testing.T) {
		d := startDaemon(t, clusterEnv(seed))
		waitUntil(t, 15*time.Second, "three subscriptions", func() bool {
			return strings.Count(d.Stderr.String(), `"msg":"subscribed"`) >= 3
		})
		var victim *servers.Redis
		for _, p := range c.Primaries(ctx) {
			if p.Addr != seed {
				victim = p
				break
			}
		}
		replica := replicaOfNode(t, c, victim)
		// Keys that expire right after the kill, on the victim's slots.
		var keys []string
		for i := 0; len(keys) < 20; i++ {
			k := fmt.Sprintf("kill:%d", i)
			if ownerOf(t, cc, k) == victim.Addr {
				keys = append(keys, k)
				// Long enough to expire after the promotion (node timeout
				// 2 s) and the new subscription.
				if err := cc.Set(ctx, k, "v", 9*time.Second).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n, err := c.Client(victim).Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n < 1 {
			t.Fatalf("WAIT = %d, %v: the replica does not have the keys", n, err)
		}
		victim.Stop() // SIGKILL
		recs := d.waitRecords(30*time.Second, func(recs []testRecord) bool {
			return len(ofType(recs, "gap")) > 0 && len(keysOf(recs, "expired")) >= len(keys)
		})
		gap := ofType(recs, "gap")[0]
		if gap.Reason != "failover" || gap.Source != replica.Addr {
			t.Errorf("gap %+v, want reason failover from %s", gap, replica.Addr)
		}
		for _, k := range keys {
			if keysOf(recs, "expired")[k] == 0 {
				t.Errorf("expired %s (after the promotion) not delivered", k)
			}
		}
		// The killed primary comes back as a replica: not subscribed.
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		c.Wait(ctx)
		time.Sleep(2 * time.Second)
		before := strings.Count(d.Stderr.String(), `"node":"`+victim.Addr+`","patterns"`)
		if before != 1 {
			t.Errorf("subscribed to %s %d times, want once (before it was killed)", victim.Addr, before)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	})
}
