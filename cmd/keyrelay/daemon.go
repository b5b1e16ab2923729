package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/iamauth"
	"github.com/keyrelay/keyrelay/bridge/spool"
)

func newLogger(cfg *Config, stderr io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel.Level()}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(stderr, opts))
}

// runDaemon wires subscriber, relay, sinks and HTTP, runs until ctx ends (or
// a sink's target closes for good), then shuts down in data-flow order: stop
// reading, deliver what is buffered within the shutdown timeout, counted from
// the stop (abort cuts it short), close the sinks.
func runDaemon(ctx, abort context.Context, cfg *Config, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	setRedisLogger(log)
	opt, err := cfg.redisOptions()
	if err != nil {
		return err // validated already
	}
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: " + w)
	}
	var ln net.Listener
	if cfg.HTTPAddr != "" {
		// Before anything else: a taken port is a configuration problem.
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return &ConfigError{Problems: []error{varError(envPrefix+"_HTTP_ADDR", cfg.HTTPAddr, err.Error())}}
		}
		defer ln.Close()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := bridge.NewMetrics(reg)
	metrics.SetBuildInfo(version)

	sinks, err := buildSinks(ctx, cfg, stdout, log)
	if err != nil {
		return err
	}
	var spoolLog *spool.Log
	if cfg.SpoolDir != "" {
		if spoolLog, err = openSpool(cfg, log, metrics); err != nil {
			return err
		}
	}
	relay := bridge.NewRelay(bridge.RelayConfig{
		BufferRecords: cfg.BufferRecords,
		BufferBytes:   cfg.BufferBytes,
		Overflow:      cfg.Overflow,
		Linger:        cfg.BatchLinger,
		RetryInitial:  cfg.RetryInitial,
		RetryMax:      cfg.RetryMax,
		Source:        opt.Addr,
		StallTimeout:  cfg.StallTimeout,
		Spool:         spoolLog,
	}, sinks, log, metrics)
	instance := bridge.NewInstanceID()
	haMetrics := bridge.NewHAMetrics(reg)
	var elector *bridge.Elector
	if cfg.HA {
		// Before Start: the sinks wait until this instance leads.
		if elector, err = relay.EnableHA(bridge.HAConfig{Prefix: cfg.Prefix(), Instance: instance,
			Lease: cfg.HALease, Report: cfg.MarkerInterval, Limit: cfg.BufferRecords}, haMetrics, log); err != nil {
			return err
		}
	}
	relay.Start()
	// KEYRELAY_EMF_INTERVAL: CloudWatch metrics through the awslogs driver.
	// The final line follows the last delivery (stopEMF after Shutdown).
	stopEMF := func() {}
	if cfg.EMFInterval > 0 {
		emf := bridge.EMFConfig{Interval: cfg.EMFInterval, Service: cfg.Name,
			Gatherer: reg, Refresh: relay.UpdateGauges, Out: stderr, Log: log}
		if elector != nil {
			emf.Leader = func() (bool, bool) { return elector.Leader(), true }
		}
		stopEMF = bridge.NewEMF(emf).Start()
	}
	defer stopEMF()

	var maxAge time.Duration
	if cfg.RedisIAMAuth {
		// ElastiCache cuts IAM-authenticated connections after 12 h: move
		// before that, announced with a gap record (reason "planned").
		maxAge = iamauth.PlannedReconnectAfter
	}
	patterns := bridge.Patterns(cfg.Channels, cfg.DBs, cfg.Events)
	subCfg := bridge.SubscriberConfig{
		Options:          opt,
		Source:           opt.Addr,
		Patterns:         patterns,
		Filter:           bridge.NewFilter(cfg.DBs, cfg.Events, cfg.Keys),
		HealthInterval:   cfg.HealthInterval,
		FailoverInterval: cfg.FailoverInterval,
		MaxConnectionAge: maxAge,
		MarkerChannel:    cfg.MarkerChannel(),
		MarkerInterval:   cfg.MarkerInterval,
		Instance:         instance,
		OwnKeyPrefix:     cfg.Prefix(),
	}
	if cfg.MarkerInterval > 0 {
		// Written every marker interval with the anchor markers keep:
		// KEYRELAY_MARKER_INTERVAL=0 disables both.
		subCfg.AliveKey = cfg.Prefix() + "alive"
	} else {
		log.Warn("markers and the alive key are off (KEYRELAY_MARKER_INTERVAL=0): restarts are not reported as gaps, stopped notifications go unnoticed")
	}

	// The deadline of the stop runs from the moment it begins: the drain of
	// the subscriptions counts against it.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var stopAt atomic.Int64
	context.AfterFunc(readCtx, func() { stopAt.Store(time.Now().UnixNano()) })

	pipe := bridge.NewPipeline(readCtx, metrics)
	var topology atomic.Pointer[bridge.Topology] // set once the mode is known to be cluster
	var modeKnown atomic.Bool
	// subscribed: every subscription is up (systemd's READY=1); ready adds
	// the sinks' health (/readyz).
	subscribed := func() error {
		if !modeKnown.Load() {
			return errors.New("not subscribed: asking the endpoint whether cluster mode is enabled")
		}
		var errs []error
		if t := topology.Load(); t != nil {
			errs = append(errs, t.Ready())
		}
		return errors.Join(append(errs, pipe.Ready())...)
	}
	ready := func() error { return errors.Join(subscribed(), relay.Healthy()) }
	var srv *http.Server
	if ln != nil {
		srv = &http.Server{Handler: httpHandler(reg, pipe.Alive, ready, relay), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server failed", "err", err)
			}
		}()
		log.Info("http listening", "addr", ln.Addr().String())
	}
	defer func() {
		if srv != nil {
			hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
			_ = srv.Shutdown(hctx)
			hcancel()
		}
	}()

	// systemd (Type=notify): READY=1 once subscribed (a sink that is down
	// must not make systemd kill keyrelay at TimeoutStartSec: records
	// wait for it), WATCHDOG=1 while /healthz says healthy, STOPPING=1 below.
	notify := newNotifier(os.Getenv, log)
	go notify.run(readCtx, subscribed, pipe.Alive)

	mode, err := resolveMode(readCtx, cfg, opt, log)
	if err != nil {
		_ = relay.Shutdown(context.Background())
		return err
	}
	var topo *bridge.Topology
	topoDone := make(chan error, 1)
	if mode == bridge.ModeCluster {
		// Each primary is addressed directly: its demotion is noticed by a
		// ROLE check every second, whatever the refresh interval.
		subCfg.FailoverInterval = time.Second
		topo = bridge.NewTopology(bridge.TopologyConfig{Seed: opt, Refresh: cfg.ClusterRefresh, Subscriber: subCfg},
			pipe, relay, log, metrics)
		topology.Store(topo)
		go func() { topoDone <- topo.Run(readCtx) }()
	} else {
		pipe.Add(opt.Addr, bridge.NewSubscriber(subCfg, relay, log, metrics))
	}
	modeKnown.Store(true)
	haCtx, stopHA := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHA()
	haDone := make(chan struct{})
	if elector != nil {
		client := haClient(opt, mode)
		defer client.Close()
		go func() { defer close(haDone); elector.Run(haCtx, client) }()
		log.Info("ha: on: publishing only while this instance holds the lease", "instance", instance,
			"lease", cfg.HALease.String(), "key", bridge.LeaseKey(cfg.Prefix()))
	} else {
		close(haDone)
	}

	log.Info("keyrelay starting", "version", version, "endpoint", opt.Addr, "mode", mode,
		"tls", opt.TLSConfig != nil, "channels", cfg.Channels, "sinks", cfg.Sinks,
		"markers", cfg.MarkerChannel(), "marker_interval", cfg.MarkerInterval.String())
	var subErr, fatalErr error
	var topoCh <-chan error // nil (never ready) in standalone mode
	if topo != nil {
		topoCh = topoDone
	}
	select {
	case <-readCtx.Done():
	case subErr = <-pipe.Failed():
	case fatalErr = <-relay.Fatal():
	case subErr = <-topoCh:
		topoCh = nil // it returned: a refused first discovery
	}
	stopReading()
	if elector != nil {
		elector.Stopping() // a leader keeps its lease until it hands over
	}
	notify.stopping()
	// Let every subscription drain (a second signal cuts that short), then
	// report what the topology still had open.
	if topoCh != nil {
		<-topoCh
	}
	drained := make(chan struct{})
	go func() { pipe.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-abort.Done():
		pipe.Abort()
		<-drained
	}
	if topo != nil {
		topo.Stop()
	}
	stopped := time.Now()
	if t := stopAt.Load(); t != 0 && t < stopped.UnixNano() {
		stopped = time.Unix(0, t)
	}

	log.Info("stopping: delivering buffered records", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithDeadline(abort, stopped.Add(cfg.ShutdownTimeout))
	defer cancel()
	shutErr := relay.Shutdown(sctx)
	if elector != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
		elector.Handover(hctx)
		hcancel()
	}
	stopHA()
	<-haDone
	stopEMF()
	if abort.Err() != nil {
		shutErr = errors.Join(errors.New("aborted by a second signal"), shutErr)
	}
	if subErr != nil {
		subErr = fmt.Errorf("subscription: %w%s", subErr, redisErrorHint(subErr, patterns))
	}
	if err := errors.Join(fatalErr, subErr, shutErr); err != nil {
		log.Error("stopped with errors", "err", err)
		return err
	}
	log.Info("stopped")
	return nil
}

