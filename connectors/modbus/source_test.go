package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

// testLogger sends the source's logs to the test log until the test ends
// (a worker finishing a request after Run returned may still log).
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// running is a Run in progress.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, src *Source, c *collector) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, c.emit) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// wait returns Run's result, failing if it takes longer than limit.
func (r *running) wait(t *testing.T, limit time.Duration) (error, time.Duration) {
	t.Helper()
	t0 := time.Now()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err, time.Since(t0)
	case <-time.After(limit):
		t.Fatalf("Run still running after %v", limit)
		return nil, 0
	}
}

func (r *running) stillRunning(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		t.Fatalf("Run ended: %v", err)
	default:
	}
}

func newSource(t *testing.T, cfg Config) *Source {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "plc1"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func good(key string, want model.Value) func(map[string]model.Sample) bool {
	return func(m map[string]model.Sample) bool {
		s, ok := m[key]
		return ok && s.Quality == model.QualityGood && !s.Stale && s.Value.Equal(want)
	}
}

func all(conds ...func(map[string]model.Sample) bool) func(map[string]model.Sample) bool {
	return func(m map[string]model.Sample) bool {
		for _, c := range conds {
			if !c(m) {
				return false
			}
		}
		return true
	}
}

func put(regs []uint16, at int, vals ...uint16) { copy(regs[at:], vals) }

func TestRunEveryAreaAndType(t *testing.T) {
	b := newBank()
	f32 := math.Float32bits(-12.5)
	f64 := math.Float64bits(6.02214076e23)
	b.set(1, func(r *unitRegs) {
		put(r.holding[:], 0, 0xFFFB)                                                                         // int16 -5
		put(r.holding[:], 1, 4242)                                                                           // uint16
		put(r.holding[:], 2, encodeBytes(binary.BigEndian.AppendUint32(nil, uint32(0x80000000)), "ABCD")...) // int32 min
		put(r.holding[:], 4, encodeBytes(binary.BigEndian.AppendUint32(nil, 3000000000), "BADC")...)
		put(r.holding[:], 6, encodeBytes(binary.BigEndian.AppendUint32(nil, f32), "CDAB")...)
		put(r.holding[:], 8, encodeBytes(binary.BigEndian.AppendUint64(nil, uint64(1<<62+5)), "ABCDEFGH")...)
		put(r.holding[:], 12, encodeBytes(binary.BigEndian.AppendUint64(nil, math.MaxUint64-1), "HGFEDCBA")...)
		put(r.holding[:], 16, encodeBytes(binary.BigEndian.AppendUint64(nil, f64), "GHEFCDAB")...)
		put(r.holding[:], 20, 0x5245, 0x4349, 0x5045, 0x2031) // "RECIPE 1"
		put(r.holding[:], 30, 1<<3)
		put(r.input[:], 500, 7)
		put(r.input[:], 502, encodeBytes(binary.BigEndian.AppendUint32(nil, math.Float32bits(1.5)), "DCBA")...)
		r.coils[5] = true
		r.inputs[9] = true
	})
	a := func(area model.Area, reg int, typ model.RawType, o model.ByteOrder) model.ModbusAddress {
		return model.ModbusAddress{Area: area, Register: uint16(reg), Type: typ, Order: o, Bit: -1}
	}
	h := model.AreaHoldingRegister
	str := a(h, 20, model.RawString, 0)
	str.Length = 4
	bit3 := a(h, 30, model.RawBool, 0)
	bit3.Bit = 3
	bit4 := bit3
	bit4.Bit = 4
	tags := []Tag{
		{Key: "i16", Addr: a(h, 0, model.RawInt16, 0)},
		{Key: "u16", Addr: a(h, 1, model.RawUint16, 0)},
		{Key: "i32", Addr: a(h, 2, model.RawInt32, model.OrderABCD)},
		{Key: "u32", Addr: a(h, 4, model.RawUint32, model.OrderBADC)},
		{Key: "f32", Addr: a(h, 6, model.RawFloat32, model.OrderCDAB)},
		{Key: "i64", Addr: a(h, 8, model.RawInt64, model.OrderABCD)},
		{Key: "u64", Addr: a(h, 12, model.RawUint64, model.OrderDCBA)},
		{Key: "f64", Addr: a(h, 16, model.RawFloat64, model.OrderCDAB)},
		{Key: "str", Addr: str},
		{Key: "bit3", Addr: bit3},
		{Key: "bit4", Addr: bit4},
		{Key: "ir", Addr: a(model.AreaInputRegister, 500, model.RawUint16, 0)},
		{Key: "irf", Addr: a(model.AreaInputRegister, 502, model.RawFloat32, model.OrderDCBA)},
		{Key: "coil5", Addr: a(model.AreaCoil, 5, model.RawBool, 0)},
		{Key: "coil6", Addr: a(model.AreaCoil, 6, model.RawBool, 0)},
		{Key: "di9", Addr: a(model.AreaDiscreteInput, 9, model.RawBool, 0)},
	}
	ts := startServer(t, b)
	src := newSource(t, Config{URL: ts.url, Poll: 20 * time.Millisecond, Tags: tags})
	c := newCollector()
	before := time.Now()
	run := start(t, src, c)
	c.waitFor(t, 5*time.Second, "every tag GOOD", all(
		good("i16", model.IntValue(-5)),
		good("u16", model.UintValue(4242)),
		good("i32", model.IntValue(math.MinInt32)),
		good("u32", model.UintValue(3000000000)),
		good("f32", model.FloatValue(-12.5)),
		good("i64", model.IntValue(1<<62+5)),
		good("u64", model.UintValue(math.MaxUint64-1)),
		good("f64", model.FloatValue(6.02214076e23)),
		good("str", model.StringValue("RECIPE 1")),
		good("bit3", model.BoolValue(true)),
		good("bit4", model.BoolValue(false)),
		good("ir", model.UintValue(7)),
		good("irf", model.FloatValue(1.5)),
		good("coil5", model.BoolValue(true)),
		good("coil6", model.BoolValue(false)),
		good("di9", model.BoolValue(true)),
	))
	for _, s := range c.samples() {
		if s.Source != "plc1" || s.ReceiveTime.Before(before) || s.ReceiveTime.After(time.Now()) || !s.SourceTime.IsZero() || s.Status != 0 {
			t.Fatalf("bad sample metadata: %+v", s)
		}
	}

	// values follow the device
	b.set(1, func(r *unitRegs) {
		r.holding[1] = 4343
		put(r.holding[:], 20, 0x4F46, 0x4600) // "OFF"
		r.holding[30] = 1 << 4
		r.input[500] = 8
		r.coils[5], r.coils[6] = false, true
		r.inputs[9] = false
	})
	c.waitFor(t, 5*time.Second, "changed values", all(
		good("u16", model.UintValue(4343)),
		good("str", model.StringValue("OFF")),
		good("bit3", model.BoolValue(false)),
		good("bit4", model.BoolValue(true)),
		good("ir", model.UintValue(8)),
		good("coil5", model.BoolValue(false)),
		good("coil6", model.BoolValue(true)),
		good("di9", model.BoolValue(false)),
	))
	run.stillRunning(t)

	st := src.Stats()
	if st.Connects != 1 || st.Requests < 4 || st.Errors != 0 || st.Exceptions != 0 || st.LastLatency <= 0 {
		t.Fatalf("stats %+v", st)
	}
}

// An exception on one request marks only that request's tags BAD, with the
// exception code, and the session goes on.
func TestRunExceptionIsolated(t *testing.T) {
	b := newBank()
	b.set(1, func(r *unitRegs) {
		r.holding[0] = 1
		r.holding[200] = 2
		r.coils[0] = true
	})
	b.addFault(fault{unit: 1, area: model.AreaHoldingRegister, from: 200, to: 209, err: mb.ErrIllegalDataAddress})
	ts := startServer(t, b)
	src := newSource(t, Config{URL: ts.url, Poll: 20 * time.Millisecond, Tags: []Tag{
		{Key: "ok", Addr: holding(0, model.RawUint16)},
		{Key: "bad1", Addr: holding(200, model.RawUint16)},
		{Key: "bad2", Addr: holding(205, model.RawFloat32)},
		{Key: "coil", Addr: coil(0)},
	}})
	if n := len(src.Requests()); n != 3 {
		t.Fatalf("%d requests, want 3 (holding 0, holding 200-206, coil 0)", n)
	}
	c := newCollector()
	run := start(t, src, c)
	isBad := func(key string, code uint32) func(map[string]model.Sample) bool {
		return func(m map[string]model.Sample) bool {
			s, ok := m[key]
			return ok && s.Quality == model.QualityBad && s.Status == code && s.Value.IsNull() && !s.ReceiveTime.IsZero()
		}
	}
	c.waitFor(t, 5*time.Second, "ok GOOD, bad BAD with code 2", all(
		good("ok", model.UintValue(1)), good("coil", model.BoolValue(true)), isBad("bad1", 2), isBad("bad2", 2)))

	// the session continues: the good tag still follows the device
	b.set(1, func(r *unitRegs) { r.holding[0] = 10 })
	c.waitFor(t, 5*time.Second, "ok updated", all(good("ok", model.UintValue(10)), isBad("bad1", 2)))
	for _, s := range c.samples() {
		if (s.Address == "ok" || s.Address == "coil") && s.Quality != model.QualityGood {
			t.Fatalf("unaffected tag got %+v", s)
		}
	}
	run.stillRunning(t)
	if st := src.Stats(); st.Exceptions == 0 || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}

	// another exception code reaches Status too, then the device recovers
	b.clearFaults()
	b.addFault(fault{unit: 1, area: model.AreaHoldingRegister, from: 200, to: 209, err: mb.ErrServerDeviceBusy})
	c.waitFor(t, 5*time.Second, "busy code 6", isBad("bad1", 6))
	b.clearFaults()
	c.waitFor(t, 5*time.Second, "recovered", all(good("bad1", model.UintValue(2)), good("bad2", model.FloatValue(0))))
	run.stillRunning(t)

	// The meter counts every answer, the exceptions as failed, and times
	// each one.
	run.cancel()
	run.wait(t, 5*time.Second)
	st, m := src.Stats(), src.Meter().Stats()
	var timed uint64
	for _, n := range m.Latency {
		timed += n
	}
	if m.Requests != st.Requests || m.Failed != st.Exceptions || timed != m.Requests ||
		m.LastLatency <= 0 || m.AvgLatency <= 0 || m.LatencySum < m.LastLatency {
		t.Fatalf("meter %+v, stats %+v", m, st)
	}
}

