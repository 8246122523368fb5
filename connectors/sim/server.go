// Package sim holds simulated plant equipment: a PLC that is a real Modbus
// TCP server (simonvetter/modbus) over an in-memory register bank, with fault
// injection, and an OPC UA server (gopcua's server package behind a relay
// that makes stops and restarts real), with namespace and node renumbering;
// plus the animated bottling lines the demo serves from them (line 1 over
// Modbus, line 2 over OPC UA).
//
// It exists so tests and the demo exercise the gateway's connectors over real
// sockets. It must not be used to talk to real devices, and it must not import
// the gateway's other packages (only model, for the area names).
package sim

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/simonvetter/modbus"
	"github.com/unsgate/unsgate/model"
)

// tableSize is the number of entries in each Modbus table (16-bit addresses).
const tableSize = 1 << 16

// bank is one unit's data model: the four Modbus tables.
type bank struct {
	coils    [tableSize]bool
	discrete [tableSize]bool
	input    [tableSize]uint16
	holding  [tableSize]uint16
}

// failure is one fault-injection rule: requests touching [from, to] of area
// on unit are answered with err.
type failure struct {
	unit     uint8
	area     model.Area
	from, to uint16
	err      error
}

// Option configures Listen.
type Option func(*options)

type options struct {
	units  []uint8
	logger *slog.Logger
}

// WithUnits sets the unit ids the server answers for from the start (default:
// unit 1 only). More units appear when a Set method writes to them.
func WithUnits(ids ...uint8) Option {
	return func(o *options) { o.units = append([]uint8(nil), ids...) }
}

// WithLogger receives the Modbus library's messages (client connects,
// protocol errors) at debug level. Nil, the default, discards them.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// Server is a Modbus TCP server over in-memory register banks, one per unit
// id. All methods are safe for concurrent use, also while clients are served.
//
// Unknown unit ids are answered like a Modbus TCP gateway whose serial
// device does not answer: exception 0x0B (gateway target device failed to
// respond, modbus.ErrGWTargetFailedToRespond). Silence is not an option the
// library offers, and 0x0B is what a client must handle from real gateways.
//
// Client writes (function codes 5, 6, 15, 16) are stored in the bank; a
// running BottlingLine overwrites the registers it animates on its next step.
type Server struct {
	mu       sync.RWMutex
	banks    map[uint8]*bank
	failures []failure
	latency  time.Duration

	requests   atomic.Uint64
	beforeRead atomic.Pointer[func(unit uint8, area model.Area, addr, quantity uint16)]

	clientsMu sync.Mutex
	clients   map[string]bool // remote host:port of every connection that sent a request

	srv       *modbus.ModbusServer
	addr      string
	closed    chan struct{} // closed by Close, ends latency waits
	closeOnce sync.Once
	closeErr  error
}

// Listen starts a server on addr (host:port). Port 0 picks a free port:
// the library does not report the port it bound, so Listen finds a free one
// first and binds it, retrying a few times if another process takes it in
// between.
func Listen(addr string, opts ...Option) (*Server, error) {
	o := options{units: []uint8{1}}
	for _, opt := range opts {
		opt(&o)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sim: listen %q: %w", addr, err)
	}
	s := &Server{banks: make(map[uint8]*bank), closed: make(chan struct{})}
	for _, u := range o.units {
		s.banks[u] = new(bank)
	}
	logger := log.New(io.Discard, "", 0)
	if o.logger != nil {
		logger = slog.NewLogLogger(o.logger.Handler(), slog.LevelDebug)
	}

	attempts := 1
	if port == "0" || port == "" {
		attempts = 5
	}
	for i := 0; ; i++ {
		bind := addr
		if attempts > 1 {
			p, err := freePort(host)
			if err != nil {
				return nil, fmt.Errorf("sim: listen %q: %w", addr, err)
			}
			bind = net.JoinHostPort(host, p)
		}
		srv, err := modbus.NewServer(&modbus.ServerConfiguration{
			URL:        "tcp://" + bind,
			Timeout:    2 * time.Minute,
			MaxClients: 32,
			Logger:     logger,
		}, handler{s})
		if err != nil {
			return nil, fmt.Errorf("sim: listen %q: %w", addr, err)
		}
		err = srv.Start()
		if err == nil {
			s.srv, s.addr = srv, bind
			return s, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || i+1 >= attempts {
			return nil, fmt.Errorf("sim: listen %q: %w", bind, err)
		}
	}
}

// freePort asks the kernel for a free TCP port on host and releases it.
func freePort(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, l.Close()
}

// Addr is the host:port the server is bound to.
func (s *Server) Addr() string { return s.addr }

// URL is the address in the form the gateway's config uses: tcp://host:port.
func (s *Server) URL() string { return "tcp://" + s.addr }

// Close stops accepting clients, closes every client connection and frees
// the port before it returns. Requests held by SetLatency end at once.
// Close is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		if err := s.srv.Stop(); err != nil {
			s.closeErr = fmt.Errorf("sim: close %s: %w", s.addr, err)
		}
	})
	return s.closeErr
}

