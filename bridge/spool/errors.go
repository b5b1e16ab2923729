package spool

import (
	"errors"
	"time"
)

// Errors returned by the log. Classify with errors.Is.
var (
	// ErrFull: the append would take the segment files beyond
	// Options.MaxBytes, even after deleting every segment all cursors have
	// passed. Nothing was appended; the caller applies its overflow policy
	// (drop the batch, or Cursor.Drop on the slowest cursors, then retry).
	ErrFull = errors.New("spool: full")
	// ErrClosed: the log or the cursor is closed.
	ErrClosed = errors.New("spool: closed")
	// ErrLocked: another process (or another Log in this one) has the
	// directory open.
	ErrLocked = errors.New("spool: directory in use")
	// ErrTooLarge: a payload is longer than MaxRecordBytes. Nothing was
	// appended.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrCursorBusy: the cursor is already open (Cursor), or still open
	// (RemoveCursor).
	ErrCursorBusy = errors.New("spool: cursor in use")
)

// IOError is a failed write, fsync, read or file operation on the spool. The
// log stays usable: an Append that failed appended nothing and a later one may
// succeed (for example once disk space is back); a failed fsync retires the
// segment, so that later records go to a new file. errors.Is(err,
// syscall.ENOSPC) tells a full disk.
type IOError struct {
	Op   string // "write", "fsync", "read", "create", "open", "truncate", "rename", "remove", "sync dir"
	Path string
	Err  error
}

func (e *IOError) Error() string { return "spool: " + e.Op + " " + e.Path + ": " + e.Err.Error() }

func (e *IOError) Unwrap() error { return e.Err }

// LostRange is a run of records that the log can no longer deliver: damaged
// frames in a segment file, a segment file that disappeared, or records an OS
// crash erased after another cursor had acknowledged them. Every sequence
// number names one appended record, so Count is exact.
type LostRange struct {
	First, Last uint64
	Count       int64 // Last - First + 1
	// Since is the append time of the last record delivered before the range
	// (zero when unknown), Until that of the first record after it.
	Since, Until time.Time
}

func newLostRange(first, last uint64, since, until int64) LostRange {
	return LostRange{
		First: first, Last: last, Count: int64(last - first + 1),
		Since: fromUnixNano(since), Until: fromUnixNano(until),
	}
}
