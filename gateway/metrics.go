package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/unsgate/unsgate/connectors"
)

// Metrics: the gateway's own registry (never the global default), with
// the Go and process collectors and one collector that reads the same
// snapshots as the status page at each scrape, so nothing on the hot path
// updates a metric. Labels are source and sink names, never tag paths.

func newMetricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	mGatewayInfo = newMetricDesc("unsgate_gateway_info", "The gateway's id; always 1.", "id")
	mReady       = newMetricDesc("unsgate_ready", "1 when a model is loaded and at least one sink is connected (/readyz).")

	mSourceUp       = newMetricDesc("unsgate_source_up", "1 when the source is connected.", "source")
	mSourceState    = newMetricDesc("unsgate_source_state", "1 for the source's current state.", "source", "state")
	mSourceSessions = newMetricDesc("unsgate_source_sessions_total", "Sessions started (connection attempts).", "source")
	mSourceFailures = newMetricDesc("unsgate_source_session_failures_total", "Sessions that ended with an error.", "source")
	mSourceRequests = newMetricDesc("unsgate_source_requests_total", "Requests sent to the device or server.", "source")
	mSourceReqFail  = newMetricDesc("unsgate_source_request_errors_total", "Requests that brought no values: an error answer, a timeout or a broken connection.", "source")
	mSourceLatency  = newMetricDesc("unsgate_source_request_duration_seconds", "Round trip of the answered requests.", "source")
	mSourceLastGood = newMetricDesc("unsgate_source_last_good_read_timestamp_seconds", "When the source last delivered a GOOD value (unix time).", "source")
	mSourceTags     = newMetricDesc("unsgate_source_tags", "The source's tags by the state of their latest value: good, uncertain, bad, stale, waiting (none yet).", "source", "state")

	mSinkConnected   = newMetricDesc("unsgate_sink_connected", "1 when the sink is connected to its destination.", "sink")
	mSinkSent        = newMetricDesc("unsgate_sink_sent_total", "Messages the destination acknowledged.", "sink")
	mSinkQueued      = newMetricDesc("unsgate_sink_queued_messages", "Messages waiting in the sink's queue.", "sink")
	mSinkInflight    = newMetricDesc("unsgate_sink_inflight_messages", "Messages sent and not yet acknowledged.", "sink")
	mSinkStored      = newMetricDesc("unsgate_sink_stored_bytes", "Bytes of the sink's queue on disk (store and forward).", "sink")
	mSinkDropped     = newMetricDesc("unsgate_sink_dropped_total", "Messages dropped: the queue full or its store over budget.", "sink")
	mSinkRejected    = newMetricDesc("unsgate_sink_rejected_total", "Messages the destination refused for good.", "sink")
	mSinkRedelivered = newMetricDesc("unsgate_sink_redelivered_total", "Messages sent again after a connection was lost.", "sink")
	mSinkConnects    = newMetricDesc("unsgate_sink_connects_total", "Successful connections.", "sink")
	mSinkStoreErrors = newMetricDesc("unsgate_sink_store_errors_total", "Failed writes to the sink's store.", "sink")

	mEngineSamples    = newMetricDesc("unsgate_engine_samples_total", "Samples harmonized.")
	mEnginePoints     = newMetricDesc("unsgate_engine_points_total", "Points produced for publishing.")
	mEngineSuppressed = newMetricDesc("unsgate_engine_suppressed_total", "Evaluations not published (deadband, report by exception).")
	mEngineExprErrors = newMetricDesc("unsgate_engine_expression_errors_total", "Harmonization failures (the tag went BAD).")
	mEngineUnknown    = newMetricDesc("unsgate_engine_unknown_samples_total", "Samples no tag is bound to.")
	mTags             = newMetricDesc("unsgate_tags", "All tags by the state of their latest value.", "state")

	mModelInfo       = newMetricDesc("unsgate_model_info", "The running model: content version, git commit and dirty flag; always 1.", "version", "commit", "dirty")
	mModelLoaded     = newMetricDesc("unsgate_model_loaded_timestamp_seconds", "When the running model was loaded (unix time).")
	mModelReloadTime = newMetricDesc("unsgate_model_last_reload_timestamp_seconds", "When the last reload was attempted (unix time); absent before the first.")
	mModelReloadOK   = newMetricDesc("unsgate_model_last_reload_success", "1 when the last reload was applied, 0 when it failed and the old model kept running.")
	mModelErrors     = newMetricDesc("unsgate_model_errors", "Problems of the last failed reload.")

	mEventStreams = newMetricDesc("unsgate_http_event_streams", "Status pages connected to the event stream.")
	mEventDropped = newMetricDesc("unsgate_http_event_frames_dropped_total", "Status events dropped for slow browsers (each then gets the full table again).")
)

var sourceStates = []connectors.State{connectors.StateStopped, connectors.StateConnecting,
	connectors.StateConnected, connectors.StateReconnecting, connectors.StateFailed}

