package bridge

import (
	"fmt"
	"strings"
)

// Filter decides which decoded notifications are forwarded. Database and
// event filters are also pushed into the subscription patterns (Patterns);
// Filter repeats them so that a keyspace subscription, where Redis cannot
// filter events, gives the same result. The zero value forwards everything.
type Filter struct {
	DBs    map[int]bool    // empty: all
	Events map[string]bool // empty: all
	Keys   []string        // Redis glob patterns; empty: all
}

// NewFilter builds a Filter from configuration lists.
func NewFilter(dbs []int, events, keys []string) Filter {
	f := Filter{Keys: keys}
	if len(dbs) > 0 {
		f.DBs = make(map[int]bool, len(dbs))
		for _, db := range dbs {
			f.DBs[db] = true
		}
	}
	if len(events) > 0 {
		f.Events = make(map[string]bool, len(events))
		for _, e := range events {
			f.Events[e] = true
		}
	}
	return f
}

// Match reports whether n passes the filter.
func (f *Filter) Match(n Notification) bool {
	if f.DBs != nil && !f.DBs[n.DB] {
		return false
	}
	if f.Events != nil && !f.Events[n.Event] {
		return false
	}
	if len(f.Keys) == 0 {
		return true
	}
	for _, p := range f.Keys {
		if GlobMatch(p, n.Key) {
			return true
		}
	}
	return false
}

// GlobMatch reports whether s matches the Redis glob pattern exactly as
// Redis's KEYS and SCAN MATCH do: '*' any run of bytes, '?' one byte,
// '[abc]', '[^abc]' and '[a-z]' classes, '\\' escapes the next byte. It is a
// port of Redis's stringmatchlen (util.c), edge cases included: an unclosed
// class takes the rest of the pattern as its members, "[a-]" is the range
// from 'a' to ']', a trailing '\\' matches itself; "*" alone matches every
// key, as KEYS and SCAN treat it. It works on bytes, so binary keys match as
// they do in Redis.
func GlobMatch(pattern, s string) bool {
	if pattern == "*" {
		return true
	}
	skip := false
	return globMatch(pattern, s, &skip, 0)
}

// CheckGlob reports a '[' class that is never closed. Redis matches such a
// pattern all the same, the class taking the rest of the pattern as members
// (GlobMatch does too), which is rarely what was meant, so configuration
// refuses it. It reads the pattern as stringmatchlen does: '\\' escapes the
// next byte, inside a class too, and in "[a-]" the "a-]" is a range, so it
// does not close the class.
func CheckGlob(pattern string) error {
	for p := 0; p < len(pattern); p++ {
		switch pattern[p] {
		case '\\':
			p++ // a trailing '\\' matches itself
		case '[':
			open := p
			p++
			if p < len(pattern) && pattern[p] == '^' {
				p++
			}
			for ; ; p++ {
				rest := len(pattern) - p
				if rest == 0 {
					return fmt.Errorf("the '[' at byte %d opens a class that is never closed (\"-]\" is a range, not the end): close it with ']' or write \\[ for a literal '['", open+1)
				}
				if pattern[p] == ']' {
					break
				}
				if pattern[p] == '\\' && rest >= 2 {
					p++
				} else if rest >= 3 && pattern[p+1] == '-' {
					p += 2
				}
			}
		}
	}
	return nil
}

// globMatch is stringmatchlen_impl. Redis's patterns are NUL-terminated and
// its code reads the byte past the end in places; at returns 0 there.
func globMatch(pattern, s string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 { // Redis's protection against abusive patterns
		return false
	}
	at := func(i int) byte {
		if i < len(pattern) {
			return pattern[i]
		}
		return 0
	}
	p, i := 0, 0
	for p < len(pattern) && i < len(s) {
		switch pattern[p] {
		case '*':
			for at(p+1) == '*' {
				p++
			}
			if len(pattern)-p == 1 {
				return true
			}
			for ; i < len(s); i++ {
				if globMatch(pattern[p+1:], s[i:], skipLonger, nesting+1) {
					return true
				}
				if *skipLonger {
					return false
				}
			}
			// No match for the rest of the pattern from anywhere in the
			// rest of the string: earlier stars need not try longer runs.
			*skipLonger = true
			return false
		case '?':
			i++
		case '[':
			p++
			negate := at(p) == '^'
			if negate {
				p++
			}
			match := false
		class:
			for {
				rest := len(pattern) - p
				switch {
				case at(p) == '\\' && rest >= 2:
					p++
					if pattern[p] == s[i] {
						match = true
					}
				case at(p) == ']':
					break class
				case rest == 0:
					p-- // the class ran to the end of the pattern
					break class
				case rest >= 3 && pattern[p+1] == '-':
					lo, hi := pattern[p], pattern[p+2]
					if lo > hi {
						lo, hi = hi, lo
					}
					p += 2
					if s[i] >= lo && s[i] <= hi {
						match = true
					}
				default:
					if pattern[p] == s[i] {
						match = true
					}
				}
				p++
			}
			if negate {
				match = !match
			}
			if !match {
				return false
			}
			i++
		case '\\':
			if len(pattern)-p >= 2 {
				p++
			}
			if pattern[p] != s[i] {
				return false
			}
			i++
		default:
			if pattern[p] != s[i] {
				return false
			}
			i++
		}
		p++
		if i == len(s) {
			for at(p) == '*' {
				p++
			}
			break
		}
	}
	return p >= len(pattern) && i == len(s)
}

// knownEvents are the event names Redis OSS and Valkey publish (their
// keyspace notification pages, through Redis 8.2 and Valkey 9.0).
var knownEvents = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range strings.Fields(`del unlink rename_from rename_to move_from move_to copy_to restore
		expire expired evicted persist sortstore new overwritten type_changed keymiss
		set setrange incrby incrbyfloat append
		lpush rpush lpop rpop linsert lset lrem ltrim
		hset hincrby hincrbyfloat hdel hexpire hexpired hpersist
		sadd srem spop sinterstore sunionstore sdiffstore
		zadd zincr zrem zrembyscore zrembyrank zdiffstore zinterstore zunionstore zrangestore
		xadd xdel xtrim xsetid xgroup-create xgroup-createconsumer xgroup-delconsumer xgroup-destroy xgroup-setid`) {
		m[e] = true
	}
	return m
}()

// KnownEvent reports whether Redis or Valkey publishes the event name (a
// module may publish others).
func KnownEvent(name string) bool { return knownEvents[name] }
