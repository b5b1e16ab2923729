package bridge

import (
	"encoding/binary"
	"errors"
	"time"
	"unsafe"
)

// spoolVersion is the first byte of every record keyrelay stores in the
// durable spool. A record of another version is not decoded (reported as a
// spool gap) rather than misread.
const spoolVersion = 1

// Record types in the spool encoding.
const (
	spoolKeyEvent = 0
	spoolGap      = 1
	spoolMarker   = 2 // keyrelay's own: a node's anchor, never delivered
)

// typeMarker is the Record.Type of a continuity marker kept in the spool:
// the moment (Time) up to which everything the node (Source) published was
// received. Sinks never see one; a restart dates its gap from the newest.
const typeMarker = "marker"

// isSpoolMarker reports whether an encoded record is a spool marker.
func isSpoolMarker(b []byte) bool {
	return len(b) >= 2 && b[0] == spoolVersion && b[1] == spoolMarker
}

// decodeSpoolMarker returns the node and anchor of an encoded marker.
func decodeSpoolMarker(b []byte) (source string, anchor time.Time, ok bool) {
	d := spoolDecoder{b: b[2:]}
	source = d.str()
	anchor = d.tm()
	return source, anchor, d.err == nil && len(d.b) == 0
}

var errSpoolRecord = errors.New("bridge: malformed spool record")

// encodeSpoolRecord appends the spool encoding of r, whose JSON is body, to
// dst:
//
//	version u8 = 1 | type u8 (0 keyevent, 1 gap) |
//	id, source str | time tm |
//	keyevent: db varint | event, key str
//	gap:      since, until tm | reason str | dropped varint
//	body str (the JSON every sink sends)
//
// where str is a uvarint length and the bytes, and tm is 0 for the zero time,
// else 1 and the unix nanoseconds as a varint.
//
// A marker (typeMarker) is version | 2 | source str | time tm.
func encodeSpoolRecord(dst []byte, r *Record, body []byte) []byte {
	dst = append(dst, spoolVersion)
	if r.Type == typeMarker {
		return appendTm(appendStr(append(dst, spoolMarker), r.Source), r.Time)
	}
	if r.Type == TypeGap {
		dst = append(dst, spoolGap)
	} else {
		dst = append(dst, spoolKeyEvent)
	}
	dst = appendStr(dst, r.ID)
	dst = appendStr(dst, r.Source)
	dst = appendTm(dst, r.Time)
	if r.Type == TypeGap {
		dst = appendTm(dst, r.Since)
		dst = appendTm(dst, r.Until)
		dst = appendStr(dst, r.Reason)
		dst = binary.AppendVarint(dst, r.Dropped)
	} else {
		dst = binary.AppendVarint(dst, int64(r.DB))
		dst = appendStr(dst, r.Event)
		dst = appendStr(dst, r.Key)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendTm(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	return binary.AppendVarint(append(dst, 1), t.UnixNano())
}

// spoolDecoder reads the fields of one encoded record in order; the first
// error sticks.
type spoolDecoder struct {
	b     []byte
	err   error
	alias bool // str returns views of b, not copies
}

func (d *spoolDecoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errSpoolRecord
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *spoolDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errSpoolRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *spoolDecoder) bytes() []byte {
	if d.err != nil {
		return nil
	}
	l, n := binary.Uvarint(d.b)
	if n <= 0 || l > uint64(len(d.b)-n) {
		d.err = errSpoolRecord
		return nil
	}
	s := d.b[n : n+int(l)]
	d.b = d.b[n+int(l):]
	return s
}

func (d *spoolDecoder) str() string {
	b := d.bytes()
	if d.alias {
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return string(b)
}

func (d *spoolDecoder) tm() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, d.varint())
	}
	d.err = errSpoolRecord
	return time.Time{}
}

// isSpoolGap reports whether b, a record encoded by encodeSpoolRecord, is a
// gap record.
func isSpoolGap(b []byte) bool {
	return len(b) > 1 && b[0] == spoolVersion && b[1] == spoolGap
}

// decodeSpoolEntry decodes what encodeSpoolRecord encoded. The Entry does
// not alias b.
func decodeSpoolEntry(b []byte) (*Entry, error) {
	e := &Entry{}
	if err := decodeSpoolEntryInto(e, b, false); err != nil {
		return nil, err
	}
	return e, nil
}

// decodeSpoolEntryInto decodes b into e; with alias, e's strings and body
// are b's bytes (b must then never change), else copies.
func decodeSpoolEntryInto(e *Entry, b []byte, alias bool) error {
	d := spoolDecoder{b: b, alias: alias}
	if v := d.byte(); d.err == nil && v != spoolVersion {
		return errSpoolRecord
	}
	r := &e.Record
	typ := d.byte()
	r.ID = d.str()
	r.Source = d.str()
	r.Time = d.tm()
	switch typ {
	case spoolGap:
		r.Type = TypeGap
		r.Since = d.tm()
		r.Until = d.tm()
		r.Reason = d.str()
		r.Dropped = d.varint()
	case spoolKeyEvent:
		r.Type = TypeKeyEvent
		db := d.varint()
		if db < 0 || db > 1<<31-1 {
			d.err = errSpoolRecord
		}
		r.DB = int(db)
		r.Event = d.str()
		r.Key = d.str()
	default:
		d.err = errSpoolRecord
	}
	body := d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.err = errSpoolRecord
	}
	if d.err != nil {
		return d.err
	}
	if alias {
		e.Body = body[:len(body):len(body)]
	} else {
		e.Body = append([]byte(nil), body...)
	}
	return nil
}
