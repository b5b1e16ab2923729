package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// TopologyConfig configures the following of a cluster's primaries.
type TopologyConfig struct {
	// Seed is the configuration endpoint (or any node): its options, with
	// the address changed, serve every node (credentials, TLS with the
	// node's name as ServerName).
	Seed *redis.Options
	// Refresh is how often the topology is read when all is well.
	Refresh time.Duration
	// FastRefresh is how often it is read while a node is not subscribed
	// or a lost primary's slots have no new primary yet; 0: 250 ms.
	FastRefresh time.Duration
	// NotReadyAfter is how many discoveries in a row may fail before
	// Ready fails (the subscriptions may all be fine); 0: 3.
	NotReadyAfter int
	// Subscriber is the template of every node's subscriber; Options,
	// Source, NodeID, InitialGap and OnBreak are set per node.
	Subscriber SubscriberConfig
}

// Topology subscribes to every primary of a cluster and follows the
// topology: a subscriber for each new primary (slot-less ones included,
// since writes reach an importing node through ASK), a departure for each
// node demoted, removed or moved. It reads the topology every Refresh, at
// once when a subscription breaks or a node is demoted, and fast until
// every shard has a confirmed primary again.
//
// Gap records: "failover" (source: the new primary) from the moment a lost
// primary was last listened to until its successor's subscription is
// confirmed; "topology" for a primary first seen already owning slots after
// the start (since: the previous refresh), and for a lost primary whose
// slots went to nodes already subscribed. Slot-less primaries coming and
// going are not gaps.
type Topology struct {
	cfg     TopologyConfig
	pipe    *Pipeline
	relay   *Relay
	log     *slog.Logger
	metrics *Metrics
	tls     bool

	kick chan struct{}

	everApplied bool // apply ran to its end once (the start's subscriptions exist)

	mu        sync.Mutex
	members   map[string]*member // by node id
	lost      map[string]lostPrimary
	started   bool
	lostN     int   // len(lost), for Ready
	failures  int   // discoveries failed in a row
	lastError error // of the last failed discovery
}

// member is a primary keyrelay subscribes to.
type member struct {
	node ClusterNode
	// since is the last anchor of an earlier subscriber of the node whose
	// Run ended on its own (zero if none): the window a restart closes.
	since time.Time
	// missing counts the topology reads in a row that did not list the
	// node. One read is not believed (a node being resharded was seen
	// missing from one CLUSTER SHARDS reply, Redis 7.0.15): it leaves after
	// two, or at once when its own subscriber found it demoted.
	missing int
	// firstSeen is when the node was first read as a primary; endedAt when
	// its last subscriber was (re)started after ending on its own.
	firstSeen, endedAt time.Time
}

// lostPrimary is a primary that owned slots when it left; its successor
// closes the window.
type lostPrimary struct {
	node  ClusterNode
	since time.Time
	// live: keyrelay listened to it until it left (demoted or unlisted
	// while subscribed). Its slots going to primaries already subscribed
	// then means they were migrated (an emptied primary becomes a replica
	// of the node that took its last slot), not lost.
	live bool
}

// NewTopology returns a Topology feeding pipe's relay; Run starts it.
func NewTopology(cfg TopologyConfig, pipe *Pipeline, relay *Relay, log *slog.Logger, m *Metrics) *Topology {
	if cfg.FastRefresh <= 0 {
		cfg.FastRefresh = 250 * time.Millisecond
	}
	if cfg.NotReadyAfter <= 0 {
		cfg.NotReadyAfter = 3
	}
	return &Topology{cfg: cfg, pipe: pipe, relay: relay, log: log.With("mode", "cluster"), metrics: m,
		tls: cfg.Seed.TLSConfig != nil, kick: make(chan struct{}, 1),
		members: map[string]*member{}, lost: map[string]lostPrimary{}}
}

