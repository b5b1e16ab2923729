package bridgetest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
)

// Record is a record as a consumer decodes it (docs/record.md): one line of
// the stdout sink, one SQS/SNS message body, or one line of a packed body.
// It holds the fields of both types, keyevent and gap; times stay the
// strings they are on the wire. Key and KeyBase64 are nil when absent: at
// most one is set, and neither on a gap.
type Record struct {
	Type      string  `json:"type"`
	ID        string  `json:"id"`
	Time      string  `json:"time"`
	Source    string  `json:"source"`
	DB        int     `json:"db"`
	Event     string  `json:"event"`
	Key       *string `json:"key"`
	KeyBase64 *string `json:"key_base64"`
	Since     string  `json:"since"`
	Until     string  `json:"until"`
	Reason    string  `json:"reason"`
	Dropped   int64   `json:"dropped"`
}

// ParseRecord decodes one record.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("bad record %q: %w", b, err)
	}
	return r, nil
}

// ParseRecords decodes newline-delimited records (the stdout sink's output,
// a packed message body), failing t on a line that is not a record.
func ParseRecords(t testing.TB, r io.Reader) []Record {
	t.Helper()
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		rec, err := ParseRecord(sc.Bytes())
		if err != nil {
			t.Fatalf("%v", err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading records: %v", err)
	}
	return out
}

// DecodeKey returns the key bytes a consumer recovers from the record: key
// as it is, or key_base64 decoded. ok is false when the record has neither
// (a gap). A record with both, or with key_base64 that is not standard
// base64, is an error.
func (r Record) DecodeKey() (key string, ok bool, err error) {
	switch {
	case r.Key != nil && r.KeyBase64 != nil:
		return "", false, errors.New("record " + r.ID + " has both key and key_base64")
	case r.Key != nil:
		return *r.Key, true, nil
	case r.KeyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*r.KeyBase64)
		if err != nil {
			return "", false, fmt.Errorf("record %s: key_base64: %w", r.ID, err)
		}
		return string(b), true, nil
	}
	return "", false, nil
}

// KeyString is DecodeKey for a test: it fails t on an error and returns ""
// for a record without a key.
func (r Record) KeyString(t testing.TB) string {
	t.Helper()
	k, _, err := r.DecodeKey()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return k
}
