package modbus

// Session life cycle against real peers: silent unit ids, dead devices,
// hanging connects, reconnect cycles and cancelling with a request in
// flight.

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/model"
)

// waitWorkers waits up to limit for src's session workers to be at most
// want; it returns how many are left and how long it took.
func waitWorkers(src *Source, limit time.Duration, want int32) (int32, time.Duration) {
	t0 := time.Now()
	for {
		n := src.workers.Load()
		if n <= want || time.Since(t0) > limit {
			return n, time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blackhole returns host:port of a listener that never accepts and whose
// accept queue is full: further connects hang (SYNs are dropped), as with a
// powered-off PLC behind a router.
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
	// fill the accept queue
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// check that the next connect hangs
	if c2, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c2.Close()
		t.Skip("cannot make connects hang on this system")
	}
	return addr
}

func oneTag(t *testing.T, name, url string, timeout time.Duration) *Source {
	t.Helper()
	return newSource(t, Config{Name: name, URL: url, Timeout: timeout,
		Tags: []Tag{{Key: "x", Addr: holding(0, model.RawUint16)}}})
}

// A connect to a host that does not answer: Run gives up after Timeout,
// while the library's dial goes on for its fixed 5 s. The next Run does not
// dial beside it: it fails with ErrConnectPending after Timeout. Once the
// dial gave up, Run dials again.
func TestRunConnectHangOneDialAtATime(t *testing.T) {
	addr := blackhole(t)
	const timeout = 200 * time.Millisecond
	src := oneTag(t, "dead", "tcp://"+addr, timeout)

	t0 := time.Now()
	err := src.Run(context.Background(), func([]model.Sample) {})
	if !errors.Is(err, mb.ErrRequestTimedOut) || errors.Is(err, ErrConnectPending) || time.Since(t0) > 3*timeout {
		t.Fatalf("Run: %v after %v", err, time.Since(t0))
	}
	if n := src.workers.Load(); n != 1 {
		t.Fatalf("%d workers after the first Run, want 1 still dialing", n)
	}

	t0 = time.Now()
	err = src.Run(context.Background(), func([]model.Sample) {})
	took := time.Since(t0)
	if !errors.Is(err, ErrConnectPending) || took < timeout/2 || took > 3*timeout {
		t.Fatalf("second Run: %v after %v; want ErrConnectPending after about %v", err, took, timeout)
	}
	if n := src.workers.Load(); n != 1 {
		t.Fatalf("%d workers after the second Run, want still 1", n)
	}

	// cancelled while waiting for the previous attempt: nil at once
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := src.Run(ctx, func([]model.Sample) {}); err != nil {
		t.Fatalf("cancelled Run: %v", err)
	}

	n, gone := waitWorkers(src, 7*time.Second, 0)
	t.Logf("stuck dial ended %v after the second Run returned", gone)
	if n != 0 {
		t.Fatalf("dial still under way after %v", gone)
	}
	err = src.Run(context.Background(), func([]model.Sample) {})
	if !errors.Is(err, mb.ErrRequestTimedOut) || errors.Is(err, ErrConnectPending) {
		t.Fatalf("Run after the dial ended: %v", err)
	}
	if st := src.Stats(); st.Errors != 3 || st.Connects != 0 {
		t.Fatalf("stats %+v", st)
	}
	waitWorkers(src, 7*time.Second, 0)
}

// The same through the supervisor with a short backoff: never more than one
// dial per source, however many sessions it starts.
func TestSupervisorConnectHangDoesNotPileUp(t *testing.T) {
	addr := blackhole(t)
	src := oneTag(t, "dead", "tcp://"+addr, 100*time.Millisecond)
	sup := connectors.NewSupervisor(src, connectors.Backoff{Initial: 20 * time.Millisecond, Max: 40 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx, func([]model.Sample) {}); close(done) }()
	var peak int32
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		peak = max(peak, src.workers.Load())
	}
	cancel()
	<-done
	t.Logf("sessions %d, most workers at once %d", sup.Status().Sessions, peak)
	if sup.Status().Sessions < 5 {
		t.Errorf("only %d sessions", sup.Status().Sessions)
	}
	if peak != 1 {
		t.Errorf("%d session workers alive at once for one source, want 1", peak)
	}
	if n, took := waitWorkers(src, 7*time.Second, 0); n != 0 {
		t.Errorf("%d workers left %v after cancel", n, took)
	}
}

