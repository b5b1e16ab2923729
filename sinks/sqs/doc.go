// Package sqs is the sink that sends records to an Amazon SQS queue with
// SendMessageBatch: up to 10 messages and 1 MiB per request, each message
// body one JSON record, with message attributes type, event and db.
//
// A queue URL ending in ".fifo" is a FIFO queue: the message group id is
// chosen by awsbatch.GroupBy (the key by default), the deduplication id is
// the record id, and one batch is in flight at a time so that the records of
// one group arrive in the order keyrelay received them.
//
// With awsbatch.Options.Pack = awsbatch.PackNDJSON (KEYRELAY_PACK=ndjson) a
// standard queue gets many records per message: the records' JSON lines
// joined by "\n", grouped so that every record of a message has the same
// type, event and db attributes (the message carries them, plus count), up
// to 10 messages per SendMessageBatch within the size limits. See
// awsbatch.Pack. Packing is refused on FIFO queues.
//
// The package is an adapter: awsbatch.Sink batches, sizes, packs, sends and
// classifies, over this package's awsbatch.Transport for SendMessageBatch.
// It makes one attempt per Publish (the SDK's own retries are off for
// SendMessageBatch); the bridge retries exactly the entries that failed
// retryably.
//
// New does no I/O. The queue's MaximumMessageSize is read in the
// background, with retries; until it is, messages are held to the smallest
// size AWS allows, and Healthy names the queue and the cause. The sink needs
// the IAM actions in RequiredIAMActions.
package sqs
