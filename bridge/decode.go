package bridge

import (
	"errors"
	"fmt"
	"strings"
)

// ChannelKind selects which of the two notification channels keyrelay reads.
// With both K and E enabled on the server every event is published on both;
// reading one kind forwards each event once.
type ChannelKind string

// Channel kinds.
const (
	KeyEvent ChannelKind = "keyevent" // __keyevent@<db>__:<event>, payload = key
	KeySpace ChannelKind = "keyspace" // __keyspace@<db>__:<key>, payload = event
)

// Decode implements envconfig.Decoder.
func (k *ChannelKind) Decode(s string) error {
	switch ChannelKind(s) {
	case KeyEvent, KeySpace:
		*k = ChannelKind(s)
		return nil
	}
	return fmt.Errorf("must be %s or %s", KeyEvent, KeySpace)
}

// Notification is a decoded keyspace notification.
type Notification struct {
	DB    int
	Event string
	Key   string
}

// ErrNotNotification is returned by Decode for a channel that is not a
// keyspace or keyevent channel.
var ErrNotNotification = errors.New("bridge: not a keyspace notification channel")

// Decode decodes a notification from its channel name and payload, in either
// channel kind. The database number is decimal digits, so everything after the
// first "__:" that follows "@" is the key (keyspace) or the event (keyevent):
// keys may contain ":", "__:", newlines or any byte, and are kept exactly.
func Decode(channel, payload string) (Notification, error) {
	var kind ChannelKind
	var rest string
	switch {
	case strings.HasPrefix(channel, "__keyevent@"):
		kind, rest = KeyEvent, channel[len("__keyevent@"):]
	case strings.HasPrefix(channel, "__keyspace@"):
		kind, rest = KeySpace, channel[len("__keyspace@"):]
	default:
		return Notification{}, fmt.Errorf("%w: %q", ErrNotNotification, channel)
	}
	db, n := 0, 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' && n < 10 {
		db = db*10 + int(rest[n]-'0')
		n++
	}
	if n == 0 || !strings.HasPrefix(rest[n:], "__:") {
		return Notification{}, fmt.Errorf("%w: %q", ErrNotNotification, channel)
	}
	tail := rest[n+3:]
	if kind == KeyEvent {
		return Notification{DB: db, Event: tail, Key: payload}, nil
	}
	return Notification{DB: db, Event: payload, Key: tail}, nil
}

// Patterns returns the PSUBSCRIBE patterns that make Redis filter by channel
// kind, database and event on the server side, so unwanted traffic never
// leaves it. Empty dbs or events mean all. Keyspace channels carry the key in
// the channel name, so events cannot be filtered by pattern there; the caller
// filters them after decoding (see Filter).
func Patterns(kind ChannelKind, dbs []int, events []string) []string {
	dbParts := []string{"*"}
	if len(dbs) > 0 {
		dbParts = dbParts[:0]
		for _, db := range dbs {
			dbParts = append(dbParts, fmt.Sprint(db))
		}
	}
	tails := []string{"*"}
	if kind == KeyEvent && len(events) > 0 {
		tails = tails[:0]
		for _, e := range events {
			tails = append(tails, escapeGlob(e))
		}
	}
	var out []string
	for _, db := range dbParts {
		for _, t := range tails {
			out = append(out, "__"+string(kind)+"@"+db+"__:"+t)
		}
	}
	return out
}

// escapeGlob escapes the characters that are special in Redis glob patterns.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
