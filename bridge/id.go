package bridge

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"
)

// IDGenerator makes record ids: ULIDs (48-bit millisecond timestamp, 80 bits
// of randomness, 26 characters of Crockford base32). They sort by time as
// strings, and 80 random bits drawn from a generator seeded by crypto/rand make
// them unique across restarts and instances. Within one millisecond the
// random part is incremented, so ids from one generator are strictly
// increasing. Safe for concurrent use; it costs one mutex and no allocation
// beyond the returned string.
type IDGenerator struct {
	mu     sync.Mutex
	rng    *rand.ChaCha8
	lastMS uint64
	hi     uint16     // top 16 bits of the random part
	lo     uint64     // low 64 bits of the random part
	slab   stringSlab // the ids: one allocation per 630 of them
}

// NewIDGenerator returns a generator seeded from crypto/rand.
func NewIDGenerator() *IDGenerator {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails on supported platforms (Go 1.24+ panics instead)
	return &IDGenerator{rng: rand.NewChaCha8(seed)}
}

// New returns the id for a record received at t.
func (g *IDGenerator) New(t time.Time) string {
	ms := uint64(t.UnixMilli())
	g.mu.Lock()
	if ms <= g.lastMS {
		// Same (or an earlier, clock stepped back) millisecond: keep
		// monotonic by incrementing the random part under the last timestamp.
		ms = g.lastMS
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	} else {
		g.lastMS = ms
		g.lo = g.rng.Uint64()
		g.hi = uint16(g.rng.Uint64())
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], ms<<16|uint64(g.hi))
	binary.BigEndian.PutUint64(b[8:16], g.lo)
	var out [26]byte
	appendULID(&out, &b)
	id := g.slab.string(out[:])
	g.mu.Unlock()
	return id
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// encodeULID encodes 128 bits (6 bytes of time, 10 of randomness) as 26
// base32 characters, most significant first.
func encodeULID(b *[16]byte) string {
	var out [26]byte
	appendULID(&out, b)
	return string(out[:])
}

// appendULID writes encodeULID's characters into out.
func appendULID(out *[26]byte, b *[16]byte) {
	// 128 bits = 2 leading bits + 25*5 bits... ULID packs it as 26 chars
	// where the first char carries the top 3 bits (time < 2^48 ms keeps it 0-7).
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
}

// NewInstanceID returns a random identifier of this process (16 hex
// digits): it tells this instance's continuity markers apart from
// another's on the same channel.
func NewInstanceID() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
