package spool

import (
	"encoding/binary"
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// MaxRecordBytes is the largest payload Append accepts. It is part of the
// format: recovery treats a frame claiming a longer payload as damage.
const MaxRecordBytes = 16 << 20

// Layout constants; doc.go describes the format.
const (
	formatVersion = 1

	segHeaderSize   = 32 // magic, version, base seq, created, reserved, crc
	framePrefixSize = 8  // length, crc: the bytes before the checksummed body
	frameMetaSize   = 16 // seq, time: the log's part of the checksummed body
	frameHeaderSize = framePrefixSize + frameMetaSize

	cursorFileSizeV1 = 32  // magic, version 1, acked seq, acked time, reserved, crc
	cursorFileSize   = 160 // version 2: version 1's fields, then the overflow, reserved, crc
	cursorVersion    = 2   // the cursor file version written; version 1 is read too
	maxOverflowID    = 32  // bytes of Overflow.ID a cursor file holds

	segMagic    = "KRSPOOL" // + version byte
	cursorMagic = "KRSPCUR" // + version byte

	segPrefix     = "seg-"
	segSuffix     = ".log"
	corruptSuffix = ".corrupt"
	cursorPrefix  = "cursor-"
	tmpSuffix     = ".tmp"
	lockName      = "LOCK"

	maxCursorName = 64
)

var (
	le         = binary.LittleEndian
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// segName is the file name of the segment whose first record is base.
// Zero-padded so that names sort in sequence order.
func segName(base uint64) string {
	s := strconv.FormatUint(base, 10)
	return segPrefix + strings.Repeat("0", 20-len(s)) + s + segSuffix
}

// parseSegName returns the base sequence number of a segment file name.
func parseSegName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, segPrefix)
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, segSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	base, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || base == 0 {
		return 0, false
	}
	return base, true
}

// validCursorName reports whether name can name a cursor (and its file):
// 1 to 64 of the characters A-Z a-z 0-9 _ -. No dot, so that no cursor file
// looks like a temporary (.tmp) or quarantined (.corrupt) one.
func validCursorName(name string) bool {
	if name == "" || len(name) > maxCursorName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// encodeSegHeader returns the header of a segment whose first record is base.
func encodeSegHeader(base uint64, created int64) []byte {
	b := make([]byte, segHeaderSize)
	copy(b, segMagic)
	b[7] = formatVersion
	le.PutUint64(b[8:], base)
	le.PutUint64(b[16:], uint64(created))
	le.PutUint32(b[28:], checksum(b[:28]))
	return b
}

// checkSegHeader reports whether b is a valid header for a segment named by
// base.
func checkSegHeader(b []byte, base uint64) bool {
	return len(b) >= segHeaderSize &&
		string(b[:7]) == segMagic && b[7] == formatVersion &&
		le.Uint32(b[28:]) == checksum(b[:28]) &&
		le.Uint64(b[8:]) == base
}

// appendFrame appends the frame of one record to dst.
func appendFrame(dst []byte, seq uint64, at int64, data []byte) []byte {
	n := len(dst)
	dst = le.AppendUint32(dst, uint32(frameMetaSize+len(data)))
	dst = le.AppendUint32(dst, 0) // crc, below
	dst = le.AppendUint64(dst, seq)
	dst = le.AppendUint64(dst, uint64(at))
	dst = append(dst, data...)
	le.PutUint32(dst[n+4:], checksum(dst[n+framePrefixSize:]))
	return dst
}

// frameSize is the on-disk size of the frame of a payload of n bytes.
func frameSize(n int) int64 { return int64(frameHeaderSize + n) }

// cursorFile is the content of a cursor file.
type cursorFile struct {
	acked     uint64
	ackedTime int64
	open      Overflow // not yet taken for a report
	sealed    Overflow // taken for a report (TakeOverflow), not yet cleared
	limbo     Overflow // in flight when a Drop passed them, not acknowledged since
}

// encodeCursor returns the content of a cursor file (version 2).
func encodeCursor(cf cursorFile) []byte {
	b := make([]byte, cursorFileSize)
	copy(b, cursorMagic)
	b[7] = cursorVersion
	le.PutUint64(b[8:], cf.acked)
	le.PutUint64(b[16:], uint64(cf.ackedTime))
	putOverflow(b[24:], cf.open)
	putOverflow(b[48:], cf.sealed)
	putOverflow(b[72:], cf.limbo)
	id := cf.sealed.ID[:min(len(cf.sealed.ID), maxOverflowID)]
	b[96] = byte(len(id))
	copy(b[97:97+maxOverflowID], id)
	le.PutUint32(b[cursorFileSize-4:], checksum(b[:cursorFileSize-4]))
	return b
}

func putOverflow(b []byte, o Overflow) {
	le.PutUint64(b, uint64(o.Count))
	le.PutUint64(b[8:], uint64(unixNano(o.Since)))
	le.PutUint64(b[16:], uint64(unixNano(o.Until)))
}

func getOverflow(b []byte) (Overflow, bool) {
	o := Overflow{Count: int64(le.Uint64(b)),
		Since: fromUnixNano(int64(le.Uint64(b[8:]))), Until: fromUnixNano(int64(le.Uint64(b[16:])))}
	if o.Count < 0 || o.Count >= 1<<62 {
		return Overflow{}, false
	}
	if o.Count == 0 {
		o = Overflow{}
	}
	return o, true
}

// decodeCursor parses the content of a cursor file: version 2, or version 1
// (written before cursors kept their overflow: none pending).
func decodeCursor(b []byte) (cf cursorFile, ok bool) {
	if len(b) < 8 || string(b[:7]) != cursorMagic {
		return cf, false
	}
	switch {
	case b[7] == 1 && len(b) == cursorFileSizeV1:
	case b[7] == cursorVersion && len(b) == cursorFileSize:
	default:
		return cf, false
	}
	if le.Uint32(b[len(b)-4:]) != checksum(b[:len(b)-4]) {
		return cf, false
	}
	cf.acked = le.Uint64(b[8:])
	if cf.acked >= 1<<62 { // never written by a real log; refuse rather than wrap
		return cursorFile{}, false
	}
	cf.ackedTime = int64(le.Uint64(b[16:]))
	if b[7] == 1 {
		return cf, true
	}
	var ok1, ok2, ok3 bool
	cf.open, ok1 = getOverflow(b[24:])
	cf.sealed, ok2 = getOverflow(b[48:])
	cf.limbo, ok3 = getOverflow(b[72:])
	n := int(b[96])
	if !ok1 || !ok2 || !ok3 || n > maxOverflowID {
		return cursorFile{}, false
	}
	if cf.sealed.Count > 0 {
		cf.sealed.ID = string(b[97 : 97+n])
	}
	return cf, true
}

// unixNano converts a time to the stored form: 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano converts a stored time back: the zero time for 0.
func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
