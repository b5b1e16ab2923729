// Package awsbatch holds what the SQS and SNS sinks share: their batch APIs
// behave alike (10 entries, a byte limit, per-entry results with
// SenderFault), and both need message attributes and FIFO group ids built
// the same way.
package awsbatch
