package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/unsgate/unsgate/model"
)

// memSink is an in-process destination for fan-out tests: it takes
// messages from its queue and keeps them, optionally holding each one until
// the test opens its gate. It follows the Sink contract (requeues what it
// holds when it stops).
type memSink struct {
	name string
	gate chan struct{} // nil: deliver at once; else wait until closed
	fail error         // Run returns it at once

	mu       sync.Mutex
	got      []Message
	tags     []*model.TagMeta
	inflight int
	sent     atomic.Uint64
}

func (s *memSink) Name() string { return s.name }

func (s *memSink) SetTags(tags []*model.TagMeta) {
	s.mu.Lock()
	s.tags = tags
	s.mu.Unlock()
}

func (s *memSink) Status() SinkStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SinkStatus{Connected: true, Sent: s.sent.Load(), Inflight: s.inflight}
}

func (s *memSink) Run(ctx context.Context, q *Queue) error {
	if s.fail != nil {
		return s.fail
	}
	var batch []Message
	for {
		var err error
		batch, err = q.PopBatch(ctx, batch[:0], 16)
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.inflight = len(batch)
		s.mu.Unlock()
		for i, m := range batch {
			if s.gate != nil {
				select {
				case <-s.gate:
				case <-ctx.Done():
					q.Requeue(batch[i:])
					s.mu.Lock()
					s.inflight = 0
					s.mu.Unlock()
					return nil
				}
			}
			s.mu.Lock()
			s.got = append(s.got, m)
			s.inflight--
			s.mu.Unlock()
			s.sent.Add(1)
			q.Done(m)
		}
	}
}

func (s *memSink) messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.got...)
}

