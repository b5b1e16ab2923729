//go:build pprof

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// A binary built with -tags pprof writes a CPU profile of its whole run to
// the file KEYRELAY_CPUPROFILE names (keyrelay-bench -cpuprofile sets it;
// see docs/performance.md). Release builds do not
// carry this file, so no variable of theirs can start a profile.
func init() {
	path := os.Getenv("KEYRELAY_CPUPROFILE")
	if path == "" {
		return
	}
	// Not a configuration variable: a release build refuses it as unknown.
	os.Unsetenv("KEYRELAY_CPUPROFILE")
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyrelay: KEYRELAY_CPUPROFILE:", err)
		os.Exit(2)
	}
	atExit = append(atExit, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
