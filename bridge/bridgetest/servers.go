package bridgetest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Redis is a redis-server started for one test.
type Redis struct {
	Addr string
	Port int
	Dir  string
	args []string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartRedis starts redis-server on a free loopback port with
// notify-keyspace-events KEA (both channel kinds, every class) unless args
// set it, plus any extra args ("--requirepass", "x", …). It is stopped when
// the test ends.
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (make test installs it): %v", err)
	}
	r := &Redis{Port: FreePort(t), Dir: t.TempDir(), t: t}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	r.args = append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.Dir, "--logfile", filepath.Join(r.Dir, "redis.log"),
	}, args...)
	if !containsArg(args, "--notify-keyspace-events") {
		r.args = append(r.args, "--notify-keyspace-events", "KEA")
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

// Start (re)starts the server on the same port and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", r.args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
		if err == nil {
			fmt.Fprintf(c, "PING\r\n")
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
			r.t.Fatalf("redis-server on %s did not start: %v\n%s", r.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (no save) and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_, _ = r.cmd.Process.Wait()
	r.cmd = nil
}

// Restart stops and starts the server on the same port.
func (r *Redis) Restart() {
	r.Stop()
	r.Start()
}

// Client returns a go-redis client for the server, closed with the test.
func (r *Redis) Client(db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DB: db, Protocol: 2})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// Log returns the server's log file.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	return string(b)
}

// Fauxqs is the fauxqs SQS/SNS emulator started for one test.
type Fauxqs struct {
	Endpoint string // http://127.0.0.1:port
	Port     int
	cmd      *exec.Cmd
}

// FauxqsBin finds the fauxqs executable: $KEYRELAY_TEST_FAUXQS, the copy
// `make test` installs under .ci/node_modules, or $PATH.
func FauxqsBin() (string, error) {
	if p := os.Getenv("KEYRELAY_TEST_FAUXQS"); p != "" {
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".ci", "node_modules", ".bin", "fauxqs")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
		}
	}
	return exec.LookPath("fauxqs")
}

// StartFauxqs starts fauxqs on a free loopback port, stopped when the test
// ends. It sets AWS_* variables (region, dummy keys, endpoint) for the test,
// so the SDK's standard configuration chain reaches the emulator.
func StartFauxqs(t testing.TB) *Fauxqs {
	t.Helper()
	bin, err := FauxqsBin()
	if err != nil {
		t.Fatalf("fauxqs is not installed (make test installs it with npm): %v", err)
	}
	f := &Fauxqs{Port: FreePort(t)}
	f.Endpoint = "http://127.0.0.1:" + strconv.Itoa(f.Port)
	f.cmd = exec.Command(bin)
	f.cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(f.Port), "FAUXQS_HOST=127.0.0.1", "FAUXQS_LOGGER=false")
	out, err := os.CreateTemp(t.TempDir(), "fauxqs-*.log")
	if err != nil {
		t.Fatal(err)
	}
	f.cmd.Stdout, f.cmd.Stderr = out, out
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start fauxqs: %v", err)
	}
	t.Cleanup(func() {
		_ = f.cmd.Process.Kill()
		_, _ = f.cmd.Process.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(f.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("fauxqs on %s did not start: %v\n%s", f.Endpoint, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_ENDPOINT_URL", f.Endpoint)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return f
}
