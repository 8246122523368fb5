package opcua

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

const benchItems = 10_000

// benchSession is a session of a source with n bindings, all resolved and
// reported, as after subscribing; emit only counts.
func benchSession(b testing.TB, n int, emitted *atomic.Int64) *session {
	b.Helper()
	tags := make([]Tag, n)
	for i := range tags {
		tags[i] = Tag{Addr: model.OPCUAAddress{Namespace: 2, IDType: 'i', ID: fmt.Sprint(i + 1)}}
	}
	src, err := New(Config{Name: "ua1", Endpoint: "opc.tcp://127.0.0.1:4840", SecurityPolicy: "None", AcceptAnyServerCert: true, Tags: tags})
	if err != nil {
		b.Fatal(err)
	}
	ss := newSession(src, func(s []model.Sample) { emitted.Add(int64(len(s))) })
	for i := range ss.nodes {
		ss.nodes[i] = src.binds[i].node
	}
	ss.reported = make([]bool, n)
	return ss
}

// dataChange is a notification of n items (client handles as itemHandle gives them) as the
// client library hands it over: encoded and decoded, so every value is a
// decoded variant. mk makes item i's value.
func dataChange(b testing.TB, n int, mk func(i int) any) ([]byte, *ua.DataChangeNotification) {
	b.Helper()
	now := time.Now()
	dcn := &ua.DataChangeNotification{DiagnosticInfos: []*ua.DiagnosticInfo{}}
	for i := range n {
		dcn.MonitoredItems = append(dcn.MonitoredItems, &ua.MonitoredItemNotification{
			ClientHandle: itemHandle(i),
			Value: &ua.DataValue{
				EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
				Value:           ua.MustVariant(mk(i)),
				SourceTimestamp: now, ServerTimestamp: now,
			},
		})
	}
	raw, err := ua.Encode(dcn)
	if err != nil {
		b.Fatal(err)
	}
	out := new(ua.DataChangeNotification)
	if _, err := ua.Decode(raw, out); err != nil {
		b.Fatal(err)
	}
	return raw, out
}

// BenchmarkDataChange10k: a decoded 10k-item data change notification to
// samples (one emitted batch).
func BenchmarkDataChange10k(b *testing.B) {
	for _, tc := range []struct {
		name string
		mk   func(i int) any
	}{
		{"double", func(i int) any { return float64(i) * 0.5 }},
		{"int32", func(i int) any { return int32(i) }},
		{"bool", func(i int) any { return i%2 == 0 }},
		{"string", func(i int) any { return "state" }},
		{"mixed", func(i int) any {
			switch i % 4 {
			case 0:
				return float64(i)
			case 1:
				return float32(i)
			case 2:
				return uint16(i)
			}
			return "ok"
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var emitted atomic.Int64
			ss := benchSession(b, benchItems, &emitted)
			_, n := dataChange(b, benchItems, tc.mk)
			recv := time.Now()
			ss.dataChange(n, recv) // first value: grows the batch slice
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ss.dataChange(n, recv)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchItems), "ns/item")
			if emitted.Load() != int64((b.N+1)*benchItems) {
				b.Fatalf("%d samples emitted", emitted.Load())
			}
		})
	}
}

// BenchmarkDecodeDataChange10k: the same from the notification's bytes,
// including the client library's decoding, for the whole path's cost.
func BenchmarkDecodeDataChange10k(b *testing.B) {
	var emitted atomic.Int64
	ss := benchSession(b, benchItems, &emitted)
	raw, _ := dataChange(b, benchItems, func(i int) any { return float64(i) })
	recv := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		n := new(ua.DataChangeNotification)
		if _, err := ua.Decode(raw, n); err != nil {
			b.Fatal(err)
		}
		ss.dataChange(n, recv)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchItems), "ns/item")
}

// BenchmarkSubscribe10k: one op is a session subscribing 10k monitored
// items on the in-process server (in batches of the default 1000) until
// every item's first value has arrived.
func BenchmarkSubscribe10k(b *testing.B) {
	srv := sharedSim(b)
	dir := folder(b)
	tags := make([]Tag, benchItems)
	for i := range tags {
		tags[i] = tag(b, srv.AddVariable(fmt.Sprintf("%s/V%d", dir, i), float64(i)))
	}
	cfg := testConfig(srv.Endpoint(), tags...)
	cfg.PublishingInterval = 50 * time.Millisecond
	cfg.Timeout = 30 * time.Second
	b.ReportAllocs()
	for b.Loop() {
		src := mustNew(b, cfg)
		var first atomic.Int64
		done := make(chan struct{})
		seen := make([]bool, benchItems)
		index := make(map[string]int, benchItems)
		for i, t := range src.Addresses() {
			index[t] = i
		}
		emit := func(batch []model.Sample) {
			for _, s := range batch {
				if i, ok := index[s.Address]; ok && !seen[i] && s.Quality == model.QualityGood {
					seen[i] = true
					if first.Add(1) == benchItems {
						close(done)
					}
				}
			}
		}
		r := run(b, src, emit)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("only %d of %d first values after 60s", first.Load(), benchItems)
		}
		b.StopTimer()
		if err := r.stop(b); err != nil {
			b.Fatal(err)
		}
		if st := src.Stats(); st.CreateMonitoredItemsCalls != benchItems/DefaultMaxMonitoredItemsPerCall {
			b.Fatalf("%d CreateMonitoredItems calls", st.CreateMonitoredItemsCalls)
		}
		b.StartTimer()
	}
}
