package awsbatch

import (
	"strconv"

	"github.com/keyrelay/keyrelay/bridge"
)

// Message attribute names and data types every SQS message and SNS
// notification carries, so that SNS subscription filter policies and
// consumers can route without parsing the body.
const (
	AttrType  = "type"  // String: bridge.TypeKeyEvent or bridge.TypeGap
	AttrEvent = "event" // String: the Redis event name; absent on gap records
	AttrDB    = "db"    // Number: the database number; absent on gap records

	TypeString = "String"
	TypeNumber = "Number"
)

// Attribute is one message attribute, independent of the SDK package that
// sends it.
type Attribute struct {
	Name, DataType, Value string
}

// Attributes returns the message attributes of rec: type always; event and
// db for key events only. A gap record is not an event of any database, so
// it carries neither (filter policies select gaps with {"type":["gap"]}).
func Attributes(rec *bridge.Record) []Attribute {
	return AppendAttributes(make([]Attribute, 0, MaxRecordAttributes), rec)
}

// MaxRecordAttributes is the most attributes Attributes returns.
const MaxRecordAttributes = 3

// AppendAttributes appends the message attributes of rec (Attributes) to
// dst.
func AppendAttributes(dst []Attribute, rec *bridge.Record) []Attribute {
	dst = append(dst, Attribute{AttrType, TypeString, rec.Type})
	if rec.Type == bridge.TypeGap {
		return dst
	}
	if rec.Event != "" { // SQS and SNS refuse empty attribute values
		dst = append(dst, Attribute{AttrEvent, TypeString, rec.Event})
	}
	return append(dst, Attribute{AttrDB, TypeNumber, dbString(rec.DB)})
}

// dbStrings are the decimal strings of the databases a Redis server has by
// default, shared rather than formatted per record.
var dbStrings = func() (s [16]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func dbString(db int) string {
	if db >= 0 && db < len(dbStrings) {
		return dbStrings[db]
	}
	return strconv.Itoa(db)
}

// EntrySize is the size of e as SQS and SNS count it against their message
// and batch limits: the body plus, for each message attribute, its name, data
// type and value (UTF-8 bytes).
// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-metadata.html
func EntrySize(e *bridge.Entry) int {
	rec := &e.Record
	n := len(e.Body) + len(AttrType) + len(TypeString) + len(rec.Type)
	if rec.Type == bridge.TypeGap {
		return n
	}
	if rec.Event != "" {
		n += len(AttrEvent) + len(TypeString) + len(rec.Event)
	}
	return n + len(AttrDB) + len(TypeNumber) + decimalLen(rec.DB)
}

// decimalLen is len(strconv.Itoa(v)) without the allocation: EntrySize runs
// several times per record.
func decimalLen(v int) int {
	if v < 0 {
		return len(strconv.Itoa(v)) // not a Redis database number; never hot
	}
	n := 1
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}
