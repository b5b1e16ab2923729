package bridge

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// High availability (KEYRELAY_HA): several instances subscribe to the same
// nodes; the one holding the lease (lease.go) publishes, the others hold
// what they receive and drop it as the leader reports it delivered. Redis
// delivers a node's messages to every subscriber in the same order, so a
// marker (any instance's) is a point every instance sees at the same place
// of the stream, and a message's place after the last marker names it the
// same way in every instance:
//
//	id = ULID(marker's send time in ms | 32-bit hash of the node and the marker's payload | 48-bit offset)
//
// where offset counts every message the subscription delivered after that
// marker (before filtering), starting at 1. A message received before the
// subscription's first marker cannot be placed: it gets an ordinary random
// id, and is held until the leader's delivered position passes the next
// marker (the leader covered it), so that a takeover never republishes it
// under a second id unless the leader had not delivered it.

// markerRef names one marker message in one node's stream.
type markerRef struct {
	ms   uint64 // the marker's send time, in milliseconds
	hash uint32 // FNV-1a of the node and the payload
}

// newMarkerRef names the marker with payload seen on node. node must be the
// same in every instance (the cluster node id; "" for a standalone primary,
// whose stream is the only one).
func newMarkerRef(node, payload string) (markerRef, bool) {
	f := strings.Fields(payload)
	if len(f) < 4 {
		return markerRef{}, false
	}
	ns, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || ns <= 0 {
		return markerRef{}, false
	}
	h := fnv.New32a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(payload))
	return markerRef{ms: uint64(ns / int64(time.Millisecond)), hash: h.Sum32()}, true
}

// haID is the deterministic id of the message at offset off after ref.
func haID(ref markerRef, off uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], ref.ms<<16|uint64(ref.hash>>16))
	binary.BigEndian.PutUint64(b[8:16], uint64(ref.hash&0xffff)<<48|off&(1<<48-1))
	return encodeULID(&b)
}

// parseHAID returns the marker hash and offset an id made by haID carries.
func parseHAID(id string) (hash uint32, off uint64, ok bool) {
	b, ok := decodeULID(id)
	if !ok {
		return 0, 0, false
	}
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	return uint32(hi&0xffff)<<16 | uint32(lo>>48), lo & (1<<48 - 1), true
}

