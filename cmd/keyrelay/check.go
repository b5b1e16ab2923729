package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyrelay/keyrelay/bridge"
)

// runCheck reports, line by line, whether Redis is reachable and
// authenticated, whether notifications flow for the configured events, and
// whether each sink is reachable. It returns an error unless all pass.
func runCheck(ctx context.Context, cfg *Config, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	failed := 0
	report := func(ok bool, what, detail string) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(out, "%s %s", mark, what)
		if detail != "" {
			fmt.Fprintf(out, ": %s", detail)
		}
		fmt.Fprintln(out)
	}

	opt, _ := cfg.redisOptions()
	opt.Protocol = 2
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opt.DisableIdentity = true
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	err := rdb.Ping(pctx).Err()
	pcancel()
	if err != nil {
		report(false, "redis "+opt.Addr+" reachable and authenticated", explainRedisError(err))
	} else {
		report(true, "redis "+opt.Addr+" reachable and authenticated", "")
		warn := func(what, detail string) { fmt.Fprintf(out, "warn %s: %s\n", what, detail) }
		mode := bridge.ModeStandalone
		if checkClusterMode(ctx, cfg, rdb, report) {
			mode = bridge.ModeCluster
			checkCluster(ctx, cfg, opt, rdb, out, report, warn)
		} else {
			checkRole(ctx, rdb, report)
			checkNotifications(ctx, cfg, rdb, fmt.Sprintf("%scheck:%d", cfg.Prefix(), time.Now().UnixNano()), "", report)
			checkMarkers(ctx, cfg, rdb, report, warn)
			checkAliveKey(ctx, cfg, rdb, cfg.Prefix()+"check:alive", report, warn)
		}
		if cfg.HA {
			checkHA(ctx, cfg, opt, mode, report)
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sinks, err := buildSinks(ctx, cfg, io.Discard, log)
	if err != nil {
		report(false, "sinks", err.Error())
	}
	for _, s := range sinks {
		if err := s.Check(ctx); err != nil {
			report(false, "sink "+s.Name(), err.Error())
		} else {
			report(true, "sink "+s.Name(), "")
		}
		_ = s.Close(ctx)
	}
	if failed > 0 {
		return fmt.Errorf("check: %d of the checks above failed", failed)
	}
	fmt.Fprintln(out, "all checks passed")
	return nil
}

func checkRole(ctx context.Context, rdb *redis.Client, report func(bool, string, string)) {
	r, err := rdb.Do(ctx, "ROLE").Slice()
	if err != nil || len(r) == 0 {
		return // some engines restrict ROLE; nothing to conclude
	}
	if role, _ := r[0].(string); role != "master" {
		report(false, "endpoint is a primary", fmt.Sprintf("it is a %s: use the primary endpoint, not a reader or replica endpoint (replicas turn expired into del)", role))
		return
	}
	report(true, "endpoint is a primary", "")
}

// eventClass maps event names to the notify-keyspace-events class flag that
// enables them, and the probe that can prove it.
var eventClass = map[string]byte{
	"del": 'g', "expire": 'g', "rename_from": 'g', "rename_to": 'g', "move_from": 'g', "move_to": 'g',
	"copy_to": 'g', "restore": 'g', "persist": 'g', "sortstore": 'g',
	"set": '$', "setrange": '$', "incrby": '$', "incrbyfloat": '$', "append": '$',
	"lpush": 'l', "rpush": 'l', "lpop": 'l', "rpop": 'l', "linsert": 'l', "lset": 'l', "lrem": 'l', "ltrim": 'l',
	"hset": 'h', "hincrby": 'h', "hincrbyfloat": 'h', "hdel": 'h',
	"sadd": 's', "srem": 's', "spop": 's', "sinterstore": 's', "sunionstore": 's', "sdiffstore": 's',
	"zadd": 'z', "zincr": 'z', "zrem": 'z', "zrembyscore": 'z', "zrembyrank": 'z',
	"zdiffstore": 'z', "zinterstore": 'z', "zunionstore": 'z',
	"xadd": 't', "xdel": 't', "xtrim": 't', "xsetid": 't',
	"expired": 'x', "evicted": 'e', "new": 'n', "keymiss": 'm',
}

// checkNotifications proves end to end that notifications flow: ElastiCache
// forbids CONFIG, so it subscribes with the daemon's own patterns, writes
// short-lived probe keys that fire one event of each class the
// configuration needs, and reports which flags of notify-keyspace-events are
// missing. A second, best-effort subscription to the other channel kind
// tells "only K/E is on" apart from "nothing is on".
//
// probe is the prefix of the probe keys; where ends every line's label (the
// node, in cluster mode).
func checkNotifications(ctx context.Context, cfg *Config, rdb *redis.Client, probe, where string, report func(bool, string, string)) {
	db := 0
	if len(cfg.DBs) > 0 {
		db = cfg.DBs[0]
	}
	kind := cfg.Channels
	other := bridge.KeySpace
	if kind == bridge.KeySpace {
		other = bridge.KeyEvent
	}
	patterns := bridge.Patterns(kind, cfg.DBs, cfg.Events)
	ps, err := subscribeConfirmed(ctx, rdb, patterns)
	if err != nil {
		report(false, "subscribe to notification channels"+where, explainRedisError(err)+redisErrorHint(err, patterns))
		return
	}
	defer ps.Close()
	report(true, "subscribe to notification channels"+where, "")
	// The other kind only helps the diagnosis; a user may lack access to it.
	otherPS, err := subscribeConfirmed(ctx, rdb, bridge.Patterns(other, []int{db}, nil))
	if err == nil {
		defer otherPS.Close()
	}

	// Which events must the probe prove? One per class when everything is
	// forwarded, else the configured ones a write can fire.
	needed := map[string]bool{}
	if len(cfg.Events) == 0 {
		for _, e := range []string{"set", "expire", "del", "lpush", "sadd", "hset", "zadd", "xadd", "expired"} {
			needed[e] = true
		}
	}
	var unprovable []string
	for _, e := range cfg.Events {
		c, known := eventClass[e]
		switch {
		case !known:
			unprovable = append(unprovable, e+" (unknown to keyrelay)")
		case !probeable[e]:
			unprovable = append(unprovable, fmt.Sprintf("%s (flag %c)", e, c))
		default:
			needed[e] = true
		}
	}
	classes := map[byte]bool{}
	for e := range needed {
		classes[eventClass[e]] = true
	}

	pc := redis.NewClient(withDB(rdb.Options(), db))
	defer pc.Close()
	k := func(s string) string { return probe + ":" + s }
	probes := map[byte]func() error{
		'$': func() error { return pc.Set(ctx, k("str"), "1", time.Minute).Err() },
		'g': func() error { // set (if $), expire, rename_from, rename_to, del
			if err := pc.Set(ctx, k("gen"), "1", 0).Err(); err != nil {
				return err
			}
			if err := pc.Expire(ctx, k("gen"), time.Minute).Err(); err != nil {
				return err
			}
			if err := pc.Rename(ctx, k("gen"), k("gen2")).Err(); err != nil {
				return err
			}
			return pc.Del(ctx, k("gen2")).Err()
		},
		'l': func() error { return pc.LPush(ctx, k("list"), "1").Err() },
		's': func() error { return pc.SAdd(ctx, k("set"), "1").Err() },
		'h': func() error { return pc.HSet(ctx, k("hash"), "f", "1").Err() },
		'z': func() error { return pc.ZAdd(ctx, k("zset"), redis.Z{Score: 1, Member: "1"}).Err() },
		't': func() error { return pc.XAdd(ctx, &redis.XAddArgs{Stream: k("stream"), Values: []any{"f", "1"}}).Err() },
		'x': func() error {
			if err := pc.Set(ctx, k("ttl"), "1", 50*time.Millisecond).Err(); err != nil {
				return err
			}
			time.Sleep(120 * time.Millisecond)
			return pc.Get(ctx, k("ttl")).Err() // touching it expires it now
		},
	}
	defer pc.Del(context.WithoutCancel(ctx), k("str"), k("gen"), k("gen2"), k("list"), k("set"), k("hash"), k("zset"), k("stream"), k("ttl"))
	for _, c := range []byte("$glshztx") {
		if !classes[c] {
			continue
		}
		if err := probes[c](); err != nil && !errors.Is(err, redis.Nil) {
			report(false, "write probe keys "+probe+":*"+where, explainRedisError(err)+
				" (the check writes short-lived probe keys; grant the user write access to "+cfg.Prefix()+"* or verify notifications by hand)")
			return
		}
	}
	got := probeEvents(ctx, ps, probe, 1500*time.Millisecond)
	kindFlag := map[bridge.ChannelKind]string{bridge.KeyEvent: "E", bridge.KeySpace: "K"}[kind]
	if len(got) == 0 && len(needed) > 0 {
		why := "no notification arrived: notify-keyspace-events is empty or lacks " + kindFlag
		if otherPS != nil && len(probeEvents(ctx, otherPS, probe, 300*time.Millisecond)) > 0 {
			why = fmt.Sprintf("only %s notifications arrive: add %s to notify-keyspace-events, or set KEYRELAY_CHANNELS=%s", other, kindFlag, other)
		}
		report(false, string(kind)+" notifications flowing"+where, why+"; on ElastiCache set it in a custom parameter group (e.g. "+kindFlag+"x for expirations, "+kindFlag+"A for everything)")
		return
	}
	missing := map[string]bool{}
	for e := range needed {
		if !got[e] {
			missing[string(eventClass[e])] = true
		}
	}
	if len(missing) > 0 {
		flags := slices.Sorted(maps.Keys(missing))
		report(false, string(kind)+" notifications flowing"+where, fmt.Sprintf("flags missing from notify-keyspace-events for the configured events: %s (add them in the ElastiCache parameter group; A enables g$lshztxe)", strings.Join(flags, "")))
	} else {
		report(true, string(kind)+" notifications flowing"+where, "")
	}
	if len(unprovable) > 0 {
		report(true, "events not provable by a probe", strings.Join(unprovable, ", ")+": make sure the parameter group enables their flags")
	}
}

// checkClusterMode asks the endpoint whether cluster mode is enabled, reports
// a configured mode that contradicts it, and returns whether to check a
// cluster.
func checkClusterMode(ctx context.Context, cfg *Config, rdb *redis.Client, report func(bool, string, string)) bool {
	enabled, err := bridge.DetectClusterEnabled(ctx, rdb)
	if err != nil {
		if cfg.RedisMode == bridge.ModeAuto {
			report(false, "cluster mode enabled or not", explainRedisError(err)+": grant +info, or set KEYRELAY_REDIS_MODE")
		}
		return cfg.RedisMode == bridge.ModeCluster
	}
	mode, err := checkMode(cfg.RedisMode, enabled)
	if err != nil {
		report(false, "KEYRELAY_REDIS_MODE", strings.TrimPrefix(err.Error(), "invalid configuration:\n  "))
	}
	return mode == bridge.ModeCluster || (err != nil && enabled)
}

// checkCluster lists the primaries of a cluster and proves notifications on
// each, with probe keys whose hash tag lands on it (never a MOVED).
func checkCluster(ctx context.Context, cfg *Config, opt *redis.Options, rdb *redis.Client, out io.Writer,
	report func(bool, string, string), warn func(string, string)) {
	nodes, err := bridge.DiscoverPrimaries(ctx, rdb, opt.TLSConfig != nil)
	if err != nil {
		report(false, "cluster primaries", explainRedisError(err))
		return
	}
	report(true, fmt.Sprintf("cluster primaries: %d", len(nodes)), "")
	for _, n := range nodes {
		fmt.Fprintf(out, "     primary %s %s: %d slots\n", n.ID, n.Addr, n.Slots)
	}
	var first *redis.Client
	for _, n := range nodes {
		nc := redis.NewClient(bridge.NodeOptions(opt, n))
		defer nc.Close()
		if first == nil {
			first = nc
		}
		where := " on " + n.Addr
		if id, err := bridge.NodeID(ctx, nc); err != nil {
			report(false, "node id"+where, explainRedisError(err))
			continue
		} else if id != n.ID {
			report(false, "node id"+where, fmt.Sprintf("the node says %s, the topology %s: try again", id, n.ID))
			continue
		}
		if n.Slots == 0 {
			warn("notifications"+where, "it owns no slots, so no probe key lands on it (keyrelay subscribes to it all the same)")
			continue
		}
		probe := fmt.Sprintf("%scheck:{%s}:%d", cfg.Prefix(), bridge.HashTagFor(n.Ranges), time.Now().UnixNano())
		checkNotifications(ctx, cfg, nc, probe, where, report)
	}
	if first != nil {
		checkMarkers(ctx, cfg, first, report, warn)
		for _, n := range nodes {
			if n.Slots > 0 {
				nc := redis.NewClient(bridge.NodeOptions(opt, n))
				defer nc.Close()
				checkAliveKey(ctx, cfg, nc, cfg.Prefix()+"check:alive:{"+bridge.HashTagFor(n.Ranges)+"}", report, warn)
				break
			}
		}
	}
}

// checkHA names the current leader, and proves that this user may run the
// election's scripts on keyrelay's keys.
func checkHA(ctx context.Context, cfg *Config, opt *redis.Options, mode bridge.RedisMode, report func(bool, string, string)) {
	c := haClient(opt, mode)
	defer c.Close()
	if err := bridge.ProbeLease(ctx, c, cfg.Prefix()+"check:"); err != nil {
		report(false, "ha: may run the lease scripts on "+cfg.Prefix()+"*", explainRedisError(err)+
			": grant +eval +evalsha +incr +pexpire +del and ~"+cfg.Prefix()+"*")
		return
	}
	key := bridge.LeaseKey(cfg.Prefix())
	v, err := c.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		report(true, "ha: no leader holds "+key, "the first instance to start takes the lease")
	case err != nil:
		report(false, "ha: read the lease "+key, explainRedisError(err))
	default:
		ttl, _ := c.PTTL(ctx, key).Result()
		inst, epoch, _ := bridge.ParseLease(v)
		report(true, fmt.Sprintf("ha: leader %s, epoch %d (lease renewed %s ago)", inst, epoch,
			(cfg.HALease-ttl).Round(time.Millisecond)), "")
	}
}