// Run follows the topology until ctx ends. It returns an error only when the
// first discovery is refused for good (a missing ACL permission).
func (t *Topology) Run(ctx context.Context) error {
	seed := redis.NewClient(t.nodeOptions(t.cfg.Seed, ""))
	defer seed.Close()
	var prev time.Time // the last successful refresh
	lastKind := ""
	for {
		nodes, err := t.discover(ctx, seed)
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if errors.Is(err, ErrClusterPermission) && !t.isStarted() {
				return err
			}
			t.metrics.DiscoveryErrors.Inc()
			t.mu.Lock()
			t.failures++
			t.lastError = err
			t.mu.Unlock()
			if kind := errorKind(err); kind != lastKind {
				lastKind = kind
				t.log.Warn("cluster: reading the topology failed; the subscriptions go on", "err", err)
			}
		default:
			if lastKind != "" {
				t.log.Info("cluster: topology read again")
				lastKind = ""
			}
			t.apply(nodes, prev)
			prev = now
		}
		wait := t.cfg.Refresh
		if t.unsettled() {
			wait = t.cfg.FastRefresh
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.kick:
		case <-time.After(wait):
		}
	}
}

// Kick makes Run read the topology at once.
func (t *Topology) Kick() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (t *Topology) isStarted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.started
}

// discover reads the primaries from the seed, else from the nodes it
// already knows.
func (t *Topology) discover(ctx context.Context, seed *redis.Client) ([]ClusterNode, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := DiscoverPrimaries(dctx, seed, t.tls)
	if errors.Is(err, ErrClusterPermission) || (err == nil && ownsSlots(nodes)) {
		return nodes, err
	}
	// A seed whose view owns no slot is not the cluster keyrelay follows
	// (a node removed with del-node keeps running, alone): ask the nodes
	// keyrelay knows before believing it.
	seedNodes := nodes
	errs := []error{fmt.Errorf("seed %s: %w", t.cfg.Seed.Addr, err)}
	if err == nil {
		errs = []error{fmt.Errorf("seed %s: its view owns no slot", t.cfg.Seed.Addr)}
	}
	t.mu.Lock()
	known := make([]ClusterNode, 0, len(t.members))
	for _, m := range t.members {
		known = append(known, m.node)
	}
	t.mu.Unlock()
	for _, n := range known {
		c := redis.NewClient(t.nodeOptions(t.cfg.Seed, n.Addr, n.Host))
		nodes, err := DiscoverPrimaries(dctx, c, t.tls)
		c.Close()
		if err == nil && ownsSlots(nodes) {
			return nodes, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Addr, err))
		}
	}
	if seedNodes != nil {
		return seedNodes, nil // a cluster with no slots assigned yet
	}
	return nil, errors.Join(errs...)
}

// ownsSlots reports whether any of nodes owns a slot.
func ownsSlots(nodes []ClusterNode) bool {
	for _, n := range nodes {
		if n.Slots > 0 {
			return true
		}
	}
	return false
}

// nodeOptions returns seed's options for the node at addr ("" keeps the
// seed's), with host as the TLS ServerName.
func (t *Topology) nodeOptions(seed *redis.Options, addr string, host ...string) *redis.Options {
	o := NodeOptions(seed, ClusterNode{Addr: addr})
	if addr == "" {
		o.Addr = seed.Addr
	}
	if o.TLSConfig != nil && len(host) > 0 {
		o.TLSConfig.ServerName = host[0]
	}
	return o
}

// NodeOptions returns the seed's options (credentials, TLS) for cluster
// node n: its address, and its host name as the TLS ServerName (the
// certificate of each ElastiCache node carries its own name; verification
// is never turned off).
func NodeOptions(seed *redis.Options, n ClusterNode) *redis.Options {
	o := *seed
	o.Protocol = 2
	o.MaxRetries = -1
	o.Addr = n.Addr
	if o.TLSConfig != nil {
		o.TLSConfig = o.TLSConfig.Clone()
		if n.Host != "" {
			o.TLSConfig.ServerName = n.Host
		}
	}
	return &o
}

