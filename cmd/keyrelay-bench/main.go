package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin          string
	n            int
	burstN       int
	svgDir       string
	runs         map[string]bool
	rates        []int
	rateDuration time.Duration
	sqsBuffer    int
	sqsInFlight  []int
	pack         string
	outageRate   int
	outageFor    time.Duration
	outageTotal  time.Duration
	stall        time.Duration
	keep         bool
	pubsubLimit  string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyrelay-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keyrelay-bench", flag.ContinueOnError)
	var o options
	var runs, rates string
	fs.StringVar(&o.bin, "bin", "bin/keyrelay", "the keyrelay binary (make build)")
	fs.IntVar(&o.n, "n", 1000000, "notifications per full-speed run")
	fs.StringVar(&runs, "runs", strings.Join(allRuns, ","), "runs: stdout (full speed), spool (stdout full speed with the durable spool, each fsync policy, beside the in-memory run), burst (-burst-n at full speed, keyrelay and redis-cli each alone; burst2m is the same), backlog (RSS per record buffered behind a stalled sink), rate (fixed rates, latency), sqs (full speed), pack (sqs with KEYRELAY_PACK), outage (sqs outage), cluster (3-primary cluster, stdout, full speed)")
	fs.IntVar(&o.burstN, "burst-n", 0, "notifications of the burst run (0: 2 × n)")
	fs.StringVar(&o.svgDir, "svg-dir", "docs/img", "where the runs draw their pictures (SVG); empty: none")
	fs.StringVar(&rates, "rates", "10000,100000", "events/s of the fixed-rate runs")
	fs.DurationVar(&o.rateDuration, "rate-duration", 10*time.Second, "length of each fixed-rate run")
	fs.IntVar(&o.sqsBuffer, "sqs-buffer", 0, "KEYRELAY_BUFFER_RECORDS for the full-speed SQS runs (0: n+1000, so nothing overflows while fauxqs is slower than Redis)")
	var inFlight string
	fs.StringVar(&inFlight, "sqs-in-flight", "4,16", "KEYRELAY_SINK_MAX_IN_FLIGHT of the unpacked full-speed SQS runs, one run each (4 is the default)")
	fs.StringVar(&o.pack, "pack", "ndjson", "KEYRELAY_PACK value of the packed SQS run")
	fs.IntVar(&o.outageRate, "outage-rate", 10000, "events/s during the outage run")
	fs.DurationVar(&o.outageFor, "outage-for", 12*time.Second, "how long the SQS endpoint answers 503 in the outage run")
	fs.DurationVar(&o.outageTotal, "outage-total", 25*time.Second, "length of the outage run's stream (the outage starts after 5 s)")
	fs.DurationVar(&o.stall, "stall", 15*time.Second, "give up on a run when nothing progresses for this long")
	fs.StringVar(&cpuProfileDir, "cpuprofile", "", "a directory where each keyrelay writes its CPU profile, keyrelay-N.prof in start order (needs a binary built with -tags pprof)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (server and keyrelay logs)")
	fs.StringVar(&o.pubsubLimit, "pubsub-limit", "", `the single-node runs' redis-server pubsub output buffer limit, "<hard> <soft> <seconds>" (e.g. "1mb 0 0" to see a disconnect handled); empty: Redis's default, 32mb 8mb 60`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.runs = map[string]bool{}
	for _, r := range strings.Split(runs, ",") {
		if r = strings.TrimSpace(r); r == "burst2m" {
			r = "burst"
		}
		if r == "" {
			continue
		}
		if !slices.Contains(allRuns, r) {
			return fmt.Errorf("-runs: unknown run %q (runs: %s)", r, strings.Join(allRuns, ","))
		}
		o.runs[r] = true
	}
	if o.burstN == 0 {
		o.burstN = 2 * o.n
	}
	for _, r := range strings.Split(rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.Atoi(r)
		if err != nil || v <= 0 {
			return fmt.Errorf("-rates: %q is not a positive number", r)
		}
		o.rates = append(o.rates, v)
	}
	for _, v := range strings.Split(inFlight, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return fmt.Errorf("-sqs-in-flight: %q is not 1 to 64", v)
		}
		o.sqsInFlight = append(o.sqsInFlight, n)
	}
	if o.sqsBuffer == 0 {
		o.sqsBuffer = o.n + 1000
	}
	for _, tool := range []string{"redis-server", "redis-cli", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make deps installs it): %w", tool, err)
		}
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("%s: %w (run make build)", o.bin, err)
	}

	dir, err := os.MkdirTemp("", "keyrelay-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "# logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintln(stdout, machine(ctx, o.bin))

	h := &harness{o: o, dir: dir, log: stderr, footer: footer(ctx, o.bin, args)}
	var figs figures
	var results []*result
	var errs []error
	do := func(name string, f func(context.Context) ([]*result, error)) {
		if ctx.Err() != nil {
			return
		}
		fmt.Fprintf(stderr, "# run: %s\n", name)
		t0 := time.Now()
		rs, err := f(ctx)
		fmt.Fprintf(stderr, "# %s: %.0f s\n", name, time.Since(t0).Seconds())
		results = append(results, rs...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			fmt.Fprintf(stderr, "# %s failed: %v\n", name, err)
		}
	}
	if o.runs["stdout"] || o.runs["spool"] {
		do("stdout full speed", func(ctx context.Context) ([]*result, error) { return h.stdoutFull(ctx, "") })
	}
	if o.runs["spool"] {
		for _, sync := range []string{"interval", "every"} {
			do("stdout full speed, spool sync="+sync, func(ctx context.Context) ([]*result, error) { return h.stdoutFull(ctx, sync) })
		}
	}
	if o.runs["burst"] {
		do(fmt.Sprintf("burst of %d, keyrelay and redis-cli each alone", o.burstN), func(ctx context.Context) ([]*result, error) {
			rows, err := h.burst(ctx)
			figs.burst = rows
			if len(rows) > 0 {
				h.writeChart("burst.svg", burstChart(rows, o.burstN, o.pubsubLimit, h.footer))
			}
			return nil, err
		})
	}
	if o.runs["backlog"] {
		do("backlog behind a stalled sink", func(ctx context.Context) ([]*result, error) {
			b, err := h.backlog(ctx)
			figs.backlog = b
			return nil, err
		})
	}
	if o.runs["rate"] {
		for _, rate := range o.rates {
			do(fmt.Sprintf("stdout %d/s", rate), func(ctx context.Context) ([]*result, error) { return h.stdoutRate(ctx, rate) })
		}
	}
	if o.runs["sqs"] {
		for _, n := range o.sqsInFlight {
			do(fmt.Sprintf("sqs full speed, %d in flight", n), func(ctx context.Context) ([]*result, error) { return h.sqsFull(ctx, "", n) })
		}
	}
	if o.runs["pack"] {
		if !supportsPack(ctx, o.bin) {
			fmt.Fprintf(stderr, "# %s has no KEYRELAY_PACK: packed run skipped\n", o.bin)
		} else {
			do("sqs packed full speed", func(ctx context.Context) ([]*result, error) { return h.sqsFull(ctx, o.pack, 0) })
		}
	}
	if o.runs["outage"] {
		do("sqs outage", h.sqsOutage)
	}
	var clusterRows []*clusterRow
	if o.runs["cluster"] {
		do("cluster full speed", func(ctx context.Context) ([]*result, error) {
			rows, err := h.clusterFull(ctx)
			clusterRows = append(clusterRows, rows...)
			return nil, err
		})
	}
	// Each table, then a blank line; the headline figures last.
	section := func(print func()) {
		print()
		fmt.Fprintln(stdout)
	}
	if len(results) > 0 {
		section(func() { printTable(stdout, results) })
	}
	if len(figs.burst) > 0 {
		section(func() { printBurstTable(stdout, o.burstN, figs.burst) })
	}
	if figs.backlog != nil {
		section(func() { fmt.Fprintln(stdout, "# "+figs.backlog.String()) })
	}
	if len(clusterRows) > 0 {
		section(func() { printClusterTable(stdout, clusterRows) })
	}
	figs.results = results
	figs.print(stdout)
	if ctx.Err() != nil {
		errs = append(errs, errors.New("interrupted"))
	}
	return errors.Join(errs...)
}