// checkAliveKey proves that keyrelay may write and read its keys (the alive
// key: restart gaps, and the proof that notifications flow) with a
// short-lived probe key under the same prefix. Without the permission the
// daemon still runs, so it is a warning.
func checkAliveKey(ctx context.Context, cfg *Config, rdb *redis.Client, probe string, report func(bool, string, string), warn func(string, string)) {
	const what = "alive key (restart gaps)"
	if cfg.MarkerInterval == 0 {
		warn(what, "off (KEYRELAY_MARKER_INTERVAL=0): restarts are not reported as gaps and stopped notifications go unnoticed")
		return
	}
	err := rdb.Set(ctx, probe, "1", 10*time.Second).Err()
	if err == nil {
		err = rdb.Get(ctx, probe).Err()
		_ = rdb.Del(context.WithoutCancel(ctx), probe).Err()
	}
	switch {
	case err == nil:
		report(true, what+": may write "+cfg.Prefix()+"*", "")
	case errors.Is(bridge.ClassifyRedisError(err), bridge.ErrRedisPermission):
		warn(what, fmt.Sprintf("off: %v: grant ~%s* +set +get; meanwhile restarts are not reported as gaps and stopped notifications go unnoticed", err, cfg.Prefix()))
	default:
		report(false, what, explainRedisError(err))
	}
}

