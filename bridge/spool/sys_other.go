//go:build !linux

package spool

import (
	"errors"
	"fmt"
	"os"
)

// datasync flushes f to disk.
func datasync(f *os.File) error { return f.Sync() }

// lockDir creates the lock file; outside Linux the directory is not locked.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: lock file: %w", err)
	}
	return f, nil
}

// FreeBytes is implemented on Linux only.
func FreeBytes(dir string) (int64, error) {
	return 0, fmt.Errorf("spool: free space of %s: %w", dir, errors.ErrUnsupported)
}