// apply reconciles the subscriptions with the primaries just read.
func (t *Topology) apply(nodes []ClusterNode, prev time.Time) {
	t.mu.Lock()
	first := !t.started
	t.started = true
	t.failures, t.lastError = 0, nil
	t.mu.Unlock()
	t.metrics.Primaries.Set(float64(len(nodes)))
	listed := make(map[string]bool, len(nodes))
	var added []ClusterNode
	for _, n := range nodes {
		listed[n.ID] = true
		m := t.members[n.ID]
		if m != nil {
			m.missing = 0
		}
		switch {
		case m == nil:
			added = append(added, n)
		case m.node.Addr != n.Addr:
			// The node moved: leave the old address, subscribe the new one.
			sub := t.pipe.Remove(n.ID)
			t.log.Warn("cluster: primary changed address", "node_id", n.ID, "old", m.node.Addr, "new", n.Addr)
			t.start(n, &InitialGap{Reason: GapReconnect, Since: finalOr(sub, m.since, prev)})
			t.members[n.ID] = &member{node: n, firstSeen: time.Now()}
		default:
			m.node = n
			if ended, err := t.pipe.Ended(n.ID); ended {
				// Its subscriber left on its own (demoted, another node
				// answered, or refused keyrelay) but the cluster still
				// lists it as a primary: try again, closing the window
				// when it works. A refusal is retried once per refresh
				// interval, not at every fast read.
				if !errors.Is(err, ErrNodeLeft) && time.Since(m.endedAt) < t.cfg.Refresh {
					break
				}
				sub := t.pipe.Remove(n.ID)
				m.since = finalOr(sub, m.since, m.firstSeen)
				t.log.Info("cluster: subscribing again to a node still listed as a primary", "node", n.Addr, "err", err)
				t.start(n, &InitialGap{Reason: GapReconnect, Since: m.since})
				m.endedAt = time.Now()
			}
		}
	}
	// Departures first, so that their slots can be matched with the new
	// primaries that took them.
	for id, m := range t.members {
		if listed[id] {
			continue
		}
		m.missing++
		succeeded := false // a new primary owns its slots: believe the read
		for _, n := range added {
			succeeded = succeeded || Overlaps(m.node.Ranges, n.Ranges)
		}
		if ended, _ := t.pipe.Ended(id); m.missing < 2 && !ended && !succeeded {
			continue
		}
		sub := t.pipe.Remove(id)
		delete(t.members, id)
		since := finalOr(sub, m.since, prev)
		if m.node.Slots == 0 {
			t.log.Info("cluster: slot-less primary left; not subscribed any more", "node", m.node.Addr, "node_id", id)
			continue
		}
		l := lostPrimary{node: m.node, since: since, live: sub != nil && sub.EndedSubscribed()}
		t.lost[id] = l
		level := slog.LevelWarn
		if l.live {
			level = slog.LevelInfo // a slot migration ends like this
		}
		t.log.Log(context.Background(), level, "cluster: primary left while it last owned slots", "node", m.node.Addr,
			"node_id", id, "slots", m.node.Slots, "since", since, "listened_until_it_left", l.live)
	}
	for _, n := range added {
		var gap *InitialGap
		switch {
		case first:
		case n.Slots > 0:
			gap = &InitialGap{Reason: GapTopology, Since: prev}
			for id, l := range t.lost {
				if Overlaps(l.node.Ranges, n.Ranges) {
					if gap.Reason != GapFailover || l.since.Before(gap.Since) {
						gap = &InitialGap{Reason: GapFailover, Since: l.since}
					}
					delete(t.lost, id)
					t.log.Warn("cluster: failover", "old", l.node.Addr, "new", n.Addr, "since", l.since)
				}
			}
		}
		t.members[n.ID] = &member{node: n, firstSeen: time.Now()}
		t.log.Info("cluster: subscribing to primary", "node", n.Addr, "node_id", n.ID, "slots", n.Slots)
		t.start(n, gap)
	}
	// A lost primary whose slots all went to primaries subscribed before
	// this refresh has no successor to close its window: close it now.
	for id, l := range t.lost {
		if t.covered(l.node.Ranges, added) {
			if l.live {
				t.log.Info("cluster: primary left after its slots moved to subscribed primaries; nothing missed",
					"node", l.node.Addr, "node_id", id)
			} else {
				t.relay.EmitGap(l.node.Addr, GapTopology, l.since, time.Now())
			}
			delete(t.lost, id)
		}
	}
	t.mu.Lock()
	t.lostN = len(t.lost)
	t.mu.Unlock()
	t.everApplied = true
}