// checkMarkers proves that continuity markers work: a marker published on
// keyrelay's channel comes back through a subscription. Without them the
// daemon still runs (gap windows rest on the subscription's pings), so a
// missing permission is a warning, not a failure.
func checkMarkers(ctx context.Context, cfg *Config, rdb *redis.Client, report func(bool, string, string), warn func(string, string)) {
	const what = "continuity markers"
	ch := cfg.MarkerChannel()
	if cfg.MarkerInterval == 0 {
		warn(what, "off (KEYRELAY_MARKER_INTERVAL=0): gap windows rest on the subscription's pings")
		return
	}
	ps := rdb.Subscribe(ctx)
	defer ps.Close()
	err := ps.Subscribe(ctx, ch)
	if err == nil {
		_, err = ps.ReceiveTimeout(ctx, 5*time.Second)
	}
	if err == nil {
		err = rdb.Publish(ctx, ch, "keyrelay check").Err()
	}
	if errors.Is(bridge.ClassifyRedisError(err), bridge.ErrRedisPermission) {
		warn(what, fmt.Sprintf("off: %v: grant +subscribe +unsubscribe +publish and &%s (or &keyrelay:*) to have them; meanwhile gap windows rest on the subscription's pings", err, ch))
		return
	}
	if err == nil {
		var msg any
		msg, err = ps.ReceiveTimeout(ctx, 3*time.Second)
		if m, ok := msg.(*redis.Message); err == nil && (!ok || m.Channel != ch) {
			err = fmt.Errorf("unexpected reply %v", msg)
		}
	}
	if err != nil {
		report(false, what+" on "+ch, explainRedisError(err))
		return
	}
	report(true, what+" on "+ch, "")
}

