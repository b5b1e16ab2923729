package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of redis-server processes on loopback, built
// with redis-cli --cluster. Its methods change the topology the way an
// operator does (add-node, del-node, reshard, manual failover) and return
// once every node agrees on the result.
type Cluster struct {
	// Nodes are the members, in the order they were started: the first
	// primaries×(1+replicasPer) from StartCluster, then those AddNode
	// added. DelNode removes a node from Nodes (it keeps running, as after a
	// real del-node, until Stop).
	Nodes []*Redis

	dir      string
	args     []string // every node's redis-server arguments
	password string   // --requirepass, if args set it
	started  []*Redis // every node ever started, for Stop
}

// clusterTimeout bounds each wait for the cluster to settle.
const clusterTimeout = 20 * time.Second

// StartCluster starts primaries×(1+replicasPer) redis-server nodes, each in
// its own subdirectory of dir (which must exist) with cluster mode enabled
// (nodes.conf, node timeout 2 s, announced as 127.0.0.1, bus port chosen
// free, no diskless sync delay) and notify-keyspace-events KEA unless args
// set those, plus any extra args given to every node (--requirepass also
// sets masterauth and is used by the harness itself). It joins them with
// redis-cli --cluster create (replicasPer replicas per primary) and returns
// once cluster_state is ok on every node and every node knows every node and
// agrees on the slot map. The caller stops it with Stop.
func StartCluster(dir string, primaries, replicasPer int, args ...string) (*Cluster, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, fmt.Errorf("redis-cli is not installed (make test installs it): %w", err)
	}
	if primaries < 1 || replicasPer < 0 {
		return nil, fmt.Errorf("a cluster needs at least 1 primary and 0 or more replicas, not %d and %d", primaries, replicasPer)
	}
	c := &Cluster{dir: dir, args: clusterArgs(args)}
	if i := slices.Index(args, "--requirepass"); i >= 0 && i+1 < len(args) {
		c.password = args[i+1]
	}
	for range primaries * (1 + replicasPer) {
		r, err := c.startNode()
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
	}
	cli := []string{"--cluster", "create"}
	for _, r := range c.Nodes {
		cli = append(cli, r.Addr)
	}
	cli = append(cli, "--cluster-replicas", strconv.Itoa(replicasPer), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if _, err := c.redisCLI(ctx, cli...); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.Wait(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// clusterArgs puts the cluster settings in front of args, leaving out those
// args set themselves.
func clusterArgs(args []string) []string {
	var out []string
	for _, kv := range [][2]string{
		{"--cluster-enabled", "yes"},
		{"--cluster-config-file", "nodes.conf"},
		{"--cluster-node-timeout", "2000"},
		{"--cluster-announce-ip", "127.0.0.1"},
		// A replica's first sync otherwise waits 5 s for more replicas.
		{"--repl-diskless-sync-delay", "0"},
	} {
		if !containsArg(args, kv[0]) {
			out = append(out, kv[0], kv[1])
		}
	}
	if i := slices.Index(args, "--requirepass"); i >= 0 && i+1 < len(args) && !containsArg(args, "--masterauth") {
		out = append(out, "--masterauth", args[i+1])
	}
	return append(out, args...)
}

// startNode starts one node, not yet part of the cluster, in a new
// subdirectory of c.dir. The cluster bus gets its own free port rather than
// port+10000, which may be out of range.
func (c *Cluster) startNode() (*Redis, error) {
	d, err := os.MkdirTemp(c.dir, "node-")
	if err != nil {
		return nil, fmt.Errorf("cluster node directory: %w", err)
	}
	args := c.args
	if !containsArg(args, "--cluster-port") {
		bus, err := FreePort()
		if err != nil {
			return nil, err
		}
		args = append(slices.Clone(args), "--cluster-port", strconv.Itoa(bus))
	}
	r, err := StartRedis(d, args...)
	if err != nil {
		return nil, err
	}
	c.started = append(c.started, r)
	return r, nil
}

// Stop kills every node this cluster started, members or not.
func (c *Cluster) Stop() {
	for _, r := range c.started {
		r.Stop()
	}
}

// Client returns a single-node go-redis client (RESP2) for r, with the
// cluster's password; the caller closes it.
func (c *Cluster) Client(r *Redis) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr, Password: c.password, Protocol: 2})
}

