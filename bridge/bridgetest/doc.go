// Package bridgetest starts the real servers keyrelay's tests run against
// (redis-server, the fauxqs SQS/SNS emulator) on free loopback ports, holds
// the contract suite every sink passes, and parses what keyrelay emits, the
// one way every test does: records (Record, ParseRecord, ParseRecords) and
// the Prometheus text of /metrics (ParseMetrics, ScrapeMetrics,
// MetricValue).
//
// A missing server fails the test: `make test` installs them. Tests that
// start a server are built only with -tags integration (`make test`), so
// that `go test ./...` runs the unit tests on a machine with only Go.
package bridgetest
