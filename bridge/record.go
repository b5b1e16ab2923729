package bridge

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// Record types.
const (
	TypeKeyEvent = "keyevent"
	TypeGap      = "gap"
)

// Gap reasons.
const (
	GapReconnect = "reconnect" // the subscription connection broke and was re-established
	GapFailover  = "failover"  // the endpoint now names another node; keyrelay moved to it
	GapOverflow  = "overflow"  // a sink's buffer was full and records were dropped
	GapShutdown  = "shutdown"  // keyrelay stopped with records it could not deliver
	GapPlanned   = "planned"   // keyrelay replaced an ageing connection (IAM auth: 12-hour limit)
	GapStop      = "stop"      // keyrelay stopped while not subscribed, or before it had read everything published before the stop
	GapRestart   = "restart"   // no instance of the group listened: keyrelay was stopped, crashed or being deployed
	GapTopology  = "topology"  // cluster: a primary first seen already owning slots, or lost while owning slots with no successor
)

// Record is one key event or one gap. It is immutable once emitted: the
// Relay encodes it once and every sink shares the encoding.
type Record struct {
	Type   string
	ID     string
	Time   time.Time
	Source string

	// Key events.
	DB    int
	Event string
	Key   string // arbitrary bytes; encoded as "key" when valid UTF-8, else "key_base64"

	// Gap records.
	Since   time.Time
	Until   time.Time
	Reason  string
	Dropped int64 // records known to be lost in the window (overflow); 0 when unknown

	// HA: where the record sits in its node's stream (ha.go); placed when
	// its id is deterministic. Not encoded.
	placed bool
	pos    haPos
}

// KeyIsUTF8 reports whether the key is encoded as "key" (true) or as
// "key_base64" (false).
func (r *Record) KeyIsUTF8() bool { return utf8.ValidString(r.Key) }

// timeLayout is RFC 3339 in UTC with microseconds, as the contract requires.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// AppendJSON appends the record's JSON encoding (one object, no newline) to
// dst. It is hand-written because it runs once per event on the hot path and
// because encoding/json would silently replace invalid UTF-8 in keys.
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendString(dst, r.Type)
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, r.ID)
	dst = append(dst, `,"time":"`...)
	dst = appendTime(dst, r.Time)
	dst = append(dst, `","source":`...)
	dst = appendString(dst, r.Source)
	if r.Type == TypeGap {
		dst = append(dst, `,"since":"`...)
		dst = appendTime(dst, r.Since)
		dst = append(dst, `","until":"`...)
		dst = appendTime(dst, r.Until)
		dst = append(dst, `","reason":`...)
		dst = appendString(dst, r.Reason)
		if r.Dropped > 0 {
			dst = append(dst, `,"dropped":`...)
			dst = strconv.AppendInt(dst, r.Dropped, 10)
		}
		return append(dst, '}')
	}
	dst = append(dst, `,"db":`...)
	dst = strconv.AppendInt(dst, int64(r.DB), 10)
	dst = append(dst, `,"event":`...)
	dst = appendString(dst, r.Event)
	if utf8.ValidString(r.Key) {
		dst = append(dst, `,"key":`...)
		dst = appendString(dst, r.Key)
	} else {
		dst = append(dst, `,"key_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, []byte(r.Key))
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// appendTime appends t in timeLayout. It is what t.UTC().AppendFormat(dst,
// timeLayout) appends, in a fifth of the time (BenchmarkRecordAppendJSON):
// the layout interpreter was the largest part of encoding a record.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, timeLayout)
	}
	hour, minute, sec := t.Clock()
	us := t.Nanosecond() / 1000
	dst = append(dst,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+month/10), byte('0'+month%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), '.')
	for d := 100000; d > 0; d /= 10 {
		dst = append(dst, byte('0'+us/d%10))
	}
	return append(dst, 'Z')
}

const hexDigits = "0123456789abcdef"

// plainASCII marks the bytes appendString copies as they are: printable
// ASCII except '"' and '\\'. One table load per byte instead of four
// comparisons halves the time of the common all-ASCII string.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string. s must be valid UTF-8 (callers
// check keys; every other field is produced by keyrelay or is a Redis event
// name). Control characters are escaped, and so are U+2028, U+2029, U+FFFE and
// U+FFFF (see below); <, >, & are left alone.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainASCII[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' || r == '\ufffe' || r == '\uffff' {
			// U+2028/9: line ends to some JavaScript consumers; U+FFFE/F:
			// valid UTF-8 that SQS refuses raw. Escaped, the key stays exact.
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', hexDigits[r>>12], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		if r == utf8.RuneError && size == 1 {
			// Not reachable for validated input; never emit invalid UTF-8.
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
