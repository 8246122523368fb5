package connectors

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the round-trip histogram a Meter
// keeps: from a PLC on the same switch (well under a millisecond) to a
// device behind a slow serial gateway (seconds).
var LatencyBuckets = [...]time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// Meter counts a source's requests to its device or server and their round
// trips, for the status page and metrics. A source updates it per request
// from its own goroutines; the zero value is ready, every method is safe
// for concurrent use and none allocates.
type Meter struct {
	requests atomic.Uint64
	failed   atomic.Uint64
	sum      atomic.Int64 // ns, answered requests
	last     atomic.Int64 // ns
	avg      atomic.Int64 // ns, moving average
	buckets  [len(LatencyBuckets) + 1]atomic.Uint64
}

// Metered is implemented by sources that keep a Meter; the Supervisor puts
// its figures into Status.Requests.
type Metered interface {
	Meter() *Meter
}

// RequestStats is a snapshot of a Meter.
type RequestStats struct {
	// Requests counts requests sent, answered or not; Failed those that
	// brought no values: an error answer (a Modbus exception, an OPC UA
	// service fault), a timeout or a broken connection.
	Requests uint64
	Failed   uint64
	// LastLatency is the round trip of the last answered request,
	// AvgLatency a moving average over about the last eight.
	LastLatency time.Duration
	AvgLatency  time.Duration
	// LatencySum is the total round trip of the answered requests, and
	// Latency their count per LatencyBuckets bound (not cumulative), the
	// last element counting those above the largest bound.
	LatencySum time.Duration
	Latency    [len(LatencyBuckets) + 1]uint64
}

// Answered counts the request that was answered after took; failed marks an
// answer without values (an exception, a bad service result).
func (m *Meter) Answered(took time.Duration, failed bool) {
	m.requests.Add(1)
	if failed {
		m.failed.Add(1)
	}
	took = max(took, 0)
	i := 0
	for i < len(LatencyBuckets) && took > LatencyBuckets[i] {
		i++
	}
	m.buckets[i].Add(1)
	m.sum.Add(int64(took))
	m.last.Store(int64(took))
	for {
		old := m.avg.Load()
		next := int64(took)
		if old != 0 {
			next = old + (int64(took)-old)/8
		}
		if m.avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// Lost counts a request that got no answer: it timed out or the connection
// broke under it.
func (m *Meter) Lost() {
	m.requests.Add(1)
	m.failed.Add(1)
}

// Stats returns the counters.
func (m *Meter) Stats() RequestStats {
	st := RequestStats{
		Requests:    m.requests.Load(),
		Failed:      m.failed.Load(),
		LastLatency: time.Duration(m.last.Load()),
		AvgLatency:  time.Duration(m.avg.Load()),
		LatencySum:  time.Duration(m.sum.Load()),
	}
	for i := range m.buckets {
		st.Latency[i] = m.buckets[i].Load()
	}
	return st
}
