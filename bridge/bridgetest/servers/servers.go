// Package servers starts the real servers keyrelay's tests and benchmark
// harness run against: redis-server and the fauxqs SQS/SNS emulator, each on
// a free loopback port; and it parses keyrelay's /metrics (ParseMetrics). It
// does not import "testing", so that a program (cmd/keyrelay-bench) can use
// it; bridgetest wraps it for tests.
package servers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Redis is a redis-server process.
type Redis struct {
	Addr string
	Port int
	Dir  string // working directory; the log is Dir/redis.log
	args []string
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port, working in dir
// (which must exist), with notify-keyspace-events KEA (both channel kinds,
// every class) unless args set it, plus any extra args ("--requirepass", "x",
// …). The caller stops it with Stop.
func StartRedis(dir string, args ...string) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server is not installed (make test installs it): %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Port: port, Dir: dir, Addr: "127.0.0.1:" + strconv.Itoa(port)}
	r.args = append([]string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.Dir, "--logfile", filepath.Join(r.Dir, "redis.log"),
	}, args...)
	if !containsArg(args, "--notify-keyspace-events") {
		r.args = append(r.args, "--notify-keyspace-events", "KEA")
	}
	if err := r.Start(); err != nil {
		return nil, err
	}
	return r, nil
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
func (r *Redis) Start() error {
	r.cmd = exec.Command("redis-server", r.args...)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
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
				return nil
			}
		}
		if time.Now().After(deadline) {
			r.Stop()
			return fmt.Errorf("redis-server on %s did not start: %v\n%s", r.Addr, err, r.Log())
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

// Pid returns the server's process id (0 when stopped).
func (r *Redis) Pid() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Log returns the server's log file.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	return string(b)
}

// Fauxqs is a fauxqs SQS/SNS emulator process.
type Fauxqs struct {
	Endpoint string // http://127.0.0.1:port
	Port     int
	LogFile  string
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

// StartFauxqs starts fauxqs on a free loopback port, logging to a file in
// dir, and waits until it answers. The caller stops it with Stop.
func StartFauxqs(dir string) (*Fauxqs, error) {
	bin, err := FauxqsBin()
	if err != nil {
		return nil, fmt.Errorf("fauxqs is not installed (make test installs it with npm): %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	f := &Fauxqs{Port: port, Endpoint: "http://127.0.0.1:" + strconv.Itoa(port)}
	out, err := os.CreateTemp(dir, "fauxqs-*.log")
	if err != nil {
		return nil, err
	}
	defer out.Close()
	f.LogFile = out.Name()
	f.cmd = exec.Command(bin)
	f.cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(f.Port), "FAUXQS_HOST=127.0.0.1", "FAUXQS_LOGGER=false")
	f.cmd.Stdout, f.cmd.Stderr = out, out
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fauxqs: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(f.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return f, nil
			}
		}
		if ctx.Err() != nil {
			f.Stop()
			log, _ := os.ReadFile(f.LogFile)
			return nil, errors.Join(fmt.Errorf("fauxqs on %s did not start: %v", f.Endpoint, err), errors.New(string(log)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Env returns the AWS variables that make the SDK's standard configuration
// chain reach the emulator at endpoint (f.Endpoint, or a proxy in front of
// it): region, dummy keys, endpoint.
func Env(endpoint string) []string {
	return []string{
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Pid returns the emulator's process id (0 when stopped).
func (f *Fauxqs) Pid() int {
	if f.cmd == nil || f.cmd.Process == nil {
		return 0
	}
	return f.cmd.Process.Pid
}

// Stop kills the emulator and waits for it to exit.
func (f *Fauxqs) Stop() {
	if f.cmd == nil || f.cmd.Process == nil {
		return
	}
	_ = f.cmd.Process.Kill()
	_, _ = f.cmd.Process.Wait()
	f.cmd = nil
}
