package spool

import (
	"fmt"
	"log/slog"
	"time"
)

// SyncPolicy says when appended records are made durable with fdatasync.
type SyncPolicy int

const (
	// SyncInterval fsyncs in the background every Options.SyncPeriod
	// (segments sealed since, and the current one if written to). Append
	// returns once the records are written to the file and never waits for
	// the disk: they survive a process crash at once, and an OS crash or
	// power loss after the next fsync.
	SyncInterval SyncPolicy = iota
	// SyncEvery fsyncs before Append returns: an appended record survives
	// power loss. One fsync per Append call, so batch.
	SyncEvery
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncInterval:
		return "interval"
	case SyncEvery:
		return "every"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// Decode implements envconfig.Decoder: "interval" or "every".
func (p *SyncPolicy) Decode(s string) error {
	switch s {
	case "interval":
		*p = SyncInterval
	case "every":
		*p = SyncEvery
	default:
		return fmt.Errorf("must be %q or %q", "interval", "every")
	}
	return nil
}

// Defaults of Options.
const (
	DefaultSegmentBytes     = 64 << 20
	DefaultMaxBytes         = 1 << 30
	DefaultSyncPeriod       = time.Second
	DefaultCheckpointPeriod = 250 * time.Millisecond
)

// Options configure a Log. The zero value is valid: every zero field takes
// its default.
type Options struct {
	// SegmentBytes: a new segment file is started when the current one
	// would grow beyond this (a single batch larger than it still goes into
	// one segment). Default 64 MiB.
	SegmentBytes int64
	// MaxBytes bounds the sum of all segment files; Append returns ErrFull
	// rather than exceed it. At least twice SegmentBytes. Default 1 GiB.
	// Quarantined files do not count.
	MaxBytes int64
	// Sync is the fsync policy; default SyncInterval.
	Sync SyncPolicy
	// SyncPeriod is the longest time an appended record stays without
	// fsync under SyncInterval. Default 1 s.
	SyncPeriod time.Duration
	// CheckpointPeriod: cursor positions are written to their files at most
	// this often (and on Cursor.Close, Log.Close and Checkpoint), after which
	// fully acknowledged segments are deleted. After a crash a cursor
	// resumes at its last written position: records acknowledged since are
	// delivered again. Default 250 ms.
	CheckpointPeriod time.Duration
	// Logger receives recovery and I/O warnings; nil discards them.
	Logger *slog.Logger
	// OnSync, if set, is called after every fsync of a segment file with its
	// duration and error (for a metric). It must not call into the Log.
	OnSync func(d time.Duration, err error)
	// Now stamps records appended with Append; default time.Now.
	Now func() time.Time

	faults *faults // test hook: injected write and fsync failures
}

// faults injects I/O failures in tests.
type faults struct {
	// write is called before writing n bytes to a segment; it returns how
	// many of them to really write before failing with err (nil: no fault).
	write func(n int) (allow int, err error)
	// sync, if it returns an error, replaces the fsync of a segment.
	sync func() error
	// cursorTmp, if it returns an error, fails the write of a temporary
	// cursor file.
	cursorTmp func() error
}

func (o Options) withDefaults() (Options, error) {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = max(DefaultMaxBytes, 2*o.SegmentBytes)
	}
	if o.SyncPeriod == 0 {
		o.SyncPeriod = DefaultSyncPeriod
	}
	if o.CheckpointPeriod == 0 {
		o.CheckpointPeriod = DefaultCheckpointPeriod
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.SegmentBytes < 4*segHeaderSize:
		return o, fmt.Errorf("spool: segment size %d: must be at least %d bytes", o.SegmentBytes, 4*segHeaderSize)
	case o.MaxBytes < 2*o.SegmentBytes:
		return o, fmt.Errorf("spool: max bytes %d: must be at least twice the segment size %d", o.MaxBytes, o.SegmentBytes)
	case o.Sync != SyncInterval && o.Sync != SyncEvery:
		return o, fmt.Errorf("spool: unknown sync policy %d", int(o.Sync))
	case o.SyncPeriod < 0 || o.CheckpointPeriod < 0:
		return o, fmt.Errorf("spool: negative period")
	}
	return o, nil
}
