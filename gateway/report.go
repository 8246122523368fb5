package gateway

import (
	"net/url"
	"strings"
	"time"

	"github.com/unsgate/unsgate/model"
)

// statusReport is /api/v1/status and the status event of /api/v1/events:
// everything the status page shows except the tag table. Times are unix
// milliseconds (0: never), durations milliseconds.
type statusReport struct {
	Gateway gatewayReport  `json:"gateway"`
	Ready   readyReport    `json:"ready"`
	Sources []sourceReport `json:"sources"`
	Sinks   []sinkReport   `json:"sinks"`
	Model   modelReport    `json:"model"`
	Engine  engineReport   `json:"engine"`
	Tags    tagCounts      `json:"tags"`
	Events  eventsReport   `json:"events"`
}

type gatewayReport struct {
	ID        string `json:"id"`
	NowMS     int64  `json:"now_ms"`
	StartedMS int64  `json:"started_ms"`
	UptimeMS  int64  `json:"uptime_ms"`
	Broker    string `json:"broker,omitempty"` // the embedded broker's address
	Presence  string `json:"presence_topic"`
}

type readyReport struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

type sourceReport struct {
	Name           string    `json:"name"`
	URL            string    `json:"url"`
	State          string    `json:"state"` // stopped, connecting, connected, reconnecting, failed
	SinceMS        int64     `json:"since_ms"`
	LastGoodReadMS int64     `json:"last_good_read_ms"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorMS    int64     `json:"last_error_ms"`
	RetryAtMS      int64     `json:"retry_at_ms"`
	Sessions       uint64    `json:"sessions"`
	Failures       uint64    `json:"failures"`
	Requests       uint64    `json:"requests"`
	RequestsFailed uint64    `json:"requests_failed"`
	LatencyMS      float64   `json:"latency_ms"` // moving average of the round trips
	LastLatencyMS  float64   `json:"last_latency_ms"`
	Tags           tagCounts `json:"tags"`
}

type sinkReport struct {
	Name           string `json:"name"`
	Connected      bool   `json:"connected"`
	Sent           uint64 `json:"sent"`
	Queued         int    `json:"queued"` // in memory
	Inflight       int    `json:"inflight"`
	StoredBytes    int64  `json:"stored_bytes"` // on disk
	Dropped        uint64 `json:"dropped"`
	Rejected       uint64 `json:"rejected"`
	Redelivered    uint64 `json:"redelivered"`
	Connects       uint64 `json:"connects"`
	LastError      string `json:"last_error,omitempty"`
	LastErrorMS    int64  `json:"last_error_ms"`
	StoreErrors    uint64 `json:"store_errors"`
	LastStoreError string `json:"last_store_error,omitempty"`
}

type modelReport struct {
	ModelStatus
	Tags int `json:"tags"`
}

type engineReport struct {
	Samples        uint64 `json:"samples"`
	Points         uint64 `json:"points"`
	Suppressed     uint64 `json:"suppressed"`
	ExprErrors     uint64 `json:"expr_errors"`
	UnknownSamples uint64 `json:"unknown_samples"`
}

type eventsReport struct {
	Streams int    `json:"streams"`
	Dropped uint64 `json:"dropped"`
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Ready reports whether the gateway does its job: a model is loaded and at
// least one sink is connected. Otherwise reason says what is missing.
func (g *Gateway) Ready() (ok bool, reason string) {
	return readiness(g.ModelStatus(), g.Stats())
}

func readiness(m ModelStatus, st Stats) (bool, string) {
	if m.LoadedAt.IsZero() {
		return false, "no model loaded"
	}
	if len(st.Sinks) == 0 {
		return false, "no sink running yet"
	}
	var why []string
	for _, s := range st.Sinks {
		if s.Connected {
			return true, ""
		}
		msg := s.Name + ": not connected"
		if s.LastError != "" {
			msg = s.Name + ": " + s.LastError
		}
		why = append(why, msg)
	}
	return false, "no sink connected (" + strings.Join(why, "; ") + ")"
}

// report builds the status report.
func (w *webServer) report() statusReport {
	g := w.g
	now := time.Now()
	st := g.Stats()
	mst := g.ModelStatus()
	all, bySource := g.live.counts()
	r := statusReport{
		Gateway: gatewayReport{ID: w.id, NowMS: now.UnixMilli(), StartedMS: w.started.UnixMilli(),
			UptimeMS: now.Sub(w.started).Milliseconds(), Broker: g.BrokerAddr(), Presence: g.PresenceTopic()},
		Sources: make([]sourceReport, 0, len(st.Sources)),
		Sinks:   make([]sinkReport, 0, len(st.Sinks)),
		Model:   modelReport{ModelStatus: mst, Tags: all.Total},
		Engine: engineReport{Samples: st.Engine.Samples, Points: st.Engine.Points, Suppressed: st.Engine.Suppressed,
			ExprErrors: st.Engine.ExprErrors, UnknownSamples: st.Engine.UnknownSamples},
		Tags:   all,
		Events: eventsReport{Streams: w.hub.streams(), Dropped: w.hub.dropped.Load()},
	}
	r.Ready.OK, r.Ready.Reason = readiness(mst, st)
	cfg := g.appliedConfig()
	for _, s := range st.Sources {
		r.Sources = append(r.Sources, sourceReport{
			Name: s.Name, URL: sourceURL(cfg, s.Name), State: s.State.String(), SinceMS: unixMS(s.Since),
			LastGoodReadMS: unixMS(s.LastGoodRead), LastError: s.LastError, LastErrorMS: unixMS(s.LastErrorTime),
			RetryAtMS: unixMS(s.RetryAt), Sessions: s.Sessions, Failures: s.Failures,
			Requests: s.Requests.Requests, RequestsFailed: s.Requests.Failed,
			LatencyMS: millis(s.Requests.AvgLatency), LastLatencyMS: millis(s.Requests.LastLatency),
			Tags: bySource[s.Name],
		})
	}
	for _, s := range st.Sinks {
		r.Sinks = append(r.Sinks, sinkReport{
			Name: s.Name, Connected: s.Connected, Sent: s.Sent, Queued: s.Queued, Inflight: s.Inflight,
			StoredBytes: s.StoredBytes, Dropped: s.Dropped, Rejected: s.Rejected, Redelivered: s.Redelivered,
			Connects: s.Connects, LastError: s.LastError, LastErrorMS: unixMS(s.LastErrorAt),
			StoreErrors: s.StoreErrors, LastStoreError: s.LastStoreError,
		})
	}
	return r
}

// sourceURL is the URL of a source in the running config, without a
// password.
func sourceURL(cfg *Config, name string) string {
	sc := cfg.Sources[name]
	if sc == nil {
		return ""
	}
	if u, err := url.Parse(sc.URL.V); err == nil {
		return u.Redacted()
	}
	return sc.URL.V
}

// tagReport is one row of the tag table (/api/v1/tags, the tags event).
type tagReport struct {
	Path        string    `json:"path"`
	Value       jsonValue `json:"value"`
	Raw         jsonValue `json:"raw"` // the source value before the expression; null for derived tags
	Unit        string    `json:"unit,omitempty"`
	Type        string    `json:"type"`
	Source      string    `json:"source,omitempty"`
	Quality     string    `json:"quality"` // GOOD, UNCERTAIN, BAD; "" before the first point
	Stale       bool      `json:"stale,omitempty"`
	Status      uint32    `json:"status,omitempty"` // protocol status code when not GOOD
	TimestampMS int64     `json:"timestamp_ms"`
	AgeMS       int64     `json:"age_ms"`
}

func (r *tagRow) report(now time.Time) tagReport {
	t := tagReport{Path: r.meta.Topic, Unit: r.meta.Unit, Type: r.meta.TypeName(), Source: r.meta.Source,
		Value: jsonValue(r.value), Raw: jsonValue(r.raw), Stale: r.stale, Status: r.status}
	if r.seen {
		t.Quality = r.q.String()
	}
	if r.t != 0 {
		t.TimestampMS = r.t / int64(time.Millisecond)
		t.AgeMS = now.UnixMilli() - t.TimestampMS
	}
	return t
}

// jsonValue writes a model.Value as the UNS JSON does: integers beyond
// 2^53 as strings, non-finite floats as null.
type jsonValue model.Value

func (v jsonValue) MarshalJSON() ([]byte, error) { return model.Value(v).AppendJSON(nil), nil }
