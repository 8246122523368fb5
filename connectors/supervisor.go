package connectors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Backoff is the retry schedule: the n-th consecutive failure waits
// Initial*Multiplier^(n-1), capped at Max, minus a random part of up to
// Jitter of that delay. Jitter only shortens, so Max is a true upper bound,
// and many gateways restarted together do not retry in lockstep.
type Backoff struct {
	Initial    time.Duration // first delay; default 500ms
	Max        time.Duration // cap; default 30s, at least Initial
	Multiplier float64       // growth per failure; default 2 (values < 1 too)
	Jitter     float64       // 0..1; 0 means the default 0.2, negative means none
	// Reset is how long a connected session must last for the next failure
	// to start again from Initial; default the larger of Max and 10s.
	Reset time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 500 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	b.Max = max(b.Max, b.Initial)
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	switch {
	case b.Jitter == 0:
		b.Jitter = 0.2
	case b.Jitter < 0:
		b.Jitter = 0
	case b.Jitter > 1:
		b.Jitter = 1
	}
	if b.Reset <= 0 {
		b.Reset = max(b.Max, 10*time.Second)
	}
	return b
}

// delay is the wait after the n-th consecutive failure (n >= 1); r in [0, 1)
// picks the jitter. b must have its defaults applied.
func (b Backoff) delay(n int, r float64) time.Duration {
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(max(n, 1)-1))
	d = math.Min(d, float64(b.Max)) // also catches +Inf after many failures
	return time.Duration(d * (1 - b.Jitter*r))
}

// State is where a supervised source is in its life cycle.
type State int

const (
	// StateStopped: Run has not been called yet or has returned after its
	// context was cancelled.
	StateStopped State = iota
	// StateConnecting: a session is running but has not emitted yet.
	StateConnecting
	// StateConnected: the session has emitted at least one batch.
	StateConnected
	// StateReconnecting: the last session failed; waiting out the backoff.
	StateReconnecting
	// StateFailed: the source reported a configuration error; Run returned
	// and will not retry.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Status is a snapshot of a supervised source, for the status page and
// metrics.
type Status struct {
	State         State
	Since         time.Time // when State was entered
	LastError     string    // the last session's error; kept after recovery
	LastErrorTime time.Time
	RetryAt       time.Time // next attempt, while StateReconnecting; zero otherwise
	Sessions      uint64    // calls of Source.Run
	Failures      uint64    // sessions that ended with an error
	// LastGoodRead is the receive time of the newest GOOD sample the
	// source emitted; zero before the first.
	LastGoodRead time.Time
	// Requests are the source's request counters and round trips, when it
	// keeps a Meter (see Metered); zero otherwise.
	Requests RequestStats
}

// errSessionEnded is recorded when a source's Run returns nil although its
// context is still live, which the Source contract forbids.
var errSessionEnded = errors.New("session ended without an error")

// Supervisor runs a Source session after session: it marks the source's
// addresses BAD when a session fails, waits a capped exponential backoff
// with jitter, and retries, until its context is cancelled or the source
// reports ErrConfig.
//
// A session counts as connected once it emits its first batch: every source
// emits after its first successful read (a Modbus poll, an OPC UA initial
// notification), so no extra interface is needed. Only a session that was
// connected and lasted Backoff.Reset resets the backoff; a source that
// connects and breaks at once keeps backing off.
type Supervisor struct {
	src     Source
	backoff Backoff
	log     *slog.Logger

	// logEvery limits how often repeated failures are logged.
	logEvery time.Duration
	// wait sleeps d or until ctx is done (false). Tests replace it to see
	// the computed delays without waiting for them.
	wait func(ctx context.Context, d time.Duration) bool

	mu     sync.Mutex
	status Status
	// session numbers sessions, so a late emit from an ended session (a
	// source that broke the contract) does not mark a later one connected.
	session uint64

	lastGood atomic.Int64 // unix ns, see Status.LastGoodRead

	// rate-limited logging, used only by Run's goroutine
	lastLog    time.Time
	lastLogErr string
	suppressed int

	bad []model.Sample // reused BAD batch

	// onState, if set, hears every state change (see OnState).
	onState func(State)
}

// OnState sets a function called after each change of state, on the
// goroutine that made it, never under the supervisor's lock. Changes to
// StateConnected are reported before the session's first batch is emitted,
// changes after a failed session after its BAD batch, so a listener sees
// them in order with the data. Set it before Run.
func (s *Supervisor) OnState(fn func(State)) { s.onState = fn }

// NewSupervisor supervises src. Zero fields of b take their defaults. A nil
// logger discards.
func NewSupervisor(src Source, b Backoff, logger *slog.Logger) *Supervisor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		src:      src,
		backoff:  b.withDefaults(),
		log:      logger.With("source", src.Name()),
		logEvery: time.Minute,
		wait:     sleepCtx,
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Status returns a snapshot; safe for concurrent use.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	if ns := s.lastGood.Load(); ns != 0 {
		st.LastGoodRead = time.Unix(0, ns)
	}
	if m, ok := s.src.(Metered); ok {
		st.Requests = m.Meter().Stats()
	}
	return st
}

