package awsbatch

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
)

var hashedID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestGroupIDByKey(t *testing.T) {
	g, err := ParseGroupBy("key")
	if err != nil {
		t.Fatal(err)
	}
	valid := []string{"session:42", "a", `!"#$%&'()*+,-./:;<=>?@[\]^_{|}~` + "`", strings.Repeat("k", MaxGroupIDLen)}
	for _, k := range valid {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, Key: k}
		if got := g.GroupID(&rec); got != k {
			t.Errorf("GroupID(%q) = %q, want the key itself", k, got)
		}
	}
	hashed := []string{
		"",                      // empty: not a valid group id
		"has space",             // space
		"tab\tkey", "new\nline", // control characters
		"ключ", "日本語", "café", // non-ASCII
		"bin\xff\xfe\x00",                    // binary
		"del\x7f",                            // DEL
		strings.Repeat("k", MaxGroupIDLen+1), // too long
	}
	for _, k := range hashed {
		rec := bridge.Record{Type: bridge.TypeKeyEvent, Key: k}
		got := g.GroupID(&rec)
		if !hashedID.MatchString(got) {
			t.Errorf("GroupID(%q) = %q, want sha256:<64 hex>", k, got)
			continue
		}
		sum := sha256.Sum256([]byte(k))
		if want := "sha256:" + hex.EncodeToString(sum[:]); got != want {
			t.Errorf("GroupID(%q) = %q, want %q (sha256 of the key bytes)", k, got, want)
		}
		if len(got) > MaxGroupIDLen || !validGroupID(got) {
			t.Errorf("substitute %q is not itself a valid group id", got)
		}
		again := bridge.Record{Type: bridge.TypeKeyEvent, Key: strings.Clone(k)}
		if g.GroupID(&again) != got {
			t.Errorf("GroupID(%q) is not deterministic", k)
		}
	}
	a := bridge.Record{Type: bridge.TypeKeyEvent, Key: "has space"}
	b := bridge.Record{Type: bridge.TypeKeyEvent, Key: "has  space"}
	if g.GroupID(&a) == g.GroupID(&b) {
		t.Error("different keys map to one substitute")
	}
}

func TestGroupIDOtherFields(t *testing.T) {
	rec := bridge.Record{Type: bridge.TypeKeyEvent, DB: 7, Event: "expired", Key: "k"}
	gap := bridge.Record{Type: bridge.TypeGap, Reason: bridge.GapReconnect}
	for _, tc := range []struct{ spec, want, wantGap string }{
		{"key", "k", "keyrelay-gap"},
		{"event", "expired", "keyrelay-gap"},
		{"db", "7", "keyrelay-gap"},
		{"fixed:all-records", "all-records", "keyrelay-gap"},
	} {
		g, err := ParseGroupBy(tc.spec)
		if err != nil {
			t.Fatalf("ParseGroupBy(%q): %v", tc.spec, err)
		}
		if got := g.GroupID(&rec); got != tc.want {
			t.Errorf("%s: GroupID = %q, want %q", tc.spec, got, tc.want)
		}
		if got := g.GroupID(&gap); got != tc.wantGap {
			t.Errorf("%s: gap GroupID = %q, want %q", tc.spec, got, tc.wantGap)
		}
	}
	var zero GroupBy
	if got := zero.GroupID(&rec); got != "k" {
		t.Errorf("zero GroupBy groups by %q, want the key", got)
	}
}

func TestParseGroupByRejects(t *testing.T) {
	for _, s := range []string{"", "keys", "fixed:", "fixed:has space", "fixed:" + strings.Repeat("x", 129), "fixed:ü"} {
		if _, err := ParseGroupBy(s); err == nil {
			t.Errorf("ParseGroupBy(%q) accepted", s)
		}
	}
}