// probeable are the events the check's probe writes fire.
var probeable = map[string]bool{"set": true, "expire": true, "rename_from": true, "rename_to": true,
	"del": true, "lpush": true, "sadd": true, "hset": true, "zadd": true, "xadd": true, "expired": true}

// subscribeConfirmed subscribes to patterns and waits for every confirmation,
// so that permission errors surface here.
func subscribeConfirmed(ctx context.Context, rdb *redis.Client, patterns []string) (*redis.PubSub, error) {
	ps := rdb.PSubscribe(ctx)
	if err := ps.PSubscribe(ctx, patterns...); err != nil {
		ps.Close()
		return nil, err
	}
	for range patterns {
		if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			ps.Close()
			return nil, err
		}
	}
	return ps, nil
}

// probeEvents reads notifications about the probe keys for up to wait and
// returns the events seen.
func probeEvents(ctx context.Context, ps *redis.PubSub, probe string, wait time.Duration) map[string]bool {
	seen := map[string]bool{}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		msg, err := ps.ReceiveTimeout(ctx, time.Until(deadline))
		if err != nil {
			break
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		n, err := bridge.Decode(m.Channel, m.Payload)
		if err == nil && strings.HasPrefix(n.Key, probe) {
			seen[n.Event] = true
		}
	}
	return seen
}
func withDB(o *redis.Options, db int) *redis.Options {
	c := *o
	c.DB = db
	return &c
}

