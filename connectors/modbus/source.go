package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

var (
	_ connectors.Source  = (*Source)(nil)
	_ connectors.Metered = (*Source)(nil)
)

// Source polls one Modbus TCP device. Create it with New; it may run many
// sessions one after the other, never two at once.
type Source struct {
	s       settings
	reqs    []Request
	running atomic.Bool

	connects    atomic.Uint64
	requests    atomic.Uint64
	exceptions  atomic.Uint64
	errs        atomic.Uint64
	stale       atomic.Uint64
	timeouts    atomic.Uint64
	lastLatency atomic.Int64
	meter       connectors.Meter

	// prevDone is the done channel of the last session's worker, which may
	// outlive its session (a dial or a request in flight). Only Run touches
	// it, and Run never runs twice at once.
	prevDone chan struct{}
	workers  atomic.Int32 // session workers alive, for tests
}

// ErrConnectPending is wrapped by the error Run returns when the worker of
// the previous session is still busy (connecting, or finishing a request
// that was in flight when it ended) for the whole of Timeout: Run then does
// not start another connection attempt beside it.
var ErrConnectPending = errors.New("previous connection attempt still pending")

// MaxTimeouts is how many requests in a row may time out, with no response
// of any kind in between, before Run takes the connection for dead and ends
// the session.
const MaxTimeouts = 3

// silentHold is how long, in multiples of Timeout, a unit id whose last
// request timed out is left alone while other unit ids answer.
const silentHold = 4

// Stats are the source's counters since New, over all sessions.
type Stats struct {
	Connects    uint64        // sessions that connected
	Requests    uint64        // requests answered, with values or with an exception
	Exceptions  uint64        // requests answered with a Modbus exception or from a wrong unit id
	Errors      uint64        // failures that ended a session (connect, timeouts, I/O, protocol)
	Timeouts    uint64        // requests that got no answer within Timeout
	Stale       uint64        // times a request's tags were marked stale
	LastLatency time.Duration // round trip of the last answered request
}

// New validates cfg, applies its defaults and builds the poll plan. Every
// problem is reported at once in an error wrapping connectors.ErrConfig.
func New(cfg Config) (*Source, error) {
	var probs configProblems
	s := normalize(&cfg, &probs)
	reqs := buildPlan(&s, cfg.Tags, &probs)
	if err := probs.err(cfg.Name); err != nil {
		return nil, err
	}
	return &Source{s: s, reqs: reqs}, nil
}

// Name returns the source id.
func (src *Source) Name() string { return src.s.name }