func testPoints(n int) []model.Point {
	pts := make([]model.Point, n)
	for i := range pts {
		meta := &model.TagMeta{Topic: fmt.Sprintf("acme/site/area/line/cell/tag%d", i%7), Unit: "degC", Datatype: model.KindFloat}
		pts[i] = model.Point{Meta: meta, Value: model.FloatValue(float64(i) + 0.5), Quality: model.QualityGood, Time: ts.Add(time.Duration(i) * time.Millisecond)}
	}
	return pts
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFanoutEncodesOnceForAllSinks(t *testing.T) {
	a, b := &memSink{name: "a"}, &memSink{name: "b"}
	f := NewFanout(Options{})
	f.Add(a)
	f.Add(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	pts := testPoints(50)
	f.Publish(pts[:20])
	f.Publish(pts[20:])
	waitFor(t, "both sinks to get 50 messages", func() bool { return len(a.messages()) == 50 && len(b.messages()) == 50 })
	ma, mb := a.messages(), b.messages()
	for i := range pts {
		want := AppendJSON(nil, &pts[i])
		if ma[i].Topic != pts[i].Meta.Topic || !bytes.Equal(ma[i].Payload, want) || !ma[i].Retain || ma[i].Meta != pts[i].Meta {
			t.Fatalf("message %d: %+v, want topic %s payload %s", i, ma[i], pts[i].Meta.Topic, want)
		}
		// Same bytes, not a copy per sink.
		if unsafe.SliceData(ma[i].Payload) != unsafe.SliceData(mb[i].Payload) {
			t.Fatalf("message %d: sinks got different payload copies", i)
		}
		// Capped, so appending to one payload cannot overwrite the next.
		if cap(ma[i].Payload) != len(ma[i].Payload) {
			t.Fatalf("message %d: payload cap %d > len %d", i, cap(ma[i].Payload), len(ma[i].Payload))
		}
	}
	if f.Published() != 50 {
		t.Fatalf("Published = %d", f.Published())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := f.Stats()
	if len(st) != 2 || st[0].Name != "a" || st[0].Sent != 50 || st[1].Sent != 50 || st[0].Queued != 0 || st[0].Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFanoutPublishAllocsPerBatch(t *testing.T) {
	f := NewFanout(Options{QueueLen: 1 << 16})
	f.Add(&memSink{name: "a"})
	f.Add(&memSink{name: "b"})
	pts := testPoints(1000)
	buf := make([]Message, 0, 1000)
	drain := func() {
		for _, e := range f.sinks {
			for e.q.Len() > 0 {
				e.q.PopBatch(context.Background(), buf[:0], 1000)
			}
		}
	}
	f.Publish(pts) // warm up: queue rings, scratch, batch slice
	drain()
	n := testing.AllocsPerRun(50, func() {
		f.Publish(pts)
		drain()
	})
	// The arena chunk for the batch.
	if n > 1 {
		t.Fatalf("%v allocations per 1000-point batch, want at most 1", n)
	}
}

func TestFanoutDropsAreCountedAndLoggedRateLimited(t *testing.T) {
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logBuf, &logMu}, nil))
	slow := &memSink{name: "slow"}
	f := NewFanout(Options{Logger: logger, QueueLen: 3})
	f.Add(slow)
	pts := testPoints(10)
	f.Publish(pts) // not running: 7 dropped
	f.Publish(pts[:2])
	st := f.Stats()[0]
	if st.Dropped != 9 || st.Queued != 3 {
		t.Fatalf("dropped %d queued %d, want 9 and 3", st.Dropped, st.Queued)
	}
	logMu.Lock()
	out := logBuf.String()
	logMu.Unlock()
	if strings.Count(out, "dropped oldest") != 1 || !strings.Contains(out, "dropped=7") || !strings.Contains(out, "sink=slow") {
		t.Fatalf("want exactly one drop line with dropped=7, got:\n%s", out)
	}

	// The newest three are what the sink finally gets, in order.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "3 messages", func() bool { return len(slow.messages()) == 3 })
	cancel()
	<-done
	got := slow.messages()
	for i, want := range []*model.Point{&pts[9], &pts[0], &pts[1]} {
		if !bytes.Equal(got[i].Payload, AppendJSON(nil, want)) {
			t.Fatalf("message %d = %s", i, got[i].Payload)
		}
	}
	// Run's final account reports the two not yet logged.
	logMu.Lock()
	out = logBuf.String()
	logMu.Unlock()
	if strings.Count(out, "dropped oldest") != 2 || !strings.Contains(out, "dropped=2 dropped_total=9") {
		t.Fatalf("want a final drop line with dropped=2, got:\n%s", out)
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestFanoutRunDrainsQueuesBeforeStopping(t *testing.T) {
	gate := make(chan struct{})
	s := &memSink{name: "gated", gate: gate}
	f := NewFanout(Options{FlushTimeout: 10 * time.Second})
	f.Add(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Publish(testPoints(100))
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with 100 messages undelivered", err)
	case <-time.After(50 * time.Millisecond):
	}
	start := time.Now()
	close(gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the queue drained")
	}
	if n := len(s.messages()); n != 100 {
		t.Fatalf("delivered %d of 100", n)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Run took %v after the drain", el)
	}
}

func TestFanoutFlushTimeoutBoundsShutdown(t *testing.T) {
	s := &memSink{name: "stuck", gate: make(chan struct{})} // never opens
	f := NewFanout(Options{FlushTimeout: 100 * time.Millisecond})
	f.Add(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Publish(testPoints(20))
	waitFor(t, "the sink to take a batch", func() bool { return s.Status().Inflight > 0 })
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after FlushTimeout")
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("Run returned after %v, before FlushTimeout", el)
	}
	// Nothing lost: the sink handed its batch back.
	if st := f.Stats()[0]; st.Queued != 20 || st.Sent != 0 {
		t.Fatalf("stats %+v, want 20 queued", st)
	}
}

func TestFanoutSetTagsAndSinkErrors(t *testing.T) {
	tags := []*model.TagMeta{{Topic: "a/b"}, {Topic: "a/c"}}
	early := &memSink{name: "early"}
	f := NewFanout(Options{})
	f.Add(early)
	f.SetTags(tags)
	late := &memSink{name: "late", fail: errors.New("bad credentials file")}
	f.Add(late)
	for _, s := range []*memSink{early, late} {
		s.mu.Lock()
		if len(s.tags) != 2 || s.tags[1].Topic != "a/c" {
			t.Fatalf("%s: tags %v", s.name, s.tags)
		}
		s.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "sink late: bad credentials file") {
		t.Fatalf("Run error = %v", err)
	}
	if err := f.Run(context.Background()); err == nil {
		t.Fatal("second Run must fail")
	}
}

func BenchmarkFanoutPublish(b *testing.B) {
	for _, sinks := range []int{1, 2} {
		b.Run(fmt.Sprintf("sinks=%d", sinks), func(b *testing.B) {
			f := NewFanout(Options{QueueLen: 1 << 16})
			for i := range sinks {
				f.Add(&memSink{name: fmt.Sprint(i)})
			}
			pts := testPoints(1000)
			buf := make([]Message, 0, 1000)
			b.ReportAllocs()
			for b.Loop() {
				f.Publish(pts)
				for _, e := range f.sinks {
					buf, _ = e.q.PopBatch(context.Background(), buf[:0], 1000)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pts)), "ns/point")
		})
	}
}

// Each message carries the point's quality, time and replay flag beside
// its payload, for sinks that need them without parsing it.
func TestFanoutMessageFields(t *testing.T) {
	f := NewFanout(Options{})
	s := &memSink{name: "a"}
	f.Add(s)
	pts := testPoints(2)
	pts[1].Quality, pts[1].Value, pts[1].Replay = model.QualityBad, model.Null(), true
	f.Publish(pts)
	got, err := f.sinks[0].q.PopBatch(context.Background(), nil, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("PopBatch = %d messages, %v", len(got), err)
	}
	for i, m := range got {
		p := pts[i]
		if m.Topic != p.Meta.Topic || m.Meta != p.Meta || m.Quality != p.Quality || m.TimeMs != p.Time.UnixMilli() || m.Replay != p.Replay || !m.Retain {
			t.Errorf("message %d %+v for point %+v", i, m, p)
		}
	}
}

// With a StoreDir, what a sink did not deliver before a stop is sent
// first at the next start, marked Replay and with its tag's Meta; what it
// delivered is not sent again.
func TestFanoutStoreAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	pts := testPoints(100)
	metas := make([]*model.TagMeta, 0, 7)
	for _, p := range pts[:7] {
		metas = append(metas, p.Meta)
	}

	gate := make(chan struct{}, 100)
	slow := &memSink{name: "slow", gate: gate}
	f := NewFanout(Options{StoreDir: dir, FlushTimeout: 50 * time.Millisecond})
	if err := f.Add(slow); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for range 30 {
		gate <- struct{}{} // let 30 through
	}
	f.Publish(pts)
	waitFor(t, "30 delivered", func() bool { return len(slow.messages()) == 30 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	fast := &memSink{name: "slow"} // the same sink, now delivering
	f2 := NewFanout(Options{StoreDir: dir})
	if err := f2.Add(fast); err != nil {
		t.Fatal(err)
	}
	f2.SetTags(metas)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go f2.Run(ctx2)
	waitFor(t, "the other 70", func() bool { return len(fast.messages()) == 70 })
	for i, m := range fast.messages() {
		want := pts[30+i]
		if m.Topic != want.Meta.Topic || string(m.Payload) != string(AppendJSON(nil, &want)) || !m.Replay {
			t.Fatalf("message %d after restart: %+v", i, m)
		}
		if m.Meta != metas[(30+i)%7] {
			t.Fatalf("message %d: meta %+v, want the tag's", i, m.Meta)
		}
	}
	if st := f2.Stats()[0]; st.Dropped != 0 || st.StoredBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFanoutStoreSinkName(t *testing.T) {
	f := NewFanout(Options{StoreDir: t.TempDir()})
	if err := f.Add(&memSink{name: "../x"}); err == nil || !strings.Contains(err.Error(), `sink name "../x"`) {
		t.Fatalf("Add = %v", err)
	}
}
