// Package sns is the sink that publishes records to an Amazon SNS topic with
// PublishBatch: up to 10 messages per request, within the topic's
// MaximumMessageSize for each message and for the whole batch, each message
// one JSON record with message attributes type, event and db (which
// subscription filter policies can match).
//
// A topic ARN ending in ".fifo" is a FIFO topic: the message group id is
// chosen by awsbatch.GroupBy (the key by default), the deduplication id is
// the record id, and one batch is in flight at a time so that the records of
// one group are published in the order keyrelay received them.
//
// With awsbatch.Options.Pack = awsbatch.PackNDJSON (KEYRELAY_PACK=ndjson) a
// standard topic gets many records per message: the records' JSON lines
// joined by "\n", grouped so that every record of a message has the same
// type, event and db attributes (the message carries them, plus count), up
// to 10 messages per PublishBatch within the size limits. See awsbatch.Pack.
// Packing is refused on FIFO topics.
//
// The package is an adapter: awsbatch.Sink batches, sizes, packs, sends and
// classifies, over this package's awsbatch.Transport for PublishBatch. It
// makes one attempt per Publish (the SDK's own retries are off: New tunes
// an *sns.Client's request path, see Tune); the bridge retries exactly the
// entries that failed retryably.
//
// New does no I/O. The topic's MaximumMessageSize is read in the background,
// with retries; until it is, messages are held to the smallest size AWS
// allows, and Healthy names the topic and the cause. The sink needs the IAM
// actions in RequiredIAMActions.
package sns