// PLC down: Run ends promptly with an error; PLC up again: a new Run works.
func TestRunServerDownAndUp(t *testing.T) {
	b := newBank()
	b.set(1, func(r *unitRegs) { r.holding[3] = 33 })
	ts := startServer(t, b)
	const timeout = 500 * time.Millisecond
	src := newSource(t, Config{URL: ts.url, Poll: 10 * time.Millisecond, Timeout: timeout,
		Tags: []Tag{{Key: "v", Addr: holding(3, model.RawUint16)}}})
	c := newCollector()
	run := start(t, src, c)
	c.waitFor(t, 5*time.Second, "GOOD", good("v", model.UintValue(33)))

	ts.srv.Stop()
	err, took := run.wait(t, 5*time.Second)
	if err == nil || errors.Is(err, connectors.ErrConfig) {
		t.Fatalf("Run after server stop: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "modbus plc1: read holding 3+1 (unit 1): ") {
		t.Fatalf("error does not name the request: %v", err)
	}
	if took > 2*timeout {
		t.Fatalf("Run took %v to notice, Timeout is %v", took, timeout)
	}
	t.Logf("server stop -> %v after %v", err, took)

	// still down: connecting fails fast and says why
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = src.Run(ctx, c.emit)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "modbus plc1: connect "+ts.url) ||
		!strings.Contains(err.Error(), "listening on port") {
		t.Fatalf("Run with server down: %v", err)
	}

	ts.restart(t)
	b.set(1, func(r *unitRegs) { r.holding[3] = 34 })
	start(t, src, c)
	c.waitFor(t, 5*time.Second, "GOOD after restart", good("v", model.UintValue(34)))
	if st := src.Stats(); st.Connects != 2 || st.Errors != 2 {
		t.Fatalf("stats %+v, want 2 connects and 2 errors", st)
	}
}

