package bridge

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// The files in testdata/cluster are replies of a local Redis 7.0.15 cluster:
// shards-*.resp2.txt and shards-*.resp3.txt are the go-redis
// Do(ctx, "CLUSTER", "SHARDS").Result() of a RESP2 or RESP3 client printed
// with %#v; nodes-*.txt are CLUSTER NODES as returned. See
// testdata/cluster/README.md for how each was made.

// loadReply reads a %#v-printed go-redis reply back into the same values.
func loadReply(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cluster", name))
	if err != nil {
		t.Fatal(err)
	}
	expr, err := parser.ParseExpr(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	v, err := literalValue(expr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// literalValue evaluates the Go literal of a go-redis reply: []interface {}
// and map[interface {}]interface {} composites, strings and int64s.
func literalValue(e ast.Expr) (any, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		switch e.Kind {
		case token.STRING:
			return strconv.Unquote(e.Value)
		case token.INT:
			return strconv.ParseInt(e.Value, 10, 64)
		}
	case *ast.CompositeLit:
		switch e.Type.(type) {
		case *ast.ArrayType:
			list := []any{}
			for _, x := range e.Elts {
				v, err := literalValue(x)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			return list, nil
		case *ast.MapType:
			m := map[any]any{}
			for _, x := range e.Elts {
				kv, ok := x.(*ast.KeyValueExpr)
				if !ok {
					return nil, fmt.Errorf("map element %T", x)
				}
				k, err := literalValue(kv.Key)
				if err != nil {
					return nil, err
				}
				if m[k], err = literalValue(kv.Value); err != nil {
					return nil, err
				}
			}
			return m, nil
		}
	}
	return nil, fmt.Errorf("unexpected %T in reply literal", e)
}

func loadText(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cluster", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func primary(id, host string, port, slots int) ClusterNode {
	return ClusterNode{
		ID: id, Addr: host + ":" + strconv.Itoa(port), Host: host, Port: port,
		Slots: slots, Role: "master", Health: "online",
	}
}

// The primaries of the captured cluster, sorted by address.
var (
	p0 = primary("f3947dd7c352add8a30d9d1c802e7926fba95405", "127.0.0.1", 34909, 5461)
	p1 = primary("98af7c754ccbbbb01c0c01018caf398f3e135e83", "127.0.0.1", 46707, 5462)
	p2 = primary("3210d7b7950418c534c1fb751e9d47cdcb506d9f", "127.0.0.1", 43431, 5461)
	// p6 was added with add-node and owns no slots.
	p6 = primary("087bc90995d07386b977c15e518c4165152e4a83", "127.0.0.1", 35693, 0)
	// r4, p1's replica, was promoted when p1 was killed.
	r4 = primary("dbf557f6deac36c35be02dcc1f0e062000d5a45f", "127.0.0.1", 36357, 5462)
)

func withHost(n ClusterNode, host string) ClusterNode {
	n.Host = host
	n.Addr = host + ":" + strconv.Itoa(n.Port)
	return n
}

// The primaries of the captured TLS cluster (port 2100x, tls-port 2200x,
// cluster-announce-hostname set).
func tlsPrimaries(tls bool) []ClusterNode {
	base := 21000
	if tls {
		base = 22000
	}
	return []ClusterNode{
		primary("d6b853c77d4e5f89d8e07d255485101cdf0c00bf", "tls-node-0.cache.example", base, 5461),
		primary("6612181f00fb3837049df5cfbec77984a00911ab", "tls-node-1.cache.example", base+1, 5462),
		primary("28ccc86484f29f72a0bf54549be72b16afd2a593", "tls-node-2.cache.example", base+2, 5461),
	}
}

func TestParseClusterShards(t *testing.T) {
	hostnames := []ClusterNode{
		withHost(p0, "node-0.cache.example"), withHost(p1, "node-1.cache.example"),
		withHost(p2, "node-2.cache.example"), withHost(p6, "node-6.cache.example"),
	}
	for _, tc := range []struct {
		file string
		tls  bool
		want []ClusterNode
	}{
		{"shards-3p3r.resp2.txt", false, []ClusterNode{p0, p2, p1}},
		{"shards-3p3r.resp3.txt", false, []ClusterNode{p0, p2, p1}},
		// tls without tls-port in the reply: the port.
		{"shards-3p3r.resp2.txt", true, []ClusterNode{p0, p2, p1}},
		{"shards-slotless.resp2.txt", false, []ClusterNode{p0, p6, p2, p1}},
		// p1 killed, marked fail, not yet replaced: left out.
		{"shards-failed.resp2.txt", false, []ClusterNode{p0, p6, p2}},
		// r4 promoted; p1 is still listed as a failed master without slots.
		{"shards-failed-promoted.resp2.txt", false, []ClusterNode{p0, p6, r4, p2}},
		// hostname set, endpoint still the ip: the hostname.
		{"shards-hostname.resp2.txt", false, hostnames},
		// cluster-preferred-endpoint-type hostname: the same.
		{"shards-hostname-preferred.resp2.txt", false, hostnames},
		{"shards-tls.resp2.txt", true, tlsPrimaries(true)},
		{"shards-tls.resp3.txt", true, tlsPrimaries(true)},
		{"shards-tls.resp2.txt", false, tlsPrimaries(false)},
	} {
		t.Run(fmt.Sprintf("%s tls=%v", tc.file, tc.tls), func(t *testing.T) {
			got, err := ParseClusterShards(loadReply(t, tc.file), tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(withoutRanges(t, got), tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseClusterNodes(t *testing.T) {
	for _, tc := range []struct {
		file string
		tls  bool
		want []ClusterNode
	}{
		{"nodes-3p3r.txt", false, []ClusterNode{p0, p2, p1}},
		{"nodes-slotless.txt", false, []ClusterNode{p0, p6, p2, p1}},
		// The source of slot 0 lists "0-5460 [0->-<target>]".
		{"nodes-migrating-source.txt", false, []ClusterNode{p0, p6, p2, p1}},
		// The target lists only "[0-<-<source>]".
		{"nodes-migrating-target.txt", false, []ClusterNode{p0, p6, p2, p1}},
		{"nodes-failed.txt", false, []ClusterNode{p0, p6, p2}},
		{"nodes-failed-promoted.txt", false, []ClusterNode{p0, p6, r4, p2}},
		{"nodes-hostname.txt", false, []ClusterNode{
			withHost(p0, "node-0.cache.example"), withHost(p1, "node-1.cache.example"),
			withHost(p2, "node-2.cache.example"), withHost(p6, "node-6.cache.example"),
		}},
		// CLUSTER NODES has no tls-port: asked over TLS it shows the TLS
		// port, asked in plain text the plain port, whatever tls says.
		{"nodes-tls.txt", true, tlsPrimaries(true)},
		{"nodes-tls.txt", false, tlsPrimaries(true)},
		{"nodes-tls-plain.txt", true, tlsPrimaries(false)},
	} {
		t.Run(fmt.Sprintf("%s tls=%v", tc.file, tc.tls), func(t *testing.T) {
			got, err := ParseClusterNodes(loadText(t, tc.file), tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(withoutRanges(t, got), tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

// shardNode is a RESP2 node entry of CLUSTER SHARDS.
func shardNode(kv ...any) []any { return kv }

func TestParseClusterShardsAddresses(t *testing.T) {
	shard := func(nodes ...[]any) []any {
		var list []any
		for _, n := range nodes {
			list = append(list, n)
		}
		return []any{[]any{"slots", []any{"0", "9", int64(20), int64(20)}, "nodes", list}}
	}
	for _, tc := range []struct {
		name   string
		node   []any
		tls    bool
		want   string // Addr; "" for left out
		wantSl int
	}{
		{"endpoint ? falls back to ip", shardNode("id", "a", "port", int64(6379), "ip", "10.0.0.1", "endpoint", "?", "role", "master", "health", "online"), false, "10.0.0.1:6379", 11},
		{"empty hostname falls back to endpoint", shardNode("id", "a", "port", int64(6379), "ip", "10.0.0.1", "endpoint", "e.example", "hostname", "", "role", "master", "health", "online"), false, "e.example:6379", 11},
		{"ipv6", shardNode("id", "a", "port", int64(6379), "ip", "::1", "endpoint", "::1", "role", "master", "health", "online"), false, "[::1]:6379", 11},
		{"tls-only node", shardNode("id", "a", "tls-port", int64(6380), "ip", "10.0.0.1", "role", "master", "health", "online"), true, "10.0.0.1:6380", 11},
		{"tls-only node asked without tls", shardNode("id", "a", "tls-port", int64(6380), "ip", "10.0.0.1", "role", "master", "health", "online"), false, "", 0},
		{"no address", shardNode("id", "a", "port", int64(6379), "ip", "", "endpoint", "?", "role", "master", "health", "online"), false, "", 0},
		{"valkey says primary", shardNode("id", "a", "port", int64(6379), "ip", "10.0.0.1", "role", "primary", "health", "online"), false, "10.0.0.1:6379", 11},
		{"replica", shardNode("id", "a", "port", int64(6379), "ip", "10.0.0.1", "role", "replica", "health", "online"), false, "", 0},
		{"loading", shardNode("id", "a", "port", int64(6379), "ip", "10.0.0.1", "role", "master", "health", "loading"), false, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseClusterShards(shard(tc.node), tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("got %+v, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0].Addr != tc.want || got[0].Slots != tc.wantSl {
				t.Fatalf("got %+v, want %s with %d slots", got, tc.want, tc.wantSl)
			}
		})
	}
}

func TestParseClusterShardsErrors(t *testing.T) {
	node := []any{"id", "a", "port", int64(1), "ip", "h", "role", "master", "health", "online"}
	for name, reply := range map[string]any{
		"not a list":      "OK",
		"odd shard":       []any{[]any{"slots"}},
		"odd slots":       []any{[]any{"slots", []any{int64(1)}, "nodes", []any{node}}},
		"reversed range":  []any{[]any{"slots", []any{int64(9), int64(1)}, "nodes", []any{node}}},
		"nodes not list":  []any{[]any{"slots", []any{}, "nodes", "x"}},
		"non-string key":  []any{[]any{int64(1), "x"}},
		"port not number": []any{[]any{"slots", []any{}, "nodes", []any{[]any{"id", "a", "port", "x", "ip", "h", "role", "master", "health", "online"}}}},
	} {
		if got, err := ParseClusterShards(reply, false); err == nil {
			t.Errorf("%s: got %+v, want an error", name, got)
		}
	}
}

func TestParseClusterNodesLines(t *testing.T) {
	text := strings.Join([]string{
		"a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0 2-4 [5->-b] 9",
		"b 10.0.0.2:7000@17000 master,fail? - 0 0 2 connected 100-200",
		"c :0@0 master,noaddr - 0 0 3 disconnected",
		"d 10.0.0.4:7000@17000 handshake - 0 0 0 disconnected",
		"e 10.0.0.5:7000@17000,host-e,shard-id=x,tls-port=7443 master - 0 0 5 connected",
		"f 10.0.0.6:7000@17000 slave a 0 0 1 connected",
		"",
	}, "\n")
	want := []ClusterNode{
		primary("a", "10.0.0.1", 7000, 5),
		primary("e", "host-e", 7443, 0),
	}
	got, err := ParseClusterNodes(text, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(withoutRanges(t, got), want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
	for _, bad := range []string{
		"a 10.0.0.1:7000@17000 master - 0 0",
		"a 10.0.0.1:7000@17000 master - 0 0 1 connected 9-x",
		"a 10.0.0.1@17000 master - 0 0 1 connected",
	} {
		if got, err := ParseClusterNodes(bad, false); err == nil {
			t.Errorf("%q: got %+v, want an error", bad, got)
		}
	}
}

func TestClusterModeDecode(t *testing.T) {
	for _, s := range []string{"auto", "standalone", "cluster"} {
		var m RedisMode
		if err := m.Decode(s); err != nil || string(m) != s {
			t.Errorf("Decode(%q) = %v, %q", s, err, m)
		}
	}
	for _, s := range []string{"", "Cluster", "sentinel"} {
		var m RedisMode
		if err := m.Decode(s); err == nil || err.Error() != "must be auto, standalone or cluster" {
			t.Errorf("Decode(%q) = %v", s, err)
		}
	}
}

// redisErr is a server error reply, as go-redis returns it.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

// fakeRedis answers the few commands cluster discovery sends; any other
// method panics (nil embedded Cmdable).
type fakeRedis struct {
	redis.Cmdable
	shards    any
	shardsErr error
	nodes     string
	nodesErr  error
	info      string
	calls     []string
}

func (f *fakeRedis) Do(ctx context.Context, args ...any) *redis.Cmd {
	f.calls = append(f.calls, fmt.Sprint(args...))
	return redis.NewCmdResult(f.shards, f.shardsErr)
}

func (f *fakeRedis) ClusterNodes(ctx context.Context) *redis.StringCmd {
	f.calls = append(f.calls, "CLUSTER NODES")
	return redis.NewStringResult(f.nodes, f.nodesErr)
}

func (f *fakeRedis) Info(ctx context.Context, section ...string) *redis.StringCmd {
	return redis.NewStringResult(f.info, nil)
}

func (f *fakeRedis) ClusterMyID(ctx context.Context) *redis.StringCmd {
	return redis.NewStringResult("", redisErr("NOPERM this user has no permissions to run the 'cluster|myid' command"))
}

func TestDiscoverClusterPrimaries(t *testing.T) {
	ctx := context.Background()
	nodes := loadText(t, "nodes-slotless.txt")
	want := []ClusterNode{p0, p6, p2, p1}

	t.Run("nodes", func(t *testing.T) {
		f := &fakeRedis{nodes: nodes}
		got, err := DiscoverPrimaries(ctx, f, false)
		if err != nil || !reflect.DeepEqual(withoutRanges(t, got), want) {
			t.Fatalf("got %+v, %v", got, err)
		}
		if len(f.calls) != 1 {
			t.Errorf("calls %q, want CLUSTER NODES only", f.calls)
		}
	})
	t.Run("shards when nodes is refused", func(t *testing.T) {
		f := &fakeRedis{nodesErr: redisErr("NOPERM this user has no permissions to run the 'cluster|nodes' command"),
			shards: loadReply(t, "shards-slotless.resp2.txt")}
		got, err := DiscoverPrimaries(ctx, f, false)
		if err != nil || !reflect.DeepEqual(withoutRanges(t, got), want) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	noperm := func(cmd string) error {
		return redisErr("NOPERM this user has no permissions to run the 'cluster|" + cmd + "' command")
	}
	for _, tc := range []struct {
		name     string
		f        *fakeRedis
		perm     string // "" for not a permission error
		wantText string
	}{
		{"both refused", &fakeRedis{nodesErr: noperm("nodes"), shardsErr: noperm("shards")}, "+cluster|nodes or +cluster|shards", "NOPERM"},
		{"nodes refused, no shards", &fakeRedis{shardsErr: redisErr("ERR unknown subcommand 'shards'. Try CLUSTER HELP."), nodesErr: noperm("nodes")}, "+cluster|nodes", "NOPERM"},
		{"standalone", &fakeRedis{nodesErr: redisErr("ERR This instance has cluster support disabled"), shardsErr: redisErr("ERR This instance has cluster support disabled")}, "", "cluster support disabled"},
		{"connection", &fakeRedis{nodesErr: errors.New("dial tcp: connection refused"), shardsErr: errors.New("dial tcp: connection refused")}, "", "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DiscoverPrimaries(ctx, tc.f, false)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrClusterPermission) != (tc.perm != "") {
				t.Errorf("errors.Is(%v, ErrClusterPermission) = %v", err, tc.perm == "")
			}
			if !strings.Contains(err.Error(), tc.perm) || !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not name %q and %q", err, tc.perm, tc.wantText)
			}
		})
	}
}

func TestDetectClusterEnabled(t *testing.T) {
	for info, want := range map[string]bool{
		"# Cluster\r\ncluster_enabled:1\r\n": true,
		"# Cluster\r\ncluster_enabled:0\r\n": false,
		"":                                   false,
	} {
		got, err := DetectClusterEnabled(context.Background(), &fakeRedis{info: info})
		if err != nil || got != want {
			t.Errorf("%q: got %v, %v; want %v", info, got, err, want)
		}
	}
}

func TestClusterNodeIDPermission(t *testing.T) {
	_, err := NodeID(context.Background(), &fakeRedis{})
	if !errors.Is(err, ErrClusterPermission) || !strings.Contains(err.Error(), "+cluster|myid") {
		t.Errorf("got %v", err)
	}
}

// withoutRanges checks that each node's ranges hold exactly its slot count
// and returns the nodes without them, to compare with the tables above.
func withoutRanges(t *testing.T, nodes []ClusterNode) []ClusterNode {
	t.Helper()
	out := make([]ClusterNode, len(nodes))
	for i, n := range nodes {
		sum := 0
		for _, r := range n.Ranges {
			sum += r.End - r.Start + 1
		}
		if sum != n.Slots {
			t.Errorf("node %s: ranges %v hold %d slots, Slots = %d", n.ID, n.Ranges, sum, n.Slots)
		}
		n.Ranges = nil
		out[i] = n
	}
	return out
}

func TestOverlaps(t *testing.T) {
	a := []SlotRange{{0, 100}, {200, 300}}
	for _, tc := range []struct {
		b    []SlotRange
		want bool
	}{
		{[]SlotRange{{101, 199}}, false},
		{[]SlotRange{{100, 100}}, true},
		{[]SlotRange{{150, 250}}, true},
		{nil, false},
	} {
		if got := Overlaps(a, tc.b); got != tc.want {
			t.Errorf("Overlaps(%v, %v) = %v", a, tc.b, got)
		}
	}
}
