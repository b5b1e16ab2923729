package bridge

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestErrorKindServerGoingDown: while a server goes down, a reconnection
// may be reset (accepted just before the end), closed, or refused; the
// reconnect loop logs that state once, whichever comes first.
func TestErrorKindServerGoingDown(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	reset := os.NewSyscallError("read", syscall.ECONNRESET) // as go-redis returns a failed handshake
	closed := fmt.Errorf("bridge: psubscribe h:1: %w", io.EOF)
	want := errorKind(refused)
	for _, err := range []error{reset, closed} {
		if got := errorKind(err); got != want {
			t.Errorf("errorKind(%v) = %q, want %q (as a refused connection)", err, got, want)
		}
	}
	if errorKind(syscall.ETIMEDOUT) == want {
		t.Error("a timeout is reported as a refused connection")
	}
}
