package opcua

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/model"
)

// testLogger logs to stderr with -v and when UNSGATE_TEST_LOG is set;
// otherwise discards.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("UNSGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func startSim(t testing.TB, opts sim.OPCUAOptions) *sim.OPCUAServer {
	t.Helper()
	srv, err := sim.StartOPCUA(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// testConfig is a config for a sim (or proxy) endpoint with short
// intervals.
func testConfig(endpoint string, tags ...Tag) Config {
	return Config{
		Name:                "ua1",
		Endpoint:            endpoint,
		SecurityPolicy:      "None",
		AcceptAnyServerCert: true,
		PublishingInterval:  20 * time.Millisecond,
		Poll:                50 * time.Millisecond,
		Timeout:             2 * time.Second,
		KeepAlive:           2 * time.Second,
		Tags:                tags,
	}
}

// tag binds an address text, parsed the way model files are.
func tag(t testing.TB, text string) Tag {
	t.Helper()
	a, err := model.ParseAddress(text, model.AddressOptions{})
	if err != nil {
		t.Fatalf("address %q: %v", text, err)
	}
	if a.OPCUA == nil {
		t.Fatalf("address %q is not an OPC UA address", text)
	}
	return Tag{Addr: *a.OPCUA}
}

// recorder collects what a source emits.
type recorder struct {
	mu      sync.Mutex
	latest  map[string]model.Sample
	all     map[string][]model.Sample
	batches int
	sizes   []int
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{latest: map[string]model.Sample{}, all: map[string][]model.Sample{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) emit(batch []model.Sample) {
	r.mu.Lock()
	r.batches++
	r.sizes = append(r.sizes, len(batch))
	for _, s := range batch {
		r.latest[s.Address] = s
		r.all[s.Address] = append(r.all[s.Address], s)
	}
	r.mu.Unlock()
	// Scribble over the batch: the source must not rely on it afterwards.
	for i := range batch {
		batch[i] = model.Sample{Address: "scribbled"}
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) get(key string) (model.Sample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.latest[key]
	return s, ok
}

func (r *recorder) history(key string) []model.Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all[key])
}

// wait polls cond (under the recorder's lock) until it holds or the
// deadline passes.
func (r *recorder) wait(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			ended, _ := runEnded.Load(t)
			t.Fatalf("timed out after %v waiting for %s (%v); latest: %s", d, what, ended, r.describe())
		case <-r.changed:
		case <-tick.C:
		}
	}
}

// waitValue waits until key's latest sample has quality q and value v.
func (r *recorder) waitValue(t testing.TB, key string, q model.Quality, v model.Value) {
	t.Helper()
	r.wait(t, fmt.Sprintf("%s = %v %v", key, v, q), 5*time.Second, func() bool {
		s, ok := r.latest[key]
		return ok && s.Quality == q && s.Value.Equal(v)
	})
}

func (r *recorder) describe() string {
	keys := make([]string, 0, len(r.latest))
	for k := range r.latest {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		s := r.latest[k]
		fmt.Fprintf(&b, "\n  %s: %v %v status=%#x", k, s.Value, s.Quality, s.Status)
	}
	return b.String()
}

// runEnded holds, per test, how a Run ended that was not cancelled, for
// the failure message of a wait that then cannot succeed.
var runEnded sync.Map

// running is a source's Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func run(t testing.TB, src connectors.Source, emit connectors.Emit) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := src.Run(ctx, emit)
		if ctx.Err() == nil {
			runEnded.Store(t, fmt.Sprintf("Run ended by itself: %v", err))
		}
		r.done <- err
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// supervise runs src under a Supervisor with a short backoff (initial,
// at most 5 times that) until stop, which waits for it to end; stop is
// also a cleanup and may be called more than once.
func supervise(t testing.TB, src connectors.Source, initial time.Duration, emit connectors.Emit) (sup *connectors.Supervisor, stop func()) {
	t.Helper()
	sup = connectors.NewSupervisor(src, connectors.Backoff{Initial: initial, Max: 5 * initial}, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx, emit); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); waitClosed(t, done, "the supervisor to stop") }) }
	t.Cleanup(stop)
	return sup, stop
}