// Many reconnect cycles against a server that drops the connection on
// every read: no goroutine growth.
func TestRunReconnectCyclesNoLeak(t *testing.T) {
	srv, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.SetHolding(1, 0, 7)
	srv.FailRange(1, model.AreaHoldingRegister, 0, 0, mb.ErrProtocolError)
	src := oneTag(t, "flappy", srv.URL(), 500*time.Millisecond)
	sup := connectors.NewSupervisor(src, connectors.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Jitter: -1}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx, func([]model.Sample) {}); close(done) }()
	waitSessions := func(n uint64) {
		deadline := time.Now().Add(20 * time.Second)
		for sup.Status().Sessions < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d sessions", sup.Status().Sessions)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSessions(50)
	time.Sleep(100 * time.Millisecond)
	g1 := runtime.NumGoroutine()
	waitSessions(400)
	time.Sleep(100 * time.Millisecond)
	g2 := runtime.NumGoroutine()
	cancel()
	<-done
	t.Logf("goroutines after 50 sessions %d, after 400 %d; stats %+v", g1, g2, src.Stats())
	if g2 > g1+5 {
		t.Errorf("goroutines grew from %d to %d over 350 reconnects", g1, g2)
	}
	if n, _ := waitWorkers(src, 2*time.Second, 0); n != 0 {
		t.Errorf("%d workers left after cancel", n)
	}
}