// explainRedisError adds the fix, in ElastiCache terms, to common errors.
func explainRedisError(err error) string {
	msg := err.Error()
	err = bridge.ClassifyRedisError(err)
	switch {
	case errors.Is(err, bridge.ErrClusterPermission):
		return msg // it names the permission to grant
	case errors.Is(err, bridge.ErrRedisPermission) && strings.Contains(msg, "channel"):
		return msg + ": the user lacks channel access; add &__keyevent@*__:* and &__keyspace@*__:* (or &*) to its access string"
	case errors.Is(err, bridge.ErrRedisPermission):
		return msg + ": the user's access string lacks this command (keyrelay needs +psubscribe +punsubscribe +subscribe +unsubscribe +publish +ping +info +role; in cluster mode also +cluster|nodes +cluster|myid)"
	case errors.Is(err, bridge.ErrRedisAuth) && strings.Contains(msg, "NOAUTH"):
		return msg + ": the server requires a password: set KEYRELAY_REDIS_PASSWORD or KEYRELAY_REDIS_PASSWORD_FILE (the AUTH token)"
	case errors.Is(err, bridge.ErrRedisAuth):
		return msg + ": check KEYRELAY_REDIS_USERNAME / KEYRELAY_REDIS_PASSWORD or KEYRELAY_REDIS_PASSWORD_FILE (the AUTH token or RBAC password)"
	case errors.Is(err, bridge.ErrRedisDB):
		return msg + ": the server has no such database: check the /db of KEYRELAY_REDIS_URL (ElastiCache with cluster mode enabled has only database 0)"
	case strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF"):
		return msg + ": if the cluster has in-transit encryption, use rediss:// in KEYRELAY_REDIS_URL"
	case strings.Contains(msg, "deadline exceeded"):
		return msg + ": no answer: check the endpoint and port; with rediss://, check that the cluster has in-transit encryption"
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate"):
		return msg + ": the server certificate is not trusted: for a private CA set KEYRELAY_REDIS_CA_FILE"
	case strings.Contains(msg, "i/o timeout") || strings.Contains(msg, "connection refused"):
		return msg + ": check the endpoint, the port and that the cache's security group allows keyrelay's"
	}
	return msg
}
