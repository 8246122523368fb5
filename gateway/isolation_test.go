package gateway

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// blackhole: a listener whose accept queue is full, so connects hang
// (like a powered-off PLC behind a router).
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	lsa, _ := syscall.Getsockname(fd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lsa.(*syscall.SockaddrInet4).Port))
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c2, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c2.Close()
		t.Skip("cannot make connects hang here")
	}
	return addr
}

// One PLC unreachable (connects hang): the other PLC's tags flow, the dead
// one's are BAD, and shutdown is prompt.
func TestUnreachablePLCIsolatedAndShutdownPrompt(t *testing.T) {
	plc2 := listenPLC(t)
	plc2.SetHolding(1, 0, 456)
	var t0 time.Time
	t.Cleanup(func() {
		if t0.IsZero() {
			return
		}
		d := time.Since(t0)
		t.Logf("shutdown took %v", d)
		if d > 3*time.Second {
			t.Errorf("shutdown took %v", d)
		}
	})
	g, cancel := startGateway(t, pumpModel, map[string]string{"plc1": "tcp://" + blackhole(t), "plc2": plc2.URL()})
	sub := subscribe(t, g.BrokerAddr(), "acme/#")
	const p1 = "acme/plant/water/line1/pump1/"
	const p2 = "acme/plant/water/line1/pump2/"
	waitFor(t, 5*time.Second, "pump2 GOOD", func() bool { u, ok := sub.value(p2 + "flow"); return ok && u.Quality == "GOOD" && u.Value == 45.6 })
	waitFor(t, 5*time.Second, "pump1 BAD", func() bool { u, ok := sub.value(p1 + "flow"); return ok && u.Quality == "BAD" })
	for i := uint16(1); i <= 5; i++ {
		plc2.SetHolding(1, 0, 1000+i)
		want := float64(1000+i) / 10
		waitFor(t, 2*time.Second, "pump2 update", func() bool { u, ok := sub.value(p2 + "flow"); return ok && u.Value == want })
	}
	// startGateway's cleanup waits for Run; the one registered before it
	// runs after it and checks how long shutdown took.
	t0 = time.Now()
	cancel()
}

// A panic inside emit (a bug in the engine or fan-out; the supervisor
// recovers it as a failed session) must not leave the engine locked, or
// every source and the heartbeat ticker would block for good.
func TestEmitPanicReleasesEngine(t *testing.T) {
	g := &Gateway{} // no engine: Apply panics
	func() {
		defer func() { _ = recover() }()
		g.emit([]model.Sample{{Source: "p", Address: "a"}})
	}()
	if !g.mu.TryLock() {
		t.Fatal("engine mutex still locked after a panic in emit")
	}
	g.mu.Unlock()
}