// allRuns are the runs, in the order they run.
var allRuns = []string{"stdout", "spool", "burst", "backlog", "rate", "sqs", "pack", "outage", "cluster"}

// footer is what the pictures say about where they come from.
func footer(ctx context.Context, bin string, args []string) []string {
	version := "keyrelay (version unknown)"
	if out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput(); err == nil {
		version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	load, _ := os.ReadFile("/proc/loadavg")
	l := strings.Fields(string(load))
	if len(l) > 0 {
		l = l[:1]
	}
	return []string{
		fmt.Sprintf("%s; %d CPUs, load average %s before the run; %s", version, runtime.NumCPU(), strings.Join(l, ""), time.Now().UTC().Format("2006-01-02 15:04 MST")),
		"go run ./cmd/keyrelay-bench " + strings.Join(args, " "),
	}
}

// supportsPack reports whether the binary knows KEYRELAY_PACK.
func supportsPack(ctx context.Context, bin string) bool {
	out, _ := exec.CommandContext(ctx, bin, "help").CombinedOutput()
	return strings.Contains(string(out), "KEYRELAY_PACK")
}

// machine describes where the figures come from.
func machine(ctx context.Context, bin string) string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	first := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	fauxqs := "not installed"
	if bin, err := fauxqsVersion(); err == nil {
		fauxqs = bin
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("# machine: %d CPUs (%s), %s RAM, %s, %s\n# keyrelay: %s\n# fauxqs %s, node %s\n# load average before: %s",
		runtime.NumCPU(), cpu, mem, runtime.Version(), first("redis-server", "--version"),
		first(bin, "version"), fauxqs, first("node", "--version"), strings.TrimSpace(string(load)))
}
