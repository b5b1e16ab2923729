package bridge

import "strings"

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

// GlobMatch reports whether s matches the Redis-style glob pattern: '*' any
// run of bytes, '?' one byte, '[abc]', '[^abc]' and '[a-z]' classes, '\'
// escapes the next byte. It works on bytes, like Redis, so binary keys match
// as they do in KEYS or SCAN MATCH.
func GlobMatch(pattern, s string) bool {
	// Iterative matcher with single-star backtracking: linear in practice and
	// never exponential.
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				p++
				i++
				continue
			case '[':
				if ok, next := matchClass(pattern, p, s[i]); next > 0 {
					if ok {
						p = next
						i++
						continue
					}
					goto backtrack
				}
				// An unterminated class matches '[' literally.
				if s[i] == '[' {
					p++
					i++
					continue
				}
				goto backtrack
			case '\\':
				if p+1 < len(pattern) {
					if pattern[p+1] == s[i] {
						p += 2
						i++
						continue
					}
					goto backtrack
				}
				fallthrough
			default:
				if pattern[p] == s[i] {
					p++
					i++
					continue
				}
			}
		}
	backtrack:
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the class starting at pattern[p] == '['. It
// returns the index after the closing ']' (0 if the class is unterminated).
func matchClass(pattern string, p int, c byte) (bool, int) {
	p++
	negate := false
	if p < len(pattern) && pattern[p] == '^' {
		negate = true
		p++
	}
	matched := false
	for p < len(pattern) {
		if pattern[p] == ']' {
			if negate {
				matched = !matched
			}
			return matched, p + 1
		}
		lo := pattern[p]
		if lo == '\\' && p+1 < len(pattern) {
			p++
			lo = pattern[p]
		}
		if p+2 < len(pattern) && pattern[p+1] == '-' && pattern[p+2] != ']' {
			hi := pattern[p+2]
			if hi == '\\' && p+3 < len(pattern) {
				p++
				hi = pattern[p+2]
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				matched = true
			}
			p += 3
			continue
		}
		if c == lo {
			matched = true
		}
		p++
	}
	return false, 0
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
