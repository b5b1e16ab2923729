package bridgetest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

// Cluster is a Redis Cluster started for one test. Its methods fail the
// test instead of returning errors.
type Cluster struct {
	*servers.Cluster
	t testing.TB
}

// StartCluster starts primaries×(1+replicasPer) redis-server nodes with
// cluster mode enabled and notify-keyspace-events KEA unless args set it,
// plus any extra args given to every node, and joins them with redis-cli
// --cluster create. It returns once every node agrees on the slot map; the
// nodes are stopped when the test ends.
func StartCluster(t testing.TB, primaries, replicasPer int, args ...string) *Cluster {
	t.Helper()
	c, err := servers.StartCluster(t.TempDir(), primaries, replicasPer, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(c.Stop)
	return &Cluster{Cluster: c, t: t}
}

// Client returns a single-node go-redis client (RESP2) for r, closed with
// the test.
func (c *Cluster) Client(r *servers.Redis) *redis.Client {
	cl := c.Cluster.Client(r)
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// ID returns r's cluster node id.
func (c *Cluster) ID(ctx context.Context, r *servers.Redis) string {
	c.t.Helper()
	id, err := c.Cluster.ID(ctx, r)
	if err != nil {
		c.t.Fatalf("%v", err)
	}
	return id
}

// Primaries returns the members that say they are primaries.
func (c *Cluster) Primaries(ctx context.Context) []*servers.Redis {
	c.t.Helper()
	p, err := c.Cluster.Primaries(ctx)
	if err != nil {
		c.t.Fatalf("%v", err)
	}
	return p
}

// AddNode starts a node and joins it as an empty primary (asReplicaOf "")
// or as a replica of the primary asReplicaOf names (address or node id).
func (c *Cluster) AddNode(ctx context.Context, asReplicaOf string) *servers.Redis {
	c.t.Helper()
	r, err := c.Cluster.AddNode(ctx, asReplicaOf)
	if err != nil {
		c.t.Fatalf("%v", err)
	}
	return r
}

// DelNode removes r from the cluster; it keeps running until the test ends.
func (c *Cluster) DelNode(ctx context.Context, r *servers.Redis) {
	c.t.Helper()
	if err := c.Cluster.DelNode(ctx, r); err != nil {
		c.t.Fatalf("%v", err)
	}
}

// Reshard moves n slots from one primary to another.
func (c *Cluster) Reshard(ctx context.Context, from, to *servers.Redis, n int) {
	c.t.Helper()
	if err := c.Cluster.Reshard(ctx, from, to, n); err != nil {
		c.t.Fatalf("%v", err)
	}
}

// Failover promotes replica with CLUSTER FAILOVER and waits until every node
// agrees.
func (c *Cluster) Failover(ctx context.Context, replica *servers.Redis) {
	c.t.Helper()
	if err := c.Cluster.Failover(ctx, replica); err != nil {
		c.t.Fatalf("%v", err)
	}
}

// Wait waits until every member agrees on the slot map.
func (c *Cluster) Wait(ctx context.Context) {
	c.t.Helper()
	if err := c.Cluster.Wait(ctx); err != nil {
		c.t.Fatalf("%v", err)
	}
}
