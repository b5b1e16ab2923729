//go:build integration

package bridge_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// TestClusterDiscovery follows a real 3+3 cluster through add-node and a
// manual failover: DiscoverPrimaries must name exactly the nodes that say
// they are primaries, through CLUSTER SHARDS (RESP2 and RESP3, with and
// without Do) and CLUSTER NODES alike.
func TestClusterDiscovery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	c := bridgetest.StartCluster(t, 3, 1)
	t.Logf("3+3 cluster up in %s", time.Since(start).Round(time.Millisecond))

	// check compares discovery, asked of every member, with what the nodes
	// say of themselves, and returns the primaries.
	check := func(step string) []bridge.ClusterNode {
		t.Helper()
		var want []string
		for _, r := range c.Primaries(ctx) {
			want = append(want, c.ID(ctx, r)+" "+r.Addr)
		}
		slices.Sort(want)
		var first []bridge.ClusterNode
		for _, r := range c.Nodes {
			resp2 := c.Client(r)
			resp3 := redis.NewClient(&redis.Options{Addr: r.Addr}) // RESP3: maps
			t.Cleanup(func() { resp3.Close() })
			for name, discover := range map[string]func() ([]bridge.ClusterNode, error){
				"resp2": func() ([]bridge.ClusterNode, error) { return bridge.DiscoverPrimaries(ctx, resp2, false) },
				"resp3": func() ([]bridge.ClusterNode, error) { return bridge.DiscoverPrimaries(ctx, resp3, false) },
				"without Do": func() ([]bridge.ClusterNode, error) {
					return bridge.DiscoverPrimaries(ctx, struct{ redis.Cmdable }{resp2}, false)
				},
				"cluster nodes": func() ([]bridge.ClusterNode, error) {
					text, err := resp2.ClusterNodes(ctx).Result()
					if err != nil {
						return nil, err
					}
					return bridge.ParseClusterNodes(text, false)
				},
			} {
				got, err := discover()
				if err != nil {
					t.Fatalf("%s: %s %s: %v", step, r.Addr, name, err)
				}
				var ids []string
				for _, n := range got {
					ids = append(ids, n.ID+" "+n.Addr)
				}
				slices.Sort(ids)
				if !slices.Equal(ids, want) {
					t.Fatalf("%s: asked %s (%s): got\n%v\nwant (ROLE, CLUSTER MYID)\n%v", step, r.Addr, name, ids, want)
				}
				if first == nil {
					first = got
				} else if !reflect.DeepEqual(got, first) {
					t.Fatalf("%s: asked %s (%s): got\n%+v\nfirst answer\n%+v", step, r.Addr, name, got, first)
				}
			}
		}
		return first
	}

	got := check("3+3")
	if len(got) != 3 {
		t.Fatalf("3+3: %d primaries", len(got))
	}
	total := 0
	for _, n := range got {
		total += n.Slots
		if n.Slots == 0 || n.Host != "127.0.0.1" || n.Role != "master" || n.Health != "online" {
			t.Errorf("3+3: %+v", n)
		}
	}
	if total != 16384 {
		t.Errorf("3+3: %d slots in all", total)
	}

	step := time.Now()
	added := c.AddNode(ctx, "")
	t.Logf("add-node in %s", time.Since(step).Round(time.Millisecond))
	addedID := c.ID(ctx, added)
	got = check("add-node")
	i := slices.IndexFunc(got, func(n bridge.ClusterNode) bool { return n.ID == addedID })
	if len(got) != 4 || i < 0 || got[i].Slots != 0 || got[i].Addr != added.Addr {
		t.Fatalf("add-node: want 4 primaries with %s (no slots): %+v", addedID, got)
	}

	primaries := c.Primaries(ctx)
	replica := c.Nodes[slices.IndexFunc(c.Nodes, func(r *servers.Redis) bool {
		return !slices.Contains(primaries, r)
	})]
	replicaID := c.ID(ctx, replica)
	oldPrimaryID := myPrimary(t, c.Client(replica).ClusterNodes(ctx).Val())
	step = time.Now()
	c.Failover(ctx, replica)
	t.Logf("failover in %s", time.Since(step).Round(time.Millisecond))
	got = check("failover")
	var ids []string
	for _, n := range got {
		ids = append(ids, n.ID)
	}
	if len(got) != 4 || !slices.Contains(ids, replicaID) || slices.Contains(ids, oldPrimaryID) {
		t.Fatalf("failover of %s (primary %s): got %v", replicaID, oldPrimaryID, ids)
	}
}

// myPrimary returns the primary id of the "myself" line of CLUSTER NODES.
func myPrimary(t *testing.T, nodes string) string {
	for line := range strings.Lines(nodes) {
		if f := strings.Fields(line); len(f) > 3 && strings.Contains(f[2], "myself") {
			return f[3]
		}
	}
	t.Fatalf("no myself line in\n%s", nodes)
	return ""
}

// TestClusterDiscoveryPermission: an ACL user without cluster|nodes and
// cluster|shards gets a permanent error naming the permissions.
func TestClusterDiscoveryPermission(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := bridgetest.StartCluster(t, 3, 0)
	r := c.Nodes[0]
	if err := c.Client(r).Do(ctx, "ACL", "SETUSER", "relay", "on", ">pw", "~*", "&*", "+@all", "-cluster|shards", "-cluster|nodes").Err(); err != nil {
		t.Fatal(err)
	}
	cl := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "relay", Password: "pw", Protocol: 2})
	defer cl.Close()
	_, err := bridge.DiscoverPrimaries(ctx, cl, false)
	if !errors.Is(err, bridge.ErrClusterPermission) || !strings.Contains(err.Error(), "+cluster|nodes or +cluster|shards") {
		t.Fatalf("got %v", err)
	}
	t.Logf("%v", err)

	enabled, err := bridge.DetectClusterEnabled(ctx, cl)
	if err != nil || !enabled {
		t.Fatalf("DetectClusterEnabled = %v, %v", enabled, err)
	}
	id, err := bridge.NodeID(ctx, cl)
	if err != nil || id != c.ID(ctx, r) {
		t.Fatalf("NodeID = %q, %v", id, err)
	}
	standalone := bridgetest.StartRedis(t)
	if enabled, err := bridge.DetectClusterEnabled(ctx, standalone.Client(0)); err != nil || enabled {
		t.Fatalf("standalone: DetectClusterEnabled = %v, %v", enabled, err)
	}
}
