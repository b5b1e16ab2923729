package spool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
)

// Checkpoint writes every cursor position that changed to its file, then
// deletes the segment files every cursor has passed (renaming damaged ones
// *.corrupt instead). The log does this every CheckpointPeriod and when
// Append would otherwise return ErrFull; call it after Cursor.Drop to free the
// space at once.
//
// Order matters for crash safety: a cursor file is written to a temporary
// file, fsynced, renamed over the old one (overwritten in place when the
// disk is full) and the directory fsynced; only then does its new position
// count for deleting segments. A segment deleted
// before its cursors were durable would turn a crash into a gap.
func (l *Log) Checkpoint() error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.checkpoint()
}

func (l *Log) checkpoint() error {
	l.ckmu.Lock()
	defer l.ckmu.Unlock()
	type pos struct {
		st *cursorState
		cf cursorFile
	}
	var todo []pos
	l.mu.Lock()
	for _, st := range l.cursors {
		if st.acked != st.persisted || st.unsaved || st.overflowChanged() {
			// Position and overflow from one moment: a Drop changes both
			// under l.mu.
			todo = append(todo, pos{st, cursorFile{acked: st.acked, ackedTime: st.ackedTime, open: st.ovf, sealed: st.sealed, limbo: st.limboOvf}})
		}
	}
	l.mu.Unlock()
	var errs []error
	var written []pos
	for _, p := range todo {
		if err := l.writeCursorFile(p.st.name, p.cf); err != nil {
			errs = append(errs, err)
			continue
		}
		written = append(written, p)
	}
	if len(written) > 0 {
		if err := syncDir(l.dir); err != nil {
			errs = append(errs, &IOError{Op: "sync dir", Path: l.dir, Err: err})
			written = nil
		}
	}
	l.mu.Lock()
	for _, p := range written {
		p.st.persisted, p.st.persistedTime, p.st.unsaved = p.cf.acked, p.cf.ackedTime, false
		p.st.savedOvf, p.st.savedSealed, p.st.savedLimbo = p.cf.open, p.cf.sealed, p.cf.limbo
	}
	gone := l.reclaimLocked()
	l.mu.Unlock()
	errs = append(errs, l.removeSegments(gone)...)
	return errors.Join(errs...)
}

// reclaimLocked takes the segments every cursor's persisted position has
// passed out of the log and returns them for removeSegments. With no cursor
// at all nothing is reclaimed: records wait for a reader.
func (l *Log) reclaimLocked() []segment {
	if len(l.cursors) == 0 {
		return nil
	}
	minPos := uint64(math.MaxUint64)
	for _, st := range l.cursors {
		minPos = min(minPos, st.persisted)
	}
	var gone []segment
	for len(l.segs) > 1 && l.segs[1].base-1 <= minPos {
		gone = append(gone, *l.segs[0]) // a copy: a cursor may still flag it
		l.bytes -= l.segs[0].size
		l.segs[0] = nil
		l.segs = l.segs[1:]
	}
	return gone
}

// reclaimableLocked reports whether a checkpoint would free the oldest
// segment, judging by positions acknowledged in memory.
func (l *Log) reclaimableLocked() bool {
	if len(l.cursors) == 0 || len(l.segs) < 2 {
		return false
	}
	for _, st := range l.cursors {
		if st.acked < l.segs[1].base-1 {
			return false
		}
	}
	return true
}

// removeSegments deletes reclaimed segment files, or quarantines the damaged
// ones: renamed *.corrupt and kept for inspection (not counted in MaxBytes).
func (l *Log) removeSegments(gone []segment) []error {
	var errs []error
	for _, seg := range gone {
		if seg.damaged {
			to := seg.path + corruptSuffix
			if err := os.Rename(seg.path, to); err != nil {
				errs = append(errs, &IOError{Op: "rename", Path: seg.path, Err: err})
				continue
			}
			l.opts.Logger.Warn("spool: quarantined damaged segment", "file", to)
			l.mu.Lock()
			l.quarantined++
			l.qBytes += seg.size
			l.mu.Unlock()
			continue
		}
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, &IOError{Op: "remove", Path: seg.path, Err: err})
		}
	}
	return errs
}

// OldestSegmentEnd returns the sequence number every cursor must pass (by
// acknowledging or by Drop) for the oldest segment file to be deleted, and
// false when there is a single segment (which is never deleted). The relay's
// drop-oldest policy calls Drop(end) on the cursors behind it, then
// Checkpoint.
func (l *Log) OldestSegmentEnd() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segs) < 2 {
		return 0, false
	}
	return l.segs[1].base - 1, true
}

// RemoveCursor deletes a closed cursor and its file, so that it no longer
// holds back the deletion of segments. The relay removes the cursors of sinks
// it no longer has: a cursor nobody reads keeps the log growing to ErrFull.
// Removing a cursor that does not exist is not an error.
func (l *Log) RemoveCursor(name string) error {
	l.ckmu.Lock()
	defer l.ckmu.Unlock()
	l.mu.Lock()
	st := l.cursors[name]
	if st != nil && st.open != nil {
		l.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrCursorBusy, name)
	}
	delete(l.cursors, name)
	l.mu.Unlock()
	if st == nil {
		return nil
	}
	path := filepath.Join(l.dir, cursorPrefix+name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &IOError{Op: "remove", Path: path, Err: err}
	}
	if err := syncDir(l.dir); err != nil {
		return &IOError{Op: "sync dir", Path: l.dir, Err: err}
	}
	return nil
}

// writeCursorFile replaces a cursor file atomically: temporary file, fsync,
// rename. The caller fsyncs the directory. When the disk is full the
// temporary file cannot be written, and without new positions no segment
// could ever be deleted to make room: then the existing file is overwritten
// in place (160 bytes at offset 0, within one sector; a torn write fails the
// CRC and resets the cursor to the oldest record, which repeats and never
// skips, and loses its pending overflow).
func (l *Log) writeCursorFile(name string, cf cursorFile) error {
	path := filepath.Join(l.dir, cursorPrefix+name)
	b := encodeCursor(cf)
	err := writeReplace(path, b, l.opts.faults)
	if err == nil || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	f, ferr := os.OpenFile(path, os.O_WRONLY, 0)
	if ferr != nil {
		return err
	}
	_, ferr = f.WriteAt(b, 0)
	if ferr == nil {
		ferr = datasync(f)
	}
	if cerr := f.Close(); ferr == nil {
		ferr = cerr
	}
	if ferr != nil {
		return errors.Join(err, &IOError{Op: "write", Path: path, Err: ferr})
	}
	return nil
}

// writeReplace writes b to path through a temporary file and a rename.
func writeReplace(path string, b []byte, fl *faults) error {
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return &IOError{Op: "create", Path: tmp, Err: err}
	}
	if fl != nil && fl.cursorTmp != nil {
		err = fl.cursorTmp()
	}
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = datasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return &IOError{Op: "write", Path: tmp, Err: err}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return &IOError{Op: "rename", Path: tmp, Err: err}
	}
	return nil
}

// syncDir fsyncs a directory, making renames, creations and deletions in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