// ID returns r's cluster node id (CLUSTER MYID).
func (c *Cluster) ID(ctx context.Context, r *Redis) (string, error) {
	cl := c.Client(r)
	defer cl.Close()
	id, err := cl.ClusterMyID(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("cluster myid on %s: %w", r.Addr, err)
	}
	return id, nil
}

// Primaries returns the members that say (ROLE) they are primaries, in the
// order of Nodes.
func (c *Cluster) Primaries(ctx context.Context) ([]*Redis, error) {
	var out []*Redis
	for _, r := range c.Nodes {
		role, err := c.role(ctx, r)
		if err != nil {
			return nil, err
		}
		if role == "master" {
			out = append(out, r)
		}
	}
	return out, nil
}

// role returns "master" or "slave", from ROLE.
func (c *Cluster) role(ctx context.Context, r *Redis) (string, error) {
	cl := c.Client(r)
	defer cl.Close()
	v, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return "", fmt.Errorf("role of %s: %v", r.Addr, err)
	}
	role, _ := v[0].(string)
	return role, nil
}

// AddNode starts a node and joins it with redis-cli --cluster add-node:
// as an empty primary (no slots) when asReplicaOf is empty, else as a
// replica of the primary asReplicaOf names (its address or node id). It
// returns once every node knows the new one and agrees on the slot map (and,
// for a replica, its replication link is up).
func (c *Cluster) AddNode(ctx context.Context, asReplicaOf string) (*Redis, error) {
	if len(c.Nodes) == 0 {
		return nil, errors.New("add-node: the cluster has no members")
	}
	primaryID := asReplicaOf
	if strings.Contains(asReplicaOf, ":") {
		i := slices.IndexFunc(c.Nodes, func(r *Redis) bool { return r.Addr == asReplicaOf })
		if i < 0 {
			return nil, fmt.Errorf("add-node: %s is not a member", asReplicaOf)
		}
		id, err := c.ID(ctx, c.Nodes[i])
		if err != nil {
			return nil, err
		}
		primaryID = id
	}
	r, err := c.startNode()
	if err != nil {
		return nil, err
	}
	cli := []string{"--cluster", "add-node", r.Addr, c.Nodes[0].Addr}
	if primaryID != "" {
		cli = append(cli, "--cluster-slave", "--cluster-master-id", primaryID)
	}
	if _, err := c.redisCLI(ctx, cli...); err != nil {
		r.Stop()
		return nil, err
	}
	c.Nodes = append(c.Nodes, r)
	if err := c.Wait(ctx); err != nil {
		return nil, err
	}
	if primaryID != "" {
		if err := c.waitLinkUp(ctx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// DelNode removes r from the cluster with redis-cli --cluster del-node (a
// primary must own no slots: Reshard them away first) and from Nodes, and
// returns once the remaining members agree. Like the real command it leaves
// the node running (reset, out of the cluster) until Stop.
func (c *Cluster) DelNode(ctx context.Context, r *Redis) error {
	i := slices.Index(c.Nodes, r)
	if i < 0 {
		return fmt.Errorf("del-node: %s is not a member", r.Addr)
	}
	id, err := c.ID(ctx, r)
	if err != nil {
		return err
	}
	others := slices.Delete(slices.Clone(c.Nodes), i, i+1)
	if len(others) == 0 {
		return errors.New("del-node: cannot remove the last member")
	}
	if _, err := c.redisCLI(ctx, "--cluster", "del-node", others[0].Addr, id); err != nil {
		return err
	}
	c.Nodes = others
	return c.Wait(ctx)
}

// Reshard moves n slots from one primary to another with redis-cli
// --cluster reshard (keys move with MIGRATE) and returns once every node
// agrees on the new slot map.
func (c *Cluster) Reshard(ctx context.Context, from, to *Redis, n int) error {
	fromID, err := c.ID(ctx, from)
	if err != nil {
		return err
	}
	toID, err := c.ID(ctx, to)
	if err != nil {
		return err
	}
	if _, err := c.redisCLI(ctx, "--cluster", "reshard", from.Addr, "--cluster-from", fromID,
		"--cluster-to", toID, "--cluster-slots", strconv.Itoa(n), "--cluster-yes"); err != nil {
		return err
	}
	return c.Wait(ctx)
}

// Failover runs CLUSTER FAILOVER on replica (after its replication link is
// up) and returns once it says it is a primary and every node agrees on the
// slot map.
func (c *Cluster) Failover(ctx context.Context, replica *Redis) error {
	if err := c.waitLinkUp(ctx, replica); err != nil {
		return err
	}
	cl := c.Client(replica)
	defer cl.Close()
	if err := cl.ClusterFailover(ctx).Err(); err != nil {
		return fmt.Errorf("cluster failover on %s: %w", replica.Addr, err)
	}
	if err := c.poll(ctx, "failover of "+replica.Addr, func() (bool, string) {
		role, err := c.role(ctx, replica)
		if err != nil {
			return false, err.Error()
		}
		return role == "master", "role " + role
	}); err != nil {
		return err
	}
	return c.Wait(ctx)
}

// waitLinkUp waits until replica reports master_link_status:up.
func (c *Cluster) waitLinkUp(ctx context.Context, replica *Redis) error {
	cl := c.Client(replica)
	defer cl.Close()
	return c.poll(ctx, "replication link of "+replica.Addr, func() (bool, string) {
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(info, "master_link_status:up"), info
	})
}

// Wait returns once every member says cluster_state:ok, knows every member,
// and all members agree on each node's role, primary and slots.
func (c *Cluster) Wait(ctx context.Context) error {
	return c.poll(ctx, "cluster to settle", func() (bool, string) {
		var first string
		for _, r := range c.Nodes {
			cl := c.Client(r)
			info, err := cl.ClusterInfo(ctx).Result()
			nodes, err2 := cl.ClusterNodes(ctx).Result()
			cl.Close()
			if err = errors.Join(err, err2); err != nil {
				return false, fmt.Sprintf("%s: %v", r.Addr, err)
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return false, r.Addr + ": " + info
			}
			view, n := slotMap(nodes)
			if n != len(c.Nodes) {
				return false, fmt.Sprintf("%s knows %d nodes, not %d:\n%s", r.Addr, n, len(c.Nodes), nodes)
			}
			if first == "" {
				first = view
			} else if view != first {
				return false, fmt.Sprintf("%s disagrees:\n%s\nversus\n%s", r.Addr, view, first)
			}
		}
		return true, ""
	})
}

// slotMap reduces CLUSTER NODES to what every node must agree on: for each
// node its id, role, primary and slots, sorted; and the number of nodes that
// are not failed.
func slotMap(nodes string) (string, int) {
	var lines []string
	for l := range strings.Lines(nodes) {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		if slices.ContainsFunc(flags, func(s string) bool {
			return s == "fail" || s == "fail?" || s == "handshake" || s == "noaddr"
		}) {
			continue
		}
		role := "replica"
		if slices.Contains(flags, "master") {
			role = "primary"
		}
		lines = append(lines, strings.Join(append([]string{f[0], role, f[3]}, f[8:]...), " "))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), len(lines)
}

// poll calls ok every 50 ms until it reports true, failing with its last
// explanation when ctx ends or clusterTimeout passes.
func (c *Cluster) poll(ctx context.Context, what string, ok func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	for {
		done, why := ok()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w: %s", what, ctx.Err(), why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redisCLI runs redis-cli with args and returns its output, or an error
// carrying it.
func (c *Cluster) redisCLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "redis-cli", args...)
	cmd.Env = os.Environ()
	if c.password != "" {
		cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+c.password)
	}
	cmd.Dir = c.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
