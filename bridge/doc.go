// Package bridge is keyrelay's domain: the key-event record, decoding of
// Redis keyspace notifications, the subscription to one Redis node, the
// bounded buffer between reader and sinks, batching, retry, shutdown and
// metrics.
//
// Data flows in one direction:
//
//	Subscriber (one per Redis node) ─► Relay.Emit ─► one Queue per sink ─► workers ─► Sink.Publish
//
// The reader never waits on a sink: Emit encodes a record once and appends it
// to every sink's queue without blocking; a full queue drops by policy and
// reports the loss as a gap record. bridge imports no sink; sinks import
// bridge and implement Sink.
package bridge