// haClient reaches the election's keys: the endpoint itself, or the
// cluster (the keys share a hash tag) in cluster mode.
func haClient(opt *redis.Options, mode bridge.RedisMode) redis.UniversalClient {
	if mode != bridge.ModeCluster {
		o := *opt
		o.PoolSize, o.MaxIdleConns = 2, 1
		o.ContextTimeoutEnabled = true // a renewal must not outlive the lease
		return redis.NewClient(&o)
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		ContextTimeoutEnabled:      true,
		Addrs:                      []string{opt.Addr},
		Username:                   opt.Username,
		Password:                   opt.Password,
		CredentialsProvider:        opt.CredentialsProvider,
		CredentialsProviderContext: opt.CredentialsProviderContext,
		TLSConfig:                  opt.TLSConfig,
		Dialer:                     opt.Dialer,
		PoolSize:                   2,
		DisableIdentity:            true,
	})
}

// openSpool creates the spool directory if missing, warns when the disk has
// less free space than KEYRELAY_SPOOL_MAX_BYTES, and opens the log
// (recovering what a crash left). A directory that cannot be used is a
// configuration error.
func openSpool(cfg *Config, log *slog.Logger, metrics *bridge.Metrics) (*spool.Log, error) {
	bad := func(err error) error {
		return &ConfigError{Problems: []error{varError(envPrefix+"_SPOOL_DIR", cfg.SpoolDir, err.Error())}}
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
		return nil, bad(err)
	}
	if free, err := spool.FreeBytes(cfg.SpoolDir); err != nil {
		log.Warn("spool: cannot read the free space of the spool's file system", "dir", cfg.SpoolDir, "err", err)
	} else if free < cfg.SpoolMaxBytes {
		log.Warn("spool: the file system has less free space than KEYRELAY_SPOOL_MAX_BYTES: the disk may fill before the spool's bound",
			"dir", cfg.SpoolDir, "free_bytes", free, "max_bytes", cfg.SpoolMaxBytes)
	}
	l, err := spool.Open(cfg.SpoolDir, spool.Options{
		SegmentBytes: cfg.SpoolSegmentBytes,
		MaxBytes:     cfg.SpoolMaxBytes,
		Sync:         cfg.SpoolSync,
		Logger:       log,
		OnSync: func(d time.Duration, _ error) {
			metrics.SpoolFsync.Observe(d.Seconds())
		},
	})
	if err != nil {
		return nil, bad(err)
	}
	rec := l.Recovery()
	st := l.Stat()
	log.Info("spool opened", "dir", cfg.SpoolDir, "files", st.Files, "bytes", st.Bytes,
		"max_bytes", cfg.SpoolMaxBytes, "sync", cfg.SpoolSync.String(), "records", int64(st.Last+1)-int64(st.First),
		"torn_bytes", rec.TornBytes, "damaged", len(rec.Damaged), "lost_ranges", len(rec.Lost),
		"cursors_reset", len(rec.CursorsReset))
	return l, nil
}

// redisErrorHint is the fix for a subscription error that retrying cannot
// fix, in ElastiCache terms. A missing channel permission names the exact
// patterns: Redis matches PSUBSCRIBE patterns literally against the user's
// channel rules, so &__keyevent@*__:* does not allow __keyevent@*__:expired.
func redisErrorHint(err error, patterns []string) string {
	msg := err.Error()
	if errors.Is(bridge.ClassifyRedisError(err), bridge.ErrRedisPermission) && strings.Contains(msg, "channel") {
		return fmt.Sprintf(": the Redis user lacks channel permission: add &* or exactly &%s to its ACL access string (PSUBSCRIBE patterns are matched literally)",
			strings.Join(patterns, " &"))
	}
	return strings.TrimPrefix(explainRedisError(err), msg)
}

// redisLogger routes go-redis's internal log lines through slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug("go-redis: " + fmt.Sprintf(format, v...))
}

func setRedisLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }
