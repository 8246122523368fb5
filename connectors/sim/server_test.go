package sim

import (
	"errors"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/simonvetter/modbus"
	"github.com/unsgate/unsgate/model"
)

func listen(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, s *Server, unit uint8, timeout time.Duration) *modbus.ModbusClient {
	t.Helper()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{
		URL:     s.URL(),
		Timeout: timeout,
		Logger:  log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetUnitId(unit); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAddrAndURL(t *testing.T) {
	s := listen(t)
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("Addr() = %q (err %v), want 127.0.0.1:<port>", s.Addr(), err)
	}
	if s.URL() != "tcp://"+s.Addr() {
		t.Fatalf("URL() = %q", s.URL())
	}
}

func TestReadsEveryArea(t *testing.T) {
	s := listen(t)
	s.SetHolding(1, 10, 1, 2, 0xffff)
	s.SetInput(1, 65533, 7, 8, 9) // ends exactly at the last address
	s.SetCoil(1, 3, true, false, true)
	s.SetDiscrete(1, 0, false, true)
	c := dial(t, s, 1, 2*time.Second)

	if got, err := c.ReadRegisters(9, 5, modbus.HOLDING_REGISTER); err != nil || !slices.Equal(got, []uint16{0, 1, 2, 0xffff, 0}) {
		t.Errorf("holding 9+5 = %v, %v", got, err)
	}
	if got, err := c.ReadRegisters(65533, 3, modbus.INPUT_REGISTER); err != nil || !slices.Equal(got, []uint16{7, 8, 9}) {
		t.Errorf("input 65533+3 = %v, %v", got, err)
	}
	if got, err := c.ReadCoils(2, 5); err != nil || !slices.Equal(got, []bool{false, true, false, true, false}) {
		t.Errorf("coils 2+5 = %v, %v", got, err)
	}
	if got, err := c.ReadDiscreteInputs(0, 2); err != nil || !slices.Equal(got, []bool{false, true}) {
		t.Errorf("discrete 0+2 = %v, %v", got, err)
	}
	// The areas are separate tables.
	if got, err := c.ReadRegisters(10, 1, modbus.INPUT_REGISTER); err != nil || got[0] != 0 {
		t.Errorf("input 10 = %v, %v; want 0", got, err)
	}
}

func TestClientWritesLandInBank(t *testing.T) {
	s := listen(t)
	c := dial(t, s, 1, 2*time.Second)
	if err := c.WriteRegister(5, 42); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteRegisters(100, []uint16{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteCoil(7, true); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteCoils(20, []bool{true, false, true}); err != nil {
		t.Fatal(err)
	}
	if got := s.Holding(1, 5, 1); got[0] != 42 {
		t.Errorf("holding 5 = %v", got)
	}
	if got := s.Holding(1, 99, 5); !slices.Equal(got, []uint16{0, 1, 2, 3, 0}) {
		t.Errorf("holding 99+5 = %v", got)
	}
	if got := s.Coil(1, 6, 2); !slices.Equal(got, []bool{false, true}) {
		t.Errorf("coil 6+2 = %v", got)
	}
	if got := s.Coil(1, 20, 3); !slices.Equal(got, []bool{true, false, true}) {
		t.Errorf("coil 20+3 = %v", got)
	}
}

func TestUnknownUnitAnswersGatewayTargetFailed(t *testing.T) {
	s := listen(t, WithUnits(1, 2))
	if s.Holding(9, 0, 1) != nil {
		t.Fatal("Holding on an unknown unit returned data")
	}
	c := dial(t, s, 9, 2*time.Second)
	if _, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); !errors.Is(err, modbus.ErrGWTargetFailedToRespond) {
		t.Fatalf("read unit 9: err = %v, want %v", err, modbus.ErrGWTargetFailedToRespond)
	}
	if err := c.WriteCoil(0, true); !errors.Is(err, modbus.ErrGWTargetFailedToRespond) {
		t.Fatalf("write unit 9: err = %v", err)
	}
	// Unit 2 exists without data; writing to unit 9 creates it.
	c2 := dial(t, s, 2, 2*time.Second)
	if got, err := c2.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err != nil || got[0] != 0 {
		t.Fatalf("read unit 2 = %v, %v", got, err)
	}
	s.SetHolding(9, 0, 77)
	if got, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err != nil || got[0] != 77 {
		t.Fatalf("read unit 9 after SetHolding = %v, %v", got, err)
	}
}

func TestFailRange(t *testing.T) {
	s := listen(t)
	s.SetHolding(1, 0, make([]uint16, 40)...)
	s.FailRange(1, model.AreaHoldingRegister, 10, 19, modbus.ErrIllegalDataAddress)
	s.FailRange(1, model.AreaCoil, 0, 0, modbus.ErrServerDeviceBusy)
	s.FailRange(1, model.AreaInputRegister, 0, 0, errors.New("not a modbus error"))
	c := dial(t, s, 1, 2*time.Second)

	for _, tc := range []struct {
		addr, n uint16
		want    error
	}{
		{0, 10, nil},
		{5, 6, modbus.ErrIllegalDataAddress}, // last register touches 10
		{19, 2, modbus.ErrIllegalDataAddress},
		{12, 1, modbus.ErrIllegalDataAddress},
		{0, 40, modbus.ErrIllegalDataAddress}, // spans the whole rule
		{20, 10, nil},
	} {
		_, err := c.ReadRegisters(tc.addr, tc.n, modbus.HOLDING_REGISTER)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("read holding %d+%d: err = %v, want %v", tc.addr, tc.n, err, tc.want)
		}
	}
	if err := c.WriteRegister(15, 1); !errors.Is(err, modbus.ErrIllegalDataAddress) {
		t.Errorf("write into failed range: err = %v", err)
	}
	if s.Holding(1, 15, 1)[0] != 0 {
		t.Error("a refused write changed the bank")
	}
	if _, err := c.ReadCoils(0, 1); !errors.Is(err, modbus.ErrServerDeviceBusy) {
		t.Errorf("coil 0: err = %v, want busy", err)
	}
	if _, err := c.ReadRegisters(0, 1, modbus.INPUT_REGISTER); !errors.Is(err, modbus.ErrServerDeviceFailure) {
		t.Errorf("input 0: err = %v, want server device failure", err)
	}
	// Another unit is not affected.
	s.SetHolding(2, 10, 5)
	c2 := dial(t, s, 2, 2*time.Second)
	if _, err := c2.ReadRegisters(10, 1, modbus.HOLDING_REGISTER); err != nil {
		t.Errorf("unit 2 holding 10: %v", err)
	}

	// Clearing one rule leaves the others.
	s.FailRange(1, model.AreaHoldingRegister, 10, 19, nil)
	if _, err := c.ReadRegisters(0, 40, modbus.HOLDING_REGISTER); err != nil {
		t.Errorf("after clearing: %v", err)
	}
	if _, err := c.ReadCoils(0, 1); !errors.Is(err, modbus.ErrServerDeviceBusy) {
		t.Errorf("coil rule was cleared too: err = %v", err)
	}
	s.ClearFailures()
	if _, err := c.ReadCoils(0, 1); err != nil {
		t.Errorf("after ClearFailures: %v", err)
	}
}

func TestFailRangeProtocolErrorDropsConnection(t *testing.T) {
	s := listen(t)
	s.FailRange(1, model.AreaHoldingRegister, 0, 0, modbus.ErrProtocolError)
	c := dial(t, s, 1, 2*time.Second)
	if _, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err == nil {
		t.Fatal("read succeeded")
	}
	// The connection is gone: even a request outside the rule fails.
	if _, err := c.ReadRegisters(5, 1, modbus.HOLDING_REGISTER); err == nil {
		t.Fatal("read on the dropped connection succeeded")
	}
	c2 := dial(t, s, 1, 2*time.Second)
	if _, err := c2.ReadRegisters(5, 1, modbus.HOLDING_REGISTER); err != nil {
		t.Fatalf("new connection: %v", err)
	}
}

func TestRequestsCounter(t *testing.T) {
	s := listen(t)
	s.FailRange(1, model.AreaCoil, 0, 0, modbus.ErrIllegalDataAddress)
	c := dial(t, s, 1, 2*time.Second)
	before := s.Requests()
	for i := range 7 {
		if _, err := c.ReadRegisters(uint16(i*10), 10, modbus.HOLDING_REGISTER); err != nil {
			t.Fatal(err)
		}
	}
	c.ReadCoils(0, 1)     // exception: still a request
	c.WriteRegister(0, 1) // write
	c.ReadCoils(0, 0x7d1) // quantity 2001: the library refuses it before the bank
	if got := s.Requests() - before; got != 9 {
		t.Fatalf("Requests grew by %d, want 9", got)
	}
}

func TestConnectionsCounter(t *testing.T) {
	s := listen(t)
	c := dial(t, s, 1, 2*time.Second)
	for range 3 {
		if _, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Connections(); n != 1 {
		t.Fatalf("Connections = %d after 3 reads on one connection, want 1", n)
	}
	c.Close()
	c2 := dial(t, s, 1, 2*time.Second)
	if _, err := c2.ReadCoils(0, 1); err != nil {
		t.Fatal(err)
	}
	if n := s.Connections(); n != 2 {
		t.Fatalf("Connections = %d after a second connection, want 2", n)
	}
}

func TestLatencyMakesClientTimeOut(t *testing.T) {
	s := listen(t)
	s.SetLatency(time.Hour)
	c := dial(t, s, 1, 50*time.Millisecond)
	if _, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); !errors.Is(err, modbus.ErrRequestTimedOut) {
		t.Fatalf("err = %v, want timeout", err)
	}
	// Close must not wait for the held request.
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a held request")
	}
}

func TestCloseFreesPort(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	c := dial(t, s, 1, time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err == nil {
		t.Fatal("read from a closed server succeeded")
	}
	// The same port can be bound again at once: a restarted PLC.
	s2, err := Listen(addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", addr, err)
	}
	defer s2.Close()
	if s2.Addr() != addr {
		t.Fatalf("Addr = %s, want %s", s2.Addr(), addr)
	}
	c2 := dial(t, s2, 1, time.Second)
	if _, err := c2.ReadRegisters(0, 1, modbus.HOLDING_REGISTER); err != nil {
		t.Fatal(err)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen("no-port"); err == nil {
		t.Error("Listen without a port succeeded")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Listen(l.Addr().String())
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("Listen on a busy port: err = %v", err)
	}
}

func TestSetPastEndPanics(t *testing.T) {
	s := listen(t)
	for name, f := range map[string]func(){
		"SetHolding": func() { s.SetHolding(1, 65535, 1, 2) },
		"SetCoil":    func() { s.SetCoil(1, 65534, true, true, true) },
		"Input":      func() { s.Input(1, 65000, 1000) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s past the end did not panic", name)
				}
			}()
			f()
		}()
	}
	s.SetHolding(1, 65535, 9) // the last register itself is fine
	if got := s.Holding(1, 65535, 1); got[0] != 9 {
		t.Fatalf("holding 65535 = %v", got)
	}
}

// Concurrent clients and writers, for the race detector.
func TestConcurrentAccess(t *testing.T) {
	s := listen(t)
	var wg sync.WaitGroup
	for i := range 4 {
		c := dial(t, s, 1, 2*time.Second)
		wg.Go(func() {
			for j := range 50 {
				if _, err := c.ReadRegisters(0, 100, modbus.HOLDING_REGISTER); err != nil {
					t.Error(err)
					return
				}
				if err := c.WriteRegister(uint16(200+i), uint16(j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for j := range 500 {
			s.SetHolding(1, 0, uint16(j), uint16(j))
			s.FailRange(1, model.AreaCoil, 0, 0, nil)
		}
	})
	wg.Wait()
	if got := s.Holding(1, 200, 4); !slices.Equal(got, []uint16{49, 49, 49, 49}) {
		t.Fatalf("holding 200+4 = %v", got)
	}
}

// BenchmarkReadHolding125 is one full-size read over loopback: what a
// gateway benchmark against the simulator can expect per request.
func BenchmarkReadHolding125(b *testing.B) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{URL: s.URL(), Timeout: 2 * time.Second, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Open(); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ReadRegisters(0, 125, modbus.HOLDING_REGISTER); err != nil {
			b.Fatal(err)
		}
	}
}

// SetBeforeRead runs before each read is answered and may change what it
// answers; writes do not call it.
func TestSetBeforeRead(t *testing.T) {
	s := listen(t)
	var calls []string
	var mu sync.Mutex
	n := uint16(0)
	s.SetBeforeRead(func(unit uint8, area model.Area, addr, quantity uint16) {
		mu.Lock()
		n++
		calls = append(calls, area.String())
		v := n
		mu.Unlock()
		s.SetHolding(unit, addr, v)
	})
	c := dial(t, s, 1, 2*time.Second)
	for want := uint16(1); want <= 3; want++ {
		if got, err := c.ReadRegisters(5, 1, modbus.HOLDING_REGISTER); err != nil || got[0] != want {
			t.Fatalf("read %d = %v, %v", want, got, err)
		}
	}
	if err := c.WriteRegister(5, 100); err != nil {
		t.Fatal(err)
	}
	s.SetBeforeRead(nil)
	if got, err := c.ReadRegisters(5, 1, modbus.HOLDING_REGISTER); err != nil || got[0] != 100 {
		t.Fatalf("after removing the hook: %v, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 {
		t.Fatalf("hook called %d times: %v", len(calls), calls)
	}
}
