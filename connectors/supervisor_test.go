package connectors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// fakeSource is a Source whose sessions are scripted by the test: run is
// called with the 1-based attempt number. The supervisor's loop is the unit
// under test here; real protocol sessions are tested in the connectors.
type fakeSource struct {
	addrs []string
	run   func(ctx context.Context, attempt int, emit Emit) error

	mu     sync.Mutex
	starts []time.Time
	notify chan int // receives each attempt number as it starts
}

func newFake(run func(ctx context.Context, attempt int, emit Emit) error) *fakeSource {
	return &fakeSource{addrs: []string{"hr:0", "hr:1", "co:5"}, run: run, notify: make(chan int, 1000)}
}

func (f *fakeSource) Name() string        { return "plc1" }
func (f *fakeSource) Addresses() []string { return f.addrs }

func (f *fakeSource) Run(ctx context.Context, emit Emit) error {
	f.mu.Lock()
	f.starts = append(f.starts, time.Now())
	n := len(f.starts)
	f.mu.Unlock()
	f.notify <- n
	return f.run(ctx, n, emit)
}

func (f *fakeSource) startTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts)
}

// waitAttempt waits until attempt n has started.
func (f *fakeSource) waitAttempt(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.notify:
			if got >= n {
				return
			}
		case <-deadline:
			t.Fatalf("attempt %d did not start", n)
		}
	}
}

// collector records copies of emitted batches.
type collector struct {
	mu      sync.Mutex
	batches [][]model.Sample
}

func (c *collector) emit(b []model.Sample) {
	c.mu.Lock()
	c.batches = append(c.batches, slices.Clone(b))
	c.mu.Unlock()
}

func (c *collector) all() [][]model.Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches)
}

// start runs the supervisor in a goroutine; the returned channel closes
// when Run returns.
func start(ctx context.Context, s *Supervisor, emit Emit) <-chan struct{} {
	done := make(chan struct{})
	go func() { s.Run(ctx, emit); close(done) }()
	return done
}

func waitDone(t *testing.T, done <-chan struct{}, within time.Duration) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("Run did not return within %v", within)
	}
}

func waitState(t *testing.T, s *Supervisor, want State) Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Status()
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %v, want %v", st.State, want)
		}
		time.Sleep(time.Millisecond)
	}
}

var errDial = errors.New("dial tcp 127.0.0.1:502: connection refused")

func alwaysFail(context.Context, int, Emit) error { return errDial }

// recordWaits replaces the supervisor's backoff wait: it records each delay
// and returns at once, until limit delays were seen.
func recordWaits(s *Supervisor, limit int) *[]time.Duration {
	var got []time.Duration
	s.wait = func(_ context.Context, d time.Duration) bool {
		got = append(got, d)
		return len(got) < limit
	}
	return &got
}

func TestSupervisorRetriesWithGrowingDelays(t *testing.T) {
	src := newFake(alwaysFail)
	b := Backoff{Initial: 20 * time.Millisecond, Max: 160 * time.Millisecond, Multiplier: 2, Jitter: -1}
	s := NewSupervisor(src, b, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var c collector
	done := start(ctx, s, c.emit)

	// Status is read concurrently with the loop (for the race detector).
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = s.Status()
			}
		}
	})

	src.waitAttempt(t, 6)
	cancel()
	waitDone(t, done, 5*time.Second)
	close(stop)
	readers.Wait()

	starts := src.startTimes()
	want := []time.Duration{20, 40, 80, 160, 160}
	for i, w := range want {
		w *= time.Millisecond
		gap := starts[i+1].Sub(starts[i])
		// A timer never fires early; the upper bound only catches a loop
		// that ignores the schedule, so it is loose for slow CI machines.
		if gap < w || gap > w+2*time.Second {
			t.Errorf("gap before attempt %d = %v, want about %v", i+2, gap, w)
		}
	}
	st := s.Status()
	if st.State != StateStopped || st.Failures < 6 || st.Sessions != uint64(len(starts)) || st.LastError != errDial.Error() {
		t.Errorf("status after cancel = %+v", st)
	}
	if got := len(c.all()); uint64(got) != st.Failures {
		t.Errorf("%d BAD batches for %d failures", got, st.Failures)
	}
}

