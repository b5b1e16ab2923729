package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestMain lets tests run this test binary as the keyrelay command, so that
// signals and exit statuses are real.
func TestMain(m *testing.M) {
	if os.Getenv("KR_TEST_AS_MAIN") == "1" {
		args := []string{}
		if i := indexOf(os.Args, "--"); i >= 0 {
			args = os.Args[i+1:]
		}
		os.Args = append([]string{"keyrelay"}, args...)
		main()
		return
	}
	os.Exit(m.Run())
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// command returns the keyrelay command (this test binary) with env set on
// top of a clean KEYRELAY_ environment.
func command(t *testing.T, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYRELAY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "KR_TEST_AS_MAIN=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestBadConfiguration(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want []string // each must appear in stderr
	}{
		{map[string]string{"KEYRELAY_CHANNELS": "both"}, []string{`KEYRELAY_CHANNELS="both"`, "keyevent or keyspace"}},
		{map[string]string{"KEYRELAY_SHUTDOWN_TIMEOUT": "soon"}, []string{`KEYRELAY_SHUTDOWN_TIMEOUT="soon"`, "duration"}},
		{map[string]string{"KEYRELAY_DBS": "0,x"}, []string{`KEYRELAY_DBS="0,x"`, "whole numbers"}},
		{map[string]string{"KEYRELAY_SINKS": "stdout,kafka"}, []string{"KEYRELAY_SINKS", `unknown sink "kafka"`}},
		{map[string]string{"KEYRELAY_SINKS": "sqs"}, []string{"KEYRELAY_SQS_QUEUE_URL", "required when sqs is a sink"}},
		{map[string]string{"KEYRELAY_SINKS": "sns", "KEYRELAY_SNS_TOPIC_ARN": "my-topic"}, []string{"KEYRELAY_SNS_TOPIC_ARN", "topic ARN"}},
		{map[string]string{"KEYRELAY_LOG_LEVEL": "loud"}, []string{`KEYRELAY_LOG_LEVEL="loud"`, "debug, info, warn or error"}},
		{map[string]string{"KEYRELAY_LOG_FORMAT": "xml"}, []string{`KEYRELAY_LOG_FORMAT="xml"`}},
		{map[string]string{"KEYRELAY_OVERFLOW": "block"}, []string{`KEYRELAY_OVERFLOW="block"`, "drop-newest"}},
		{map[string]string{"KEYRELAY_BUFFER_RECORDS": "0"}, []string{"KEYRELAY_BUFFER_RECORDS", "at least 1"}},
		{map[string]string{"KEYRELAY_FIFO_GROUP": "color"}, []string{"KEYRELAY_FIFO_GROUP", "key, event, db or fixed"}},
		{map[string]string{"KEYRELAY_REDIS_URL": "http://user:s3cret@host"}, []string{"KEYRELAY_REDIS_URL"}},
		{map[string]string{"KEYRELAY_REDIS_CA_FILE": "/nonexistent.pem", "KEYRELAY_REDIS_URL": "rediss://h:6379"}, []string{"KEYRELAY_REDIS_CA_FILE"}},
		{map[string]string{"KEYRELAY_REDSI_URL": "redis://h:1"}, []string{"KEYRELAY_REDSI_URL: unknown variable"}},
		{map[string]string{"KEYRELAY_SPOOL_SYNC": "never"}, []string{`KEYRELAY_SPOOL_SYNC="never"`}},
		{map[string]string{"KEYRELAY_SPOOL_MAX_BYTES": "100000", "KEYRELAY_SPOOL_SEGMENT_BYTES": "65536"}, []string{"KEYRELAY_SPOOL_MAX_BYTES", "at least two segments"}},
		// A spool directory that cannot be used (a file): exit 2 naming it.
		{map[string]string{"KEYRELAY_SPOOL_DIR": "/dev/null/spool", "KEYRELAY_HTTP_ADDR": ""}, []string{"KEYRELAY_SPOOL_DIR", "/dev/null/spool"}},
		// Every problem at once.
		{map[string]string{"KEYRELAY_CHANNELS": "x", "KEYRELAY_BATCH_LINGER": "x", "KEYRELAY_DBS": "-1"},
			[]string{"KEYRELAY_CHANNELS", "KEYRELAY_BATCH_LINGER", "KEYRELAY_DBS"}},
	} {
		var stderr bytes.Buffer
		cmd := command(t, tc.env, "run")
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := exitStatus(err); code != 2 {
			t.Errorf("%v: exit status %d, want 2; stderr:\n%s", tc.env, code, stderr.String())
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.env, w, stderr.String())
			}
		}
		if strings.Contains(stderr.String(), "s3cret") {
			t.Errorf("secret leaked in: %s", stderr.String())
		}
	}
}

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/configuration.md's configuration table")

// TestConfigTableInDocs keeps the table in docs/configuration.md equal to
// `keyrelay help --markdown`, generated from the Config struct (make docs
// rewrites it).
func TestConfigTableInDocs(t *testing.T) {
	const page = "../../docs/configuration.md"
	var table bytes.Buffer
	if err := run(context.Background(), context.Background(), []string{"help", "--markdown"}, &table, &table); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)(<!-- config-table:start -->\n).*?(<!-- config-table:end -->)`)
	if !re.Match(doc) {
		t.Fatal(page + " lacks the <!-- config-table:start/end --> markers")
	}
	updated := re.ReplaceAll(doc, []byte("${1}"+strings.ReplaceAll(table.String(), "$", "$$")+"${2}"))
	if *updateDocs {
		if err := os.WriteFile(page, updated, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(updated, doc) {
		t.Fatal(page + "'s configuration table is stale: run make docs")
	}
	for _, v := range configVariables() {
		if !strings.Contains(table.String(), "`"+v+"`") {
			t.Errorf("%s missing from the table", v)
		}
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), context.Background(), []string{"help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range configVariables() {
		if !strings.Contains(out.String(), v) {
			t.Errorf("help lacks %s", v)
		}
	}
	if !strings.Contains(out.String(), "(default redis://localhost:6379)") {
		t.Errorf("help lacks defaults:\n%s", out.String())
	}
	cmd := command(t, nil, "frobnicate")
	if code := exitStatus(cmd.Run()); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}
