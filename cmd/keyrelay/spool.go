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
		if c.Overflow > 0 {
			note += fmt.Sprintf(", %d records dropped by the bound and not yet reported to the sink (its overflow gap record goes first)", c.Overflow)
		}
		fmt.Fprintf(w, "cursor %s: acked %d, lag %d records, %s%s\n",
			c.Name, c.Acked, c.Lag, c.LagTime.Round(time.Millisecond), note)
	}
	checks, err := spool.Verify(cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", cfg.SpoolDir, err)
	}
	printChecks(w, checks)
	return nil
}

// printChecks says what spool.Verify found in each segment file, and what
// the next start does about it.
func printChecks(w io.Writer, checks []spool.SegmentCheck) {
	var records int64
	found := 0
	for _, c := range checks {
		records += c.Records
		if !c.Damaged() {
			continue
		}
		found++
		if c.Err != nil {
			fmt.Fprintf(w, "%s: unreadable: %v\n", c.Name, c.Err)
			continue
		}
		if c.BadHeader {
			fmt.Fprintf(w, "%s: invalid header (its records are read anyway)\n", c.Name)
		}
		for _, lr := range c.Lost {
			fmt.Fprintf(w, "%s: damaged: %d %s lost (seq %d to %d, appended between %s and %s): "+
				"each sink that has not passed them gets a gap record (reason spool); the file is "+
				"quarantined (*.corrupt) once every sink has passed it\n",
				c.Name, lr.Count, plural(lr.Count, "record"), lr.First, lr.Last, fmtTime(lr.Since), fmtTime(lr.Until))
		}
		switch {
		case c.TailBytes > 0 && c.Last:
			fmt.Fprintf(w, "%s: torn tail: %d bytes after the last whole record: the next start cuts them "+
				"(never confirmed; beside a running keyrelay, possibly a batch being written)\n", c.Name, c.TailBytes)
		case c.TailBytes > 0:
			fmt.Fprintf(w, "%s: %d bytes after the last whole record that are no record: the sinks skip "+
				"them (records they held are reported lost with the next file)\n", c.Name, c.TailBytes)
		}
	}
	if found == 0 {
		fmt.Fprintf(w, "check: %d records in %d files, every checksum valid\n", records, len(checks))
	} else {
		fmt.Fprintf(w, "check: %d records in %d files, %d %s with findings (above)\n",
			records, len(checks), found, plural(int64(found), "file"))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// plural returns word, with an s unless n is 1.
func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