// noteGood remembers the receive time of the batch's first GOOD sample. A
// batch is mostly all GOOD (one sample looked at) or all BAD.
func (s *Supervisor) noteGood(batch []model.Sample) {
	for i := range batch {
		if batch[i].Quality == model.QualityGood && !batch[i].ReceiveTime.IsZero() {
			s.lastGood.Store(batch[i].ReceiveTime.UnixNano())
			return
		}
	}
}

// Run runs sessions until ctx is done or the source reports a
// configuration error (StateFailed); it returns promptly on cancel, also
// during a backoff wait. After each failed session it emits one batch with
// every address BAD: re-emitting on each failure keeps the tags BAD even if
// the engine's plan was swapped during the outage. A cancelled session
// emits nothing: the gateway is stopping or dropping the source. Run must
// not be called twice at the same time.
func (s *Supervisor) Run(ctx context.Context, emit Emit) {
	failures := 0 // consecutive, for the backoff
	for {
		if ctx.Err() != nil {
			s.setState(StateStopped, time.Time{})
			return
		}
		id, prior := s.startSession(), failures
		start := time.Now()
		var connected atomic.Bool
		err := s.runSession(ctx, func(batch []model.Sample) {
			if !connected.Load() && connected.CompareAndSwap(false, true) {
				s.markConnected(id, prior)
			}
			s.noteGood(batch)
			emit(batch)
		})
		if ctx.Err() != nil {
			s.setState(StateStopped, time.Time{})
			return
		}
		if err == nil {
			err = fmt.Errorf("source %s: %w", s.src.Name(), errSessionEnded)
		}
		s.recordFailure(err)
		s.emitBad(emit)

		if errors.Is(err, ErrConfig) {
			s.log.Error("source configuration error; not retrying", "err", err)
			s.setState(StateFailed, time.Time{})
			return
		}
		if connected.Load() && time.Since(start) >= s.backoff.Reset {
			failures = 0
		}
		failures++
		d := s.backoff.delay(failures, rand.Float64())
		s.logFailure(err, failures, d)
		s.setState(StateReconnecting, time.Now().Add(d))
		if !s.wait(ctx, d) {
			s.setState(StateStopped, time.Time{})
			return
		}
	}
}

// runSession calls the source, turning a panic into an error so one broken
// session does not take the gateway down. Panics in goroutines the source
// starts itself are out of reach.
func (s *Supervisor) runSession(ctx context.Context, emit Emit) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("source panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("source %s: panic: %v", s.src.Name(), p)
		}
	}()
	return s.src.Run(ctx, emit)
}

func (s *Supervisor) startSession() uint64 {
	s.mu.Lock()
	s.session++
	s.status.Sessions++
	changed := s.status.State != StateConnecting
	s.status.State, s.status.Since, s.status.RetryAt = StateConnecting, time.Now(), time.Time{}
	id := s.session
	s.mu.Unlock()
	if changed && s.onState != nil {
		s.onState(StateConnecting)
	}
	return id
}

// markConnected runs on the source's goroutine, at its first emit.
func (s *Supervisor) markConnected(id uint64, failures int) {
	s.mu.Lock()
	if id != s.session || s.status.State != StateConnecting {
		s.mu.Unlock()
		return
	}
	s.status.State, s.status.Since = StateConnected, time.Now()
	s.mu.Unlock()
	if s.onState != nil {
		s.onState(StateConnected)
	}
	if failures > 0 {
		s.log.Info("source connected again", "failures", failures)
	}
}

func (s *Supervisor) setState(st State, retryAt time.Time) {
	s.mu.Lock()
	changed := s.status.State != st
	if changed {
		s.status.State, s.status.Since = st, time.Now()
	}
	s.status.RetryAt = retryAt
	s.mu.Unlock()
	if changed && s.onState != nil {
		s.onState(st)
	}
}

func (s *Supervisor) recordFailure(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Failures++
	s.status.LastError, s.status.LastErrorTime = err.Error(), time.Now()
}

// logFailure logs a failure when it is new (first of a streak, or a
// different message) and otherwise at most once per logEvery, with the
// number of failures it left out.
func (s *Supervisor) logFailure(err error, failures int, retryIn time.Duration) {
	msg := err.Error()
	now := time.Now()
	if failures > 1 && msg == s.lastLogErr && now.Sub(s.lastLog) < s.logEvery {
		s.suppressed++
		return
	}
	s.log.Warn("source session failed", "err", err, "failures", failures,
		"retry_in", retryIn, "suppressed", s.suppressed)
	s.lastLog, s.lastLogErr, s.suppressed = now, msg, 0
}

// emitBad hands one batch with every address BAD to emit.
func (s *Supervisor) emitBad(emit Emit) {
	addrs := s.src.Addresses()
	if len(addrs) == 0 {
		return
	}
	name, now := s.src.Name(), time.Now()
	s.bad = s.bad[:0]
	for _, a := range addrs {
		s.bad = append(s.bad, model.Sample{Source: name, Address: a, Quality: model.QualityBad, ReceiveTime: now})
	}
	emit(s.bad)
}
