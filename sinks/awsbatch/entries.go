package awsbatch

import (
	"sync"
	"unsafe"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Entries builds an SDK's batch request entries from msgs: entry makes the
// one of each message from its Id (EntryID of its index), body, FIFO group
// and deduplication ids (nil unless set) and message attributes (from
// maps).
//
// It allocates little per message: the Ids and attribute maps are shared
// (maps), and the body string shares the bytes of Message.Body, which are
// the Relay's encoding of an immutable record (or a packed body built for
// this request): the SDK only reads the entries, during the call. The
// entries must not outlive msgs, and must not be modified.
func Entries[E, V any](msgs []Message, maps *AttributeMaps[V],
	entry func(id, body, groupID, deduplicationID *string, attrs map[string]V) E) []E {
	entries := make([]E, len(msgs))
	bodies := make([]string, len(msgs))
	for i, m := range msgs {
		var group, dedup *string
		if m.GroupID != "" {
			group, dedup = aws.String(m.GroupID), aws.String(m.DeduplicationID)
		}
		bodies[i] = unsafe.String(unsafe.SliceData(m.Body), len(m.Body))
		entries[i] = entry(entryIDPtr(i), &bodies[i], group, dedup, maps.Get(m.Attrs))
	}
	return entries
}

// entryIDs are the Ids of a full batch request, EntryID(0) to
// EntryID(MaxBatchEntries-1), shared by every request.
var entryIDs = func() (ids [MaxBatchEntries]string) {
	for i := range ids {
		ids[i] = EntryID(i)
	}
	return ids
}()

func entryIDPtr(i int) *string {
	if i < len(entryIDs) {
		return &entryIDs[i]
	}
	return aws.String(EntryID(i))
}

// maxAttributeMaps bounds an AttributeMaps: key events have a few dozen
// event names and 16 databases; packed messages add a count.
const maxAttributeMaps = 4096

// AttributeMaps builds an SDK's message-attribute maps and keeps them: the
// messages of a target carry few distinct attribute sets (type, event, db),
// so the map of each is built once and shared by every entry that carries
// it. The maps are read-only. Safe for concurrent use.
type AttributeMaps[V any] struct {
	value func(dataType, stringValue *string) V

	mu   sync.Mutex
	maps map[attributeSet]map[string]V
}

// NewAttributeMaps returns an AttributeMaps whose values value makes from
// an attribute's data type and string value.
func NewAttributeMaps[V any](value func(dataType, stringValue *string) V) *AttributeMaps[V] {
	return &AttributeMaps[V]{value: value, maps: map[attributeSet]map[string]V{}}
}

// attributeSet is up to four attributes by value (type, event, db, count).
type attributeSet struct {
	n     int
	attrs [4]Attribute
}

// Get returns the attribute map of attrs.
func (c *AttributeMaps[V]) Get(attrs []Attribute) map[string]V {
	if len(attrs) > 4 {
		return c.build(attrs)
	}
	key := attributeSet{n: len(attrs)}
	copy(key.attrs[:], attrs)
	c.mu.Lock()
	m, ok := c.maps[key]
	c.mu.Unlock()
	if ok {
		return m
	}
	m = c.build(attrs)
	c.mu.Lock()
	if len(c.maps) < maxAttributeMaps {
		c.maps[key] = m
	}
	c.mu.Unlock()
	return m
}

func (c *AttributeMaps[V]) build(attrs []Attribute) map[string]V {
	m := make(map[string]V, len(attrs))
	for _, a := range attrs {
		m[a.Name] = c.value(aws.String(a.DataType), aws.String(a.Value))
	}
	return m
}
