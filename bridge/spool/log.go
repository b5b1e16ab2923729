package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Log is the spool: an append-only sequence of records in segment files,
// read through named cursors. Append, Sync, Stat, Checkpoint and Cursor are
// safe for concurrent use.
type Log struct {
	dir      string
	opts     Options
	lock     *os.File
	recovery Recovery

	// wmu serializes writers (Append, rotation, Sync's hand-off, Close) and
	// guards the fields below it. It is held during write(2) and, under
	// SyncEvery, during fsync.
	wmu        sync.Mutex
	active     *os.File // write handle of the last segment; nil before the first Append or after a retirement
	activePath string
	retire     bool // the next Append starts a new segment
	dirty      bool // written since the last fsync of active
	// sealed are segments rotated away from under SyncInterval, still open:
	// the next Sync fsyncs and closes them, so that rotation never waits for
	// the disk (nor closes a file a Sync is using). dirPending: a segment
	// was created since the directory was last fsynced.
	sealed     []sealedFile
	dirPending bool
	enc        []byte

	// syncMu serializes Sync calls. Order: syncMu, then wmu.
	syncMu sync.Mutex
	// ckmu serializes checkpoints and cursor file removal. Order: wmu,
	// ckmu, mu.
	ckmu sync.Mutex

	// mu guards the state readers share with the writer. Never held during
	// I/O. next and the last segment's size are written under wmu and mu.
	mu          sync.Mutex
	segs        []*segment // by base; the last is the one written to
	next        uint64     // sequence number of the next record
	bytes       int64      // sum of segment sizes
	newest      int64      // append time of the newest record, 0 if unknown
	cursors     map[string]*cursorState
	gen         uint64        // bumped by every publish and rotation
	wake        chan struct{} // closed on the next bump, if a reader waits
	closed      bool
	counters    counters
	quarantined int
	qBytes      int64
	lostSeen    map[uint64]bool // first seqs of lost ranges already logged

	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// segment is one segment file. Fields are guarded by Log.mu.
type segment struct {
	base      uint64 // sequence number of its first record
	path      string
	size      int64 // bytes written and visible to readers
	firstTime int64 // append times of its first and last records, 0 if unknown
	lastTime  int64
	sealed    bool // no more writes; readers move on at its end
	damaged   bool // quarantined instead of deleted when reclaimed
}

type sealedFile struct {
	f     *os.File
	path  string
	dirty bool
}

type counters struct {
	syncs, syncErrors, writeErrors int64
}

// Open opens (creating it if needed) the spool in dir and recovers it: a torn
// tail of the last segment is cut, damage is read around and reported (see
// Recovery), leftover files of an unfinished reclaim are deleted. Damaged
// content never makes Open fail; an unusable directory (cannot be created,
// listed, locked or written) or invalid options do. The directory is locked
// (flock) until Close.
func Open(dir string, opts Options) (*Log, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir: dir, opts: opts, lock: lock, next: 1,
		cursors:  make(map[string]*cursorState),
		lostSeen: make(map[uint64]bool),
		done:     make(chan struct{}),
	}
	if err := l.recover(); err != nil {
		if l.active != nil {
			l.active.Close()
		}
		lock.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

// Recovery returns what Open found and repaired.
func (l *Log) Recovery() Recovery { return l.recovery }

// Dir returns the spool directory.
func (l *Log) Dir() string { return l.dir }

// SyncPolicy returns the log's fsync policy (Options.Sync).
func (l *Log) SyncPolicy() SyncPolicy { return l.opts.Sync }

// Append appends payloads as consecutive records stamped with Options.Now and
// returns the sequence number of the first; see AppendAt.
func (l *Log) Append(payloads [][]byte) (first uint64, err error) {
	return l.AppendAt(l.opts.Now(), payloads)
}

// AppendAt appends payloads as consecutive records, all stamped with at
// (keyrelay passes the receive time of the newest record), and returns the
// sequence number of the first. The log copies the payloads; the caller keeps
// them.
//
// All or nothing: on error nothing was appended and no sequence number was
// consumed. Errors: ErrFull (the bound, see Options.MaxBytes; before
// returning it, AppendAt writes cursor positions and deletes passed segments
// if that makes room), ErrTooLarge, ErrClosed, or an *IOError (a failed write
// or, under SyncEvery, fsync; the log stays usable and a later Append may
// succeed). Keep batches far smaller than a segment: a batch larger than
// MaxBytes minus a segment may never fit.
//
// The batch is one write(2): when AppendAt returns, the records survive a
// crash of the process and are visible to cursors. Under SyncEvery they have
// also been fsynced; under SyncInterval that happens within SyncPeriod. A
// call with no payloads appends nothing and returns the next sequence number.
func (l *Log) AppendAt(at time.Time, payloads [][]byte) (first uint64, err error) {
	var need int64
	for _, p := range payloads {
		if len(p) > MaxRecordBytes {
			return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(p), MaxRecordBytes)
		}
		need += frameSize(len(p))
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	closed, first := l.closed, l.next
	var cur *segment
	if l.active != nil {
		cur = l.segs[len(l.segs)-1]
	}
	l.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if len(payloads) == 0 {
		return first, nil
	}
	rotate := cur == nil || l.retire || (cur.size > segHeaderSize && cur.size+need > l.opts.SegmentBytes)
	reserve := need
	if rotate {
		reserve += segHeaderSize
	}
	if err := l.reserve(reserve); err != nil {
		return 0, err
	}
	if rotate {
		if cur, err = l.rotate(); err != nil {
			return 0, err
		}
	}
	ts := unixNano(at)
	buf := l.enc[:0]
	for i, p := range payloads {
		buf = appendFrame(buf, first+uint64(i), ts, p)
	}
	if cap(buf) <= 8<<20 {
		l.enc = buf
	}
	if err := l.write(cur, buf); err != nil {
		return 0, err
	}
	if l.opts.Sync == SyncEvery {
		if err := l.fsync(l.active, cur.path); err != nil {
			// Take the records back: the caller is told they were not
			// appended. The file is not trusted for more.
			if l.active.Truncate(cur.size) != nil {
				l.opts.Logger.Warn("spool: cannot truncate after failed fsync", "file", cur.path)
			}
			l.retire = true
			return 0, err
		}
	} else {
		l.dirty = true
	}
	l.mu.Lock()
	cur.size += need
	if cur.firstTime == 0 {
		cur.firstTime = ts
	}
	cur.lastTime = ts
	if ts != 0 {
		l.newest = ts
	}
	l.next += uint64(len(payloads))
	l.bytes += need
	l.bumpLocked()
	l.mu.Unlock()
	return first, nil
}

// reserve returns ErrFull if n more bytes would exceed MaxBytes, after
// persisting cursors and deleting passed segments if that frees enough.
func (l *Log) reserve(n int64) error {
	l.mu.Lock()
	fits, used := l.bytes+n <= l.opts.MaxBytes, l.bytes
	reclaimable := !fits && l.reclaimableLocked()
	l.mu.Unlock()
	if fits {
		return nil
	}
	if reclaimable {
		if err := l.checkpoint(); err != nil {
			l.opts.Logger.Warn("spool: checkpoint to free space failed", "err", err)
		}
		l.mu.Lock()
		fits, used = l.bytes+n <= l.opts.MaxBytes, l.bytes
		l.mu.Unlock()
		if fits {
			return nil
		}
	}
	return fmt.Errorf("%w: %d of %d bytes in use, %d more needed", ErrFull, used, l.opts.MaxBytes, n)
}

// write writes buf at the end of the active segment. On failure it cuts what
// was written, so that the file ends on a frame boundary; if even that fails
// the segment is retired.
func (l *Log) write(seg *segment, buf []byte) error {
	b, fault := buf, error(nil)
	if f := l.opts.faults; f != nil && f.write != nil {
		if allow, err := f.write(len(buf)); err != nil {
			b, fault = buf[:min(allow, len(buf))], err
		}
	}
	n, err := l.active.Write(b)
	if err == nil {
		err = fault
	}
	if err == nil {
		return nil
	}
	l.mu.Lock()
	l.counters.writeErrors++
	l.mu.Unlock()
	if n > 0 {
		if terr := l.active.Truncate(seg.size); terr != nil {
			l.retire = true
		}
	}
	return &IOError{Op: "write", Path: seg.path, Err: err}
}

// rotate seals the last segment (deleting it if it holds no record) and
// starts a new one at l.next. Under SyncInterval the sealed file is fsynced
// by the next Sync, not here: Append never waits for the disk then. Called
// with wmu held.
func (l *Log) rotate() (*segment, error) {
	if l.active != nil {
		if l.opts.Sync == SyncEvery {
			l.active.Close() // every record in it is fsynced
		} else {
			l.sealed = append(l.sealed, sealedFile{l.active, l.activePath, l.dirty && !l.retire})
		}
		l.active, l.dirty = nil, false
	}
	var empty *segment
	l.mu.Lock()
	if n := len(l.segs); n > 0 {
		last := l.segs[n-1]
		last.sealed = true
		if last.size <= segHeaderSize {
			empty = last
			l.segs = l.segs[:n-1]
			l.bytes -= last.size
		}
	}
	l.bumpLocked()
	l.mu.Unlock()
	if empty != nil {
		if err := os.Remove(empty.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.opts.Logger.Warn("spool: cannot delete empty segment", "file", empty.path, "err", err)
		}
	}

	path := filepath.Join(l.dir, segName(l.next))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, &IOError{Op: "create", Path: path, Err: err}
	}
	fail := func(op string, err error) (*segment, error) {
		f.Close()
		os.Remove(path)
		return nil, &IOError{Op: op, Path: path, Err: err}
	}
	if _, err := f.Write(encodeSegHeader(l.next, unixNano(l.opts.Now()))); err != nil {
		return fail("write", err)
	}
	// The directory entry must be durable before the records in the file
	// count as durable: at once under SyncEvery, else in the next Sync.
	if l.opts.Sync == SyncEvery {
		if err := syncDir(l.dir); err != nil {
			return fail("sync dir", err)
		}
	} else {
		l.dirPending = true
	}
	seg := &segment{base: l.next, path: path, size: segHeaderSize}
	l.mu.Lock()
	l.segs = append(l.segs, seg)
	l.bytes += segHeaderSize
	l.mu.Unlock()
	l.active, l.activePath, l.retire, l.dirty = f, path, false, false
	return seg, nil
}

// bumpLocked tells waiting readers that something changed.
func (l *Log) bumpLocked() {
	l.gen++
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
}

// waitLocked returns a channel closed at the next bump.
func (l *Log) waitLocked() <-chan struct{} {
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	return l.wake
}

// firstLocked returns the sequence number of the oldest record on disk (the
// next one if there is none).
func (l *Log) firstLocked() uint64 {
	if len(l.segs) > 0 {
		return min(l.segs[0].base, l.next)
	}
	return l.next
}

// halt marks the log closed, stops its background work and shuts every
// open cursor (pending Next calls return ErrClosed). It reports false when
// the log was already closed.
func (l *Log) halt() bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	close(l.done)
	l.bumpLocked()
	var open []*Cursor
	for _, st := range l.cursors {
		if st.open != nil {
			open = append(open, st.open)
		}
	}
	l.mu.Unlock()
	l.wg.Wait()
	for _, c := range open {
		c.shut()
	}
	return true
}

// Close closes every cursor (pending Next calls return ErrClosed), writes
// their positions, fsyncs and closes the last segment and unlocks the
// directory. Records not yet acknowledged stay for the next Open.
func (l *Log) Close() error {
	if !l.halt() {
		return nil
	}
	l.wmu.Lock() // an Append that got in before closed was set finishes first
	l.wmu.Unlock()
	errs := []error{l.checkpoint(), l.Sync()}
	l.wmu.Lock()
	if l.active != nil {
		errs = append(errs, l.active.Close())
		l.active = nil
	}
	l.wmu.Unlock()
	errs = append(errs, l.lock.Close())
	return errors.Join(errs...)
}
