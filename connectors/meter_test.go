package connectors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

func TestMeterCountsAndBuckets(t *testing.T) {
	var m Meter
	m.Answered(700*time.Microsecond, false) // <= 1ms
	m.Answered(time.Millisecond, false)     // <= 1ms: bounds are inclusive
	m.Answered(30*time.Millisecond, true)   // <= 50ms, failed
	m.Answered(time.Minute, false)          // above every bound
	m.Lost()
	st := m.Stats()
	if st.Requests != 5 || st.Failed != 2 {
		t.Errorf("requests %d failed %d, want 5 and 2", st.Requests, st.Failed)
	}
	want := [len(LatencyBuckets) + 1]uint64{}
	want[2], want[7], want[len(LatencyBuckets)] = 2, 1, 1
	if st.Latency != want {
		t.Errorf("buckets %v, want %v", st.Latency, want)
	}
	if sum := 700*time.Microsecond + time.Millisecond + 30*time.Millisecond + time.Minute; st.LatencySum != sum {
		t.Errorf("sum %v, want %v", st.LatencySum, sum)
	}
	if st.LastLatency != time.Minute {
		t.Errorf("last %v, want 1m (a lost request is not timed)", st.LastLatency)
	}
	// The average starts at the first round trip and moves an eighth of
	// the way to each next one.
	var a Meter
	a.Answered(80*time.Millisecond, false)
	a.Answered(160*time.Millisecond, false)
	if got := a.Stats().AvgLatency; got != 90*time.Millisecond {
		t.Errorf("average %v, want 90ms", got)
	}
}

func TestMeterConcurrentAndAllocationFree(t *testing.T) {
	var m Meter
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 1000 {
				m.Answered(time.Duration(i)*time.Microsecond, i%10 == 0)
				_ = m.Stats()
			}
		})
	}
	wg.Wait()
	st := m.Stats()
	var n uint64
	for _, c := range st.Latency {
		n += c
	}
	if st.Requests != 4000 || st.Failed != 400 || n != 4000 {
		t.Errorf("stats %+v", st)
	}
	if allocs := testing.AllocsPerRun(100, func() { m.Answered(time.Millisecond, false); m.Lost() }); allocs != 0 {
		t.Errorf("%v allocations per request", allocs)
	}
}

// meteredSource is a fakeSource with a Meter.
type meteredSource struct {
	*fakeSource
	m Meter
}

func (s *meteredSource) Meter() *Meter { return &s.m }

// Status carries the time of the last GOOD sample and, for a source with
// a Meter, its request figures.
func TestSupervisorStatusLastGoodReadAndRequests(t *testing.T) {
	good := time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC)
	batches := make(chan []model.Sample)
	src := &meteredSource{fakeSource: newFake(func(ctx context.Context, n int, emit Emit) error {
		for {
			select {
			case b := <-batches:
				emit(b)
			case <-ctx.Done():
				return nil
			}
		}
	})}
	s := NewSupervisor(src, Backoff{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, s, func([]model.Sample) {})
	defer func() { cancel(); waitDone(t, done, 5*time.Second) }()

	if st := s.Status(); !st.LastGoodRead.IsZero() {
		t.Errorf("last good read %v before any sample", st.LastGoodRead)
	}
	batches <- []model.Sample{{Address: "hr:0", Quality: model.QualityBad, ReceiveTime: good.Add(-time.Second)},
		{Address: "hr:1", Quality: model.QualityGood, ReceiveTime: good}}
	batches <- []model.Sample{{Address: "hr:0", Quality: model.QualityBad, ReceiveTime: good.Add(time.Second)},
		{Address: "co:5", Quality: model.QualityUncertain, ReceiveTime: good.Add(time.Second)}}
	batches <- nil // the batches above have been handled once this one is taken
	src.m.Answered(3*time.Millisecond, false)
	src.m.Lost()
	st := s.Status()
	if !st.LastGoodRead.Equal(good) {
		t.Errorf("last good read %v, want %v (the GOOD sample's receive time; BAD and UNCERTAIN ones do not count)", st.LastGoodRead, good)
	}
	if st.Requests.Requests != 2 || st.Requests.Failed != 1 || st.Requests.LastLatency != 3*time.Millisecond {
		t.Errorf("requests %+v", st.Requests)
	}
}
