package bridge

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Kinds of Redis errors that retrying does not fix. ClassifyRedisError maps
// a server's reply to them once, so that callers use errors.Is instead of
// matching text.
var (
	ErrRedisAuth       = errors.New("redis refused the credentials")
	ErrRedisPermission = errors.New("the redis user lacks a permission")
	ErrRedisDB         = errors.New("the redis server refused the database index")
	ErrNotPrimary      = errors.New("the redis node is not a primary")
)

// classifiedError is a Redis error with its kind.
type classifiedError struct {
	kind error
	err  error
}

func (e *classifiedError) Error() string   { return e.err.Error() }
func (e *classifiedError) Unwrap() []error { return []error{e.kind, e.err} }

// ClassifyRedisError returns err wrapped so that errors.Is reports its kind
// (ErrRedisAuth, ErrRedisPermission, ErrRedisDB), or err unchanged when it is
// none of them.
func ClassifyRedisError(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range []error{ErrRedisAuth, ErrRedisPermission, ErrRedisDB, ErrNotPrimary} {
		if errors.Is(err, k) {
			return err
		}
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return err
	}
	msg := re.Error()
	var kind error
	switch {
	case strings.HasPrefix(msg, "NOPERM"):
		kind = ErrRedisPermission
	case strings.HasPrefix(msg, "WRONGPASS"), strings.HasPrefix(msg, "NOAUTH"),
		strings.HasPrefix(msg, "ERR AUTH"), strings.Contains(msg, "invalid password"),
		strings.Contains(msg, "invalid username-password"):
		kind = ErrRedisAuth
	case strings.Contains(msg, "DB index is out of range"), strings.Contains(msg, "SELECT is not allowed"):
		kind = ErrRedisDB
	default:
		return err
	}
	return &classifiedError{kind: kind, err: err}
}

// IsPermanentRedisError reports errors that retrying will not fix: refused
// credentials, missing permissions, a refused database index, a node that is
// not a primary.
func IsPermanentRedisError(err error) bool {
	err = ClassifyRedisError(err)
	return errors.Is(err, ErrRedisAuth) || errors.Is(err, ErrRedisPermission) ||
		errors.Is(err, ErrRedisDB) || errors.Is(err, ErrNotPrimary)
}

// errorKind names the kind of a connection error without the parts that
// change from one attempt to the next (ephemeral ports, addresses), so that
// a repeated failure is logged once.
func errorKind(err error) string {
	err = ClassifyRedisError(err)
	var re redis.Error
	var errno syscall.Errno
	var ne net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &re):
		code, _, _ := strings.Cut(re.Error(), " ")
		return "redis " + code
	case errors.As(err, &dnsErr):
		return "dns " + dnsErr.Err
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		// A server going down resets or closes the connections it had
		// accepted, then refuses new ones: one state.
		return "connection refused or closed"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}
