package sqs_test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// serverEnv, set in the environment of this test binary, makes it serve
// cannedSQS instead of running tests (see TestMain).
const serverEnv = "KEYRELAY_SQS_BENCH_SERVER"

// TestMain runs the tests, or, in the process startServer starts, the
// server: it prints the server's URL on a line and serves until its
// standard input closes.
func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) == "" {
		os.Exit(m.Run())
	}
	srv := httptest.NewServer(cannedSQS())
	fmt.Println(srv.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
	os.Exit(0)
}

// startServer starts cannedSQS in another process (this test binary again)
// and returns its URL: the benchmark's process then spends CPU on the
// client's side only, and allocs/op count the client's allocations alone.
func startServer(tb testing.TB) string {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("the canned SQS server did not start: %v", err)
	}
	return strings.TrimSpace(line)
}

// cannedSQS speaks SQS's JSON protocol as far as the sink uses it: it
// answers GetQueueAttributes with a 256 KiB MaximumMessageSize and
// SendMessageBatch by accepting every entry, with the MessageId and body
// MD5 SQS would give. It refuses requests without a SigV4 Authorization
// header.
func cannedSQS() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=") {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"__type":"com.amazonaws.sqs#MissingAuthenticationToken","message":"no SigV4 signature"}`)
			return
		}
		switch r.Header.Get("X-Amz-Target") {
		case "AmazonSQS.GetQueueAttributes":
			_, _ = io.WriteString(w, `{"Attributes":{"MaximumMessageSize":"262144"}}`)
		case "AmazonSQS.SendMessageBatch":
			var in struct {
				Entries []struct{ Id, MessageBody string }
			}
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil || len(in.Entries) == 0 {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"__type":"com.amazonaws.sqs#EmptyBatchRequest","message":"no entries"}`)
				return
			}
			var b strings.Builder
			b.WriteString(`{"Successful":[`)
			for i, e := range in.Entries {
				if i > 0 {
					b.WriteByte(',')
				}
				sum := md5.Sum([]byte(e.MessageBody))
				fmt.Fprintf(&b, `{"Id":%q,"MessageId":"6c5a3b1e-0000-4000-8000-%012d","MD5OfMessageBody":"%s","MD5OfMessageAttributes":"00000000000000000000000000000000"}`,
					e.Id, i, hex.EncodeToString(sum[:]))
			}
			b.WriteString(`]}`)
			_, _ = io.WriteString(w, b.String())
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"__type":"com.amazonaws.sqs#UnsupportedOperation","message":"not in the canned server"}`)
		}
	})
}