func TestRunUnitRouting(t *testing.T) {
	b := newBank()
	for _, u := range []uint8{1, 2, 7} {
		b.set(u, func(r *unitRegs) { r.holding[0] = uint16(u) * 11 })
	}
	at := func(unit int) model.ModbusAddress {
		a := holding(0, model.RawUint16)
		a.UnitID = unit
		return a
	}
	ts := startServer(t, b)
	src := newSource(t, Config{URL: ts.url, UnitID: 7, Poll: time.Hour, Tags: []Tag{
		{Key: "u1", Addr: at(1)}, {Key: "u2", Addr: at(2)}, {Key: "default", Addr: at(0)}, {Key: "u9", Addr: at(9)},
	}})
	c := newCollector()
	start(t, src, c)
	c.waitFor(t, 5*time.Second, "each unit's value", all(
		good("u1", model.UintValue(11)), good("u2", model.UintValue(22)), good("default", model.UintValue(77)),
		func(m map[string]model.Sample) bool {
			// the bank answers unknown units like a gateway whose device is silent
			s, ok := m["u9"]
			return ok && s.Quality == model.QualityBad && s.Status == 0x0B
		}))
	units := map[uint8]int{}
	for _, r := range b.requests() {
		units[r.unit]++
	}
	// one poll of a one-hour interval: exactly one request per unit
	if len(units) != 4 || units[1] != 1 || units[2] != 1 || units[7] != 1 || units[9] != 1 {
		t.Fatalf("requests per unit: %v", units)
	}
}

