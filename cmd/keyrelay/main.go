// Command keyrelay relays Redis / Valkey keyspace notifications from one
// ElastiCache primary endpoint to durable sinks (SQS, SNS, stdout).
//
// main is thin: signals become contexts, everything else is run, and run's
// error becomes the exit status (0 ok, 1 failure, 2 bad configuration).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// The first SIGTERM/SIGINT stops reading and starts the flush; a second
	// one aborts the flush.
	ctx, stop := context.WithCancel(context.Background())
	abortCtx, abort := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// A closed standard output (keyrelay | head) must be an EPIPE error the
	// stdout sink reports, not a silent death by SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	go func() {
		<-sigs
		stop()
		<-sigs
		abort()
	}()
	err := run(ctx, abortCtx, os.Args[1:], os.Stdout, os.Stderr)
	code := exitCode(err, os.Stderr)
	for _, f := range atExit {
		f()
	}
	os.Exit(code)
}

// atExit runs just before the process exits (the profiling build's hook).
var atExit []func()

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// run executes one command. ctx ends the daemon gracefully; abort ends its
// flush early.
func run(ctx, abort context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "run":
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		return runDaemon(ctx, abort, cfg, stdout, stderr)
	case "check":
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		return runCheck(ctx, cfg, stdout)
	case "healthcheck":
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		return runHealthcheck(ctx, cfg, stdout)
	case "spool":
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		return runSpool(cfg, stdout)
	case "version", "--version":
		fmt.Fprintf(stdout, "keyrelay %s\n", version)
		return nil
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "--markdown" {
			return printUsage(stdout, usageTable)
		}
		fmt.Fprint(stdout, helpText)
		return printUsage(stdout, usageList)
	}
	return &usageError{fmt.Sprintf("unknown command %q (try keyrelay help)", cmd)}
}

const helpText = `keyrelay relays Redis / Valkey keyspace notifications to SQS, SNS or stdout.

Usage:
  keyrelay [run]        run the daemon until SIGTERM or SIGINT (a second signal aborts the flush)
  keyrelay check        check Redis, notifications and every sink with this configuration; exit 0 when all pass
  keyrelay healthcheck  probe the local /healthz (for container health checks); exit 0 or 1
  keyrelay spool        print the durable spool's state (KEYRELAY_SPOOL_DIR): files, bytes, each sink's cursor and lag
  keyrelay version      print the version
  keyrelay help         this text (--markdown: the configuration table of docs/configuration.md)

Configuration (environment variables; AWS access uses the SDK's standard chain:
AWS_REGION, AWS_PROFILE, the task role, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_SNS):
`

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "keyrelay: %v\n", err)
	var ce *ConfigError
	var ue *usageError
	if errors.As(err, &ce) || errors.As(err, &ue) {
		return 2
	}
	return 1
}
