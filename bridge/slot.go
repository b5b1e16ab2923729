package bridge

import "strings"

// KeySlot returns the cluster hash slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag (the part between the first "{" and the next "}", when
// not empty), modulo 16384, as Redis Cluster computes it.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// HashTagFor returns a hash tag whose keys land in one of ranges (for a
// probe key on a given primary), or "" when ranges hold no slot.
func HashTagFor(ranges []SlotRange) string {
	if len(ranges) == 0 {
		return ""
	}
	for i := 0; i < 1<<20; i++ {
		tag := itoa(i)
		slot := KeySlot(tag)
		for _, r := range ranges {
			if slot >= r.Start && slot <= r.End {
				return tag
			}
		}
	}
	return ""
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}
