package spool

import (
	"errors"
	"os"
	"time"
)

// fsync makes f durable, counting and reporting it.
func (l *Log) fsync(f *os.File, path string) error {
	start := time.Now()
	var err error
	if fl := l.opts.faults; fl != nil && fl.sync != nil {
		err = fl.sync()
	}
	if err == nil {
		err = datasync(f)
	}
	d := time.Since(start)
	l.mu.Lock()
	l.counters.syncs++
	if err != nil {
		l.counters.syncErrors++
	}
	l.mu.Unlock()
	if l.opts.OnSync != nil {
		l.opts.OnSync(d, err)
	}
	if err != nil {
		return &IOError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

// Sync fsyncs the records appended since the last fsync (and segments sealed
// since, and the directory if a segment was created). Under SyncInterval the
// log calls it every SyncPeriod; call it to shorten that (for example at
// shutdown). Append does not wait for it. A failed fsync of the current
// segment retires it: later records go to a new file. Errors are returned
// (and passed to Options.OnSync).
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	sealed, dirSync := l.sealed, l.dirPending
	l.sealed, l.dirPending = nil, false
	f, path := l.active, l.activePath
	active := f != nil && l.dirty && !l.retire
	if active {
		l.dirty = false
	}
	l.wmu.Unlock()
	var errs []error
	for _, s := range sealed {
		if s.dirty {
			if err := l.fsync(s.f, s.path); err != nil {
				errs = append(errs, err)
			}
		}
		s.f.Close()
	}
	if dirSync {
		if err := syncDir(l.dir); err != nil {
			errs = append(errs, &IOError{Op: "sync dir", Path: l.dir, Err: err})
			l.wmu.Lock()
			l.dirPending = true
			l.wmu.Unlock()
		}
	}
	if active {
		if err := l.fsync(f, path); err != nil {
			errs = append(errs, err)
			l.wmu.Lock()
			if l.active == f {
				l.retire = true
			}
			l.wmu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// run fsyncs (SyncInterval) and checkpoints in the background.
func (l *Log) run() {
	defer l.wg.Done()
	var syncC <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncPeriod)
		defer t.Stop()
		syncC = t.C
	}
	ck := time.NewTicker(l.opts.CheckpointPeriod)
	defer ck.Stop()
	var lastErr string
	report := func(what string, err error) {
		if err == nil {
			lastErr = ""
			return
		}
		if err.Error() != lastErr { // once per distinct error, not every tick
			lastErr = err.Error()
			l.opts.Logger.Warn("spool: "+what+" failed", "err", err)
		}
	}
	for {
		select {
		case <-l.done:
			return
		case <-syncC:
			report("fsync", l.Sync())
		case <-ck.C:
			report("checkpoint", l.checkpoint())
		}
	}
}
