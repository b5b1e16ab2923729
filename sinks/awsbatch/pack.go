package awsbatch

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/keyrelay/keyrelay/bridge"
)

// Packing is how the SQS and SNS sinks put records into messages
// (KEYRELAY_PACK).
type Packing string

const (
	// PackOff sends one record per message (the default).
	PackOff Packing = "off"
	// PackNDJSON sends many records per message: newline-delimited JSON,
	// one record per line, no trailing newline. A message of one record is
	// byte-identical to an unpacked message.
	PackNDJSON Packing = "ndjson"
)

// ParsePacking parses KEYRELAY_PACK: off (or empty) or ndjson.
func ParsePacking(s string) (Packing, error) {
	switch Packing(s) {
	case "", PackOff:
		return PackOff, nil
	case PackNDJSON:
		return PackNDJSON, nil
	}
	return "", errors.New("must be off or ndjson")
}

// Decode implements envconfig.Decoder (KEYRELAY_PACK).
func (p *Packing) Decode(s string) error {
	v, err := ParsePacking(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// CheckPacking is the one rule about packing and targets: packing is
// refused for a FIFO queue or topic (target ends in ".fifo").
func CheckPacking(p Packing, target string) error {
	if p == PackNDJSON && IsFIFO(target) {
		return ErrPackFIFO
	}
	return nil
}

// ErrPackFIFO explains why packing is refused for FIFO targets.
var ErrPackFIFO = errors.New("packing is not available for FIFO queues and topics: " +
	"the deduplication id and the message group id are per message, so a packed message would " +
	"lose per-record deduplication and, grouped by key, hold one record anyway; set KEYRELAY_PACK=off " +
	"or use a standard queue or topic")

// AttrCount is the message attribute (Number) a packed message carries: the
// number of records (lines) in its body.
const AttrCount = "count"

const (
	// packMessageReserve is what MaxEntryBytes keeps free in a message for
	// the attributes of a packed message (type, event, db, count: under 100
	// bytes for any Redis event name).
	packMessageReserve = 256
	// packRequestReserve is what MaxBatchBytes keeps free in a request for
	// the attributes of its messages (about ten packed messages).
	packRequestReserve = 1024
	// minRecordBytes is less than any record's encoding; MaxEntries is
	// sized from it so that the byte limit, not the entry count, ends a
	// packed batch.
	minRecordBytes = 128
)

// PackedLimits returns the Limits of a packing sink whose target takes
// messages of at most msgCap bytes and requests of at most reqCap bytes
// (both body plus attributes). A batch then fills one request: the Relay
// counts PackedEntrySize against MaxBatchBytes, and Pack turns the batch into
// at most ten messages, each within msgCap.
//
// On a queue with a small MaximumMessageSize the batch is also held to five
// messages' worth, which ten messages always hold however the record sizes
// fall (two consecutive messages of one group hold more than one message's
// worth). With records of many (type, event, db) groups in one batch, Pack
// may still need more than ten messages; Sink.Publish then sends more than
// one request.
func PackedLimits(msgCap, reqCap, maxInFlight int) bridge.Limits {
	maxEntry := msgCap - min(packMessageReserve, msgCap/8)
	maxBatch := min(reqCap-min(packRequestReserve, reqCap/8), MaxBatchEntries/2*maxEntry)
	return bridge.Limits{
		MaxEntries:    max(MaxBatchEntries, maxBatch/minRecordBytes),
		MaxBatchBytes: maxBatch,
		MaxEntryBytes: min(maxEntry, maxBatch),
		MaxInFlight:   maxInFlight,
	}
}

// PackedEntrySize is the size an entry adds to a packed message: its body
// and a newline. Attributes belong to the message, not the record.
func PackedEntrySize(e *bridge.Entry) int { return len(e.Body) + 1 }

type packKey struct {
	typ, event string
	db         int
}

// Pack packs batch into messages and the messages into requests of at most
// MaxBatchEntries messages and reqCap bytes (one request for a batch shaped
// by PackedLimits, unless its records fall into many groups). Records are grouped by their
// message attributes (type, event, db), so a packed message carries exactly
// the attributes of each of its records plus count, and filter policies on
// them select the same records as without packing. Within a group records
// keep their batch order; each message holds as many as fit in msgCap.
//
// Entries that cannot be packed are returned as permanent failures: a body
// with a newline (never produced by bridge.Record.AppendJSON) and a record
// whose message alone exceeds msgCap (a *TooLargeError).
func Pack(batch []*bridge.Entry, msgCap, reqCap int) (requests [][]Message, refused []bridge.EntryError) {
	var order []packKey
	groups := map[packKey][]int{}
	for i, e := range batch {
		if bytes.IndexByte(e.Body, '\n') >= 0 {
			refused = append(refused, bridge.EntryError{Index: i,
				Err: bridge.Permanent(errors.New("record body contains a newline: it cannot be packed as NDJSON"))})
			continue
		}
		k := packKey{typ: e.Record.Type, event: e.Record.Event, db: e.Record.DB}
		if k.typ == bridge.TypeGap {
			k.event, k.db = "", 0 // a gap record has neither attribute
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}

	var msgs []Message
	for _, k := range order {
		idx := groups[k]
		base := Attributes(&batch[idx[0]].Record)
		baseSize := 0
		for _, a := range base {
			baseSize += len(a.Name) + len(a.DataType) + len(a.Value)
		}
		size := func(bodyLen, n int) int {
			return bodyLen + baseSize + len(AttrCount) + len(TypeNumber) + decimalLen(n)
		}
		var cur []int
		bodyLen := 0
		flush := func() {
			if len(cur) == 0 {
				return
			}
			body := make([]byte, 0, bodyLen)
			for j, i := range cur {
				if j > 0 {
					body = append(body, '\n')
				}
				body = append(body, batch[i].Body...)
			}
			attrs := append(append(make([]Attribute, 0, len(base)+1), base...),
				Attribute{AttrCount, TypeNumber, fmt.Sprint(len(cur))})
			msgs = append(msgs, Message{Entries: cur, Body: body, Attrs: attrs, Size: size(len(body), len(cur))})
			cur, bodyLen = nil, 0
		}
		for _, i := range idx {
			n := len(batch[i].Body)
			if len(cur) > 0 && size(bodyLen+1+n, len(cur)+1) > msgCap {
				flush()
			}
			if len(cur) == 0 && size(n, 1) > msgCap {
				refused = append(refused, bridge.EntryError{Index: i, Err: bridge.Permanent(&TooLargeError{Size: size(n, 1), Max: msgCap})})
				continue
			}
			if len(cur) > 0 {
				bodyLen++
			}
			bodyLen += n
			cur = append(cur, i)
		}
		flush()
	}

	return chunk(msgs, reqCap), refused
}

// Unpack splits a packed message body into its records' bodies, skipping
// empty lines. An unpacked message is one record and comes back as is.
func Unpack(body []byte) [][]byte {
	var out [][]byte
	for line := range bytes.SplitSeq(body, []byte{'\n'}) {
		if len(line) > 0 {
			out = append(out, line)
		}
	}
	return out
}
