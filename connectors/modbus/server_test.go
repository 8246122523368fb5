package modbus

import (
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/unsgate/unsgate/model"
)

// bank is a register bank behind a real simonvetter/modbus TCP server, with
// fault injection: exceptions for address ranges and gates that hold a
// request until the test opens them.
type bank struct {
	mu     sync.Mutex
	units  map[uint8]*unitRegs
	faults []fault
	gates  []*gate
	seen   []seenRequest
}

type unitRegs struct {
	holding, input [65536]uint16
	coils, inputs  [65536]bool
}

type fault struct {
	unit     uint8
	area     model.Area
	from, to int // inclusive register or bit range
	err      error
}

// gate holds requests touching addr of area while armed.
type gate struct {
	area  model.Area
	addr  int
	armed bool
	open  chan struct{}
	held  chan struct{} // receives once per held request
}

type seenRequest struct {
	unit      uint8
	area      model.Area
	addr, qty int
	at        time.Time
}

func newBank() *bank { return &bank{units: map[uint8]*unitRegs{}} }

// unit returns the registers of unit u, creating them. Requests for units
// never created get "gateway target device failed to respond".
func (b *bank) unit(u uint8) *unitRegs {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.units[u]
	if r == nil {
		r = new(unitRegs)
		b.units[u] = r
	}
	return r
}

// set runs f on unit u's registers under the lock.
func (b *bank) set(u uint8, f func(r *unitRegs)) {
	r := b.unit(u)
	b.mu.Lock()
	defer b.mu.Unlock()
	f(r)
}

func (b *bank) addFault(f fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = append(b.faults, f)
}

func (b *bank) clearFaults() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = nil
}

func (b *bank) addGate(area model.Area, addr int) *gate {
	g := &gate{area: area, addr: addr, open: make(chan struct{}), held: make(chan struct{}, 100)}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gates = append(b.gates, g)
	return g
}

func (b *bank) arm(g *gate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g.armed = true
}

// release opens the gate for good: held and future requests pass.
func (b *bank) release(g *gate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if g.armed {
		g.armed = false
		close(g.open)
	}
}

func (b *bank) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.seen...)
}

// enter records a request and applies faults and gates. It returns the
// unit's registers, locked, or an error (unlocked).
func (b *bank) enter(unit uint8, area model.Area, addr, qty uint16) (*unitRegs, error) {
	b.mu.Lock()
	b.seen = append(b.seen, seenRequest{unit: unit, area: area, addr: int(addr), qty: int(qty), at: time.Now()})
	lo, hi := int(addr), int(addr)+int(qty)-1
	for _, g := range b.gates {
		if g.armed && g.area == area && lo <= g.addr && g.addr <= hi {
			b.mu.Unlock()
			g.held <- struct{}{}
			<-g.open
			b.mu.Lock()
		}
	}
	for _, f := range b.faults {
		if f.unit == unit && f.area == area && lo <= f.to && f.from <= hi {
			b.mu.Unlock()
			return nil, f.err
		}
	}
	r := b.units[unit]
	if r == nil {
		b.mu.Unlock()
		return nil, mb.ErrGWTargetFailedToRespond
	}
	return r, nil
}

func (b *bank) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	if req.IsWrite {
		return nil, mb.ErrIllegalFunction
	}
	r, err := b.enter(req.UnitId, model.AreaCoil, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	return append([]bool(nil), r.coils[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (b *bank) HandleDiscreteInputs(req *mb.DiscreteInputsRequest) ([]bool, error) {
	r, err := b.enter(req.UnitId, model.AreaDiscreteInput, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	return append([]bool(nil), r.inputs[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (b *bank) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		return nil, mb.ErrIllegalFunction
	}
	r, err := b.enter(req.UnitId, model.AreaHoldingRegister, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	return append([]uint16(nil), r.holding[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (b *bank) HandleInputRegisters(req *mb.InputRegistersRequest) ([]uint16, error) {
	r, err := b.enter(req.UnitId, model.AreaInputRegister, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	return append([]uint16(nil), r.input[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

// testServer is an in-process Modbus TCP server on 127.0.0.1.
type testServer struct {
	url string
	srv *mb.ModbusServer
}

// startServer starts a server for h. The library does not report the port
// it bound, so pick a free one and retry if another process takes it first.
func startServer(tb testing.TB, h mb.RequestHandler) *testServer {
	tb.Helper()
	var lastErr error
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		url := "tcp://" + addr
		srv, err := mb.NewServer(&mb.ServerConfiguration{
			URL:        url,
			Timeout:    time.Minute,
			MaxClients: 10,
			Logger:     log.New(io.Discard, "", 0),
		}, h)
		if err != nil {
			tb.Fatal(err)
		}
		if lastErr = srv.Start(); lastErr != nil {
			continue
		}
		tb.Cleanup(func() { srv.Stop() })
		return &testServer{url: url, srv: srv}
	}
	tb.Fatalf("no free port for the modbus server: %v", lastErr)
	return nil
}

// restart starts a stopped server again on the same port.
func (ts *testServer) restart(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := ts.srv.Start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("restart server: %v", err)
		}
		// The port is normally free again at once (SO_REUSEADDR); poll.
		time.Sleep(10 * time.Millisecond)
	}
}

// collector records emitted samples; emit copies them because the source
// reuses its batch.
type collector struct {
	mu      sync.Mutex
	last    map[string]model.Sample
	all     []model.Sample
	batches int
	changed chan struct{}
}

func newCollector() *collector {
	return &collector{last: map[string]model.Sample{}, changed: make(chan struct{})}
}

func (c *collector) emit(batch []model.Sample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range batch {
		c.last[s.Address] = s
		c.all = append(c.all, s)
	}
	c.batches++
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitFor polls cond on every emitted batch until it holds or timeout.
func (c *collector) waitFor(tb testing.TB, timeout time.Duration, what string, cond func(last map[string]model.Sample) bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.last)
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			c.mu.Lock()
			defer c.mu.Unlock()
			tb.Fatalf("timed out after %v waiting for %s; last samples: %v", timeout, what, describe(c.last))
		}
	}
}

func (c *collector) samples() []model.Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]model.Sample(nil), c.all...)
}

func describe(m map[string]model.Sample) string {
	s := ""
	for k, v := range m {
		s += fmt.Sprintf("\n  %s = %v %v stale=%v status=%d", k, v.Value, v.Quality, v.Stale, v.Status)
	}
	return s
}

// encodeBytes lays out big-endian bytes (A first) on the wire in the order
// its letters name, e.g. "CDAB" or "GHEFCDAB", and packs them into
// registers high byte first. It implements the byte order names
// independently of the decoder.
func encodeBytes(be []byte, letters string) []uint16 {
	wire := make([]byte, len(be))
	for i := range letters {
		wire[i] = be[letters[i]-'A']
	}
	regs := make([]uint16, len(wire)/2)
	for i := range regs {
		regs[i] = uint16(wire[2*i])<<8 | uint16(wire[2*i+1])
	}
	return regs
}

// letters names a byte order's layout for n-byte values.
func letters(o model.ByteOrder, n int) string {
	if n == 8 {
		return [...]string{"ABCDEFGH", "BADCFEHG", "GHEFCDAB", "HGFEDCBA"}[o]
	}
	return o.String()
}
