package bridge

// OddKeys is oddKeys for the external tests (package bridge_test).
var OddKeys = oddKeys

// newEntry encodes rec into a new Entry, as the Relay did before it encoded
// into the queues' arenas.
func newEntry(rec *Record) *Entry {
	// A key of n bytes takes at most 4n/3+4 as base64 and usually n as a
	// JSON string; control characters (6 bytes escaped) are rare enough to
	// leave to append.
	size := 128 + len(rec.Source) + len(rec.Event) + len(rec.Key)*4/3
	return &Entry{Record: *rec, Body: rec.AppendJSON(make([]byte, 0, size))}
}

// encodeSpoolEntry is encodeSpoolRecord of e.
func encodeSpoolEntry(dst []byte, e *Entry) []byte { return encodeSpoolRecord(dst, &e.Record, e.Body) }