// stop cancels Run and returns its result; Run must return promptly.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(5 * time.Second):
		buf := make([]byte, 4<<20)
		t.Fatalf("Run did not return within 5s of cancel:\n%s", buf[:runtime.Stack(buf, true)])
	}
	return nil
}

// ended waits for Run to return by itself.
func (r *running) ended(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		close(r.done)
		return err
	case <-time.After(within):
		t.Fatalf("Run did not end within %v", within)
	}
	return nil
}

func mustNew(t testing.TB, cfg Config) *Source {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// sharedSim is one sim server for the tests that neither stop nor renumber
// it: gopcua's server takes about two seconds to start under -race (it
// parses the standard node set), so each test adds its variables under a
// folder of its own instead of starting a server.
var shared struct {
	once sync.Once
	srv  *sim.OPCUAServer
	err  error
	seq  atomic.Int64
}

func sharedSim(t testing.TB) *sim.OPCUAServer {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = sim.StartOPCUA(sim.OPCUAOptions{}) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// folder returns a top-level folder name unique to this test run.
func folder(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s_%d", name, shared.seq.Add(1))
}

// logBuffer is a logger whose text output tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wireTap is a TCP proxy in front of an OPC UA server. It decodes the
// service messages passing through (security None: the bodies are plain),
// so tests see what went over the wire; it can hold all traffic (a server
// or network that stops answering without closing the connection), drop
// every connection, and rewrite requests on their way to the server.
type wireTap struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	msgs    []any // decoded requests and responses, in order
	hold    chan struct{}
	closed  chan struct{}
	rewrite func(req any) any // nil result: leave the request as it is
}

func startTap(t testing.TB, target string) *wireTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireTap{ln: ln, target: strings.TrimPrefix(target, "opc.tcp://"), conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	w.wg.Add(1)
	go w.accept()
	t.Cleanup(w.close)
	return w
}

func (w *wireTap) endpoint() string { return "opc.tcp://" + w.ln.Addr().String() }

func (w *wireTap) accept() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", w.target)
		if err != nil {
			c.Close()
			continue
		}
		w.mu.Lock()
		w.conns[c], w.conns[s] = struct{}{}, struct{}{}
		w.mu.Unlock()
		w.wg.Add(2)
		go w.pipe(s, c, true)
		go w.pipe(c, s, false)
	}
}

// pipe forwards whole chunks from src to dst, decoding MSG chunks.
func (w *wireTap) pipe(dst, src net.Conn, toServer bool) {
	defer w.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		w.mu.Lock()
		delete(w.conns, dst)
		delete(w.conns, src)
		w.mu.Unlock()
	}()
	r := bufio.NewReader(src)
	partial := map[uint32][]byte{}
	for {
		hdr := make([]byte, 8)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		size := binary.LittleEndian.Uint32(hdr[4:])
		if size < 8 || size > 64<<20 {
			return
		}
		chunk := make([]byte, size)
		copy(chunk, hdr)
		if _, err := io.ReadFull(r, chunk[8:]); err != nil {
			return
		}
		chunk = w.inspect(chunk, toServer, partial)
		if !w.waitHold() {
			return
		}
		if _, err := dst.Write(chunk); err != nil {
			return
		}
	}
}

// inspect records the service message a MSG chunk completes, and
// rewrites single-chunk requests when asked to.
func (w *wireTap) inspect(chunk []byte, toServer bool, partial map[uint32][]byte) []byte {
	if string(chunk[:3]) != "MSG" || len(chunk) < 24 {
		return chunk
	}
	reqID := binary.LittleEndian.Uint32(chunk[20:24])
	switch chunk[3] {
	case 'C':
		partial[reqID] = append(partial[reqID], chunk[24:]...)
		return chunk
	case 'A':
		delete(partial, reqID)
		return chunk
	}
	body, multi := partial[reqID], partial[reqID] != nil
	body = append(body, chunk[24:]...)
	delete(partial, reqID)
	typeID, v, err := ua.DecodeService(body)
	if err != nil {
		return chunk
	}
	w.mu.Lock()
	rewrite := w.rewrite
	w.mu.Unlock()
	if toServer && !multi {
		nv := w.rewriteURL(v)
		if rewrite != nil {
			if r := rewrite(v); r != nil {
				nv = r
			}
		}
		if nv != nil {
			head, err1 := typeID.Encode()
			enc, err2 := ua.Encode(nv)
			if err1 == nil && err2 == nil {
				out := append(slices.Clone(chunk[:24]), head...)
				out = append(out, enc...)
				binary.LittleEndian.PutUint32(out[4:], uint32(len(out)))
				chunk, v = out, nv
			}
		}
	}
	w.mu.Lock()
	w.msgs = append(w.msgs, v)
	w.mu.Unlock()
	return chunk
}

