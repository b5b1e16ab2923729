// Package bridgetest starts the real servers keyrelay's tests run against
// (redis-server, the fauxqs SQS/SNS emulator) on free loopback ports, and
// holds the contract suite every sink passes. A missing server fails the
// test: `make test` installs them.
package bridgetest
