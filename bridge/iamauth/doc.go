// Package iamauth generates ElastiCache IAM authentication tokens for
// go-redis.
//
// ElastiCache (Valkey 7.2+, Redis OSS 7.0+, in-transit encryption on) accepts
// a SigV4-presigned request as the password of an IAM-enabled user: a GET of
// http://<cache id>/?Action=connect&User=<user id> (plus
// ResourceType=ServerlessCache for a serverless cache), signed for the
// service "elasticache" in the cache's region, valid for 15 minutes, with the
// scheme stripped. The user name and user id of an IAM-enabled user are
// identical. See
// https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth-iam.html.
//
// A token is only checked when a connection authenticates, so
// CredentialsProvider signs a fresh one for every new connection. ElastiCache
// disconnects an IAM-authenticated connection after 12 hours
// (ConnectionLimit); a subscriber should move to a new connection before then
// (PlannedReconnectAfter), in a planned and announced way.
package iamauth