// covered reports whether every slot of ranges belongs to a member that is
// not among added.
func (t *Topology) covered(ranges []SlotRange, added []ClusterNode) bool {
	isNew := map[string]bool{}
	for _, n := range added {
		isNew[n.ID] = true
	}
	for _, r := range ranges {
		for slot := r.Start; slot <= r.End; slot++ {
			owned := false
			for id, m := range t.members {
				if !isNew[id] && Overlaps(m.node.Ranges, []SlotRange{{slot, slot}}) {
					owned = true
					break
				}
			}
			if !owned {
				return false
			}
		}
	}
	return true
}

// start subscribes to node n.
func (t *Topology) start(n ClusterNode, gap *InitialGap) {
	cfg := t.cfg.Subscriber
	cfg.Options = t.nodeOptions(t.cfg.Seed, n.Addr, n.Host)
	cfg.Source = n.Addr
	cfg.NodeID = n.ID
	cfg.InitialGap = gap
	cfg.OnBreak = t.Kick
	critical := !t.isStarted() || !t.everApplied
	if cfg.AliveKey != "" {
		// One alive key per node, on a slot the node owns (none for a
		// slot-less primary: no key can live there).
		if tag := HashTagFor(n.Ranges); tag != "" {
			cfg.AliveKey += ":{" + tag + "}"
		} else {
			cfg.AliveKey = ""
		}
	}
	sub := NewSubscriber(cfg, t.relay, t.log, t.metrics)
	if critical {
		t.pipe.Add(n.ID, sub)
	} else {
		// A node that joins later and refuses keyrelay (credentials, a
		// permission) leaves that node unheard, reported by /readyz and
		// the log; the other primaries go on.
		t.pipe.AddOptional(n.ID, sub)
	}
}

// finalOr returns the final anchor of sub if it has one, else since, else
// fallback.
func finalOr(sub *Subscriber, since, fallback time.Time) time.Time {
	if sub != nil {
		if a := sub.FinalAnchor(); !a.IsZero() {
			return a
		}
	}
	if !since.IsZero() {
		return since
	}
	return fallback
}

// unsettled reports whether a lost primary awaits its successor or a
// member is not subscribed: read the topology fast.
func (t *Topology) unsettled() bool {
	for _, m := range t.members {
		if m.missing > 0 {
			return true
		}
	}
	return !t.isStarted() || len(t.lost) > 0 || t.pipe.Ready() != nil
}

// Ready reports whether the topology was read, recently enough, and every
// shard has a primary keyrelay listens to.
func (t *Topology) Ready() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !t.started:
		if t.lastError != nil {
			return fmt.Errorf("cluster topology not read yet: %w", t.lastError)
		}
		return errors.New("cluster topology not read yet")
	case t.failures >= t.cfg.NotReadyAfter:
		return fmt.Errorf("cluster topology could not be read %d times in a row: %w", t.failures, t.lastError)
	case t.lostN > 0:
		return fmt.Errorf("%d lost primaries have no successor yet", t.lostN)
	}
	return nil
}

// Stop reports, as gap records, the windows still open at a stop: lost
// primaries whose successor never came.
func (t *Topology) Stop() {
	now := time.Now()
	for id, l := range t.lost {
		t.relay.EmitGap(l.node.Addr, GapStop, l.since, now)
		delete(t.lost, id)
	}
}