// latencyBounds are connectors.LatencyBuckets in seconds.
var latencyBounds = func() []float64 {
	b := make([]float64, len(connectors.LatencyBuckets))
	for i, d := range connectors.LatencyBuckets {
		b[i] = d.Seconds()
	}
	return b
}()

func newRegistry(w *webServer) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gatewayCollector{w})
	return r
}

// gatewayCollector turns the gateway's snapshots into metrics at each
// scrape.
type gatewayCollector struct{ w *webServer }

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mGatewayInfo, mReady,
		mSourceUp, mSourceState, mSourceSessions, mSourceFailures, mSourceRequests, mSourceReqFail, mSourceLatency,
		mSourceLastGood, mSourceTags,
		mSinkConnected, mSinkSent, mSinkQueued, mSinkInflight, mSinkStored, mSinkDropped, mSinkRejected,
		mSinkRedelivered, mSinkConnects, mSinkStoreErrors,
		mEngineSamples, mEnginePoints, mEngineSuppressed, mEngineExprErrors, mEngineUnknown, mTags,
		mModelInfo, mModelLoaded, mModelReloadTime, mModelReloadOK, mModelErrors,
		mEventStreams, mEventDropped} {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.w.g
	st := g.Stats()
	ms := g.ModelStatus()
	all, bySource := g.live.counts()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	counts := func(d *prometheus.Desc, tc tagCounts, labels ...string) {
		for _, s := range []struct {
			name string
			n    int
		}{{"good", tc.Good}, {"uncertain", tc.Uncertain}, {"bad", tc.Bad}, {"stale", tc.Stale}, {"waiting", tc.Waiting}} {
			gauge(d, float64(s.n), append(labels, s.name)...)
		}
	}

	gauge(mGatewayInfo, 1, c.w.id)
	ready, _ := readiness(ms, st)
	gauge(mReady, bit(ready))

	for _, s := range st.Sources {
		gauge(mSourceUp, bit(s.State == connectors.StateConnected), s.Name)
		for _, state := range sourceStates {
			gauge(mSourceState, bit(s.State == state), s.Name, state.String())
		}
		counter(mSourceSessions, s.Sessions, s.Name)
		counter(mSourceFailures, s.Failures, s.Name)
		counter(mSourceRequests, s.Requests.Requests, s.Name)
		counter(mSourceReqFail, s.Requests.Failed, s.Name)
		buckets := make(map[float64]uint64, len(latencyBounds))
		var n uint64
		for i, bound := range latencyBounds {
			n += s.Requests.Latency[i]
			buckets[bound] = n
		}
		n += s.Requests.Latency[len(latencyBounds)]
		ch <- prometheus.MustNewConstHistogram(mSourceLatency, n, s.Requests.LatencySum.Seconds(), buckets, s.Name)
		if !s.LastGoodRead.IsZero() {
			gauge(mSourceLastGood, float64(s.LastGoodRead.UnixNano())/1e9, s.Name)
		}
		counts(mSourceTags, bySource[s.Name], s.Name)
	}

	for _, s := range st.Sinks {
		gauge(mSinkConnected, bit(s.Connected), s.Name)
		counter(mSinkSent, s.Sent, s.Name)
		gauge(mSinkQueued, float64(s.Queued), s.Name)
		gauge(mSinkInflight, float64(s.Inflight), s.Name)
		gauge(mSinkStored, float64(s.StoredBytes), s.Name)
		counter(mSinkDropped, s.Dropped, s.Name)
		counter(mSinkRejected, s.Rejected, s.Name)
		counter(mSinkRedelivered, s.Redelivered, s.Name)
		counter(mSinkConnects, s.Connects, s.Name)
		counter(mSinkStoreErrors, s.StoreErrors, s.Name)
	}

	counter(mEngineSamples, st.Engine.Samples)
	counter(mEnginePoints, st.Engine.Points)
	counter(mEngineSuppressed, st.Engine.Suppressed)
	counter(mEngineExprErrors, st.Engine.ExprErrors)
	counter(mEngineUnknown, st.Engine.UnknownSamples)
	counts(mTags, all)

	var commit, dirty string
	if ms.Git != nil {
		commit, dirty = ms.Git.Commit, strconv.FormatBool(ms.Git.Dirty)
	}
	gauge(mModelInfo, 1, ms.Version, commit, dirty)
	if !ms.LoadedAt.IsZero() {
		gauge(mModelLoaded, float64(ms.LoadedAt.UnixNano())/1e9)
	}
	if !ms.LastReload.IsZero() {
		gauge(mModelReloadTime, float64(ms.LastReload.UnixNano())/1e9)
		gauge(mModelReloadOK, bit(ms.LastResult == "ok"))
	}
	gauge(mModelErrors, float64(len(ms.Errors)))

	gauge(mEventStreams, float64(c.w.hub.streams()))
	counter(mEventDropped, c.w.hub.dropped.Load())
}
