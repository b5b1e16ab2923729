package bridge

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds keyrelay's Prometheus metrics. Build it with NewMetrics and
// pass it to the components; there are no metric globals.
type Metrics struct {
	Received      *prometheus.CounterVec // event
	Ignored       prometheus.Counter     // decoded but filtered out by KEYRELAY_KEYS / EVENTS / DBS
	Undecodable   prometheus.Counter     // messages on unexpected channels
	Delivered     *prometheus.CounterVec // sink
	Retried       *prometheus.CounterVec // sink
	Rejected      *prometheus.CounterVec // sink, reason
	Dropped       *prometheus.CounterVec // sink, reason
	Gaps          *prometheus.CounterVec // reason
	BufferRecords *prometheus.GaugeVec   // sink
	BufferBytes   *prometheus.GaugeVec   // sink
	// The bounds of each sink's buffer (KEYRELAY_BUFFER_RECORDS, _BYTES).
	BufferCapacityRecords *prometheus.GaugeVec     // sink
	BufferCapacityBytes   *prometheus.GaugeVec     // sink
	BatchSize             *prometheus.HistogramVec // sink
	PublishTime           *prometheus.HistogramVec // sink
	SinkUp                *prometheus.GaugeVec     // sink
	Connected             *prometheus.GaugeVec     // node
	Reconnects            *prometheus.CounterVec   // node, reason
	// Continuity markers.
	MarkersSent     *prometheus.CounterVec // node
	MarkersReturned *prometheus.CounterVec // node
	MarkerErrors    *prometheus.CounterVec // node, reason
	MarkersEnabled  *prometheus.GaugeVec   // node
	// The alive key.
	AliveErrors          *prometheus.CounterVec // node, reason
	NotificationsFlowing *prometheus.GaugeVec   // node
	RestartUnknown       prometheus.Counter
	// The durable spool (KEYRELAY_SPOOL_DIR).
	SpoolBytes      prometheus.Gauge
	SpoolFiles      prometheus.Gauge
	SpoolLagRecords *prometheus.GaugeVec // sink
	SpoolLagSeconds *prometheus.GaugeVec // sink
	SpoolFsync      prometheus.Histogram
	// Cluster mode.
	Primaries       prometheus.Gauge
	DiscoveryErrors prometheus.Counter
	// BuildInfo is 1 for the running version (SetBuildInfo).
	BuildInfo *prometheus.GaugeVec // version, goversion

	lastNotification atomic.Int64 // unix nanoseconds
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests and `keyrelay check`).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_notifications_received_total",
			Help: "Keyspace notifications received from Redis and forwarded, by event.",
		}, []string{"event"}),
		Ignored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyrelay_notifications_ignored_total",
			Help: "Notifications received but not forwarded because KEYRELAY_KEYS, KEYRELAY_EVENTS or KEYRELAY_DBS exclude them.",
		}),
		Undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyrelay_notifications_undecodable_total",
			Help: "Messages on channels that are not keyspace or keyevent channels (logged).",
		}),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_records_delivered_total",
			Help: "Records the sink accepted.",
		}, []string{"sink"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_records_retried_total",
			Help: "Record sends that failed retryably and were resent (one per entry per retry).",
		}, []string{"sink"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_records_rejected_total",
			Help: "Records the sink refused permanently (logged with the reason), by reason.",
		}, []string{"sink", "reason"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_records_dropped_total",
			Help: "Records received but not delivered: overflow (buffer full) or shutdown (undelivered at the deadline).",
		}, []string{"sink", "reason"}),
		Gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_gaps_total",
			Help: "Gap records emitted: windows in which events may be missing, by reason.",
		}, []string{"reason"}),
		BufferRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_buffer_records",
			Help: "Records waiting in the sink's buffer.",
		}, []string{"sink"}),
		BufferBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_buffer_bytes",
			Help: "Encoded bytes waiting in the sink's buffer.",
		}, []string{"sink"}),
		BufferCapacityRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_buffer_capacity_records",
			Help: "Records the sink's buffer holds at most (KEYRELAY_BUFFER_RECORDS); beyond it KEYRELAY_OVERFLOW drops.",
		}, []string{"sink"}),
		BufferCapacityBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_buffer_capacity_bytes",
			Help: "Encoded bytes the sink's buffer holds at most (KEYRELAY_BUFFER_BYTES); beyond it KEYRELAY_OVERFLOW drops.",
		}, []string{"sink"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyrelay_batch_size",
			Help:    "Entries per publish attempt.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000},
		}, []string{"sink"}),
		PublishTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyrelay_publish_duration_seconds",
			Help:    "Duration of one publish attempt.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink"}),
		SinkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_sink_up",
			Help: "1 when the sink's last publish attempt succeeded, 0 while it fails.",
		}, []string{"sink"}),
		Connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_subscription_connected",
			Help: "1 while the subscription to the node is established.",
		}, []string{"node"}),
		Reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_subscription_reconnects_total",
			Help: "Subscription re-establishments, by reason (reconnect, failover).",
		}, []string{"node", "reason"}),
		MarkersSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_markers_sent_total",
			Help: "Continuity markers published on keyrelay's channel of the node.",
		}, []string{"node"}),
		MarkersReturned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_markers_returned_total",
			Help: "Continuity markers read back through the subscription: each proves everything published before it was received.",
		}, []string{"node"}),
		MarkerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_marker_errors_total",
			Help: "Marker failures: noperm (the Redis user may not publish or subscribe to keyrelay's channel; markers off), publish (a PUBLISH failed), overdue (markers did not come back: the subscription was renewed).",
		}, []string{"node", "reason"}),
		MarkersEnabled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_markers_enabled",
			Help: "1 while continuity markers are on for the node, 0 when off (disabled, or no permission: gap windows then rest on the subscription's pings).",
		}, []string{"node"}),
		AliveErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_alive_key_errors_total",
			Help: "Writes of keyrelay's alive key that failed: noperm (the Redis user may not write keyrelay:*; the alive key is off), write.",
		}, []string{"node", "reason"}),
		NotificationsFlowing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_notifications_flowing",
			Help: "0 when keyrelay wrote its alive key and the notification did not come back (keyspace notifications switched off?), else 1. Only judged when the configured events include set.",
		}, []string{"node"}),
		RestartUnknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyrelay_restart_unknown_total",
			Help: "Starts that could not tell when keyrelay last listened (no alive key: a first start, or gone longer than 7 days; or unreadable): no restart gap was written.",
		}),
		SpoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_spool_bytes",
			Help: "Durable spool: bytes of its segment files (bounded by KEYRELAY_SPOOL_MAX_BYTES); 0 without a spool.",
		}),
		SpoolFiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_spool_files",
			Help: "Durable spool: segment files.",
		}),
		SpoolLagRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_spool_lag_records",
			Help: "Durable spool: records the sink has not yet acknowledged.",
		}, []string{"sink"}),
		SpoolLagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_spool_lag_seconds",
			Help: "Durable spool: how much older the sink's oldest unacknowledged record is than the newest record.",
		}, []string{"sink"}),
		SpoolFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyrelay_spool_fsync_seconds",
			Help:    "Durable spool: duration of one fsync of a segment file.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		Primaries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_cluster_primaries",
			Help: "Cluster mode: primaries in the last topology read (slot-less ones included); each gets a subscription.",
		}),
		DiscoveryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyrelay_cluster_discovery_errors_total",
			Help: "Cluster mode: topology reads that failed (the subscriptions go on; /readyz fails after 3 in a row).",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_build_info",
			Help: "1, labelled with keyrelay's version and the Go version it was built with.",
		}, []string{"version", "goversion"}),
	}
	// Every gap reason exists from the start, so that the first gap is an
	// increase a rate() or increase() alert can see.
	for _, reason := range GapReasons {
		m.Gaps.WithLabelValues(reason)
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Ignored, m.Undecodable, m.Delivered, m.Retried,
			m.Rejected, m.Dropped, m.Gaps, m.BufferRecords, m.BufferBytes, m.BatchSize,
			m.PublishTime, m.SinkUp, m.Connected, m.Reconnects,
			m.MarkersSent, m.MarkersReturned, m.MarkerErrors, m.MarkersEnabled, m.Primaries, m.DiscoveryErrors,
			m.AliveErrors, m.NotificationsFlowing, m.RestartUnknown,
			m.SpoolBytes, m.SpoolFiles, m.SpoolLagRecords, m.SpoolLagSeconds, m.SpoolFsync,
			m.BufferCapacityRecords, m.BufferCapacityBytes, m.BuildInfo,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "keyrelay_last_notification_timestamp_seconds",
				Help: "Unix time of the last notification received from Redis, filtered ones included, keyrelay's own keys not; 0 before the first.",
			}, m.lastNotificationSeconds))
	}
	return m
}

// deleteNode removes every series of a node that left the cluster.
func (m *Metrics) deleteNode(node string) {
	l := prometheus.Labels{"node": node}
	m.Connected.DeletePartialMatch(l)
	m.Reconnects.DeletePartialMatch(l)
	m.MarkersSent.DeletePartialMatch(l)
	m.MarkersReturned.DeletePartialMatch(l)
	m.MarkerErrors.DeletePartialMatch(l)
	m.MarkersEnabled.DeletePartialMatch(l)
	m.AliveErrors.DeletePartialMatch(l)
	m.NotificationsFlowing.DeletePartialMatch(l)
}

func (m *Metrics) noteNotification(t time.Time) { m.lastNotification.Store(t.UnixNano()) }

func (m *Metrics) lastNotificationSeconds() float64 {
	return float64(m.lastNotification.Load()) / 1e9
}

// SetBuildInfo sets keyrelay_build_info{version, goversion} to 1.
func (m *Metrics) SetBuildInfo(version string) {
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
}

// GapReasons is every reason a gap record can carry; each has a
// keyrelay_gaps_total series from the start.
var GapReasons = []string{GapReconnect, GapFailover, GapOverflow, GapShutdown, GapPlanned, GapStop, GapRestart, GapTopology, GapSpool}
