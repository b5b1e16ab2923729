package bridge

import (
	"strconv"
	"strings"
	"testing"
)

// TestCheckGlob: a '[' class that is never closed is refused, read the way
// stringmatchlen reads it (escapes, and "x-]" as a range); every closed or
// escaped form passes.
func TestCheckGlob(t *testing.T) {
	for _, tc := range []struct {
		p    string
		open int // 1-based byte of the unclosed '[', 0: valid
	}{
		{"", 0}, {"*", 0}, {"session:*", 0}, {"h[ae]llo", 0}, {"h[^e]llo", 0}, {"[a-z]*", 0},
		{"[]", 0}, {"[]]", 0}, {"[^]", 0}, {`\[`, 0}, {`a\[b`, 0}, {`[\]]`, 0}, {`a\`, 0},
		{"[a-]]", 0}, {"[-a]", 0}, {`[a\-]`, 0}, {"x[", 2}, {"[", 1}, {"[^", 1}, {"[ab", 1}, {"[a-]", 1}, {`[\]`, 1},
		{`[a\`, 1}, {"ok[a]then[b", 10}, {"*[a-", 2},
	} {
		err := CheckGlob(tc.p)
		switch {
		case tc.open == 0 && err != nil:
			t.Errorf("CheckGlob(%q) = %v, want nil", tc.p, err)
		case tc.open != 0 && (err == nil || !strings.Contains(err.Error(), "byte "+strconv.Itoa(tc.open)+" ")):
			t.Errorf("CheckGlob(%q) = %v, want the '[' at byte %d", tc.p, err, tc.open)
		}
	}
}
