package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish/broker"
)

// The whole gateway, as `unsgate run` runs it, in a process of its own:
// a PLC whose ten counters step with every read (polled every 10 ms:
// 1,000 points/s), an external MQTT broker and Kafka. Both brokers go
// away, the gateway is killed with SIGKILL three seconds into the outage,
// the brokers come back and the gateway is started again on its data
// directory. Every value the PLC served (but those of its last moments
// before each stop, which the gateway may not have read through) reaches
// both brokers, first arrivals in order per tag.
//
// "Served" is counted when the PLC answers a read, so a SIGKILL can land
// between the PLC serving a value and the gateway storing it: that value is
// gone for every sink (no process can keep what it never received), and is
// not required. Values served in lastMoments before the kill, and before the
// final SIGTERM, may or may not arrive; if they do, they must be in order.
func TestGatewaySIGKILLDuringOutage(t *testing.T) {
	if cfg := os.Getenv("UNSGATE_GATEWAY_CHILD"); cfg != "" {
		gatewayChild(cfg)
		return
	}
	t.Parallel()
	const tags = 10
	plc := listenPLC(t)
	served := newServedLog(tags)
	plc.SetBeforeRead(func(unit uint8, area model.Area, addr, quantity uint16) {
		if area != model.AreaHoldingRegister {
			return
		}
		vals := served.next(int(addr), int(quantity))
		plc.SetHolding(unit, addr, vals...)
	})

	got := &tagValues{}
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	var mb *broker.Broker
	startMQTT := func() {
		t.Helper()
		var err error
		for range 50 {
			if mb, err = broker.StartWith(broker.Config{Addr: mqttAddr, Hooks: []mochi.Hook{&valueHook{got: got}}}); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
	}
	kport, kdir := freeTCPPort(t), t.TempDir()
	var kc *kfake.Cluster
	startKafka := func() {
		t.Helper()
		var err error
		for range 50 {
			if kc, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(kport), kfake.DataDir(kdir), kfake.SeedTopics(3, "uns.v1.values")); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
	}
	startMQTT()
	startKafka()
	defer func() {
		if mb != nil {
			mb.Close()
		}
		if kc != nil {
			kc.Close()
		}
	}()

	dir := t.TempDir()
	var model strings.Builder
	model.WriteString("base: acme/plant/area\ntypes:\n  Counters:\n    tags:\n")
	for i := range tags {
		fmt.Fprintf(&model, "      c%d: {address: \"holding:%d\"}\n", i, i)
	}
	model.WriteString("assets:\n  line/cell: {type: Counters, source: plc}\n")
	cfg := fmt.Sprintf(`id: gw-kill
models: [m.yaml]
data_dir: data
shutdown_timeout: 10s
http: {listen: "127.0.0.1:0"}
sources:
  plc: {url: %q, poll: 10ms, timeout: 500ms, backoff: {initial: 50ms, max: 200ms}}
sinks:
  mqtt: {url: "mqtt://%s"}
  kafka: {brokers: ["127.0.0.1:%d"], linger: 2ms}
`, plc.URL(), mqttAddr, kport)
	for name, text := range map[string]string{"m.yaml": model.String(), "gw.yaml": cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// First life: values flow for 2 s, then both brokers go; 3 s later
	// the gateway is killed.
	child, stderr := startGatewayChild(t, filepath.Join(dir, "gw.yaml"))
	waitUntil(t, "values at the broker", 20*time.Second, func() bool { return got.count() > 500 })
	time.Sleep(time.Second)
	mb.Close()
	mb = nil
	kc.Close()
	kc = nil
	outageStart := time.Now()
	time.Sleep(3 * time.Second)
	killed := time.Now()
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	duringOutage := served.between(outageStart, killed.Add(-300*time.Millisecond))
	if duringOutage < 1000 {
		t.Fatalf("only %d values served during the outage; stderr:\n%s", duringOutage, stderr)
	}

	// Second life: brokers back, the gateway starts on its data directory,
	// runs 3 s and stops cleanly.
	startMQTT()
	startKafka()
	restarted := time.Now()
	child, stderr = startGatewayChild(t, filepath.Join(dir, "gw.yaml"))
	time.Sleep(3 * time.Second)
	stopped := time.Now()
	child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Fatalf("second life: %v; stderr:\n%s", err, stderr)
	}
	want := served.in(time.Time{}, killed.Add(-lastMoments))
	for topic, vs := range served.in(restarted, stopped.Add(-lastMoments)) {
		want[topic] = append(want[topic], vs...)
	}

	total := 0
	for _, vs := range want {
		total += len(vs)
	}
	t.Logf("%d values served in all; %d during the outage before the kill", total, duringOutage)
	got.check(t, "mqtt", want) // not fatal: Kafka is checked too, so a value missing at both sinks shows as such
	kafkaGot := &tagValues{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", kport)), kgo.ConsumeTopics("uns.v1.values"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !kafkaGot.covers(want) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { kafkaGot.add(string(r.Key), r.Value) })
	}
	kafkaGot.check(t, "kafka", want)
}

// lastMoments is how long before a stop (SIGKILL or SIGTERM) a value the
// PLC served may still be on its way into the gateway.
const lastMoments = 300 * time.Millisecond

// gatewayChild is `unsgate run -config cfg`: load, build, run until
// SIGTERM.
func gatewayChild(cfgPath string) {
	cfg, m, plan, err := Load(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	g, err := New(cfg, m, plan, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := g.Run(ctx, nil); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func startGatewayChild(t *testing.T, cfg string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGatewaySIGKILLDuringOutage$")
	cmd.Env = append(os.Environ(), "UNSGATE_GATEWAY_CHILD="+cfg)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, stderr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servedLog is what the PLC answered: per register, the value of each
// read (1, 2, 3, ...) and when.
type servedLog struct {
	mu    sync.Mutex
	vals  [][]uint16
	times [][]time.Time
}

func newServedLog(n int) *servedLog {
	return &servedLog{vals: make([][]uint16, n), times: make([][]time.Time, n)}
}

// next steps the counters of registers addr..addr+n-1 and returns them.
func (s *servedLog) next(addr, n int) []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint16, n)
	now := time.Now()
	for i := range n {
		r := addr + i
		if r >= len(s.vals) {
			continue
		}
		v := uint16(len(s.vals[r]) + 1)
		s.vals[r] = append(s.vals[r], v)
		s.times[r] = append(s.times[r], now)
		out[i] = v
	}
	return out
}

// in returns, per tag topic, the values served in [from, to).
func (s *servedLog) in(from, to time.Time) map[string][]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]int{}
	for r, ts := range s.times {
		topic := fmt.Sprintf("acme/plant/area/line/cell/c%d", r)
		for i, at := range ts {
			if !at.Before(from) && at.Before(to) {
				out[topic] = append(out[topic], int(s.vals[r][i]))
			}
		}
	}
	return out
}

func (s *servedLog) between(from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ts := range s.times {
		for _, at := range ts {
			if !at.Before(from) && at.Before(to) {
				n++
			}
		}
	}
	return n
}

// tagValues collects received values per topic, in arrival order.
type tagValues struct {
	mu sync.Mutex
	by map[string][]int
	n  int
}

func (g *tagValues) add(topic string, payload []byte) {
	var v struct {
		Value int `json:"value"`
	}
	if json.Unmarshal(payload, &v) != nil || !strings.HasPrefix(topic, "acme/plant/") {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.by == nil {
		g.by = map[string][]int{}
	}
	g.by[topic] = append(g.by[topic], v.Value)
	g.n++
}

func (g *tagValues) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

func (g *tagValues) covers(want map[string][]int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for topic, vs := range want {
		seen := map[int]bool{}
		for _, v := range g.by[topic] {
			seen[v] = true
		}
		for _, v := range vs {
			if !seen[v] {
				return false
			}
		}
	}
	return true
}

// check: every wanted value arrived, and per topic the first arrivals
// are increasing.
func (g *tagValues) check(t *testing.T, sink string, want map[string][]int) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for topic, vs := range want {
		seen := map[int]bool{}
		last := 0
		for _, v := range g.by[topic] {
			if seen[v] {
				continue
			}
			seen[v] = true
			if v < last {
				t.Errorf("%s: %s: %d arrived first after %d", sink, topic, v, last)
				return
			}
			last = v
		}
		for _, v := range vs {
			if !seen[v] {
				t.Errorf("%s: %s: value %d (served by the PLC) never arrived; %d of %d arrived", sink, topic, v, len(seen), len(vs))
				return
			}
		}
	}
}

// valueHook records what the broker receives.
type valueHook struct {
	mochi.HookBase
	got *tagValues
}

func (h *valueHook) ID() string           { return "sigkill-recorder" }
func (h *valueHook) Provides(b byte) bool { return b == mochi.OnPublish }
func (h *valueHook) OnPublish(_ *mochi.Client, pk mpackets.Packet) (mpackets.Packet, error) {
	if !strings.HasSuffix(pk.TopicName, "/_meta") {
		h.got.add(pk.TopicName, pk.Payload)
	}
	return pk, nil
}
