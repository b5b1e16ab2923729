//go:build integration

package bridge_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/keyrelay/keyrelay/bridge"
	"github.com/keyrelay/keyrelay/bridge/bridgetest"
)

// TestGlobMatchesRedisKeys compares GlobMatch with a real redis-server's
// KEYS on random patterns over an alphabet of the characters that matter
// ([ ] ^ - \ * ?), unclosed classes and trailing escapes included: every
// key Redis returns must match, and no other.
func TestGlobMatchesRedisKeys(t *testing.T) {
	r := bridgetest.StartRedis(t)
	c := r.Client(0)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab[]^-\\\\*?"
	random := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	keys := map[string]bool{}
	for len(keys) < 400 {
		keys[random(1+rng.IntN(5))] = true
	}
	pipe := c.Pipeline()
	for k := range keys {
		pipe.Set(ctx, k, "1", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	differ := 0
	for n := 0; n < 4000; n++ {
		pattern := random(1 + rng.IntN(6))
		want, err := c.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for k := range keys {
			if bridge.GlobMatch(pattern, k) {
				got = append(got, k)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			differ++
			if differ <= 5 {
				t.Errorf("pattern %q: GlobMatch %q, Redis KEYS %q", pattern, got, want)
			}
		}
	}
	if differ > 0 {
		t.Errorf("%d of 4000 patterns differ from Redis", differ)
	}
}
