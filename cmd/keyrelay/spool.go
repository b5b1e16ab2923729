package main

import (
	"fmt"
	"io"
	"time"

	"github.com/keyrelay/keyrelay/bridge/spool"
)

// runSpool prints the state of the durable spool in KEYRELAY_SPOOL_DIR, read
// beside a running daemon without disturbing it (spool.Inspect: the
// positions are those last written to the cursor files, at most a quarter
// second old).
func runSpool(cfg *Config, w io.Writer) error {
	if cfg.SpoolDir == "" {
		fmt.Fprintln(w, "no spool: KEYRELAY_SPOOL_DIR is not set (records wait in memory)")
		return nil
	}
	st, err := spool.Inspect(cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", cfg.SpoolDir, err)
	}
	fmt.Fprintf(w, "spool %s\n", st.Dir)
	fmt.Fprintf(w, "files: %d, bytes: %d (bound %d)\n", st.Files, st.Bytes, cfg.SpoolMaxBytes)
	if st.Quarantined > 0 {
		fmt.Fprintf(w, "quarantined: %d files, %d bytes (*.corrupt)\n", st.Quarantined, st.QuarantinedBytes)
	}
	if st.Last >= st.First {
		fmt.Fprintf(w, "records: %d (seq %d to %d)\n", st.Last-st.First+1, st.First, st.Last)
	} else {
		fmt.Fprintf(w, "records: 0\n")
	}
	fmt.Fprintf(w, "oldest: %s\n", fmtTime(st.Oldest))
	fmt.Fprintf(w, "newest: %s\n", fmtTime(st.Newest))
	if len(st.Cursors) == 0 {
		fmt.Fprintln(w, "cursors: none")
	}
	for _, c := range st.Cursors {
		note := ""
		if c.Invalid {
			note = " (cursor file unreadable: restarts at the oldest record)"
		}
		fmt.Fprintf(w, "cursor %s: acked %d, lag %d records, %s%s\n",
			c.Name, c.Acked, c.Lag, c.LagTime.Round(time.Millisecond), note)
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