func TestRunCancel(t *testing.T) {
	b := newBank()
	b.set(1, func(r *unitRegs) { r.holding[0] = 1 })
	ts := startServer(t, b)

	t.Run("idle", func(t *testing.T) {
		src := newSource(t, Config{URL: ts.url, Poll: time.Hour, Tags: tagsOf(holding(0, model.RawUint16))})
		c := newCollector()
		run := start(t, src, c)
		c.waitFor(t, 5*time.Second, "GOOD", good("t0", model.UintValue(1)))
		run.cancel()
		if err, took := run.wait(t, time.Second); err != nil {
			t.Fatalf("Run after cancel: %v (%v)", err, took)
		}
	})

	t.Run("request in flight", func(t *testing.T) {
		g := b.addGate(model.AreaHoldingRegister, 50)
		b.arm(g)
		t.Cleanup(func() { b.release(g) })
		src := newSource(t, Config{URL: ts.url, Timeout: 10 * time.Second,
			Tags: tagsOf(holding(50, model.RawUint16))})
		run := start(t, src, newCollector())
		select {
		case <-g.held:
		case <-time.After(5 * time.Second):
			t.Fatal("request never reached the server")
		}
		run.cancel()
		err, took := run.wait(t, 5*time.Second)
		if err != nil || took > time.Second {
			t.Fatalf("Run after cancel: %v after %v; want nil well before Timeout", err, took)
		}
	})

	t.Run("already cancelled", func(t *testing.T) {
		src := newSource(t, Config{URL: ts.url, Tags: tagsOf(holding(0, model.RawUint16))})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := src.Run(ctx, newCollector().emit); err != nil {
			t.Fatal(err)
		}
	})
}

// A device that stops answering: the first timeout marks that request's
// tags BAD (status 0) within Timeout and the session goes on; MaxTimeouts
// in a row end it with an error naming the request and the likely cause.
func TestRunTimeout(t *testing.T) {
	b := newBank()
	b.set(1, func(*unitRegs) {})
	g := b.addGate(model.AreaInputRegister, 0)
	b.arm(g)
	t.Cleanup(func() { b.release(g) })
	ts := startServer(t, b)
	in := holding(0, model.RawUint16)
	in.Area = model.AreaInputRegister
	const timeout, poll = 300 * time.Millisecond, 100 * time.Millisecond
	src := newSource(t, Config{URL: ts.url, Timeout: timeout, Poll: poll, Tags: []Tag{{Key: "x", Addr: in}}})
	c := newCollector()
	t0 := time.Now()
	run := start(t, src, c)
	c.waitFor(t, 5*time.Second, "BAD after the first timeout", func(m map[string]model.Sample) bool {
		s, ok := m["x"]
		return ok && s.Quality == model.QualityBad && s.Status == 0 && s.Value.IsNull()
	})
	if d := time.Since(t0); d < timeout/2 {
		t.Fatalf("first timeout after %v, Timeout %v", d, timeout)
	}
	// The session goes on, so the BAD mark came from the first timeout,
	// not from the session's end.
	run.stillRunning(t)
	err, _ := run.wait(t, 5*time.Second)
	took := time.Since(t0)
	if !errors.Is(err, mb.ErrRequestTimedOut) || !strings.Contains(err.Error(), "read input 0+1 (unit 1)") ||
		!strings.Contains(err.Error(), "3 requests in a row") || !strings.Contains(err.Error(), "unit id right?") {
		t.Fatalf("err %v", err)
	}
	// a single request: each try waits for its next poll tick
	// (the slack above is for a loaded machine; the stats below count the
	// tries exactly)
	if took < MaxTimeouts*timeout || took > MaxTimeouts*(timeout+poll)+2*time.Second {
		t.Fatalf("session ended after %v, Timeout %v, Poll %v", took, timeout, poll)
	}
	if st := src.Stats(); st.Timeouts != MaxTimeouts || st.Errors != 1 || st.Requests != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Unanswered requests are counted, failed, and not timed.
	if m := src.Meter().Stats(); m.Requests != MaxTimeouts || m.Failed != MaxTimeouts || m.LatencySum != 0 || m.Latency != [len(connectors.LatencyBuckets) + 1]uint64{} {
		t.Fatalf("meter %+v", m)
	}
}