// rewriteURL points the endpoint URL of GetEndpoints and CreateSession at
// the server behind the tap: servers answer only for their own URLs.
func (w *wireTap) rewriteURL(v any) any {
	switch r := v.(type) {
	case *ua.GetEndpointsRequest:
		r.EndpointURL = "opc.tcp://" + w.target
		return r
	case *ua.CreateSessionRequest:
		r.EndpointURL = "opc.tcp://" + w.target
		return r
	}
	return nil
}

// waitHold blocks while traffic is held; false when the tap closes.
func (w *wireTap) waitHold() bool {
	w.mu.Lock()
	h := w.hold
	w.mu.Unlock()
	if h == nil {
		return true
	}
	select {
	case <-h:
		return true
	case <-w.closed:
		return false
	}
}

// stall holds all traffic in both directions from now on, keeping the
// connections open.
func (w *wireTap) stall() {
	w.mu.Lock()
	if w.hold == nil {
		w.hold = make(chan struct{})
	}
	w.mu.Unlock()
}

func (w *wireTap) resume() {
	w.mu.Lock()
	if w.hold != nil {
		close(w.hold)
		w.hold = nil
	}
	w.mu.Unlock()
}

// drop closes every connection, as a network failure would.
func (w *wireTap) drop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.conns {
		c.Close()
	}
}

func (w *wireTap) open() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

func (w *wireTap) close() {
	w.ln.Close()
	close(w.closed)
	w.drop()
	w.wg.Wait()
}

func (w *wireTap) setRewrite(f func(any) any) {
	w.mu.Lock()
	w.rewrite = f
	w.mu.Unlock()
}

// messagesOf returns the decoded messages of type T seen so far.
func messagesOf[T any](w *wireTap) []T {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []T
	for _, m := range w.msgs {
		if v, ok := m.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// waitClosed waits for done to close, failing with every goroutine's stack
// after 10s.
func waitClosed(t testing.TB, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 4<<20)
		t.Fatalf("timed out waiting for %s:\n%s", what, buf[:runtime.Stack(buf, true)])
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// ownGoroutines counts the goroutines that are not the in-process server's
// (gopcua's server package and the sim relay): a subscription orphaned by
// a dropped connection lives on in the server until its lifetime runs out,
// which is the server's business, not a leak of the source.
func ownGoroutines() (int, string) {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var own strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gopcua/opcua/server.") || strings.Contains(g, "connectors/sim.") {
			continue
		}
		n++
		own.WriteString(g)
		own.WriteString("\n\n")
	}
	return n, own.String()
}

