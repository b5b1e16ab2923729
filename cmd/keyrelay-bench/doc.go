// Command keyrelay-bench is keyrelay's performance harness (`make bench`).
//
// It measures the real daemon (bin/keyrelay, built by `make build`) as a
// subprocess against servers it starts itself on free loopback ports: a
// redis-server with `notify-keyspace-events E$` (every SET publishes one
// `set` event on __keyevent@<db>__:set) and, for the SQS runs, the fauxqs
// emulator behind a counting reverse proxy. In every run but burst, backlog
// and cluster, `redis-cli psubscribe '__keyevent@*__:*'` is subscribed as
// well, as the reference for what a plain subscriber receives on the same
// server at the same time.
//
// Runs (each with a fresh redis-server, keyrelay and, where used, fauxqs):
//
//   - stdout, full speed: `redis-benchmark -t set -P 64 -n N -r N` as fast as
//     the server goes; keyrelay's stdout is a pipe whose lines the harness
//     counts.
//   - spool: the same with the durable spool (KEYRELAY_SPOOL_DIR in the
//     run's temporary directory), once with KEYRELAY_SPOOL_SYNC=interval
//     and once with =every, in the table beside the in-memory run (which
//     runs too when the stdout run is not selected). A note gives the
//     spool's files, bytes and fsyncs.
//   - burst (or burst2m): -burst-n SETs (2 × N by default: 2 000 000 in
//     `make bench`) at full speed, first with keyrelay → stdout alone on a
//     fresh redis-server, then with `redis-cli psubscribe` alone on another;
//     no reference runs beside keyrelay here. It waits until the subscriber
//     has everything or nothing moved for 3 s (a disconnected subscriber
//     never gets the rest) and prints its own table: received % (truncated),
//     output-buffer disconnects (INFO stats and the server log), keyrelay's
//     gap records (by reason in a note), CPU per million. Picture: burst.svg.
//     INFO and the log count the same disconnections; redis-server 7.0 has
//     no client_output_buffer_limit_disconnections ("–").
//   - backlog: N SETs at full speed while the harness does not read
//     keyrelay's stdout (the sink is stalled: its write blocks once the pipe
//     is full), with KEYRELAY_BUFFER_RECORDS/_BYTES raised to hold them all.
//     Once keyrelay has received every notification and the buffer stops
//     moving, the growth of its resident set (VmRSS, against the idle
//     process a second after start) divided by the records it holds
//     (received − lines on stdout) is the RSS per buffered record. Then the
//     harness reads again and checks that everything received is delivered.
//     If Redis disconnects keyrelay during the burst, the backlog is what
//     keyrelay holds once nothing moved for 2 s, smaller than N.
//   - stdout, fixed rates (-rates, each for -rate-duration): a paced writer
//     (go-redis pipelines, one batch per millisecond) writes keys
//     lat:<unix ns of the write>; the harness timestamps each line when it
//     reads it from keyrelay's stdout, so latency is write → record
//     available in the sink. Default settings. Picture: latency-<rate>.svg,
//     the distribution in 0.5 ms bins with p50 and p99 marked.
//   - sqs, full speed: as above through the SQS sink; the buffer is raised
//     to hold the whole run (-sqs-buffer), because fauxqs accepts messages
//     far slower than Redis publishes them.
//   - sqs packed: the same with KEYRELAY_PACK=-pack, when the binary
//     supports it (`keyrelay help` lists KEYRELAY_PACK).
//   - sqs outage: a steady -outage-rate stream with default settings while
//     the proxy answers 503 for -outage-for: keyrelay buffers up to
//     KEYRELAY_BUFFER_RECORDS, drops the rest (counted, one overflow gap
//     record) and delivers the buffer when the sink is back; the peak RSS
//     shows the memory stays bounded. Picture: outage.svg, buffered records,
//     dropped records and VmRSS over time with the outage shaded.
//   - cluster, full speed: a Redis Cluster of 3 primaries, no replicas
//     (servers.StartCluster, E$, otherwise default settings), keyrelay with
//     KEYRELAY_REDIS_MODE=cluster pointed at one node and the stdout sink
//     (default settings), and N SETs at full speed from the harness: 2
//     connections per primary, pipelines of 64, unique keys key:{tag}:<seq>
//     whose tags cycle through every slot. No redis-cli reference in this
//     run. It prints its own table, one row per primary and a total:
//     published (the SETs the node acknowledged to the writer, counted by
//     the harness because cmdstat_set also counts keyrelay's own alive-key
//     writes; a note gives cmdstat_set when it differs), received (stdout
//     lines whose "source" is the node, gap records apart), received %
//     (truncated), lost (published − received, dropped included), gaps (gap
//     records with that source), disc and max omem per node, pub ev/s (the
//     node's SETs ÷ the writer's wall time), ev/s (received ÷ (last line −
//     first write)), and in the total keyrelay's RSS, CPU s and CPU s per
//     million published.
//
// Figures, one row per subscriber per run:
//
//   - published: `cmdstat_set` calls (INFO commandstats, reset before the
//     run): one notification per SET.
//   - received: keyrelay_notifications_received_total, or the messages
//     redis-cli printed.
//   - delivered: keyrelay_records_delivered_total; for stdout also the
//     lines counted on the pipe (they must agree), for SQS the messages in
//     the queue (unpacked runs).
//   - lost: published − delivered (keyrelay) or published − received
//     (redis-cli); dropped: records keyrelay dropped and reported in a gap
//     record (keyrelay_records_dropped_total).
//   - disc: server disconnects of the subscriber: INFO stats
//     client_output_buffer_limit_disconnections, plus the clients the
//     server log says it closed for the output buffer limit, plus
//     keyrelay_subscription_reconnects_total. max omem: the largest output
//     buffer Redis held for the subscriber (CLIENT LIST, sampled every
//     100 ms; the pubsub hard limit is 32 MiB).
//   - ev/s: delivered ÷ (last delivery − first write); pub ev/s: the
//     writer's rate.
//   - p50/p99: write → line read from keyrelay's stdout (stdout rate runs).
//   - RSS: keyrelay's VmHWM (peak resident set). CPU: utime+stime of
//     keyrelay and fauxqs over the run, in seconds.
//   - CPU s/M: keyrelay's CPU seconds per million published notifications.
//   - reqs, billed/M: SendMessageBatch requests through the proxy, and
//     billed requests per million delivered events, where each 64 KiB of a
//     request body counts as one billed request (SQS bills each 64 KiB
//     chunk of a request's payload; the body is a slight overestimate).
//
// After the tables it prints the headline figures beside the targets of
// issue 14: the burst's received %, CPU per million (in memory and with
// each spool fsync policy), RSS per buffered record, keyrelay's CPU per
// event into SQS without packing, p50/p99 at each fixed rate.
//
// Pictures: every run that draws one writes it as hand-written SVG into
// -svg-dir (docs/img by default, so `make bench` refreshes the pictures
// that docs/performance.md shows; empty: none). Their footer names the
// binary's version, the machine's load and the command.
//
// Usage:
//
//	go run ./cmd/keyrelay-bench -n 1000000        # what `make bench` runs
//	go run ./cmd/keyrelay-bench -n 100000 -runs stdout,rate
//	go run ./cmd/keyrelay-bench -runs cluster       # make bench BENCH_FLAGS=-runs=cluster
//	go run ./cmd/keyrelay-bench -n 200000 -runs burst2m,spool -svg-dir /tmp/img
//	go run ./cmd/keyrelay-bench -n 100000 -runs burst -pubsub-limit "256kb 0 0"  # a disconnect, handled
//
// It stops everything it started on success, on failure and on Ctrl-C
// (children also get SIGKILL if the harness itself dies).
package main