// decodeULID is the inverse of encodeULID.
func decodeULID(s string) (b [16]byte, ok bool) {
	if len(s) != 26 || s[0] > '7' {
		return b, false
	}
	var hi, lo uint64
	for i := 0; i < 26; i++ {
		v := strings.IndexByte(crockford, s[i])
		if v < 0 {
			return b, false
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	binary.BigEndian.PutUint64(b[0:8], hi)
	binary.BigEndian.PutUint64(b[8:16], lo)
	return b, true
}

// haPos is where a record sits in its node's stream as this process saw
// it: after the idx-th marker it saw on that node, at offset off
// (offAfter: somewhere after every message anchored to that marker and
// before the next one this process saw — a message it could not place, or
// a gap).
type haPos struct{ idx, off uint64 }

const offAfter = math.MaxUint64

// covered reports whether p lies at or before the delivered position d.
func (p haPos) covered(d haPos) bool {
	if p.idx != d.idx {
		return p.idx < d.idx
	}
	return p.off != offAfter && p.off <= d.off
}

// maxRefs bounds the markers remembered per node (minutes of markers).
const maxRefs = 8192

// maxMarks bounds the delivered-position marks kept per node.
const maxMarks = 1 << 16

// haSource is the HA state of one node's stream.
type haSource struct {
	name string
	mu   sync.Mutex
	idx  uint64            // markers seen so far on the node
	refs map[uint32]uint64 // marker hash -> idx
	ring []uint32          // refs in the order seen, for eviction

	hold []Record // received while standing by, in stream order
	// what the hold had to drop (bounded): reported at a takeover unless
	// the leader delivered past it
	lostN             int64
	lostSince, lostAt time.Time
	lostPos           haPos

	marks []spoolMark // leader: the last placed record of each appended batch
}

// spoolMark ties a spool sequence number to the deterministic id of the
// record appended there.
type spoolMark struct {
	seq uint64
	id  string
}

// marker records that the marker ref was seen on the node and returns its
// index.
func (src *haSource) marker(ref markerRef) uint64 {
	src.mu.Lock()
	defer src.mu.Unlock()
	src.idx++
	if src.refs == nil {
		src.refs = make(map[uint32]uint64)
	}
	if len(src.ring) >= maxRefs {
		delete(src.refs, src.ring[0])
		src.ring = src.ring[1:]
	}
	src.refs[ref.hash] = src.idx
	src.ring = append(src.ring, ref.hash)
	return src.idx
}

// lastIdx returns the index of the last marker seen.
func (src *haSource) lastIdx() uint64 {
	src.mu.Lock()
	defer src.mu.Unlock()
	return src.idx
}

// position returns where the record with the deterministic id lies in this
// node's stream, if its marker was seen here.
func (src *haSource) position(id string) (haPos, bool) {
	h, off, ok := parseHAID(id)
	if !ok {
		return haPos{}, false
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	idx, ok := src.refs[h]
	return haPos{idx, off}, ok
}

// HAMetrics are the HA series.
type HAMetrics struct {
	Leader      prometheus.Gauge
	Epoch       prometheus.Gauge
	Held        prometheus.Gauge
	RoleChanges *prometheus.CounterVec
}

// NewHAMetrics registers the HA series on reg. keyrelay_leader is 1 when
// HA is off (a single instance always publishes).
func NewHAMetrics(reg prometheus.Registerer) *HAMetrics {
	m := &HAMetrics{
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_leader",
			Help: "1 when this instance publishes to the sinks (the HA leader, or HA off), 0 on a standby.",
		}),
		Epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_ha_epoch",
			Help: "The lease epoch this instance last led under (0: never led); it increases with every new leader.",
		}),
		Held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_ha_held_records",
			Help: "Records a standby holds until the leader reports them delivered.",
		}),
		RoleChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_ha_role_changes_total",
			Help: "Role changes, by the role taken (leader, standby).",
		}, []string{"role"}),
	}
	reg.MustRegister(m.Leader, m.Epoch, m.Held, m.RoleChanges)
	m.Leader.Set(1)
	m.RoleChanges.WithLabelValues("leader")
	m.RoleChanges.WithLabelValues("standby")
	return m
}

// haState is a Relay's side of HA: the role, the holds and the marks.
type haState struct {
	r       *Relay
	metrics *HAMetrics
	limit   int // records held in all, across nodes

	leader   atomic.Bool
	mu       sync.Mutex // role changes, holds
	leaderCh chan struct{}
	held     int

	srcMu   sync.Mutex
	sources map[string]*haSource

	onFinal func() // called by the relay's shutdown before the spool closes
}

func (h *haState) source(name string) *haSource {
	h.srcMu.Lock()
	defer h.srcMu.Unlock()
	src := h.sources[name]
	if src == nil {
		src = &haSource{name: name}
		h.sources[name] = src
	}
	return src
}

func (h *haState) allSources() []*haSource {
	h.srcMu.Lock()
	defer h.srcMu.Unlock()
	out := make([]*haSource, 0, len(h.sources))
	for _, src := range h.sources {
		out = append(out, src)
	}
	return out
}

// hold keeps rec while this instance stands by; false when it leads (the
// caller emits).
func (h *haState) hold(rec *Record) bool {
	if h.leader.Load() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leader.Load() {
		return false
	}
	src := h.source(rec.Source)
	if !rec.placed {
		rec.pos = haPos{src.lastIdx(), offAfter}
	}
	src.mu.Lock()
	src.hold = append(src.hold, *rec)
	src.mu.Unlock()
	h.held++
	if h.held > h.limit {
		h.dropOldest()
	}
	h.metrics.Held.Set(float64(h.held))
	return true
}

