package publish

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// exclusiveSink is a memSink that checks that no other sink consumes its
// queue while it runs (active is shared by the sinks that take turns).
type exclusiveSink struct {
	*memSink
	active  *atomic.Int32
	overlap *atomic.Bool
	started chan struct{}
}

func (s *exclusiveSink) Run(ctx context.Context, q *Queue) error {
	if s.active.Add(1) > 1 {
		s.overlap.Store(true)
	}
	defer s.active.Add(-1)
	close(s.started)
	return s.memSink.Run(ctx, q)
}

func runFanout(t *testing.T, f *Fanout) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	stopped := false
	cancel = func() error {
		if stopped {
			return nil
		}
		stopped = true
		stop()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
	t.Cleanup(func() { _ = cancel() })
	return cancel
}

// A sink added while the fan-out runs starts at once, with the tags.
func TestFanoutAddWhileRunning(t *testing.T) {
	f := NewFanout(Options{})
	a := &memSink{name: "a"}
	if err := f.Add(a); err != nil {
		t.Fatal(err)
	}
	f.SetTags([]*model.TagMeta{{Topic: "x/y"}})
	stop := runFanout(t, f)
	f.Publish(testPoints(5))
	waitFor(t, "a to get 5", func() bool { return len(a.messages()) == 5 })

	b := &memSink{name: "b"}
	if err := f.Add(b); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	tags := b.tags
	b.mu.Unlock()
	if len(tags) != 1 || tags[0].Topic != "x/y" {
		t.Fatalf("b's tags %v", tags)
	}
	f.Publish(testPoints(3))
	waitFor(t, "b to get the 3 published after it was added", func() bool { return len(b.messages()) == 3 })
	if err := f.Add(&memSink{name: "b"}); err == nil || !strings.Contains(err.Error(), `"b" was already added`) {
		t.Fatalf("Add of a second b = %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(&memSink{name: "c"}); !errors.Is(err, ErrStopped) {
		t.Fatalf("Add after Run = %v, want ErrStopped", err)
	}
}

// A replacement takes over the queue: what the old sink had not delivered
// (taken or waiting) goes to the new one, in order, nothing twice, and the
// two never consume the queue at the same time.
func TestFanoutReplaceKeepsTheQueue(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "durable"
		}
		t.Run(name, func(t *testing.T) {
			opts := Options{}
			if durable {
				opts.StoreDir = t.TempDir()
			}
			var active atomic.Int32
			var overlap atomic.Bool
			gate := make(chan struct{}, 100)
			old := &exclusiveSink{&memSink{name: "s", gate: gate}, &active, &overlap, make(chan struct{})}
			f := NewFanout(opts)
			if err := f.Add(old); err != nil {
				t.Fatal(err)
			}
			stop := runFanout(t, f)
			pts := testPoints(20)
			for range 5 {
				gate <- struct{}{}
			}
			f.Publish(pts[:10])
			waitFor(t, "5 delivered by the old sink", func() bool { return len(old.messages()) == 5 })
			waitFor(t, "the old sink to hold the next one", func() bool { return old.Status().Inflight > 0 })

			repl := &exclusiveSink{&memSink{name: "s"}, &active, &overlap, make(chan struct{})}
			if err := f.Replace(repl); err != nil {
				t.Fatal(err)
			}
			f.Publish(pts[10:])
			waitFor(t, "the other 15 at the new sink", func() bool { return len(repl.messages()) == 15 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if overlap.Load() {
				t.Error("old and new sink consumed the queue at the same time")
			}
			got := append(old.messages(), repl.messages()...)
			for i, m := range got {
				if want := string(AppendJSON(nil, &pts[i])); string(m.Payload) != want {
					t.Fatalf("message %d = %s, want %s", i, m.Payload, want)
				}
			}
			st := f.Stats()
			if len(st) != 1 || st[0].Sent != 15 || st[0].Queued != 0 || st[0].Dropped != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestFanoutReplaceRefusals(t *testing.T) {
	f := NewFanout(Options{})
	if err := f.Add(&memSink{name: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Replace(&memSink{name: "b"}); err == nil || !strings.Contains(err.Error(), `no sink named "b"`) {
		t.Errorf("Replace of an unknown sink = %v", err)
	}
	if err := f.Replace(&encSink{memSink{name: "a"}}); err == nil || !strings.Contains(err.Error(), "another wire format") {
		t.Errorf("Replace with another format = %v", err)
	}
	if err := f.Remove("b"); err == nil || !strings.Contains(err.Error(), `no sink named "b"`) {
		t.Errorf("Remove of an unknown sink = %v", err)
	}
}

// encSink is a memSink with its own wire format.
type encSink struct{ memSink }

func (s *encSink) Encoder() Encoder { return upperEncoder{} }

type upperEncoder struct{}

func (upperEncoder) AppendPoint(dst []byte, p *model.Point) []byte {
	return append(dst, strings.ToUpper(p.Meta.Topic)...)
}

// Remove lets a connected sink deliver its queue first, then stops it;
// nothing is queued for it afterwards and it leaves the stats.
func TestFanoutRemoveDrainsFirst(t *testing.T) {
	gate := make(chan struct{})
	a, b := &memSink{name: "a", gate: gate}, &memSink{name: "b"}
	f := NewFanout(Options{FlushTimeout: 10 * time.Second})
	for _, s := range []*memSink{a, b} {
		if err := f.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	stop := runFanout(t, f)
	f.Publish(testPoints(10))
	waitFor(t, "a to take a batch", func() bool { return a.Status().Inflight > 0 })
	removed := make(chan error, 1)
	go func() { removed <- f.Remove("a") }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) with 10 messages undelivered", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Remove did not return after the queue drained")
	}
	if n := len(a.messages()); n != 10 {
		t.Fatalf("a delivered %d of 10", n)
	}
	f.Publish(testPoints(3))
	waitFor(t, "b to get 13", func() bool { return len(b.messages()) == 13 })
	if n := len(a.messages()); n != 10 {
		t.Fatalf("a got %d messages after Remove", n)
	}
	if st := f.Stats(); len(st) != 1 || st[0].Name != "b" {
		t.Fatalf("stats %+v", st)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A sink removed with messages still in its durable queue leaves them in
// the store; a sink of the same name added later sends them first.
func TestFanoutRemoveKeepsTheStore(t *testing.T) {
	stuck := &memSink{name: "k", gate: make(chan struct{})} // never delivers
	f := NewFanout(Options{StoreDir: t.TempDir(), FlushTimeout: 50 * time.Millisecond})
	if err := f.Add(stuck); err != nil {
		t.Fatal(err)
	}
	stop := runFanout(t, f)
	pts := testPoints(8)
	f.Publish(pts)
	waitFor(t, "the sink to take a batch", func() bool { return stuck.Status().Inflight > 0 })
	if err := f.Remove("k"); err != nil {
		t.Fatal(err)
	}
	f.Publish(testPoints(2)) // for nobody

	again := &memSink{name: "k"}
	if err := f.Add(again); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 8 stored messages", func() bool { return len(again.messages()) == 8 })
	for i, m := range again.messages() {
		if string(m.Payload) != string(AppendJSON(nil, &pts[i])) || !m.Replay {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