// Requests counts the requests that reached the register bank: reads and
// writes, including those answered with an exception. Frames the library
// rejects on its own (malformed, quantity out of range) are not counted.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Connections counts the client connections that sent at least one
// request, since the server started: a client that reconnects counts
// again (each TCP connection has its own remote port).
func (s *Server) Connections() int {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	return len(s.clients)
}

func (s *Server) sawClient(addr string) {
	s.clientsMu.Lock()
	if s.clients == nil {
		s.clients = map[string]bool{}
	}
	s.clients[addr] = true
	s.clientsMu.Unlock()
}

// SetLatency delays every answer by d (0 = none), to make clients time out.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// FailRange makes every request on unit that touches any of the entries
// from..to (inclusive) of area fail with exception. exception should be one
// of the library's exception errors (modbus.ErrIllegalDataAddress,
// modbus.ErrServerDeviceBusy, modbus.ErrGWTargetFailedToRespond, ...); any
// other error is answered as 0x04 server device failure, except
// modbus.ErrProtocolError, which makes the server drop the connection. A nil
// exception removes the rules set for exactly this unit, area and range.
// Rules are checked in the order they were added; the first match wins.
func (s *Server) FailRange(unit uint8, area model.Area, from, to uint16, exception error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exception != nil {
		s.failures = append(s.failures, failure{unit, area, from, to, exception})
		return
	}
	kept := s.failures[:0]
	for _, f := range s.failures {
		if f.unit != unit || f.area != area || f.from != from || f.to != to {
			kept = append(kept, f)
		}
	}
	s.failures = kept
}

// ClearFailures removes every FailRange rule.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	s.failures = nil
	s.mu.Unlock()
}

// SetHolding writes holding registers addr, addr+1, ... of unit, creating
// the unit if it does not exist. It panics if the values run past 65535.
func (s *Server) SetHolding(unit uint8, addr uint16, vals ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	store(&s.unitBank(unit).holding, addr, vals, "SetHolding")
}

// SetInput writes input registers, like SetHolding.
func (s *Server) SetInput(unit uint8, addr uint16, vals ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	store(&s.unitBank(unit).input, addr, vals, "SetInput")
}

// SetCoil writes coils, like SetHolding.
func (s *Server) SetCoil(unit uint8, addr uint16, vals ...bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	store(&s.unitBank(unit).coils, addr, vals, "SetCoil")
}

// SetDiscrete writes discrete inputs, like SetHolding.
func (s *Server) SetDiscrete(unit uint8, addr uint16, vals ...bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	store(&s.unitBank(unit).discrete, addr, vals, "SetDiscrete")
}

// Holding returns a copy of n holding registers of unit from addr, nil if
// the unit does not exist. It panics if the range runs past 65535.
func (s *Server) Holding(unit uint8, addr uint16, n int) []uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.banks[unit]
	if b == nil {
		return nil
	}
	return load(&b.holding, addr, n, "Holding")
}

// Input returns input registers, like Holding.
func (s *Server) Input(unit uint8, addr uint16, n int) []uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.banks[unit]
	if b == nil {
		return nil
	}
	return load(&b.input, addr, n, "Input")
}

// Coil returns coils, like Holding.
func (s *Server) Coil(unit uint8, addr uint16, n int) []bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.banks[unit]
	if b == nil {
		return nil
	}
	return load(&b.coils, addr, n, "Coil")
}

// Discrete returns discrete inputs, like Holding.
func (s *Server) Discrete(unit uint8, addr uint16, n int) []bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.banks[unit]
	if b == nil {
		return nil
	}
	return load(&b.discrete, addr, n, "Discrete")
}

