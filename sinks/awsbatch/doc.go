// Package awsbatch is the sink of the AWS batch APIs, SQS SendMessageBatch
// and SNS PublishBatch, written once: both take 10 entries and a byte limit
// per request and answer per entry with SenderFault, and both need message
// attributes, FIFO group ids, packing and size limits handled the same way.
//
// Sink does the batching, sizing, packing, sending and classification of
// outcomes for the bridge, and implements bridge.Sink. It reaches AWS
// through a Transport, the narrow part that differs: package sqs and package
// sns each hold one, over their own SDK client interface, and wrap Sink.
//
// Size limits are learnt, not assumed: New does no I/O, and a background
// reader reads the target's MaximumMessageSize with retries. Until it is
// read, messages are held to the smallest size AWS allows (MinMessageSize),
// so that nothing sent is too large, and Healthy reports why.
package awsbatch
