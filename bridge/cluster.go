package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisMode says whether keyrelay talks to one node or to every primary of a
// cluster (KEYRELAY_REDIS_MODE).
type RedisMode string

// Redis modes.
const (
	// ModeAuto asks the endpoint (INFO cluster) which of the two it is.
	ModeAuto RedisMode = "auto"
	// ModeStandalone subscribes to the one node the endpoint names.
	ModeStandalone RedisMode = "standalone"
	// ModeCluster subscribes to every primary of the cluster.
	ModeCluster RedisMode = "cluster"
)

// Decode implements envconfig.Decoder.
func (m *RedisMode) Decode(s string) error {
	switch RedisMode(s) {
	case ModeAuto, ModeStandalone, ModeCluster:
		*m = RedisMode(s)
		return nil
	}
	return errors.New("must be auto, standalone or cluster")
}

// ErrClusterPermission is wrapped by the errors of cluster discovery when the
// ACL user may not run the command; the message names the missing
// permission. It is permanent: retrying does not help.
var ErrClusterPermission = errors.New("bridge: the Redis user lacks a cluster permission")

// DetectClusterEnabled reports whether the node c talks to runs with cluster
// mode enabled (INFO cluster: cluster_enabled:1).
func DetectClusterEnabled(ctx context.Context, c redis.Cmdable) (bool, error) {
	info, err := c.Info(ctx, "cluster").Result()
	if err != nil {
		return false, clusterError("info cluster", "+info", err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_enabled:"); ok {
			return v == "1", nil
		}
	}
	return false, nil
}

// NodeID returns the cluster node id of the node c talks to (CLUSTER MYID).
func NodeID(ctx context.Context, c redis.Cmdable) (string, error) {
	id, err := c.ClusterMyID(ctx).Result()
	if err != nil {
		return "", clusterError("cluster myid", "+cluster|myid", err)
	}
	return id, nil
}

// ClusterNode is a cluster primary to subscribe to.
type ClusterNode struct {
	ID   string // cluster node id, stable across address changes
	Addr string // host:port to dial
	Host string // the name a TLS certificate must carry (tls.Config.ServerName)
	Port int
	// Slots is the number of hash slots the node owns; 0 for a primary that
	// owns none yet (just added, or about to be removed).
	Slots  int
	Ranges []SlotRange // the slots, as inclusive ranges
	Role   string      // "master", as the server says it
	Health string      // "online"
}

// SlotRange is an inclusive range of hash slots.
type SlotRange struct{ Start, End int }

// Overlaps reports whether any slot of a is in b.
func Overlaps(a, b []SlotRange) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Start <= y.End && y.Start <= x.End {
				return true
			}
		}
	}
	return false
}

// DiscoverPrimaries returns every reachable primary of the cluster c talks to,
// including those that own no slots, sorted by address. It reads CLUSTER
// NODES, which the server builds from its table of nodes; CLUSTER SHARDS is
// the fallback when NODES is refused. (SHARDS would be the natural choice,
// but on Redis 7.0.15 its reply was seen leaving out a primary that was
// being resharded into, for seconds, while NODES listed it.) tls selects the
// TLS port where the reply carries one. An ACL refusal of both wraps
// ErrClusterPermission.
func DiscoverPrimaries(ctx context.Context, c redis.Cmdable, tls bool) ([]ClusterNode, error) {
	text, err := c.ClusterNodes(ctx).Result()
	if err == nil {
		return ParseClusterNodes(text, tls)
	}
	nodesErr := clusterError("cluster nodes", "+cluster|nodes (or +cluster|shards)", err)
	reply, err := clusterDo(ctx, c, "CLUSTER", "SHARDS")
	if err == nil {
		return ParseClusterShards(reply, tls)
	}
	if unknownSubcommand(err) {
		return nil, nodesErr
	}
	if errors.Is(nodesErr, ErrClusterPermission) {
		return nil, clusterError("cluster nodes and cluster shards", "+cluster|nodes or +cluster|shards", err)
	}
	return nil, nodesErr
}

// clusterDo sends a command as is and returns the raw reply: redis.Cmdable
// has no Do, so it goes through a pipeline when c has none either.
func clusterDo(ctx context.Context, c redis.Cmdable, args ...any) (any, error) {
	if d, ok := c.(interface {
		Do(context.Context, ...any) *redis.Cmd
	}); ok {
		return d.Do(ctx, args...).Result()
	}
	p := c.Pipeline()
	cmd := p.Do(ctx, args...)
	_, _ = p.Exec(ctx) // the error is cmd's
	return cmd.Result()
}

