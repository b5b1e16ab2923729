package bridge

import (
	"strings"
	"testing"
)

// TestStringSlab: every string keeps its bytes however many follow it, in
// one block or across blocks, and long or empty ones are made alone.
func TestStringSlab(t *testing.T) {
	var s stringSlab
	var got, want []string
	for i := range 5000 {
		w := strings.Repeat(string(rune('a'+i%26)), i%600)
		b := []byte(w)
		got = append(got, s.string(b))
		for j := range b {
			b[j] = 'X' // the caller's buffer is reused
		}
		want = append(want, w)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("string %d: %.20q (len %d), want %.20q (len %d)", i, got[i], len(got[i]), want[i], len(want[i]))
		}
	}
}
