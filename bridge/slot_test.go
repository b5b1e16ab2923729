package bridge

import "testing"

// TestKeySlot: values from the Redis Cluster specification and redis-cli
// CLUSTER KEYSLOT.
func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789": 12739, // the specification's CRC16 check value, 0x31C3
		"foo":       12182,
		"":          0,
	} {
		if got := KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
	// Hash tags, as the specification's examples have them.
	for key, same := range map[string]string{
		"{user1000}.following": "user1000",
		"foo{bar}{zap}":        "bar",
		"foo{{bar}}zap":        "{bar",
	} {
		if KeySlot(key) != KeySlot(same) {
			t.Errorf("KeySlot(%q) != KeySlot(%q)", key, same)
		}
	}
	if KeySlot("foo{}{bar}") == KeySlot("bar") {
		t.Error("an empty first tag must hash the whole key")
	}
}

func TestHashTagFor(t *testing.T) {
	for _, r := range [][]SlotRange{{{0, 0}}, {{16383, 16383}}, {{5461, 10922}}, {{100, 100}, {9000, 9001}}} {
		tag := HashTagFor(r)
		slot := KeySlot("keyrelay:x:check:{" + tag + "}:1")
		if tag == "" || !Overlaps(r, []SlotRange{{slot, slot}}) {
			t.Errorf("HashTagFor(%v) = %q (slot %d)", r, tag, slot)
		}
	}
	if HashTagFor(nil) != "" {
		t.Error("a tag for no slots")
	}
}