// unknownSubcommand reports whether err is the server saying it does not know
// the subcommand ("ERR unknown subcommand 'shards'. Try CLUSTER HELP.").
func unknownSubcommand(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(strings.ToLower(re.Error()), "unknown subcommand")
}

// clusterError wraps err from command, naming the ACL permission perm when
// the server refused it.
func clusterError(command, perm string, err error) error {
	if redis.IsPermissionError(err) {
		return fmt.Errorf("%w: %s needs %s: %w", ErrClusterPermission, command, perm, err)
	}
	return fmt.Errorf("bridge: %s: %w", command, err)
}

// ParseClusterShards returns the primaries (role master, health online) of a
// CLUSTER SHARDS reply as go-redis returns it from Do(...).Result(): a list of
// shards, each a RESP2 flat list of key, value pairs or a RESP3 map, with
// "slots" (flat list of inclusive start, end pairs) and "nodes" (each node
// likewise). A node is dialled at its hostname, else its endpoint, else its
// ip ("?" and "" count as absent), on its tls-port when tls and the reply
// has one, else its port. A primary without a usable address is left out.
func ParseClusterShards(reply any, tls bool) ([]ClusterNode, error) {
	shards, ok := reply.([]any)
	if !ok {
		return nil, fmt.Errorf("bridge: cluster shards: reply is %T, not a list", reply)
	}
	var out []ClusterNode
	for i, s := range shards {
		shard, err := replyMap(s)
		if err != nil {
			return nil, fmt.Errorf("bridge: cluster shards: shard %d: %w", i, err)
		}
		slots, ranges, err := countSlotPairs(shard["slots"])
		if err != nil {
			return nil, fmt.Errorf("bridge: cluster shards: shard %d: %w", i, err)
		}
		nodes, ok := shard["nodes"].([]any)
		if !ok {
			return nil, fmt.Errorf("bridge: cluster shards: shard %d: nodes is %T, not a list", i, shard["nodes"])
		}
		for j, n := range nodes {
			node, err := replyMap(n)
			if err != nil {
				return nil, fmt.Errorf("bridge: cluster shards: shard %d node %d: %w", i, j, err)
			}
			cn := ClusterNode{
				ID:     replyString(node["id"]),
				Role:   replyString(node["role"]),
				Health: replyString(node["health"]),
				Slots:  slots,
				Ranges: ranges,
			}
			if !isPrimary(cn.Role) || cn.Health != "online" {
				continue
			}
			cn.Host = firstAddress(replyString(node["hostname"]), replyString(node["endpoint"]), replyString(node["ip"]))
			port, err := replyInt(node["port"])
			tlsPort, err2 := replyInt(node["tls-port"])
			if err := errors.Join(err, err2); err != nil {
				return nil, fmt.Errorf("bridge: cluster shards: node %s: %w", cn.ID, err)
			}
			if tls && tlsPort != 0 {
				port = tlsPort
			}
			if cn.Host == "" || port == 0 {
				continue
			}
			cn.Port = port
			cn.Addr = net.JoinHostPort(cn.Host, strconv.Itoa(port))
			out = append(out, cn)
		}
	}
	sortNodes(out)
	return out, nil
}