// Addresses returns every binding key, sorted, each once. It is made
// from the poll plan at each call (rarely: when a session ends) rather
// than kept beside it.
func (src *Source) Addresses() []string {
	n := 0
	for i := range src.reqs {
		n += len(src.reqs[i].Bindings)
	}
	keys := make([]string, 0, n)
	for i := range src.reqs {
		for _, b := range src.reqs[i].Bindings {
			keys = append(keys, b.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

// Requests returns a copy of the poll plan (see Plan).
func (src *Source) Requests() []Request {
	out := slices.Clone(src.reqs)
	for i := range out {
		out[i].Bindings = slices.Clone(out[i].Bindings)
	}
	return out
}

// Stats returns the counters; safe to call at any time.
func (src *Source) Stats() Stats {
	return Stats{
		Connects:    src.connects.Load(),
		Requests:    src.requests.Load(),
		Exceptions:  src.exceptions.Load(),
		Errors:      src.errs.Load(),
		Timeouts:    src.timeouts.Load(),
		Stale:       src.stale.Load(),
		LastLatency: time.Duration(src.lastLatency.Load()),
	}
}

// Meter counts the read requests and their round trips: an exception
// answer is a failed request, a timeout or an I/O error a lost one.
func (src *Source) Meter() *connectors.Meter { return &src.meter }

// Run handles one session: it connects, then polls until ctx is done
// (returning nil) or the connection breaks (returning the error). It never
// reconnects by itself.
//
// Connecting: Run gives up after Timeout. The library dials with its own
// fixed 5 s limit that cannot be shortened or cancelled, so a dial to a
// host that does not answer goes on in the background for up to 5 s after
// Run returned. Run never starts a second dial beside it: it first waits,
// within the same Timeout, for the previous session's worker to finish,
// and otherwise returns an error wrapping ErrConnectPending. So at most one
// connection attempt per source is ever under way, and while a host is
// unreachable a new dial starts at most every 5 s or so.
//
// Scheduling: every request is due at session start and then every Poll on
// a fixed grid; when the connection cannot keep up, missed ticks are
// skipped, never queued. Requests run one at a time, earliest due first,
// with at least Pause between the end of one and the start of the next.
//
// Each request emits one batch with a sample per binding:
//   - values: Quality GOOD, ReceiveTime = when the response arrived;
//   - a Modbus exception (or a response from another unit id): Quality BAD,
//     null value, Status = exception code (0 for a wrong unit id); the
//     session goes on and other requests are unaffected;
//   - no answer within Timeout: Quality BAD, null value, Status 0,
//     ReceiveTime = when it timed out; the session goes on (the library
//     drops late answers by their transaction id). Its unit id is then
//     taken for silent, as is a device switched off behind a TCP/RTU
//     gateway: while other unit ids still answer, its requests wait
//     4 × Timeout after the timeout before the next try, so that a silent
//     unit takes at most about a fifth of the connection's time. Requests
//     of that unit not tried meanwhile keep their last values and go stale
//     by the stale rule below. Any answer from the unit ends this.
//
// The session ends with an error naming the request, and the supervisor
// then marks every tag BAD, on an I/O error (connection closed or reset),
// on a malformed response, and when MaxTimeouts (3) requests in a row time
// out with no response of any kind (values, exception) in between: the
// connection is then taken for dead. When every unit id is silent, holds
// are ignored and requests are tried at their normal due time, so a device
// that stops answering altogether ends the session after about
// MaxTimeouts × Timeout when requests are due back to back, and at worst
// after about MaxTimeouts × max(Timeout, Poll) (e.g. a single request,
// whose tags are BAD after its first timeout anyway).
//
// A timeout in the middle of a response frame would leave the stream out
// of step; what follows then fails as malformed or times out, and either
// ends the session.
//
// Stale rule: when a request whose last answer was GOOD has not been read
// successfully within (StaleAfter+1) × Poll of the moment its last
// successful read was sent — StaleAfter scheduled reads in a row, each
// given a whole interval, did not complete, typically because slower
// requests hold the connection — Run emits, once, its samples with
// Stale=true, Quality UNCERTAIN, the last values and the last ReceiveTime
// (so consumers see how old the value is). The next successful read emits
// GOOD again. Tags that are BAD from an exception or a timeout stay BAD:
// that says more than staleness.
//
// Cancelling ctx returns at once, even with a request in flight; that
// request ends within Timeout and the connection is closed after it (a
// following Run waits for that, see Connecting).
func (src *Source) Run(ctx context.Context, emit connectors.Emit) error {
	if ctx.Err() != nil {
		return nil
	}
	if !src.running.CompareAndSwap(false, true) {
		return fmt.Errorf("modbus %s: Run called while a session is running", src.s.name)
	}
	defer src.running.Store(false)
	deadline := time.Now().Add(src.s.timeout)
	if err := src.waitPrevious(ctx, deadline); err != nil || ctx.Err() != nil {
		return err
	}
	err := newSession(src, emit).run(ctx, deadline)
	if ctx.Err() != nil {
		return nil // cancelled: whatever broke on the way out is not news
	}
	return err
}

// waitPrevious waits until the previous session's worker is gone, or
// deadline (an error), or ctx is done (nil).
func (src *Source) waitPrevious(ctx context.Context, deadline time.Time) error {
	prev := src.prevDone
	if prev == nil {
		return nil
	}
	select {
	case <-prev:
		src.prevDone = nil
		return nil
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-prev:
		src.prevDone = nil
		return nil
	case <-t.C:
		src.errs.Add(1)
		return fmt.Errorf("modbus %s: connect %s: %w (the last attempt is still under way: the library dials for up to 5 s; is the host reachable?)",
			src.s.name, src.s.url, ErrConnectPending)
	case <-ctx.Done():
		return nil
	}
}

// request states, for stale tracking and exception logging.
const (
	stNone  = iota // nothing emitted yet this session
	stGood         // last emitted GOOD
	stStale        // last emitted stale (UNCERTAIN)
	stBad          // last emitted BAD (exception or timeout)
)

type reqState struct {
	r        *Request
	due      time.Time
	lastSent time.Time // when the last successful read was sent
	lastRecv time.Time // when its response arrived
	state    uint8
	lastErr  string        // last request failure logged, to log changes only
	last     []model.Value // per binding
	lastRaw  [][]uint16    // per binding, strings only: registers behind last
}

type reply struct {
	regs       []uint16
	bits       []bool
	err        error
	sent, recv time.Time
}

type session struct {
	src   *Source
	s     *settings
	log   *slog.Logger
	emit  connectors.Emit
	all   []*reqState // in plan order, which breaks ties between equal due times
	batch []model.Sample

	timer      *time.Timer
	notBefore  time.Time // Pause: earliest start of the next request
	staleCheck time.Time // no request can go stale before this; zero = none pending

	timeouts int            // requests timed out in a row, with no response in between
	silent   [256]bool      // per unit id: its last request timed out
	hold     [256]time.Time // per silent unit id: not tried before this while others answer

	calls   chan *Request // nil = connect
	replies chan reply
	done    chan struct{}
}

func newSession(src *Source, emit connectors.Emit) *session {
	ss := &session{src: src, s: &src.s, log: src.s.logger.With("source", src.s.name), emit: emit}
	maxBindings := 0
	for i := range src.reqs {
		r := &src.reqs[i]
		st := &reqState{r: r, last: make([]model.Value, len(r.Bindings))}
		for j, b := range r.Bindings {
			if b.Addr.Type == model.RawString && !r.Area.IsBit() {
				if st.lastRaw == nil {
					st.lastRaw = make([][]uint16, len(r.Bindings))
				}
				st.lastRaw[j] = make([]uint16, 0, b.Addr.Length)
			}
		}
		maxBindings = max(maxBindings, len(r.Bindings))
		ss.all = append(ss.all, st)
	}
	ss.batch = make([]model.Sample, 0, maxBindings)
	return ss
}

func (ss *session) run(ctx context.Context, deadline time.Time) error {
	client, err := mb.NewClient(&mb.ClientConfiguration{
		URL:     "tcp://" + ss.s.hostPort,
		Timeout: ss.s.timeout,
		Logger:  slog.NewLogLogger(ss.log.Handler(), slog.LevelDebug),
	})
	if err != nil {
		return fmt.Errorf("modbus %s: %w: url %s: %w", ss.s.name, connectors.ErrConfig, ss.s.url, err)
	}
	ss.calls = make(chan *Request)
	ss.replies = make(chan reply, 1)
	ss.done = make(chan struct{})
	ss.src.prevDone = ss.done
	ss.src.workers.Add(1)
	go ss.worker(client)
	inFlight := false
	defer func() {
		close(ss.calls)
		// With a request in flight the worker needs up to Timeout to see the
		// close; Run must return promptly, so only wait when it is idle.
		if !inFlight {
			<-ss.done
		}
	}()
	ss.timer = time.NewTimer(time.Hour)
	defer ss.timer.Stop()

	// Connect. The library dials with a fixed 5 s timeout; Timeout is ours
	// (deadline, shared with waiting for the previous worker).
	inFlight = true
	ss.calls <- nil
	ss.timer.Reset(time.Until(deadline))
	select {
	case rep := <-ss.replies:
		inFlight = false
		if rep.err != nil {
			ss.src.errs.Add(1)
			return fmt.Errorf("modbus %s: connect %s: %w%s", ss.s.name, ss.s.url, rep.err, connectHint(rep.err, ss.s.hostPort))
		}
	case <-ss.timer.C:
		ss.src.errs.Add(1)
		return fmt.Errorf("modbus %s: connect %s: %w (no connection within %v: is the host reachable?)",
			ss.s.name, ss.s.url, mb.ErrRequestTimedOut, ss.s.timeout)
	case <-ctx.Done():
		return nil
	}
	ss.src.connects.Add(1)
	ss.log.Debug("connected", "url", ss.s.url)

	start := time.Now()
	for _, st := range ss.all {
		st.due = start
	}
	for {
		now := time.Now()
		ss.checkStale(now)
		st, at := ss.next()
		if st == nil {
			// Nothing to poll: hold the connection until cancelled.
			<-ctx.Done()
			return nil
		}
		if ss.notBefore.After(at) {
			at = ss.notBefore
		}
		if at.After(now) {
			if !ss.wait(ctx, at) {
				return nil
			}
			continue
		}

		inFlight = true
		ss.calls <- st.r
		var rep reply
		for waiting := true; waiting; {
			wake := ss.staleCheck
			if wake.IsZero() {
				wake = now.Add(time.Hour)
			}
			ss.timer.Reset(time.Until(wake))
			select {
			case rep = <-ss.replies:
				inFlight = false
				waiting = false
			case <-ss.timer.C:
				ss.checkStale(time.Now())
			case <-ctx.Done():
				return nil
			}
		}
		if err := ss.handle(st, &rep); err != nil {
			return err
		}
		ss.notBefore = rep.recv.Add(ss.s.pause)
		st.due = nextTick(st.due, st.r.Poll, rep.recv)
	}
}

// wait sleeps until at, waking early to mark stale tags; false = ctx done.
func (ss *session) wait(ctx context.Context, at time.Time) bool {
	if !ss.staleCheck.IsZero() && ss.staleCheck.Before(at) {
		at = ss.staleCheck
	}
	ss.timer.Reset(time.Until(at))
	select {
	case <-ss.timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// next returns the request to run next and when: the earliest due, the
// first in plan order among equals. Requests of a silent unit id wait for
// its hold to end, unless every unit id is silent: then nothing is known
// to answer, and holding back would only delay noticing a dead connection.
func (ss *session) next() (*reqState, time.Time) {
	var best, bestAny *reqState
	var bestAt time.Time
	answering := false
	for _, st := range ss.all {
		if bestAny == nil || st.due.Before(bestAny.due) {
			bestAny = st
		}
		at := st.due
		if u := st.r.UnitID; !ss.silent[u] {
			answering = true
		} else if ss.hold[u].After(at) {
			at = ss.hold[u]
		}
		// Equal times: the longer overdue first, so that the requests of a
		// unit released from its hold take turns.
		if best == nil || at.Before(bestAt) || at.Equal(bestAt) && st.due.Before(best.due) {
			best, bestAt = st, at
		}
	}
	if !answering {
		if bestAny == nil {
			return nil, time.Time{}
		}
		return bestAny, bestAny.due
	}
	return best, bestAt
}

// nextTick returns the first tick of the grid due + k·poll after now.
func nextTick(due time.Time, poll time.Duration, now time.Time) time.Time {
	next := due.Add(poll)
	if !next.After(now) {
		next = due.Add((now.Sub(due)/poll + 1) * poll)
	}
	return next
}

// worker owns the client: one call at a time, then it closes the
// connection when calls is closed.
func (ss *session) worker(client *mb.ModbusClient) {
	defer close(ss.done)
	defer ss.src.workers.Add(-1)
	defer client.Close()
	unit := -1
	for r := range ss.calls {
		var rep reply
		rep.sent = time.Now()
		switch {
		case r == nil:
			rep.err = client.Open()
		default:
			if int(r.UnitID) != unit {
				// SetUnitId is client state, so it is set only here, where
				// no other call can interleave.
				client.SetUnitId(r.UnitID)
				unit = int(r.UnitID)
			}
			switch r.Area {
			case model.AreaHoldingRegister:
				rep.regs, rep.err = client.ReadRegisters(r.Start, uint16(r.Count), mb.HOLDING_REGISTER)
			case model.AreaInputRegister:
				rep.regs, rep.err = client.ReadRegisters(r.Start, uint16(r.Count), mb.INPUT_REGISTER)
			case model.AreaCoil:
				rep.bits, rep.err = client.ReadCoils(r.Start, uint16(r.Count))
			case model.AreaDiscreteInput:
				rep.bits, rep.err = client.ReadDiscreteInputs(r.Start, uint16(r.Count))
			}
		}
		rep.recv = time.Now()
		ss.replies <- rep
	}
}

// handle emits the outcome of one request; a non-nil error ends the session.
func (ss *session) handle(st *reqState, rep *reply) error {
	r := st.r
	if errors.Is(rep.err, mb.ErrRequestTimedOut) {
		return ss.timedOut(st, rep)
	}
	// Any response, even an exception, shows the connection and the unit
	// id alive.
	ss.timeouts = 0
	ss.silent[r.UnitID] = false
	if rep.err != nil {
		code, isExc := exceptionCode(rep.err)
		if !isExc && !errors.Is(rep.err, mb.ErrBadUnitId) {
			ss.src.errs.Add(1)
			ss.src.meter.Lost()
			return fmt.Errorf("modbus %s: read %s: %w%s", ss.s.name, r, rep.err, readHint(rep.err, ss.s.timeout))
		}
		ss.src.requests.Add(1)
		ss.src.exceptions.Add(1)
		ss.src.lastLatency.Store(int64(rep.recv.Sub(rep.sent)))
		ss.src.meter.Answered(rep.recv.Sub(rep.sent), true)
		if msg := rep.err.Error(); msg != st.lastErr {
			st.lastErr = msg
			ss.log.Warn("request failed", "request", r.String(), "err", rep.err, "hint", exceptionHint(rep.err, code))
		}
		ss.emitBad(st, uint32(code), rep.recv)
		return nil
	}
	ss.src.requests.Add(1)
	ss.src.lastLatency.Store(int64(rep.recv.Sub(rep.sent)))
	ss.src.meter.Answered(rep.recv.Sub(rep.sent), false)
	if st.lastErr != "" {
		ss.log.Info("request recovered", "request", r.String())
		st.lastErr = ""
	}
	b := ss.batch[:0]
	for i := range r.Bindings {
		bd := &r.Bindings[i]
		v, err := ss.decode(st, i, bd, rep)
		q := model.QualityGood
		if err != nil {
			// New rejects undecodable addresses and the client checks the
			// response length, so this means a bug, not a device problem.
			ss.log.Error("decode failed", "request", r.String(), "key", bd.Key, "err", err)
			q = model.QualityBad
		}
		st.last[i] = v
		b = append(b, model.Sample{Source: ss.s.name, Address: bd.Key, Value: v, Quality: q, ReceiveTime: rep.recv})
	}
	st.state = stGood
	st.lastSent, st.lastRecv = rep.sent, rep.recv
	if ss.s.staleAfter > 0 {
		d := ss.staleDeadline(st)
		if ss.staleCheck.IsZero() || d.Before(ss.staleCheck) {
			ss.staleCheck = d
		}
	}
	ss.batch = b
	ss.emit(b)
	return nil
}

// timedOut handles a request that got no answer within Timeout: BAD for
// its tags and a hold on its unit id, or the end of the session after
// MaxTimeouts in a row.
func (ss *session) timedOut(st *reqState, rep *reply) error {
	r := st.r
	ss.src.timeouts.Add(1)
	ss.src.meter.Lost()
	ss.timeouts++
	if ss.timeouts >= MaxTimeouts {
		ss.src.errs.Add(1)
		return fmt.Errorf("modbus %s: read %s: %w: %d requests in a row got no answer, the connection looks dead%s",
			ss.s.name, r, rep.err, ss.timeouts, readHint(rep.err, ss.s.timeout))
	}
	ss.silent[r.UnitID] = true
	ss.hold[r.UnitID] = rep.recv.Add(silentHold * ss.s.timeout)
	if msg := rep.err.Error(); msg != st.lastErr {
		st.lastErr = msg
		ss.log.Warn("request timed out", "request", r.String(), "timeout", ss.s.timeout,
			"hint", "is the PLC's unit id right, and is the device on? many devices ignore requests for other unit ids")
	}
	ss.emitBad(st, 0, rep.recv)
	return nil
}

// emitBad emits BAD samples with status for every tag of st.
func (ss *session) emitBad(st *reqState, status uint32, recv time.Time) {
	st.state = stBad
	b := ss.batch[:0]
	for _, bd := range st.r.Bindings {
		b = append(b, model.Sample{Source: ss.s.name, Address: bd.Key, Quality: model.QualityBad,
			Status: status, ReceiveTime: recv})
	}
	ss.batch = b
	ss.emit(b)
}

func (ss *session) decode(st *reqState, i int, bd *Binding, rep *reply) (model.Value, error) {
	if st.r.Area.IsBit() {
		if bd.Offset >= len(rep.bits) {
			return model.Value{}, ErrShortBlock
		}
		return DecodeBits(rep.bits[bd.Offset:], &bd.Addr)
	}
	if bd.Offset >= len(rep.regs) {
		return model.Value{}, ErrShortBlock
	}
	regs := rep.regs[bd.Offset:]
	if bd.Addr.Type == model.RawString && len(regs) >= bd.Addr.Length {
		// An unchanged string is the common case: reuse the last one
		// instead of allocating it again every poll.
		regs = regs[:bd.Addr.Length]
		if st.last[i].Kind() == model.KindString && slices.Equal(st.lastRaw[i], regs) {
			return st.last[i], nil
		}
		st.lastRaw[i] = append(st.lastRaw[i][:0], regs...)
	}
	return Decode(regs, &bd.Addr)
}

func (ss *session) staleDeadline(st *reqState) time.Time {
	return st.lastSent.Add(time.Duration(ss.s.staleAfter+1) * st.r.Poll)
}

// checkStale marks requests past their stale deadline; it scans only when
// the earliest deadline may have passed.
func (ss *session) checkStale(now time.Time) {
	if ss.staleCheck.IsZero() || now.Before(ss.staleCheck) {
		return
	}
	ss.staleCheck = time.Time{}
	for _, st := range ss.all {
		if st.state != stGood {
			continue
		}
		d := ss.staleDeadline(st)
		if now.Before(d) {
			if ss.staleCheck.IsZero() || d.Before(ss.staleCheck) {
				ss.staleCheck = d
			}
			continue
		}
		st.state = stStale
		ss.src.stale.Add(1)
		b := ss.batch[:0]
		for i, bd := range st.r.Bindings {
			b = append(b, model.Sample{Source: ss.s.name, Address: bd.Key, Value: st.last[i],
				Quality: model.QualityUncertain, Stale: true, ReceiveTime: st.lastRecv})
		}
		ss.batch = b
		ss.emit(b)
	}
}

var exceptions = [...]struct {
	err  error
	code uint8
}{
	{mb.ErrIllegalFunction, 0x01},
	{mb.ErrIllegalDataAddress, 0x02},
	{mb.ErrIllegalDataValue, 0x03},
	{mb.ErrServerDeviceFailure, 0x04},
	{mb.ErrAcknowledge, 0x05},
	{mb.ErrServerDeviceBusy, 0x06},
	{mb.ErrMemoryParityError, 0x08},
	{mb.ErrGWPathUnavailable, 0x0A},
	{mb.ErrGWTargetFailedToRespond, 0x0B},
}

// exceptionCode reports whether err is a Modbus exception response and its
// code. The library turns codes it does not know into a formatted error.
func exceptionCode(err error) (uint8, bool) {
	for _, e := range exceptions {
		if errors.Is(err, e.err) {
			return e.code, true
		}
	}
	var code uint8
	if _, e := fmt.Sscanf(err.Error(), "unknown exception code (%d)", &code); e == nil {
		return code, true
	}
	return 0, false
}

func exceptionHint(err error, code uint8) string {
	switch {
	case errors.Is(err, mb.ErrBadUnitId):
		return "the answer came from another unit id: is the PLC's unit id right, and does the gateway route it?"
	case code == 0x0B:
		return "the gateway got no answer from the device: is the PLC's unit id right, and is the device on?"
	case code == 0x0A:
		return "the gateway has no path to this unit id: is the PLC's unit id right?"
	case code == 0x02:
		return "does the device map every register of this request? a smaller max gap avoids reading unmapped gaps"
	case code == 0x01:
		return "does the device support reading this area?"
	case code == 0x06:
		return "the device is busy: a longer poll interval or a pause between requests may help"
	}
	return ""
}

func readHint(err error, timeout time.Duration) string {
	switch {
	case errors.Is(err, mb.ErrRequestTimedOut):
		return fmt.Sprintf(" (no answer within %v: is the device on and reachable, and is the PLC's unit id right? many devices ignore requests for other unit ids)", timeout)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return " (the device closed the connection: was it restarted, or does it allow fewer connections?)"
	case errors.Is(err, mb.ErrProtocolError):
		return " (malformed response: is this really a Modbus TCP device, or is a gateway mangling frames?)"
	}
	return ""
}

func connectHint(err error, hostPort string) string {
	_, port, _ := net.SplitHostPort(hostPort)
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf(" (is the device on and listening on port %s?)", port)
	case errors.As(err, &dns):
		return " (is the host name right?)"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return " (is the host reachable from this machine?)"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return " (is the host reachable?)"
	}
	return ""
}