// unitBank returns unit's bank, creating it. s.mu must be held for writing.
func (s *Server) unitBank(unit uint8) *bank {
	b := s.banks[unit]
	if b == nil {
		b = new(bank)
		s.banks[unit] = b
	}
	return b
}

func store[T any](table *[tableSize]T, addr uint16, vals []T, op string) {
	if int(addr)+len(vals) > tableSize {
		panic(fmt.Sprintf("sim: %s %d+%d runs past address 65535", op, addr, len(vals)))
	}
	copy(table[addr:], vals)
}

func load[T any](table *[tableSize]T, addr uint16, n int, op string) []T {
	if n < 0 || int(addr)+n > tableSize {
		panic(fmt.Sprintf("sim: %s %d+%d runs past address 65535", op, addr, n))
	}
	return append([]T(nil), table[addr:int(addr)+n]...)
}

// serve answers one request. The library has already checked that
// addr+quantity-1 stays within 65535 and that len(args) == quantity for
// writes, so the tables are indexed without further checks.
func serve[T any](s *Server, unit uint8, area model.Area, addr, quantity uint16,
	table func(*bank) *[tableSize]T, write bool, args []T) ([]T, error) {
	s.requests.Add(1)
	if err := s.wait(); err != nil {
		return nil, err
	}
	if f := s.beforeRead.Load(); f != nil && !write {
		(*f)(unit, area, addr, quantity)
	}
	if write {
		s.mu.Lock()
		defer s.mu.Unlock()
	} else {
		s.mu.RLock()
		defer s.mu.RUnlock()
	}
	b := s.banks[unit]
	if b == nil {
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	last := addr + quantity - 1
	for _, f := range s.failures {
		if f.unit == unit && f.area == area && addr <= f.to && last >= f.from {
			return nil, f.err
		}
	}
	t := table(b)
	if write {
		copy(t[addr:], args)
		return nil, nil
	}
	return append([]T(nil), t[addr:int(addr)+int(quantity)]...), nil
}

// SetBeforeRead installs f, called before each read request is answered,
// outside the server's lock (so f may set registers): a way to make values
// change with every read. nil removes it.
func (s *Server) SetBeforeRead(f func(unit uint8, area model.Area, addr, quantity uint16)) {
	if f == nil {
		s.beforeRead.Store(nil)
		return
	}
	s.beforeRead.Store(&f)
}

// wait holds a request for the configured latency, or until Close.
func (s *Server) wait() error {
	s.mu.RLock()
	d := s.latency
	s.mu.RUnlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.closed:
		// The connection is closing; the answer will not be delivered.
		return modbus.ErrServerDeviceBusy
	}
}

// handler adapts Server to the library's RequestHandler without adding the
// Handle methods to Server's API.
type handler struct{ s *Server }

var _ modbus.RequestHandler = handler{}

func coilTable(b *bank) *[tableSize]bool      { return &b.coils }
func discreteTable(b *bank) *[tableSize]bool  { return &b.discrete }
func holdingTable(b *bank) *[tableSize]uint16 { return &b.holding }
func inputTable(b *bank) *[tableSize]uint16   { return &b.input }

func (h handler) HandleCoils(r *modbus.CoilsRequest) ([]bool, error) {
	h.s.sawClient(r.ClientAddr)
	return serve(h.s, r.UnitId, model.AreaCoil, r.Addr, r.Quantity, coilTable, r.IsWrite, r.Args)
}

func (h handler) HandleDiscreteInputs(r *modbus.DiscreteInputsRequest) ([]bool, error) {
	h.s.sawClient(r.ClientAddr)
	return serve[bool](h.s, r.UnitId, model.AreaDiscreteInput, r.Addr, r.Quantity, discreteTable, false, nil)
}

func (h handler) HandleHoldingRegisters(r *modbus.HoldingRegistersRequest) ([]uint16, error) {
	h.s.sawClient(r.ClientAddr)
	return serve(h.s, r.UnitId, model.AreaHoldingRegister, r.Addr, r.Quantity, holdingTable, r.IsWrite, r.Args)
}

func (h handler) HandleInputRegisters(r *modbus.InputRegistersRequest) ([]uint16, error) {
	h.s.sawClient(r.ClientAddr)
	return serve[uint16](h.s, r.UnitId, model.AreaInputRegister, r.Addr, r.Quantity, inputTable, false, nil)
}
