//go:build linux

package spool

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// datasync flushes f's data (and the metadata needed to read it) to disk.
// It goes through SyscallConn so that a concurrent Close cannot hand the
// descriptor number to another file mid-call.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// lockDir creates and locks (flock, exclusive, non-blocking) the lock file
// of a spool directory. The lock goes with the process: a crash releases it.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: lock file: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: lock file: %w", err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		lerr = err
	}
	if lerr != nil {
		f.Close()
		if errors.Is(lerr, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked", ErrLocked, path)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", path, lerr)
	}
	return f, nil
}

// FreeBytes returns the space available to an unprivileged user on the file
// system holding dir (statfs f_bavail × f_bsize). keyrelay compares it with
// Options.MaxBytes at start.
func FreeBytes(dir string) (int64, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", dir, err)
	}
	return int64(s.Bavail) * int64(s.Bsize), nil
}