// ParseClusterNodes returns the primaries of CLUSTER NODES output: lines
// whose flags include master and none of fail, fail?, noaddr, handshake.
// The address field is ip:port@cport[,hostname[,aux=value…]]; the node is
// dialled at the hostname if set, else the ip. Slot fields are single slots
// or inclusive ranges; migration markers ([slot->-id], [slot-<-id]) do not
// count. The server reports the port of the asking connection's kind (the
// TLS port when asked over TLS), so tls only matters where the address field
// carries a tls-port= aux field.
func ParseClusterNodes(text string, tls bool) ([]ClusterNode, error) {
	var out []ClusterNode
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("bridge: cluster nodes: %d fields, not 8 or more: %q", len(f), strings.TrimSpace(line))
		}
		flags := strings.Split(f[2], ",")
		if !slices.ContainsFunc(flags, isPrimary) || slices.ContainsFunc(flags, func(s string) bool {
			return s == "fail" || s == "fail?" || s == "noaddr" || s == "handshake"
		}) {
			continue
		}
		hostPort, aux, _ := strings.Cut(f[1], ",")
		hostPort, _, _ = strings.Cut(hostPort, "@")
		ip, portText, err := net.SplitHostPort(hostPort)
		if err != nil {
			return nil, fmt.Errorf("bridge: cluster nodes: node %s: address %q: %w", f[0], f[1], err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, fmt.Errorf("bridge: cluster nodes: node %s: port %q: %w", f[0], portText, err)
		}
		var hostname string
		for i, a := range strings.Split(aux, ",") {
			if k, v, ok := strings.Cut(a, "="); ok {
				if p, err := strconv.Atoi(v); k == "tls-port" && tls && err == nil && p != 0 {
					port = p
				}
			} else if i == 0 {
				hostname = a
			}
		}
		slots := 0
		var ranges []SlotRange
		for _, s := range f[8:] {
			r, err := slotField(s)
			if err != nil {
				return nil, fmt.Errorf("bridge: cluster nodes: node %s: %w", f[0], err)
			}
			if r != nil {
				slots += r.End - r.Start + 1
				ranges = append(ranges, *r)
			}
		}
		host := firstAddress(hostname, ip)
		if host == "" || port == 0 {
			continue
		}
		out = append(out, ClusterNode{
			ID:     f[0],
			Addr:   net.JoinHostPort(host, strconv.Itoa(port)),
			Host:   host,
			Port:   port,
			Slots:  slots,
			Ranges: ranges,
			Role:   "master",
			Health: "online",
		})
	}
	sortNodes(out)
	return out, nil
}

// isPrimary reports whether a role or flag names a primary; Valkey may say
// "primary" where Redis says "master".
func isPrimary(role string) bool { return role == "master" || role == "primary" }

// firstAddress returns the first candidate that is neither empty nor "?".
func firstAddress(candidates ...string) string {
	for _, c := range candidates {
		if c != "" && c != "?" {
			return c
		}
	}
	return ""
}

func sortNodes(nodes []ClusterNode) {
	slices.SortFunc(nodes, func(a, b ClusterNode) int {
		return cmp.Or(cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.ID, b.ID))
	})
}

// slotField returns the slots of one CLUSTER NODES slot field: "5" or
// "0-5460"; a migration marker "[…]" holds none (nil).
func slotField(s string) (*SlotRange, error) {
	if strings.HasPrefix(s, "[") {
		return nil, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	start, err1 := strconv.Atoi(lo)
	end, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || end < start {
		return nil, fmt.Errorf("slot field %q", s)
	}
	return &SlotRange{start, end}, nil
}

// countSlotPairs counts the slots of a CLUSTER SHARDS "slots" list: start,
// end pairs, inclusive.
func countSlotPairs(v any) (int, []SlotRange, error) {
	list, ok := v.([]any)
	if !ok && v != nil {
		return 0, nil, fmt.Errorf("slots is %T, not a list", v)
	}
	if len(list)%2 != 0 {
		return 0, nil, fmt.Errorf("slots has %d values, not pairs", len(list))
	}
	n := 0
	var ranges []SlotRange
	for i := 0; i < len(list); i += 2 {
		start, err1 := replyInt(list[i])
		end, err2 := replyInt(list[i+1])
		if err1 != nil || err2 != nil || end < start {
			return 0, nil, fmt.Errorf("slot range %v-%v", list[i], list[i+1])
		}
		n += end - start + 1
		ranges = append(ranges, SlotRange{start, end})
	}
	return n, ranges, nil
}

// replyMap turns a RESP2 flat key, value list or a RESP3 map into a map keyed
// by string.
func replyMap(v any) (map[string]any, error) {
	switch v := v.(type) {
	case []any:
		if len(v)%2 != 0 {
			return nil, fmt.Errorf("%d values, not key, value pairs", len(v))
		}
		m := make(map[string]any, len(v)/2)
		for i := 0; i < len(v); i += 2 {
			k, ok := v[i].(string)
			if !ok {
				return nil, fmt.Errorf("key is %T, not a string", v[i])
			}
			m[k] = v[i+1]
		}
		return m, nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			s, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("key is %T, not a string", k)
			}
			m[s] = x
		}
		return m, nil
	case map[string]any:
		return v, nil
	}
	return nil, fmt.Errorf("%T is neither a list of pairs nor a map", v)
}

// replyString returns v if it is a string, else "".
func replyString(v any) string {
	s, _ := v.(string)
	return s
}

// replyInt converts an integer reply (or its decimal text) to int; nil is 0.
func replyInt(v any) (int, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return int(v), nil
	case int:
		return v, nil
	case string:
		return strconv.Atoi(v)
	}
	return 0, fmt.Errorf("%T is not an integer", v)
}
