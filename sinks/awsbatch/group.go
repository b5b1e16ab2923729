package awsbatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/keyrelay/keyrelay/bridge"
)

// MaxGroupIDLen is the longest FIFO message group id SQS and SNS accept.
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatchRequestEntry.html
const MaxGroupIDLen = 128

// GroupBy chooses the FIFO message group id of a record.
type GroupBy struct {
	field string // "key", "event", "db" or "fixed"
	fixed string
}

// ParseGroupBy parses KEYRELAY_FIFO_GROUP: key, event, db, or fixed:<value>.
func ParseGroupBy(s string) (GroupBy, error) {
	switch s {
	case "key", "event", "db":
		return GroupBy{field: s}, nil
	}
	if v, ok := strings.CutPrefix(s, "fixed:"); ok {
		if v == "" || !validGroupID(v) {
			return GroupBy{}, fmt.Errorf("fixed group id must be 1 to %d letters, digits or punctuation", MaxGroupIDLen)
		}
		return GroupBy{field: "fixed", fixed: v}, nil
	}
	return GroupBy{}, fmt.Errorf("must be key, event, db or fixed:<value>")
}

// Decode implements envconfig.Decoder (KEYRELAY_FIFO_GROUP).
func (g *GroupBy) Decode(s string) error {
	v, err := ParseGroupBy(s)
	if err != nil {
		return err
	}
	*g = v
	return nil
}

// String returns the setting as KEYRELAY_FIFO_GROUP spells it.
func (g GroupBy) String() string {
	if g.field == "fixed" {
		return "fixed:" + g.fixed
	}
	if g.field == "" {
		return "key"
	}
	return g.field
}

// GroupID returns the message group id of rec. Gap records go to group
// "keyrelay-gap". A value that is not a valid group id (spaces, non-ASCII,
// binary, longer than 128) maps deterministically to "sha256:" and the hex
// SHA-256 of its bytes, so that per-key ordering still holds.
func (g GroupBy) GroupID(rec *bridge.Record) string {
	if rec.Type == bridge.TypeGap {
		return "keyrelay-gap"
	}
	var v string
	switch g.field {
	case "fixed":
		return g.fixed
	case "event":
		v = rec.Event
	case "db":
		return strconv.Itoa(rec.DB)
	default:
		v = rec.Key
	}
	if v != "" && validGroupID(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// validGroupID reports whether s is at most 128 characters of
// alphanumerics and punctuation (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~), as SQS
// requires of MessageGroupId and MessageDeduplicationId.
func validGroupID(s string) bool {
	if len(s) > MaxGroupIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