func TestSupervisorDelaySchedule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		b      Backoff
		lo, hi []time.Duration // bounds per failure, in ms
	}{
		{
			name: "no jitter",
			b:    Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1},
			lo:   []time.Duration{10, 20, 40, 80, 100, 100, 100},
			hi:   []time.Duration{10, 20, 40, 80, 100, 100, 100},
		},
		{
			name: "jitter 0.5, multiplier 3",
			b:    Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 3, Jitter: 0.5},
			lo:   []time.Duration{5, 15, 45, 100, 100, 100},
			hi:   []time.Duration{10, 30, 90, 200, 200, 200},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSupervisor(newFake(alwaysFail), tc.b, nil)
			got := recordWaits(s, len(tc.lo))
			s.Run(context.Background(), func([]model.Sample) {})
			if len(*got) != len(tc.lo) {
				t.Fatalf("%d waits, want %d", len(*got), len(tc.lo))
			}
			for i, d := range *got {
				if d < tc.lo[i]*time.Millisecond || d > tc.hi[i]*time.Millisecond {
					t.Errorf("failure %d: delay %v, want %vms..%vms", i+1, d, tc.lo[i], tc.hi[i])
				}
			}
		})
	}
}

func TestSupervisorResetsBackoffOnlyAfterLongConnectedSession(t *testing.T) {
	const reset = 30 * time.Millisecond
	good := []model.Sample{{Source: "plc1", Address: "hr:0", Quality: model.QualityGood}}
	longSession := func(ctx context.Context) {
		t := time.NewTimer(reset) // how long the fake "device" stays up
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	src := newFake(func(ctx context.Context, n int, emit Emit) error {
		switch n {
		case 4: // connected, long: resets
			emit(good)
			longSession(ctx)
		case 6: // connected, short: no reset
			emit(good)
		case 7: // long but never connected: no reset
			longSession(ctx)
		}
		return errDial
	})
	s := NewSupervisor(src, Backoff{Initial: time.Millisecond, Max: time.Second, Jitter: -1, Reset: reset}, nil)
	got := recordWaits(s, 8)
	s.Run(context.Background(), func([]model.Sample) {})
	ms := time.Millisecond
	want := []time.Duration{1 * ms, 2 * ms, 4 * ms, 1 * ms, 2 * ms, 4 * ms, 8 * ms, 16 * ms}
	if !slices.Equal(*got, want) {
		t.Fatalf("delays %v, want %v", *got, want)
	}
}

func TestSupervisorMarksAddressesBadAfterFailure(t *testing.T) {
	var s *Supervisor
	stateInSession := make(chan State, 1)
	src := newFake(func(ctx context.Context, n int, emit Emit) error {
		if n == 1 {
			emit([]model.Sample{{Source: "plc1", Address: "hr:0", Value: model.UintValue(7), Quality: model.QualityGood}})
			stateInSession <- s.Status().State
			return fmt.Errorf("modbus plc1: read holding 0+2: %w", errDial)
		}
		<-ctx.Done()
		return nil
	})
	s = NewSupervisor(src, Backoff{Initial: time.Millisecond, Jitter: -1}, nil)
	if st := s.Status(); st.State != StateStopped || st.Sessions != 0 {
		t.Fatalf("status before Run = %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var c collector
	before := time.Now()
	done := start(ctx, s, c.emit)

	if st := <-stateInSession; st != StateConnected {
		t.Errorf("state after the first batch = %v, want connected", st)
	}
	src.waitAttempt(t, 2)
	st := s.Status()
	if st.State != StateConnecting || st.Sessions != 2 || st.Failures != 1 ||
		!strings.Contains(st.LastError, "read holding 0+2") || st.LastErrorTime.Before(before) {
		t.Errorf("status in the second session = %+v", st)
	}
	cancel()
	waitDone(t, done, 5*time.Second)

	batches := c.all()
	if len(batches) != 2 {
		t.Fatalf("%d batches, want the good one and one BAD (none on cancel)", len(batches))
	}
	bad := batches[1]
	if len(bad) != len(src.addrs) {
		t.Fatalf("BAD batch has %d samples, want %d", len(bad), len(src.addrs))
	}
	for i, smp := range bad {
		if smp.Address != src.addrs[i] || smp.Source != "plc1" || smp.Quality != model.QualityBad ||
			!smp.Value.IsNull() || smp.ReceiveTime.Before(before) || !smp.SourceTime.IsZero() {
			t.Errorf("BAD sample %d = %+v", i, smp)
		}
	}
	if st := s.Status(); st.State != StateStopped || st.Failures != 1 {
		t.Errorf("status after cancel = %+v", st)
	}
}

func TestSupervisorStopsOnConfigError(t *testing.T) {
	src := newFake(func(context.Context, int, Emit) error {
		return fmt.Errorf("modbus plc1: parse url %q: %w", "tcp//x", ErrConfig)
	})
	s := NewSupervisor(src, Backoff{Initial: time.Millisecond}, nil)
	var c collector
	done := start(context.Background(), s, c.emit)
	waitDone(t, done, 5*time.Second)
	st := s.Status()
	if st.State != StateFailed || st.Sessions != 1 || st.Failures != 1 || !strings.Contains(st.LastError, "configuration error") {
		t.Errorf("status = %+v", st)
	}
	if n := len(src.startTimes()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
	// The tags still go BAD: the source will never deliver them.
	if b := c.all(); len(b) != 1 || len(b[0]) != 3 || b[0][0].Quality != model.QualityBad {
		t.Errorf("batches = %+v", b)
	}
}

func TestSupervisorCancelDuringBackoffReturnsFast(t *testing.T) {
	src := newFake(alwaysFail)
	s := NewSupervisor(src, Backoff{Initial: time.Hour, Max: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, s, func([]model.Sample) {})
	st := waitState(t, s, StateReconnecting)
	if wait := time.Until(st.RetryAt); wait < 47*time.Minute || wait > time.Hour {
		t.Errorf("RetryAt in %v, want 48..60 minutes", wait)
	}
	cancelled := time.Now()
	cancel()
	waitDone(t, done, 5*time.Second)
	if took := time.Since(cancelled); took > time.Second {
		t.Errorf("Run took %v to return after cancel", took)
	}
	if st := s.Status(); st.State != StateStopped || !st.RetryAt.IsZero() || st.Sessions != 1 {
		t.Errorf("status = %+v", st)
	}
}

func TestSupervisorCancelledBeforeRun(t *testing.T) {
	src := newFake(alwaysFail)
	s := NewSupervisor(src, Backoff{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx, func([]model.Sample) { t.Error("emitted after cancel") })
	if n := len(src.startTimes()); n != 0 {
		t.Errorf("%d sessions started on a cancelled context", n)
	}
}

func TestSupervisorTreatsNilReturnAndPanicAsFailures(t *testing.T) {
	src := newFake(func(ctx context.Context, n int, emit Emit) error {
		switch n {
		case 1:
			return nil // contract breach: ctx is live
		case 2:
			panic("index out of range")
		}
		<-ctx.Done()
		return nil
	})
	s := NewSupervisor(src, Backoff{Initial: time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var c collector
	done := start(ctx, s, c.emit)
	src.waitAttempt(t, 3)
	st := s.Status()
	cancel()
	waitDone(t, done, 5*time.Second)
	if st.Failures != 2 || !strings.Contains(st.LastError, "panic: index out of range") {
		t.Errorf("status = %+v", st)
	}
	if n := len(c.all()); n != 2 {
		t.Errorf("%d BAD batches, want 2", n)
	}
}

// logRecorder is a slog.Handler that keeps the records.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) messages(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level == level {
			out = append(out, r.Message)
		}
	}
	return out
}

func TestSupervisorLogsFailuresAtLimitedRate(t *testing.T) {
	other := errors.New("read tcp: connection reset by peer")
	src := newFake(func(ctx context.Context, n int, emit Emit) error {
		switch {
		case n == 25: // connects: the streak ends
			emit(nil)
			return other
		case n > 20:
			return other
		}
		return errDial
	})
	var h logRecorder
	s := NewSupervisor(src, Backoff{Initial: time.Millisecond, Max: time.Millisecond, Reset: time.Hour}, slog.New(&h))
	s.logEvery = time.Hour
	recordWaits(s, 30)
	s.Run(context.Background(), func([]model.Sample) {})

	// First failure, then the new message at attempt 21; 2..20 and 22..30
	// repeat it within logEvery.
	if got := h.messages(slog.LevelWarn); len(got) != 2 {
		t.Errorf("%d warnings, want 2: %v", len(got), got)
	}
	if got := h.messages(slog.LevelInfo); len(got) != 1 || got[0] != "source connected again" {
		t.Errorf("info logs %v, want one reconnect", got)
	}

	// Once logEvery has passed, a repeat is logged with the count it left out.
	var h2 logRecorder
	s.log = slog.New(&h2)
	s.logEvery = 0
	s.logFailure(errDial, 5, time.Second)
	s.logFailure(errDial, 6, time.Second)
	if got := h2.messages(slog.LevelWarn); len(got) != 2 {
		t.Errorf("with logEvery 0: %d warnings, want 2", len(got))
	}
}

func TestBackoffDefaults(t *testing.T) {
	got := Backoff{}.withDefaults()
	want := Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2, Reset: 30 * time.Second}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	got = Backoff{Initial: time.Minute, Max: time.Second, Multiplier: 0.5, Jitter: 3}.withDefaults()
	if got.Max != time.Minute || got.Multiplier != 2 || got.Jitter != 1 || got.Reset != time.Minute {
		t.Errorf("clamped = %+v", got)
	}
	if got := (Backoff{Max: time.Second, Jitter: -0.5}).withDefaults(); got.Jitter != 0 || got.Reset != 10*time.Second {
		t.Errorf("no jitter = %+v", got)
	}
}

func TestBackoffDelayJitterBounds(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.3}.withDefaults()
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 40; n++ {
		base := time.Duration(math.Min(float64(b.Initial)*math.Pow(2, float64(n-1)), float64(b.Max)))
		lo := time.Duration(float64(base) * 0.7)
		if d := b.delay(n, 0); d != base {
			t.Fatalf("n=%d r=0: %v, want %v", n, d, base)
		}
		if d := b.delay(n, math.Nextafter(1, 0)); d < lo || d > lo+time.Microsecond {
			t.Fatalf("n=%d r→1: %v, want just above %v", n, d, lo)
		}
		for range 200 {
			if d := b.delay(n, rng.Float64()); d < lo || d > base || d > b.Max {
				t.Fatalf("n=%d: %v outside [%v, %v]", n, d, lo, base)
			}
		}
	}
	// No overflow after very many failures.
	if d := b.delay(100000, 0); d != b.Max {
		t.Fatalf("n=100000: %v, want %v", d, b.Max)
	}
	if d := b.delay(0, 0); d != b.Initial {
		t.Fatalf("n=0: %v, want %v", d, b.Initial)
	}
}

func TestStateString(t *testing.T) {
	for st, want := range map[State]string{
		StateStopped: "stopped", StateConnecting: "connecting", StateConnected: "connected",
		StateReconnecting: "reconnecting", StateFailed: "failed", State(42): "state(42)",
	} {
		if st.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(st), st.String(), want)
		}
	}
}

// eventLog is one ordered record of a supervisor's state reports and
// emitted batches, as a listener like the gateway's Fanout sees them.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// listen makes l hear s's state changes and returns an Emit that logs
// batches: "BAD" for a batch marking every address of src BAD, else
// "data" and the values. A state must be reported after the change (Status
// already tells it) and not under the supervisor's lock.
func (l *eventLog) listen(t *testing.T, s *Supervisor, src *fakeSource) Emit {
	s.OnState(func(st State) {
		if !s.mu.TryLock() {
			t.Errorf("state %v reported under the supervisor's lock", st)
		} else {
			if cur := s.status.State; cur != st {
				t.Errorf("state %v reported while the status says %v", st, cur)
			}
			s.mu.Unlock()
		}
		l.add("state " + st.String())
	})
	return func(b []model.Sample) {
		bad := len(b) == len(src.addrs)
		for i, smp := range b {
			bad = bad && smp.Quality == model.QualityBad && smp.Address == src.addrs[i] && smp.Value.IsNull()
		}
		if bad {
			l.add("BAD")
			return
		}
		e := "data"
		for _, smp := range b {
			e += fmt.Sprintf(" %s=%v", smp.Address, smp.Value)
		}
		l.add(e)
	}
}

// The gateway tells the Fanout that a source is up or down from OnState
// (Sparkplug DBIRTH and DDEATH), so the reports must come in order with the
// data: connected before the session's first batch, and after a failure
// the BAD batch before reconnecting or failed.
func TestSupervisorOnStateOrdering(t *testing.T) {
	sample := func(addr string, v uint64) []model.Sample {
		return []model.Sample{{Source: "plc1", Address: addr, Value: model.UintValue(v), Quality: model.QualityGood}}
	}

	t.Run("fail, retry, configuration error", func(t *testing.T) {
		src := newFake(func(ctx context.Context, n int, emit Emit) error {
			switch n {
			case 1: // connects, delivers twice, breaks
				emit(sample("hr:0", 1))
				emit(sample("hr:1", 2))
				return errDial
			case 2: // never connects
				return errDial
			}
			emit(sample("co:5", 3)) // connects again, then reports a bad config
			return fmt.Errorf("modbus plc1: %w", ErrConfig)
		})
		s := NewSupervisor(src, Backoff{Initial: time.Millisecond, Jitter: -1}, nil)
		recordWaits(s, 10) // no real waiting; Run ends at the configuration error
		var l eventLog
		s.Run(context.Background(), l.listen(t, s, src))

		want := []string{
			"state connecting", "state connected", "data hr:0=1", "data hr:1=2", "BAD", "state reconnecting",
			"state connecting", "BAD", "state reconnecting",
			"state connecting", "state connected", "data co:5=3", "BAD", "state failed",
		}
		if got := l.all(); !slices.Equal(got, want) {
			t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	})

	t.Run("reconnect, cancel", func(t *testing.T) {
		delivered := make(chan struct{})
		src := newFake(func(ctx context.Context, n int, emit Emit) error {
			emit(sample("hr:0", uint64(n)))
			if n == 1 {
				return errDial
			}
			close(delivered)
			<-ctx.Done()
			return nil
		})
		s := NewSupervisor(src, Backoff{Initial: time.Millisecond, Jitter: -1}, nil)
		var l eventLog
		emit := l.listen(t, s, src)
		ctx, cancel := context.WithCancel(context.Background())
		done := start(ctx, s, emit)
		select {
		case <-delivered:
		case <-time.After(10 * time.Second):
			t.Fatal("the second session did not deliver")
		}
		cancel()
		waitDone(t, done, 5*time.Second)

		// A cancelled session emits no BAD batch: the gateway is stopping.
		want := []string{
			"state connecting", "state connected", "data hr:0=1", "BAD", "state reconnecting",
			"state connecting", "state connected", "data hr:0=2", "state stopped",
		}
		if got := l.all(); !slices.Equal(got, want) {
			t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	})
}