func TestRunConnectTimeoutOrError(t *testing.T) {
	// Nothing listens on a port that was just freed: refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	src := newSource(t, Config{URL: "tcp://" + addr, Tags: tagsOf(holding(0, model.RawUint16))})
	t0 := time.Now()
	err = src.Run(context.Background(), newCollector().emit)
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, connectors.ErrConfig) {
		t.Fatalf("err %v", err)
	}
	if time.Since(t0) > time.Second {
		t.Fatalf("refused connect took %v", time.Since(t0))
	}
}

// Requests held up by a slow one: the fast request's tags go stale with
// their last value, then GOOD again; BAD tags do not turn stale.
func TestRunStale(t *testing.T) {
	b := newBank()
	b.set(1, func(r *unitRegs) {
		r.holding[0] = 5
		r.holding[1000] = 6
	})
	b.addFault(fault{unit: 1, area: model.AreaHoldingRegister, from: 500, to: 500, err: mb.ErrIllegalDataAddress})
	g := b.addGate(model.AreaHoldingRegister, 1000)
	t.Cleanup(func() { b.release(g) })
	ts := startServer(t, b)
	src := newSource(t, Config{URL: ts.url, Poll: 20 * time.Millisecond, StaleAfter: 2, Timeout: 5 * time.Second,
		Tags: []Tag{
			{Key: "fast", Addr: holding(0, model.RawUint16)},
			{Key: "failing", Addr: holding(500, model.RawUint16)},
			{Key: "slow", Addr: holding(1000, model.RawUint16), Poll: 200 * time.Millisecond},
		}})
	c := newCollector()
	run := start(t, src, c)
	c.waitFor(t, 5*time.Second, "fast and slow GOOD", all(good("fast", model.UintValue(5)), good("slow", model.UintValue(6))))
	b.set(1, func(r *unitRegs) { r.holding[0] = 50 })
	c.waitFor(t, 5*time.Second, "fast updated", good("fast", model.UintValue(50)))

	b.arm(g) // the next read of the slow request hangs (within Timeout)
	c.waitFor(t, 5*time.Second, "fast stale", func(m map[string]model.Sample) bool {
		s := m["fast"]
		return s.Stale && s.Quality == model.QualityUncertain && s.Value.Equal(model.UintValue(50))
	})
	staleAt := time.Now()
	b.release(g)
	c.waitFor(t, 5*time.Second, "fast GOOD again", good("fast", model.UintValue(50)))
	run.stillRunning(t)

	var stale model.Sample
	for _, s := range c.samples() {
		if s.Stale && s.Address == "fast" {
			stale = s
		}
		if s.Address == "failing" && (s.Stale || s.Quality != model.QualityBad) {
			t.Fatalf("failing tag: %+v", s)
		}
	}
	// the stale sample keeps the time of the value it repeats
	if !stale.ReceiveTime.Before(staleAt) || staleAt.Sub(stale.ReceiveTime) < 2*20*time.Millisecond {
		t.Fatalf("stale sample time %v, marked at %v", stale.ReceiveTime, staleAt)
	}
	if st := src.Stats(); st.Stale == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Pause keeps at least that much time between one response and the next
// request, as the server sees it.
func TestRunPause(t *testing.T) {
	b := newBank()
	b.set(1, func(*unitRegs) {})
	ts := startServer(t, b)
	const pause = 30 * time.Millisecond
	src := newSource(t, Config{URL: ts.url, Poll: time.Millisecond, Pause: pause,
		Tags: tagsOf(holding(0, model.RawUint16), holding(1000, model.RawUint16))})
	c := newCollector()
	start(t, src, c)
	c.waitFor(t, 5*time.Second, "6 batches", func(map[string]model.Sample) bool { return c.batches >= 6 })
	reqs := b.requests()
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < pause {
			t.Fatalf("requests %d and %d only %v apart", i-1, i, gap)
		}
	}
	// both requests take turns
	if reqs[0].addr == reqs[1].addr {
		t.Fatalf("requests %v", reqs[:2])
	}
}

func TestRunTwiceAtOnce(t *testing.T) {
	b := newBank()
	b.set(1, func(r *unitRegs) { r.holding[0] = 1 })
	ts := startServer(t, b)
	src := newSource(t, Config{URL: ts.url, Tags: tagsOf(holding(0, model.RawUint16))})
	c := newCollector()
	start(t, src, c)
	c.waitFor(t, 5*time.Second, "GOOD", good("t0", model.UintValue(1)))
	if err := src.Run(context.Background(), c.emit); err == nil || !strings.Contains(err.Error(), "while a session is running") {
		t.Fatalf("second Run: %v", err)
	}
}
