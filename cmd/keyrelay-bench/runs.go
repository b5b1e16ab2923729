package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge/bridgetest/servers"
)

type harness struct {
	o      options
	dir    string
	log    io.Writer
	seq    int
	footer []string // the pictures' footer: binary, machine, command
}

// result is one row of the table: one subscriber in one run. Negative
// figures are not applicable.
type result struct {
	run, who                        string
	published, received, delivered  int64
	dropped, gaps, lost             int64
	disconnects                     int64
	maxOmem                         int64
	pubRate, rate                   float64
	p50, p99                        time.Duration
	rssKB                           int64
	cpu, cpuFauxqs                  time.Duration
	requests, billed, conns         int64
	notes                           []string
	hasLatency, hasCPU, hasRequests bool
}

// setup is what every run shares: a fresh redis-server with E$, the
// redis-cli reference, a control client and a sampler of the subscribers'
// output buffers and keyrelay's buffer.
type setup struct {
	h     *harness
	dir   string
	redis *servers.Redis
	rc    *redis.Client
	ref   *reference
	refID string
	kr    *keyrelay

	stopSample chan struct{}
	sampled    sync.WaitGroup
	mu         sync.Mutex
	omemKR     int64
	omemRef    int64
	maxBuffer  float64
	t0         time.Time // when sampling started: the timeline's zero
	timeline   []tick
}

// tick is one sample of a run's timeline, for the pictures: the
// notifications published so far (cmdstat_set), the lines keyrelay and
// redis-cli wrote so far, keyrelay's buffered records (summed over its
// sinks: one in these runs), the records it dropped so far and its
// resident set.
type tick struct {
	t                          float64 // seconds since t0
	published, krLines, refMsg int64
	buffer, dropped            float64
	rssKB                      int64
}

