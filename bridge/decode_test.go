package bridge

import (
	"bufio"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestDecodeSamples(t *testing.T) {
	f, err := os.Open("testdata/notifications.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		n++
		fields := strings.Split(text, "\t")
		unq := func(i int) string {
			s, err := strconv.Unquote(fields[i])
			if err != nil {
				t.Fatalf("line %d field %d: %v", line, i, err)
			}
			return s
		}
		channel, payload := unq(0), unq(1)
		got, err := Decode(channel, payload)
		if fields[2] == "error" {
			if err == nil {
				t.Errorf("line %d: Decode(%q, %q) = %+v, want an error", line, channel, payload, got)
			}
			continue
		}
		db, _ := strconv.Atoi(fields[2])
		want := Notification{DB: db, Event: unq(3), Key: unq(4)}
		if err != nil || got != want {
			t.Errorf("line %d: Decode(%q, %q) = %+v, %v; want %+v", line, channel, payload, got, err, want)
		}
	}
	if n < 20 {
		t.Fatalf("only %d samples read", n)
	}
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		kind   ChannelKind
		dbs    []int
		events []string
		want   []string
	}{
		{KeyEvent, nil, nil, []string{"__keyevent@*__:*"}},
		{KeySpace, nil, nil, []string{"__keyspace@*__:*"}},
		{KeyEvent, nil, []string{"expired", "evicted"}, []string{"__keyevent@*__:expired", "__keyevent@*__:evicted"}},
		{KeyEvent, []int{0, 3}, []string{"expired"}, []string{"__keyevent@0__:expired", "__keyevent@3__:expired"}},
		// keyspace channels name the key, not the event: events are filtered after decoding.
		{KeySpace, []int{1}, []string{"expired"}, []string{"__keyspace@1__:*"}},
		{KeyEvent, nil, []string{"odd*"}, []string{`__keyevent@*__:odd\*`}},
	} {
		if got := Patterns(tc.kind, tc.dbs, tc.events); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Patterns(%s, %v, %v) = %q, want %q", tc.kind, tc.dbs, tc.events, got, tc.want)
		}
	}
}

func TestFilter(t *testing.T) {
	f := NewFilter([]int{0, 2}, []string{"set", "expired"}, []string{"session:*", "user:[0-9]*"})
	for _, tc := range []struct {
		n    Notification
		want bool
	}{
		{Notification{0, "set", "session:1"}, true},
		{Notification{2, "expired", "user:7x"}, true},
		{Notification{1, "set", "session:1"}, false},
		{Notification{0, "del", "session:1"}, false},
		{Notification{0, "set", "user:x"}, false},
		{Notification{0, "set", "other"}, false},
	} {
		if got := f.Match(tc.n); got != tc.want {
			t.Errorf("Match(%+v) = %v, want %v", tc.n, got, tc.want)
		}
	}
	var all Filter
	if !all.Match(Notification{9, "anything", "\xff"}) {
		t.Error("zero Filter must match everything")
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h*llo", "heeeello", true},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true},
		{"h[a-b]llo", "hcllo", false},
		{`h\*llo`, "h*llo", true},
		{`h\*llo`, "hello", false},
		{"session:*", "session:", true},
		{"session:*", "sessions", false},
		{"*:*:*", "a:b:c", true},
		{"*:*:*", "a:b", false},
		{"a*b*c*d", "aXbYcZd", true},
		{"a*b*c*d", "aXbYcZ", false},
		{"\xff*", "\xff\x00", true},
		// Redis's edge cases (stringmatchlen), checked against KEYS by
		// TestGlobMatchesRedisKeys: an unclosed class holds the rest of the
		// pattern, "[a-]" is a range up to ']', a trailing '\' is literal.
		{"[", "[", false},
		{"[^", "x", true},
		{"[ab", "b", true},
		{"[a-]", "]", true},
		{`a\`, `a\`, true},
		{"**a", "xxa", true},
	} {
		if got := GlobMatch(tc.p, tc.s); got != tc.want {
			t.Errorf("GlobMatch(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("__keyevent@0__:set", "k")
	f.Add("__keyspace@12__:a__:b", "del")
	f.Fuzz(func(t *testing.T, channel, payload string) {
		n, err := Decode(channel, payload)
		if err != nil {
			return
		}
		// Re-encoding the decoded notification gives the channel back.
		var again string
		if strings.HasPrefix(channel, "__keyevent@") {
			again = "__keyevent@" + strconv.Itoa(n.DB) + "__:" + n.Event
		} else {
			again = "__keyspace@" + strconv.Itoa(n.DB) + "__:" + n.Key
		}
		if !strings.HasSuffix(channel, again[strings.Index(again, "__:"):]) {
			t.Fatalf("Decode(%q) = %+v does not round-trip", channel, n)
		}
	})
}