// goroutinesAtMost waits for the source's goroutine count to settle at or
// below limit.
func goroutinesAtMost(t testing.TB, limit int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n, stacks := ownGoroutines()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want at most %d:\n%s", n, limit, stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewValidation(t *testing.T) {
	good := func() Config {
		return Config{Name: "ua1", Endpoint: "opc.tcp://plc:4840/path", SecurityPolicy: "None", AcceptAnyServerCert: true}
	}
	cases := []struct {
		name string
		edit func(*Config)
		want []string // every one must appear in the error
	}{
		{"no name", func(c *Config) { c.Name = "" }, []string{"name is empty"}},
		{"scheme", func(c *Config) { c.Endpoint = "tcp://plc:4840" }, []string{"scheme must be opc.tcp"}},
		{"no port", func(c *Config) { c.Endpoint = "opc.tcp://plc" }, []string{"port is missing"}},
		{"bad port", func(c *Config) { c.Endpoint = "opc.tcp://plc:70000" }, []string{"out of range"}},
		{"query", func(c *Config) { c.Endpoint = "opc.tcp://plc:4840/x?y=1" }, []string{"only opc.tcp://host:port[/path]"}},
		{"no host", func(c *Config) { c.Endpoint = "opc.tcp://:4840" }, []string{"host is missing"}},
		{"everything at once", func(c *Config) {
			c.PublishingInterval, c.SamplingInterval, c.Poll = -1, -2, -3
			c.Timeout, c.KeepAlive, c.SessionTimeout = -4, -5, -6
			c.QueueSize, c.Deadband = -1, math.NaN()
			c.MaxMonitoredItemsPerCall, c.MaxNodesPerRead = -1, -2
			c.Mode = 7
			c.SecurityPolicy = "Fancy"
		}, []string{"publishing interval -1ns is negative", "sampling interval -2ns", "poll interval -3ns", "timeout -4ns",
			"keep-alive -5ns", "session timeout -6ns", "queue size -1", "deadband NaN", "max monitored items per call -1",
			"max nodes per read -2", "unknown mode 7", `security_policy "Fancy"`}},
		{"queue too large", func(c *Config) { c.QueueSize = MaxQueueSize + 1 }, []string{"queue size 65536 out of range"}},
		{"too short", func(c *Config) { c.PublishingInterval, c.KeepAlive = time.Microsecond, time.Millisecond },
			[]string{"publishing interval 1µs is below 1ms", "keep-alive 1ms is below 10ms"}},
		{"tags", func(c *Config) {
			c.Tags = []Tag{
				{Key: "empty"},
				{Addr: model.OPCUAAddress{Namespace: 2, IDType: 'i', ID: "4294967296"}},
				{Addr: model.OPCUAAddress{Namespace: 2, IDType: 'g', ID: "not-a-guid"}},
				{Addr: model.OPCUAAddress{Namespace: 2, IDType: 'b', ID: "%%%"}},
				{Addr: model.OPCUAAddress{NamespaceURI: "urn:x", IDType: 'x', ID: "1"}},
				{Addr: model.OPCUAAddress{BrowsePath: []string{"Objects", ""}}},
				{Addr: model.OPCUAAddress{Namespace: 2, IDType: 's', ID: "A", Sampling: -1, QueueSize: -1, Deadband: math.Inf(1)}},
				{Addr: model.OPCUAAddress{Namespace: 2, IDType: 's', ID: "B"}, Poll: -1},
				{Key: "same", Addr: model.OPCUAAddress{Namespace: 2, IDType: 's', ID: "C"}},
				{Key: "same", Addr: model.OPCUAAddress{Namespace: 2, IDType: 's', ID: "D"}},
			}
		}, []string{"tag 1 (empty): no node id and no browse path", "numeric identifier \"4294967296\"", `GUID "not-a-guid"`,
			`opaque identifier "%%%"`, "unknown identifier type 'x'", "browse path segment 2 is empty",
			"sampling interval -1ns is negative", "queue size -1 out of range", "deadband +Inf", "poll interval -1ns is negative",
			"tag 10 (same): the key is already bound to ns=2;s=C, not ns=2;s=D"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good()
			tc.edit(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, connectors.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestNewDefaultsAndMerge(t *testing.T) {
	a := func(id string, sampling time.Duration, queue int, deadband float64) model.OPCUAAddress {
		return model.OPCUAAddress{Namespace: 2, IDType: 's', ID: id, Sampling: sampling, QueueSize: queue, Deadband: deadband}
	}
	src, err := New(Config{
		Name: "ua1", Endpoint: "opc.tcp://plc:4840", SecurityPolicy: "None", AcceptAnyServerCert: true,
		PublishingInterval: 500 * time.Millisecond, Deadband: 0.5,
		Tags: []Tag{
			{Addr: a("X", 0, 0, 0)},
			{Addr: a("X", 200*time.Millisecond, 5, 0.2), Poll: 3 * time.Second},
			{Addr: a("X", 0, 50, 1), Poll: 300 * time.Millisecond},
			{Key: "y", Addr: a("Y", 0, 0, 0)},
			{Addr: model.OPCUAAddress{BrowsePath: []string{"Objects", "2:Line1", "Speed"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := src.cfg
	if c.SamplingInterval != 500*time.Millisecond || c.QueueSize != DefaultQueueSize || c.Poll != DefaultPoll ||
		c.Timeout != DefaultTimeout || c.KeepAlive != DefaultKeepAlive || c.SessionTimeout != DefaultSessionTimeout || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	want := []string{"/Objects/2:Line1/Speed", "ns=2;s=X", "y"}
	if got := src.Addresses(); !slices.Equal(got, want) {
		t.Fatalf("Addresses() = %v, want %v", got, want)
	}
	// Defaults apply per tag first (the first tag has sampling 500ms, queue
	// 10, deadband 0.5, poll 1s), then the smallest / largest wins.
	x := src.binds[1]
	if x.sampling != 200*time.Millisecond || x.queue != 50 || x.deadband != 0.2 || x.poll != 300*time.Millisecond || x.node.String() != "ns=2;s=X" {
		t.Fatalf("merged binding %+v: want sampling 200ms, queue 50, deadband 0.2, poll 300ms", x)
	}
	if y := src.binds[2]; y.sampling != 500*time.Millisecond || y.queue != DefaultQueueSize || y.deadband != 0.5 || y.poll != DefaultPoll {
		t.Fatalf("binding with defaults %+v", y)
	}
	if src.binds[0].node != nil {
		t.Fatal("a browse path has no node before connecting")
	}
	src.Addresses()[0] = "changed"
	if src.Addresses()[0] == "changed" {
		t.Fatal("Addresses returned the source's own slice")
	}
}

func TestRunTwiceAndCancelled(t *testing.T) {
	srv := sharedSim(t)
	node := srv.AddVariable(folder(t)+"/V", 1.0)
	src := mustNew(t, testConfig(srv.Endpoint(), tag(t, node)))
	rec := newRecorder()
	r := run(t, src, rec.emit)
	rec.waitValue(t, node, model.QualityGood, model.FloatValue(1))
	if err := src.Run(context.Background(), rec.emit); err == nil || !strings.Contains(err.Error(), "while a session is running") {
		t.Fatalf("second Run: %v", err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("cancelled Run returned %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := src.Run(ctx, rec.emit); err != nil {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestConnectFailure(t *testing.T) {
	addr := closedAddr(t)
	src := mustNew(t, testConfig("opc.tcp://"+addr, Tag{Addr: model.OPCUAAddress{Namespace: 1, IDType: 'i', ID: "1"}}))
	err := src.Run(context.Background(), newRecorder().emit)
	if err == nil || errors.Is(err, connectors.ErrConfig) || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("Run = %v; want a connect error that is not a config error", err)
	}
	if st := src.Stats(); st.Connects != 0 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A server that stops answering without closing the connection is noticed
// within KeepAlive, and the session then ends without waiting for
// goodbyes that cannot arrive.
func TestKeepAliveStall(t *testing.T) {
	srv := sharedSim(t)
	node := srv.AddVariable(folder(t)+"/V", 1.0)
	tap := startTap(t, srv.Endpoint())
	cfg := testConfig(tap.endpoint(), tag(t, node))
	cfg.KeepAlive = 2 * time.Second
	src := mustNew(t, cfg)
	rec := newRecorder()
	r := run(t, src, rec.emit)
	rec.waitValue(t, node, model.QualityGood, model.FloatValue(1))

	tap.stall()
	stalled := time.Now()
	err := r.ended(t, 10*time.Second)
	took := time.Since(stalled)
	tap.resume()
	// The watchdog's read or the silent subscription, whichever first.
	if err == nil || !strings.Contains(err.Error(), "keep-alive") {
		t.Fatalf("Run = %v, want a keep-alive error", err)
	}
	// KeepAlive, plus half of it as scheduling slack for a loaded 2-core
	// machine; noticing only after two intervals would fail.
	if took > cfg.KeepAlive*3/2 {
		t.Fatalf("stall noticed after %v, want within KeepAlive (%v)", took, cfg.KeepAlive)
	}
	t.Logf("stall noticed and session ended after %v", took)
}

// The server stopped and started again mid-run, with its namespace moved
// and a node renumbered: under a Supervisor the tags go BAD while it is
// down and come back by themselves; the namespace-URI and browse-path
// bindings follow the renumbering, the fixed ns= binding does not (it now
// names a node in another namespace) and is BAD with BadNodeIdUnknown.
// Then a poll-mode source resolves the same bindings on the renumbered
// server.
func TestServerRestartFollowed(t *testing.T) {
	srv := startSim(t, sim.OPCUAOptions{})
	srv.AddVariable("Line1/A", 1.0)
	srv.AddVariable("Line1/B", 2.0)
	fixed := srv.AddVariable("Line1/C", 3.0)
	byURI := "nsu=" + srv.NamespaceURI() + ";s=Line1.A"
	byPath := "/Objects/Line1/B"
	keys := []string{byURI, byPath, fixed}
	tags := []Tag{tag(t, byURI), tag(t, byPath), tag(t, fixed)}

	for _, mode := range []Mode{ModeSubscribe, ModePoll} {
		cfg := testConfig(srv.Endpoint(), tags...)
		cfg.Name, cfg.Mode = mode.String(), mode
		cfg.Timeout = 500 * time.Millisecond
		src := mustNew(t, cfg)
		rec := newRecorder()
		sup, stop := supervise(t, src, 20*time.Millisecond, rec.emit)

		if mode == ModeSubscribe {
			rec.waitValue(t, keys[0], model.QualityGood, model.FloatValue(1))
			rec.waitValue(t, keys[1], model.QualityGood, model.FloatValue(2))
			rec.waitValue(t, keys[2], model.QualityGood, model.FloatValue(3))
			if err := srv.Stop(); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				rec.waitValue(t, k, model.QualityBad, model.Null())
			}
			srv.SetExtraNamespaces("urn:unsgate:test:extra")
			srv.Renumber("Line1/B", "i=5001")
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			if srv.NamespaceIndex() == 1 {
				t.Fatal("the sim namespace did not move")
			}
		}
		srv.Set("Line1/A", 11.0)
		srv.Set("Line1/B", 22.0)
		rec.waitValue(t, keys[0], model.QualityGood, model.FloatValue(11))
		rec.waitValue(t, keys[1], model.QualityGood, model.FloatValue(22))
		rec.wait(t, "fixed binding BAD with BadNodeIdUnknown", 5*time.Second, func() bool {
			s := rec.latest[keys[2]]
			return s.Quality == model.QualityBad && s.Status == uint32(ua.StatusBadNodeIDUnknown)
		})
		if st := sup.Status(); mode == ModeSubscribe && (st.Sessions < 2 || st.Failures < 1 || st.State != connectors.StateConnected) {
			t.Fatalf("supervisor status %+v: want a failed session and a connected one", st)
		}
		stop()
	}
}

// Connect and disconnect many times: no goroutine is left behind, and
// every session deletes its subscription and closes its session on the way
// out, so nothing piles up on the server.
func TestSessionsLeaveNothingBehind(t *testing.T) {
	srv := sharedSim(t)
	node := srv.AddVariable(folder(t)+"/V", 1.0)
	tap := startTap(t, srv.Endpoint())
	src := mustNew(t, testConfig(tap.endpoint(), tag(t, node)))

	cycle := func() {
		rec := newRecorder()
		r := run(t, src, rec.emit)
		rec.waitValue(t, node, model.QualityGood, model.FloatValue(1))
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the connection to close", 5*time.Second, func() bool { return tap.open() == 0 })
	}
	cycle() // warm up: lazily started library goroutines
	before, _ := ownGoroutines()
	const cycles = 15
	for range cycles {
		cycle()
	}
	goroutinesAtMost(t, before, 5*time.Second)

	subs := len(messagesOf[*ua.CreateSubscriptionRequest](tap))
	deletes := messagesOf[*ua.DeleteSubscriptionsResponse](tap)
	closes := messagesOf[*ua.CloseSessionResponse](tap)
	if subs != cycles+1 || len(deletes) != cycles+1 || len(closes) != cycles+1 {
		t.Fatalf("%d sessions: %d subscriptions created, %d deleted, %d sessions closed", cycles+1, subs, len(deletes), len(closes))
	}
	for _, d := range deletes {
		if len(d.Results) != 1 || d.Results[0] != ua.StatusOK {
			t.Fatalf("delete subscriptions: %v", d.Results)
		}
	}
	if items := messagesOf[*ua.CreateMonitoredItemsRequest](tap); len(items) != cycles+1 {
		t.Fatalf("%d CreateMonitoredItems for %d sessions", len(items), cycles+1)
	}

	// Sessions broken by the network, under a supervisor: each new session
	// subscribes once, and nothing of the source is left running after.
	rec := newRecorder()
	_, stop := supervise(t, src, 10*time.Millisecond, rec.emit)
	created := len(messagesOf[*ua.CreateSubscriptionRequest](tap))
	for i := range 5 {
		rec.wait(t, "a value", 5*time.Second, func() bool { return rec.latest[node].Quality == model.QualityGood })
		waitFor(t, "the new subscription", 5*time.Second, func() bool {
			return len(messagesOf[*ua.CreateSubscriptionRequest](tap)) == created+i+1
		})
		rec.mu.Lock()
		rec.latest = map[string]model.Sample{}
		rec.mu.Unlock()
		tap.drop()
	}
	rec.wait(t, "a value", 5*time.Second, func() bool { return rec.latest[node].Quality == model.QualityGood })
	stop()
	if n := len(messagesOf[*ua.CreateSubscriptionRequest](tap)) - created; n != 6 {
		t.Fatalf("%d subscriptions created for 6 sessions", n)
	}
	waitFor(t, "the connection to close", 5*time.Second, func() bool { return tap.open() == 0 })
	goroutinesAtMost(t, before, 5*time.Second)
}

// A server that loses the source's subscription while the connection
// stays up (gopcua's client reports nothing: no keep-alive is passed on,
// and the unanswered publish requests just time out) is noticed within
// KeepAlive by the missing CurrentTime samples: the tags go BAD, and under
// a Supervisor a new session subscribes again and values flow.
func TestSubscriptionLostNoticed(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	node := srv.AddVariable(dir+"/V", 1.0)
	cfg := testConfig(srv.Endpoint(), tag(t, node))
	cfg.KeepAlive = 2 * time.Second
	src := mustNew(t, cfg)
	rec := newRecorder()
	sup, _ := supervise(t, src, 20*time.Millisecond, rec.emit)
	rec.waitValue(t, node, model.QualityGood, model.FloatValue(1))

	if n := srv.DropSubscriptions(); n < 1 {
		t.Fatalf("DropSubscriptions = %d, want the source's", n)
	}
	dropped := time.Now()
	rec.wait(t, "the tag BAD", 10*time.Second, func() bool { return rec.latest[node].Quality == model.QualityBad })
	took := time.Since(dropped)
	// KeepAlive, plus half of it as scheduling slack for a loaded 2-core
	// machine; noticing only after two intervals would fail.
	if took > cfg.KeepAlive*3/2 {
		t.Fatalf("lost subscription noticed after %v, want within KeepAlive (%v)", took, cfg.KeepAlive)
	}
	if st := sup.Status(); !strings.Contains(st.LastError, "silent for 2s") || !strings.Contains(st.LastError, "i=2258") {
		t.Fatalf("supervisor's last error %q, want the silent subscription", st.LastError)
	}
	t.Logf("lost subscription noticed after %v", took)

	srv.Set(dir+"/V", 2.0)
	rec.waitValue(t, node, model.QualityGood, model.FloatValue(2))
	if st := src.Stats(); st.Connects < 2 || st.Errors < 1 {
		t.Fatalf("stats %+v: want a failed session and a new one", st)
	}
}