// A PLC that stops answering (no FIN, no RST): each request times out and
// turns its tags BAD, and MaxTimeouts in a row end the session, so every tag
// is BAD once MaxTimeouts requests have timed out, not later. Other sources
// sharing the serialized emit keep flowing, even while a hung PLC holds a
// request for a whole (long) timeout.
//
// Both properties are checked by counting, not by the clock, so the test
// holds on a loaded CI machine: the BAD mark must come with the MaxTimeouts-th
// timeout, and the live source must deliver a run of polls while the hung
// source's single request is still outstanding.
func TestRunDeadPLCBadOtherSourceUnaffected(t *testing.T) {
	listen := func() *sim.Server {
		srv, err := sim.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	dead, hung, alive := listen(), listen(), listen()
	dead.SetHolding(1, 0, 1, 2, 3)
	hung.SetHolding(1, 0, 4)
	alive.SetHolding(1, 0, 9)
	const poll = 50 * time.Millisecond
	mk := func(name, url string, n int, timeout time.Duration) *Source {
		var tags []Tag
		for i := 0; i < n; i++ {
			tags = append(tags, Tag{Key: name + strconv.Itoa(i), Addr: holding(i*200, model.RawUint16)})
		}
		return newSource(t, Config{Name: name, URL: url, Poll: poll, Timeout: timeout, Tags: tags})
	}
	srcDead := mk("d", dead.URL(), 3, 300*time.Millisecond)
	// The hung PLC's timeout is far longer than the test needs: if its
	// outstanding request held up anything shared, the live source would
	// stall for that long.
	srcHung := mk("h", hung.URL(), 1, time.Minute)
	srcAlive := mk("a", alive.URL(), 1, 300*time.Millisecond)

	var mu sync.Mutex // like Gateway.mu
	last := map[string]model.Sample{}
	var aliveCount int
	var timeoutsAtBad uint64 // srcDead's timeouts when all its tags first read BAD
	allBad := func() bool {
		for i := 0; i < 3; i++ {
			if s, ok := last["d"+strconv.Itoa(i)]; !ok || s.Quality != model.QualityBad {
				return false
			}
		}
		return true
	}
	emit := func(b []model.Sample) {
		mu.Lock()
		defer mu.Unlock()
		wasBad := allBad()
		for _, s := range b {
			last[s.Address] = s
			if s.Source == "a" {
				aliveCount++
			}
		}
		if !wasBad && allBad() && timeoutsAtBad == 0 {
			timeoutsAtBad = srcDead.Stats().Timeouts
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sups := map[*Source]*connectors.Supervisor{}
	for _, s := range []*Source{srcDead, srcHung, srcAlive} {
		sup := connectors.NewSupervisor(s, connectors.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}, nil)
		sups[s] = sup
		wg.Add(1)
		go func() { defer wg.Done(); sup.Run(ctx, emit) }()
	}
	defer func() { cancel(); wg.Wait() }()
	waitQ := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		t0 := time.Now()
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return time.Since(t0)
			}
			if time.Since(t0) > limit {
				t.Fatalf("%s: not after %v", what, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	good := func(key string) func() bool {
		return func() bool { s, ok := last[key]; return ok && s.Quality == model.QualityGood }
	}
	for _, k := range []string{"d0", "d1", "d2", "h0", "a0"} {
		waitQ(k+" GOOD", 10*time.Second, good(k))
	}

	// The hung PLC holds its next request. From the moment that request
	// reaches it, the live source must poll on: 20 polls take 1 s at 50 ms,
	// and the hung request stays open for a minute.
	hung.SetLatency(time.Hour)
	r0 := hung.Requests()
	waitQ("a request held by the hung PLC", 10*time.Second, func() bool { return hung.Requests() > r0 })
	mu.Lock()
	c0 := aliveCount
	mu.Unlock()
	took := waitQ("20 live samples while the hung PLC holds a request", 30*time.Second,
		func() bool { return aliveCount-c0 >= 20 })
	if st := srcHung.Stats(); st.Timeouts != 0 {
		t.Fatalf("the hung request timed out before the check ended (%v): %+v", took, st)
	}
	t.Logf("20 live samples %v after the hung PLC took its request", took)

	// The dead PLC: its tags read BAD exactly when the MaxTimeouts-th
	// request has timed out.
	dead.SetLatency(time.Hour)
	took = waitQ("dead source BAD", 20*time.Second, allBad)
	mu.Lock()
	atBad := timeoutsAtBad
	mu.Unlock()
	t.Logf("all tags BAD %v after the PLC went silent, at %d timeouts; supervisor %+v", took, atBad, sups[srcDead].Status())
	if atBad != MaxTimeouts {
		t.Errorf("tags went BAD at %d timeouts, want %d", atBad, MaxTimeouts)
	}
	if st := srcDead.Stats(); st.Timeouts < MaxTimeouts || st.Errors < 1 {
		t.Errorf("dead source stats %+v", st)
	}
	// The live source still flows with one PLC hung and one reconnecting.
	mu.Lock()
	c0 = aliveCount
	mu.Unlock()
	waitQ("10 more live samples with the dead PLC reconnecting", 30*time.Second,
		func() bool { return aliveCount-c0 >= 10 })
}

// Cancelling with a request in flight: Run returns at once, and the worker
// (holding the socket) is gone within Timeout.
func TestRunCancelInFlightWorkerBounded(t *testing.T) {
	srv, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const timeout = 400 * time.Millisecond
	src := newSource(t, Config{Name: "p", URL: srv.URL(), Timeout: timeout, Poll: 20 * time.Millisecond,
		Tags: []Tag{{Key: "x", Addr: holding(0, model.RawUint16)}}})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan struct{}, 1)
	errc := make(chan error, 1)
	var after sync.Mutex
	returned := false
	go func() {
		errc <- src.Run(ctx, func([]model.Sample) {
			after.Lock()
			if returned {
				panic("emit after Run returned")
			}
			after.Unlock()
			select {
			case got <- struct{}{}:
			default:
			}
		})
	}()
	<-got
	srv.SetLatency(time.Hour)
	time.Sleep(60 * time.Millisecond) // a request is now in flight
	t0 := time.Now()
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	after.Lock()
	returned = true
	after.Unlock()
	// Waiting for the request in flight would take Timeout; half of it
	// leaves room for a loaded machine.
	if d := time.Since(t0); d > timeout/2 {
		t.Errorf("Run returned %v after cancel", d)
	}
	inflight := src.workers.Load()
	n, took := waitWorkers(src, 3*time.Second, 0)
	t.Logf("workers right after cancel %d; gone after %v; server requests %d", inflight, took, srv.Requests())
	if inflight != 1 {
		t.Errorf("expected the worker to still be in flight right after cancel")
	}
	// The worker ends when its read times out, within Timeout; a leaked
	// one would stay for the server's hour of latency.
	if n != 0 || took > 3*timeout {
		t.Errorf("worker gone after %v (left %d), Timeout %v", took, n, timeout)
	}
}

// silentUnitServer is a minimal Modbus TCP server (function code 3 only)
// that answers unit 1 with registers = 42 and never answers unit 2, as a
// TCP/RTU gateway does when one serial device behind it is switched off
// and the gateway is not configured to send exception 0x0B.
func silentUnitServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				hdr := make([]byte, 7)
				for {
					if _, err := readFull(c, hdr); err != nil {
						return
					}
					n := int(hdr[4])<<8 | int(hdr[5])
					pdu := make([]byte, n-1)
					if _, err := readFull(c, pdu); err != nil {
						return
					}
					if hdr[6] == 2 || pdu[0] != 3 {
						continue // silent
					}
					qty := int(pdu[3])<<8 | int(pdu[4])
					resp := []byte{hdr[0], hdr[1], 0, 0, 0, byte(3 + 2*qty), hdr[6], 3, byte(2 * qty)}
					for i := 0; i < qty; i++ {
						resp = append(resp, 0, 42)
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// DESIGN.md: "Modbus exception or timeout -> BAD for the tags of that
// request only". A unit id that never answers (several requests of it,
// more than MaxTimeouts) gets BAD with status 0, while the healthy unit 1
// on the same connection stays GOOD, is read at close to its poll rate, and
// the session never ends.
//
// Timeout is kept well below (StaleAfter+1) × Poll: every try of the
// silent unit holds the connection for Timeout, and longer than that the
// healthy unit's tags would rightly go stale. The 300 ms between the two
// leave room for a loaded CI machine (with 50 ms it failed there).
func TestRunSilentUnitLeavesOtherUnitsGood(t *testing.T) {
	addr := silentUnitServer(t)
	const poll, timeout = 100 * time.Millisecond, 100 * time.Millisecond
	tags := []Tag{{Key: "u1", Addr: model.ModbusAddress{UnitID: 1, Area: model.AreaHoldingRegister, Type: model.RawUint16, Bit: -1}}}
	for i := 0; i < MaxTimeouts+1; i++ {
		tags = append(tags, Tag{Key: "u2-" + strconv.Itoa(i),
			Addr: model.ModbusAddress{UnitID: 2, Area: model.AreaHoldingRegister, Register: uint16(i * 1000), Type: model.RawUint16, Bit: -1}})
	}
	src := newSource(t, Config{Name: "gw", URL: "tcp://" + addr, Poll: poll, Timeout: timeout, Tags: tags})
	if n := len(src.Requests()); n != MaxTimeouts+2 {
		t.Fatalf("%d requests, want %d", n, MaxTimeouts+2)
	}
	sup := connectors.NewSupervisor(src, connectors.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}, nil)
	var mu sync.Mutex
	var good1, notGood1 int
	bad2 := map[string]bool{}
	emit := func(b []model.Sample) {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range b {
			switch {
			case s.Address == "u1" && s.Quality == model.QualityGood:
				good1++
			case s.Address == "u1":
				notGood1++
			case s.Quality == model.QualityBad && s.Status == 0:
				bad2[s.Address] = true
			case s.Quality == model.QualityGood:
				t.Errorf("silent unit GOOD: %+v", s)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx, emit); close(done) }()
	time.Sleep(4 * time.Second)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	st := sup.Status()
	t.Logf("unit 1 (healthy): %d GOOD and %d not GOOD in 4s at a %v poll; unit 2 BAD: %v; supervisor %+v; stats %+v",
		good1, notGood1, poll, bad2, st, src.Stats())
	if notGood1 > 0 || good1 < 20 { // 40 polls in 4 s, less the silent unit's holds
		t.Errorf("healthy unit 1 disturbed by silent unit 2: %d GOOD, %d BAD or stale", good1, notGood1)
	}
	if st.Sessions != 1 || st.Failures != 0 {
		t.Errorf("session ended: %+v", st)
	}
	if len(bad2) < 2 {
		t.Errorf("silent unit's tags BAD: %v", bad2)
	}
}

// Every unit id silent at once (a gateway that lost its serial line, or a
// dead connection): holds do not apply and the session ends after
// MaxTimeouts × Timeout.
func TestRunAllUnitsSilentEndsSession(t *testing.T) {
	addr := silentUnitServer(t)
	const timeout = 150 * time.Millisecond
	var tags []Tag
	for i := 0; i < 2*MaxTimeouts; i++ {
		tags = append(tags, Tag{Key: "u2-" + strconv.Itoa(i),
			Addr: model.ModbusAddress{UnitID: 2, Area: model.AreaHoldingRegister, Register: uint16(i * 1000), Type: model.RawUint16, Bit: -1}})
	}
	src := newSource(t, Config{Name: "gw", URL: "tcp://" + addr, Poll: time.Minute, Timeout: timeout, Tags: tags})
	c := newCollector()
	t0 := time.Now()
	err := src.Run(context.Background(), c.emit)
	took := time.Since(t0)
	// Were the silent unit held, its next try would wait for the
	// minute-long poll; the slack above MaxTimeouts × Timeout is for a
	// loaded machine.
	if !errors.Is(err, mb.ErrRequestTimedOut) || took < MaxTimeouts*timeout || took > MaxTimeouts*timeout+2*time.Second {
		t.Fatalf("Run: %v after %v", err, took)
	}
	if st := src.Stats(); st.Timeouts != MaxTimeouts {
		t.Errorf("session ended after %d timeouts, want %d", st.Timeouts, MaxTimeouts)
	}
	var bad int
	for _, s := range c.samples() {
		if s.Quality != model.QualityBad || s.Status != 0 {
			t.Fatalf("sample %+v", s)
		}
		bad++
	}
	if bad != MaxTimeouts-1 {
		t.Fatalf("%d BAD samples before the session ended, want %d", bad, MaxTimeouts-1)
	}
}