// dropOldest removes the oldest record of the fullest hold (h.mu held).
func (h *haState) dropOldest() {
	var big *haSource
	for _, src := range h.allSources() {
		if big == nil || len(src.hold) > len(big.hold) {
			big = src
		}
	}
	if big == nil || len(big.hold) == 0 {
		return
	}
	big.mu.Lock()
	rec := big.hold[0]
	big.hold[0] = Record{}
	big.hold = big.hold[1:]
	if rec.Type == TypeKeyEvent {
		if big.lostN == 0 {
			big.lostSince = rec.Time
		}
		big.lostN++
		big.lostAt = rec.Time
		big.lostPos = rec.pos
	}
	big.mu.Unlock()
	h.held--
}

// trim drops, from the holds, every record at or before the delivered
// positions ids (the leader's last delivered record per node).
func (h *haState) trim(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, src := range h.allSources() {
		for _, id := range ids {
			d, ok := src.position(id)
			if !ok {
				continue
			}
			src.mu.Lock()
			n := 0
			for n < len(src.hold) && src.hold[n].pos.covered(d) {
				n++
			}
			clear(src.hold[:n])
			src.hold = src.hold[n:]
			if src.lostN > 0 && src.lostPos.covered(d) {
				src.lostN = 0
			}
			src.mu.Unlock()
			h.held -= n
		}
	}
	h.metrics.Held.Set(float64(h.held))
}

// promote makes this instance the leader: what the holds kept after the
// positions ids goes to the sinks first, in stream order per node, then
// everything received from now on.
func (h *haState) promote(ids []string) (replayed int) {
	h.trim(ids)
	h.mu.Lock()
	defer h.mu.Unlock()
	replayed = h.held
	for _, src := range h.allSources() {
		src.mu.Lock()
		hold, lostN, since, until := src.hold, src.lostN, src.lostSince, src.lostAt
		src.hold, src.lostN = nil, 0
		src.mu.Unlock()
		if lostN > 0 {
			h.r.emitOverflowGap(src.name, lostN, since, until, "the standby's hold was full")
		}
		for i := range hold {
			h.r.replay(&hold[i])
		}
	}
	h.held = 0
	h.metrics.Held.Set(0)
	h.leader.Store(true)
	close(h.leaderCh)
	return replayed
}

// demote makes this instance a standby: records received from now on are
// held, and the sinks' workers pause after their current batch.
func (h *haState) demote() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.leader.Load() {
		return
	}
	h.leader.Store(false)
	h.leaderCh = make(chan struct{})
}

// waitLeader blocks until this instance leads (true), or until done is
// closed or the context of the workers ends (false).
func (h *haState) waitLeader(stop <-chan struct{}, done <-chan struct{}) bool {
	h.mu.Lock()
	ch := h.leaderCh
	h.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
	}
	select {
	case <-ch:
		return true
	case <-stop:
		return false
	case <-done:
		return false
	}
}

// mark notes, for the leader's delivered position, the last placed record
// of each node in a batch appended at sequence numbers first...
func (h *haState) mark(first uint64, batch []handMeta) {
	last := map[string]int{}
	for i, m := range batch {
		if m.placed { // a key event, or a marker's place (spoolPosition)
			last[m.source] = i
		}
	}
	for name, i := range last {
		src := h.source(name)
		src.mu.Lock()
		if len(src.marks) >= maxMarks {
			src.marks = src.marks[1:]
		}
		src.marks = append(src.marks, spoolMark{first + uint64(i), batch[i].id})
		src.mu.Unlock()
	}
}

// delivered returns, per node, the id of the last placed record every sink
// has acknowledged with everything before it.
func (h *haState) delivered() []string {
	acked := uint64(math.MaxUint64)
	for _, s := range h.r.sinks {
		if s.cursor == nil {
			return nil
		}
		acked = min(acked, s.cursor.Acked())
	}
	var ids []string
	for _, src := range h.allSources() {
		src.mu.Lock()
		n := 0
		for n < len(src.marks) && src.marks[n].seq <= acked {
			n++
		}
		if n > 0 {
			ids = append(ids, src.marks[n-1].id)
			src.marks = src.marks[n-1:] // the latest delivered one stays
		}
		src.mu.Unlock()
	}
	return ids
}