// newSetup starts a redis-server with E$ and, with withRef, the redis-cli
// reference.
func (h *harness) newSetup(ctx context.Context, withRef bool) (*setup, error) {
	h.seq++
	dir := filepath.Join(h.dir, strconv.Itoa(h.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &setup{h: h, dir: dir}
	var err error
	if s.redis, err = servers.StartRedis(dir, "--notify-keyspace-events", "E$"); err != nil {
		return nil, err
	}
	s.rc = redis.NewClient(&redis.Options{Addr: s.redis.Addr, Protocol: 2})
	if h.o.pubsubLimit != "" {
		if err := s.rc.ConfigSet(ctx, "client-output-buffer-limit", "pubsub "+h.o.pubsubLimit).Err(); err != nil {
			s.close()
			return nil, fmt.Errorf("-pubsub-limit: %w", err)
		}
	}
	if !withRef {
		return s, nil
	}
	if s.ref, err = startReference(ctx, s.redis.Port); err != nil {
		s.close()
		return nil, err
	}
	if err := s.waitPatterns(ctx, 1); err != nil {
		s.close()
		return nil, fmt.Errorf("redis-cli did not subscribe: %w", err)
	}
	clients, err := s.rc.ClientList(ctx).Result()
	if err != nil {
		s.close()
		return nil, err
	}
	for _, c := range parseClients(clients) {
		if c["psub"] != "" && c["psub"] != "0" {
			s.refID = c["id"]
		}
	}
	return s, nil
}

// startKeyrelay starts the daemon for this setup and waits until it and the
// reference, if any, are subscribed.
func (s *setup) startKeyrelay(ctx context.Context, env []string, countStdout, latency bool) error {
	// Markers off: with them keyrelay SETs its alive key every second, a
	// SET that INFO commandstats would count as published and that is
	// never a record. (Their cost, one PUBLISH and one SET a second, is
	// nothing at these rates.)
	env = append([]string{"KEYRELAY_REDIS_URL=redis://" + s.redis.Addr, "KEYRELAY_MARKER_INTERVAL=0"}, env...)
	kr, err := startKeyrelay(ctx, s.h.o.bin, s.dir, env, countStdout, latency, false)
	if err != nil {
		return err
	}
	s.kr = kr
	want := int64(1)
	if s.ref != nil {
		want = 2
	}
	if err := s.waitPatterns(ctx, want); err != nil {
		return fmt.Errorf("keyrelay did not subscribe: %w", err)
	}
	return s.rc.ConfigResetStat(ctx).Err()
}

func (s *setup) waitPatterns(ctx context.Context, n int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		// PUBSUB NUMPAT counts distinct patterns; count the subscribers.
		var got int64
		list, err := s.rc.ClientList(ctx).Result()
		for _, c := range parseClients(list) {
			if c["psub"] != "" && c["psub"] != "0" {
				got++
			}
		}
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d pattern subscriptions, want %d (%v)", got, n, err)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// sample records, every 100 ms until stopSampling, the largest output
// buffer Redis holds for each subscriber and keyrelay's largest sink buffer,
// and a tick of the timeline.
func (s *setup) sample(ctx context.Context) {
	s.stopSample = make(chan struct{})
	s.t0 = time.Now()
	s.timeline = nil
	s.sampled.Add(1)
	go func() {
		defer s.sampled.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			s.sampleOnce(ctx, i%metricsEvery == 0)
			select {
			case <-s.stopSample:
				s.sampleOnce(ctx, true) // the timeline ends where the run ended
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// metricsEvery: keyrelay's /metrics is read every metricsEvery-th sample
// (twice a second), the ticks between carrying the last figures. A scrape
// costs keyrelay about a millisecond of CPU (the process collector reads
// /proc), which ten a second would add to the CPU a run measures.
const metricsEvery = 5

// sampleOnce takes one look: output buffers, keyrelay's buffer (when
// scrape is set), a tick.
func (s *setup) sampleOnce(ctx context.Context, scrape bool) {
	if list, err := s.rc.ClientList(ctx).Result(); err == nil {
		for _, c := range parseClients(list) {
			if c["psub"] == "" || c["psub"] == "0" {
				continue
			}
			omem, _ := strconv.ParseInt(c["omem"], 10, 64)
			s.mu.Lock()
			if s.ref != nil && c["id"] == s.refID {
				s.omemRef = max(s.omemRef, omem)
			} else {
				s.omemKR = max(s.omemKR, omem)
			}
			s.mu.Unlock()
		}
	}
	tk := tick{t: time.Since(s.t0).Seconds(), refMsg: s.ref.received()}
	tk.published, _ = setCalls(ctx, s.rc)
	if s.kr != nil {
		tk.krLines = s.kr.lines.n.Load()
		tk.rssKB = procRSS(s.kr.pid())
		if !scrape {
			s.mu.Lock()
			if n := len(s.timeline); n > 0 {
				tk.buffer, tk.dropped = s.timeline[n-1].buffer, s.timeline[n-1].dropped
			}
			s.mu.Unlock()
		} else if m, err := s.kr.metrics(); err == nil {
			tk.buffer, tk.dropped = m["keyrelay_buffer_records"], m["keyrelay_records_dropped_total"]
			s.mu.Lock()
			s.maxBuffer = max(s.maxBuffer, m["keyrelay_buffer_records"])
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.timeline = append(s.timeline, tk)
	s.mu.Unlock()
}

func (s *setup) stopSampling() {
	if s.stopSample != nil {
		close(s.stopSample)
		s.sampled.Wait()
		s.stopSample = nil
	}
}

func (s *setup) close() {
	s.stopSampling()
	if s.kr != nil {
		s.kr.stop(30 * time.Second)
	}
	if s.ref != nil {
		s.ref.stop()
	}
	if s.rc != nil {
		_ = s.rc.Close()
	}
	if s.redis != nil {
		s.redis.Stop()
	}
}

func parseClients(list string) []map[string]string {
	var out []map[string]string
	for _, line := range strings.Split(list, "\n") {
		if line == "" {
			continue
		}
		c := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				c[k] = v
			}
		}
		out = append(out, c)
	}
	return out
}

// published returns the SETs Redis executed since the stats were reset: one
// notification each with E$.
func (s *setup) published(ctx context.Context) (int64, error) { return setCalls(ctx, s.rc) }

// serverDisconnects returns INFO stats client_output_buffer_limit_disconnections
// (-1: not in this server's INFO)
// and the number of clients the log says were closed for the limit.
func (s *setup) serverDisconnects(ctx context.Context) (info, logged int64) {
	return outputBufferDisconnects(ctx, s.rc, s.redis)
}

// writeFull runs redis-benchmark at full speed and returns its rate.
func (s *setup) writeFull(ctx context.Context, n int) (float64, error) {
	start := time.Now()
	out, err := command(ctx, "redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(s.redis.Port),
		"-t", "set", "-P", "64", "-n", strconv.Itoa(n), "-r", strconv.Itoa(n), "-q").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %w\n%s", err, out)
	}
	if m := regexp.MustCompile(`SET: ([0-9.]+) requests per second`).FindSubmatch(out); m != nil {
		return strconv.ParseFloat(string(m[1]), 64)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// writePaced writes rate SETs per second for d with go-redis pipelines, one
// batch per millisecond, keys lat:<unix ns of the batch>:<i>. during, if
// set, runs alongside with the elapsed time. It returns the achieved rate.
func (s *setup) writePaced(ctx context.Context, rate int, d time.Duration) (float64, error) {
	c := redis.NewClient(&redis.Options{Addr: s.redis.Addr, Protocol: 2, PoolSize: 2})
	defer c.Close()
	start := time.Now()
	sent := 0
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		now := time.Now()
		el := now.Sub(start)
		if el >= d {
			break
		}
		if n := int(float64(rate)*el.Seconds()) - sent; n > 0 {
			ts := strconv.FormatInt(now.UnixNano(), 10)
			pipe := c.Pipeline()
			for i := 0; i < n; i++ {
				pipe.Set(ctx, "lat:"+ts+":"+strconv.Itoa(i), "v", 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return 0, fmt.Errorf("paced writer: %w", err)
			}
			sent += n
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
	return float64(sent) / time.Since(start).Seconds(), nil
}

// progress is one look at the counters while a run completes.
type progress struct {
	received, delivered, dropped, gaps, lines, ref int64
}

// wait polls until keyrelay has accounted for every published notification
// (delivered or dropped with a gap record), the reference received them all
// and, when lines is set, the stdout lines arrived; or until nothing
// progresses for the stall time. It returns the last look and when keyrelay's
// delivery completed.
func (s *setup) wait(ctx context.Context, published int64, lines bool) (progress, time.Time, error) {
	var last progress
	var done time.Time
	lastChange := time.Now()
	for {
		m, err := s.kr.metrics()
		if err != nil {
			return last, done, fmt.Errorf("keyrelay metrics: %w\n%s", err, s.kr.logTail())
		}
		p := progress{
			received:  int64(m["keyrelay_notifications_received_total"]),
			delivered: int64(m["keyrelay_records_delivered_total"]),
			dropped:   int64(m["keyrelay_records_dropped_total"]),
			gaps:      int64(m["keyrelay_gaps_total"]),
			lines:     s.kr.lines.n.Load(),
			ref:       s.ref.received(),
		}
		if p != last {
			last, lastChange = p, time.Now()
		}
		krDone := p.delivered+p.dropped >= published+p.gaps && (!lines || p.lines >= published+p.gaps-p.dropped)
		if krDone && done.IsZero() {
			done = time.Now()
			if lines {
				done = time.Unix(0, s.kr.lines.last.Load())
			}
		}
		if krDone && (s.ref == nil || p.ref >= published || !s.ref.alive()) {
			return p, done, nil
		}
		if time.Since(lastChange) > s.h.o.stall {
			return p, done, fmt.Errorf("no progress for %s: %+v of %d published", s.h.o.stall, p, published)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return p, done, ctx.Err()
		}
	}
}

// finish fills the keyrelay and reference rows of a run.
func (s *setup) finish(ctx context.Context, run string, published int64, pubRate float64,
	start, done time.Time, p progress, cpu0 time.Duration) []*result {
	cpu1, hwm, _ := procStat(s.kr.pid())
	m, _ := s.kr.metrics()
	s.stopSampling()
	info, logged := s.serverDisconnects(ctx)
	kr := &result{run: run, who: "keyrelay", published: published, received: p.received,
		delivered: p.delivered - p.gaps, dropped: p.dropped, gaps: p.gaps,
		disconnects: int64(m["keyrelay_subscription_reconnects_total"]), maxOmem: s.omemKR,
		pubRate: pubRate, rssKB: hwm, cpu: cpu1 - cpu0, hasCPU: true}
	kr.lost = published - kr.delivered - kr.dropped
	if !done.IsZero() && done.After(start) {
		kr.rate = float64(kr.delivered) / done.Sub(start).Seconds()
	}
	if max(info, logged) > 0 {
		kr.notes = append(kr.notes, discNote(info, logged))
	}
	if s.maxBuffer > 0 {
		kr.notes = append(kr.notes, fmt.Sprintf("max buffered records %.0f", s.maxBuffer))
	}
	if p.gaps > 0 {
		kr.notes = append(kr.notes, fmt.Sprintf("%d gap records", p.gaps))
	}
	if s.ref == nil {
		return []*result{kr}
	}
	ref := &result{run: run, who: "redis-cli", published: published, received: p.ref, delivered: -1,
		dropped: -1, maxOmem: s.omemRef, pubRate: pubRate, lost: published - p.ref}
	if !s.ref.alive() {
		ref.disconnects = 1
	}
	if last := s.ref.lines.last.Load(); last > 0 && p.ref >= published {
		ref.rate = float64(p.ref) / time.Unix(0, last).Sub(start).Seconds()
	}
	return []*result{kr, ref}
}

// stdoutFull: N notifications at full speed through the stdout sink, with
// records in memory (sync empty) or in a durable spool in the run's
// directory with KEYRELAY_SPOOL_SYNC=sync.
func (h *harness) stdoutFull(ctx context.Context, sync string) ([]*result, error) {
	s, err := h.newSetup(ctx, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	env := []string{"KEYRELAY_SINKS=stdout"}
	run := "stdout full speed"
	if sync != "" {
		env = append(env, "KEYRELAY_SPOOL_DIR="+filepath.Join(s.dir, "spool"), "KEYRELAY_SPOOL_SYNC="+sync)
		run += ", spool sync=" + sync
	}
	if err := s.startKeyrelay(ctx, env, true, false); err != nil {
		return nil, err
	}
	rows, err := s.measure(ctx, run, func() (float64, error) { return s.writeFull(ctx, h.o.n) }, true, nil)
	if sync != "" && len(rows) > 0 {
		if m, merr := s.kr.metrics(); merr == nil {
			rows[0].notes = append(rows[0].notes, fmt.Sprintf("spool: %.0f files, %.1f MB at the end; fsync count %.0f, mean %.2f ms",
				m["keyrelay_spool_files"], m["keyrelay_spool_bytes"]/1e6, m["keyrelay_spool_fsync_seconds_count"],
				1e3*m["keyrelay_spool_fsync_seconds_sum"]/max(1, m["keyrelay_spool_fsync_seconds_count"])))
		}
	}
	return rows, err
}

// measure runs write and waits for the run to complete, then fills the rows.
func (s *setup) measure(ctx context.Context, run string, write func() (float64, error), lines bool, fx *fauxqsRun) ([]*result, error) {
	s.sample(ctx)
	cpu0, _, _ := procStat(s.kr.pid())
	var fxCPU0 time.Duration
	self0, _, _ := procStat(os.Getpid())
	if fx != nil {
		fxCPU0, _, _ = procStat(fx.f.Pid())
	}
	start := time.Now()
	pubRate, err := write()
	if err != nil {
		return nil, err
	}
	published, err := s.published(ctx)
	if err != nil {
		return nil, err
	}
	p, done, werr := s.wait(ctx, published, lines)
	rows := s.finish(ctx, run, published, pubRate, start, done, p, cpu0)
	kr := rows[0]
	if lines {
		if got := s.kr.lines.n.Load(); got != kr.delivered+kr.gaps {
			kr.notes = append(kr.notes, fmt.Sprintf("stdout lines %d ≠ delivered", got))
		} else {
			kr.notes = append(kr.notes, "stdout lines = delivered")
		}
	}
	if fx != nil {
		self1, _, _ := procStat(os.Getpid())
		fxCPU1, _, _ := procStat(fx.f.Pid())
		kr.cpuFauxqs = fxCPU1 - fxCPU0
		kr.requests, kr.billed, kr.conns = fx.p.sends.Load(), fx.p.billed.Load(), fx.p.conns.Load()
		kr.hasRequests = true
		if n, err := fx.queued(ctx); err == nil {
			kr.notes = append(kr.notes, fmt.Sprintf("%d messages in the queue", n))
		}
		if kr.delivered > 0 && !done.IsZero() {
			wall := done.Sub(start).Seconds()
			kr.notes = append(kr.notes, fmt.Sprintf("CPU per event: keyrelay %.1f µs, fauxqs %.1f µs; busy over the run: keyrelay %.0f%%, fauxqs %.0f%% of a core, harness (proxy) %.0f%%",
				kr.cpu.Seconds()*1e6/float64(kr.delivered), kr.cpuFauxqs.Seconds()*1e6/float64(kr.delivered),
				100*kr.cpu.Seconds()/wall, 100*kr.cpuFauxqs.Seconds()/wall, 100*(self1-self0).Seconds()/wall))
		}
		if r := fx.p.refused.Load(); r > 0 {
			kr.notes = append(kr.notes, fmt.Sprintf("%d sends refused (outage)", r))
		}
	}
	return rows, werr
}

// stdoutRate: a fixed rate for rateDuration through the stdout sink, with
// latency, default settings.
func (h *harness) stdoutRate(ctx context.Context, rate int) ([]*result, error) {
	s, err := h.newSetup(ctx, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.startKeyrelay(ctx, []string{"KEYRELAY_SINKS=stdout"}, true, true); err != nil {
		return nil, err
	}
	rows, err := s.measure(ctx, fmt.Sprintf("stdout %d/s", rate),
		func() (float64, error) { return s.writePaced(ctx, rate, h.o.rateDuration) }, true, nil)
	if len(rows) > 0 {
		if lat := s.kr.lines.latencies(); len(lat) > 0 {
			rows[0].p50, rows[0].p99, rows[0].hasLatency = percentile(lat, 0.50), percentile(lat, 0.99), true
			if rate == h.o.rates[0] {
				h.writeChart(fmt.Sprintf("latency-%d.svg", rate), latencyChart(rate, lat, h.footer))
			}
		}
	}
	return rows, err
}

// fauxqsRun is fauxqs, the counting proxy in front of it and a queue.
type fauxqsRun struct {
	f        *servers.Fauxqs
	p        *proxy
	sqs      *sqs.Client
	queueURL string
}

func (h *harness) startFauxqs(ctx context.Context, dir string) (*fauxqsRun, error) {
	f, err := servers.StartFauxqs(dir)
	if err != nil {
		return nil, err
	}
	fx := &fauxqsRun{f: f}
	if fx.p, err = startProxy(f.Endpoint); err != nil {
		f.Stop()
		return nil, err
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"),
		awsconfig.WithBaseEndpoint(f.Endpoint),
		awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})))
	if err != nil {
		fx.close()
		return nil, err
	}
	fx.sqs = sqs.NewFromConfig(cfg)
	out, err := fx.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("keyrelay-bench")})
	if err != nil {
		fx.close()
		return nil, fmt.Errorf("create queue: %w", err)
	}
	fx.queueURL = aws.ToString(out.QueueUrl)
	return fx, nil
}

func (fx *fauxqsRun) queued(ctx context.Context) (int64, error) {
	out, err := fx.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(fx.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages}})
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(out.Attributes["ApproximateNumberOfMessages"], 10, 64)
}

func (fx *fauxqsRun) close() {
	fx.p.close()
	fx.f.Stop()
}

func (fx *fauxqsRun) env() []string {
	return append(servers.Env(fx.p.URL), "KEYRELAY_SINKS=sqs", "KEYRELAY_SQS_QUEUE_URL="+fx.queueURL)
}

// sqsFull: N notifications at full speed through the SQS sink (packed when
// pack is set), with a buffer that holds the whole run.
func (h *harness) sqsFull(ctx context.Context, pack string, inFlight int) ([]*result, error) {
	s, err := h.newSetup(ctx, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	fx, err := h.startFauxqs(ctx, s.dir)
	if err != nil {
		return nil, err
	}
	defer fx.close()
	env := append(fx.env(), "KEYRELAY_BUFFER_RECORDS="+strconv.Itoa(h.o.sqsBuffer),
		"KEYRELAY_BUFFER_BYTES="+strconv.Itoa(h.o.sqsBuffer*512))
	run := "sqs full speed"
	if inFlight > 0 {
		env = append(env, "KEYRELAY_SINK_MAX_IN_FLIGHT="+strconv.Itoa(inFlight))
		run += fmt.Sprintf(", %d in flight", inFlight)
	}
	if pack != "" {
		env = append(env, "KEYRELAY_PACK="+pack)
		run = "sqs full speed, KEYRELAY_PACK=" + pack
	}
	if err := s.startKeyrelay(ctx, env, false, false); err != nil {
		return nil, err
	}
	rows, err := s.measure(ctx, run, func() (float64, error) { return s.writeFull(ctx, h.o.n) }, false, fx)
	if len(rows) > 0 {
		rows[0].notes = append(rows[0].notes, fmt.Sprintf("buffer %d records", h.o.sqsBuffer))
	}
	return rows, err
}

// sqsOutage: a steady stream through the SQS sink with default settings
// while the endpoint answers 503 for a while.
func (h *harness) sqsOutage(ctx context.Context) ([]*result, error) {
	s, err := h.newSetup(ctx, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	fx, err := h.startFauxqs(ctx, s.dir)
	if err != nil {
		return nil, err
	}
	defer fx.close()
	if err := s.startKeyrelay(ctx, fx.env(), false, false); err != nil {
		return nil, err
	}
	run := fmt.Sprintf("sqs %d/s, %s outage", h.o.outageRate, h.o.outageFor)
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	var from, to time.Time
	played := make(chan struct{})
	go func() {
		defer close(played)
		if sleep(octx, 5*time.Second) {
			fx.p.outage.Store(true)
			from = time.Now()
			sleep(octx, h.o.outageFor)
			fx.p.outage.Store(false)
			to = time.Now()
		}
	}()
	rows, err := s.measure(ctx, run, func() (float64, error) {
		return s.writePaced(ctx, h.o.outageRate, h.o.outageTotal)
	}, false, fx)
	cancel()
	<-played
	if !from.IsZero() && !to.IsZero() {
		h.writeChart("outage.svg", outageChart(run, s.timeline, from.Sub(s.t0).Seconds(), to.Sub(s.t0).Seconds(), h.footer))
	}
	return rows, err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
