package publish_test

// Fault tests of store and forward through the real sinks: a steady flow
// of numbered points (1,000/s) through a Fanout with durable queues to the
// embedded MQTT broker and to kfake, while the brokers go away for 30 s
// and come back, and while the publishing process is killed with SIGKILL.
// Each numbered point must arrive at both at least once, in order per
// tag, and the counters must account for every point.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
	"github.com/unsgate/unsgate/publish/internal/mosquitto"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/mqtt"
)

const (
	flowTags  = 10
	flowRate  = 1000 // points per second
	flowTopic = "uns.v1.values"
)

// outage is how long the brokers stay down; UNSGATE_OUTAGE shortens it
// for a quick local run.
func outage() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("UNSGATE_OUTAGE")); err == nil && d > 0 {
		return d
	}
	return 30 * time.Second
}

func flowTagMetas() []*model.TagMeta {
	out := make([]*model.TagMeta, flowTags)
	for i := range out {
		out[i] = &model.TagMeta{Topic: fmt.Sprintf("acme/plant/area/line/cell/t%d", i), Name: fmt.Sprintf("t%d", i), Datatype: model.KindInt, Index: i}
	}
	return out
}

// point n goes to tag n % flowTags with value n.
func flowPoint(metas []*model.TagMeta, n int) model.Point {
	return model.Point{Meta: metas[n%flowTags], Value: model.IntValue(int64(n)), Quality: model.QualityGood, Time: time.UnixMilli(1717083000000 + int64(n))}
}

// ---- peers ---------------------------------------------------------------

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mqttPeer is the embedded broker on a fixed port, restartable, with a
// hook that records the value of every numbered point it receives.
type mqttPeer struct {
	addr string
	rec  *received
	b    *broker.Broker
}

func startMQTT(t testing.TB, rec *received) *mqttPeer {
	p := &mqttPeer{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), rec: rec}
	p.start(t)
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *mqttPeer) start(t testing.TB) {
	t.Helper()
	var err error
	for range 50 { // the port may linger for a moment after a stop
		if p.b, err = broker.StartWith(broker.Config{Addr: p.addr, Hooks: []mochi.Hook{&mqttHook{rec: p.rec}}}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

func (p *mqttPeer) stop() {
	if p.b != nil {
		p.b.Close()
		p.b = nil
	}
}

type mqttHook struct {
	mochi.HookBase
	rec *received
}

func (h *mqttHook) ID() string           { return "outage-recorder" }
func (h *mqttHook) Provides(b byte) bool { return b == mochi.OnPublish }
func (h *mqttHook) OnPublish(_ *mochi.Client, pk mpackets.Packet) (mpackets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, "acme/plant/") && !strings.HasSuffix(pk.TopicName, "/_meta") {
		h.rec.add(pk.Payload)
	}
	return pk, nil
}

// kafkaPeer is a kfake cluster on a fixed port with a data directory, so
// a restart keeps its topics and records.
type kafkaPeer struct {
	port int
	dir  string
	c    *kfake.Cluster
}

func startKafka(t testing.TB) *kafkaPeer {
	p := &kafkaPeer{port: freePort(t), dir: t.TempDir()}
	p.start(t)
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *kafkaPeer) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

func (p *kafkaPeer) start(t testing.TB) {
	t.Helper()
	var err error
	for range 50 {
		if p.c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p.port), kfake.DataDir(p.dir), kfake.SeedTopics(3, flowTopic)); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

func (p *kafkaPeer) stop() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

// values reads every record of the values topic and records its value.
func (p *kafkaPeer) values(t testing.TB, want int, timeout time.Duration) *received {
	t.Helper()
	rec := &received{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.addr()), kgo.ConsumeTopics(flowTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(100*time.Millisecond), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for rec.distinct() < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { rec.add(r.Value) })
	}
	return rec
}

// received collects numbered values as they arrive, per tag.
type received struct {
	mu    sync.Mutex
	byTag [flowTags][]int
	seen  map[int]bool
	total int
}

func (r *received) add(payload []byte) {
	var v struct {
		Value int `json:"value"`
	}
	if json.Unmarshal(payload, &v) != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[int]bool{}
	}
	r.byTag[v.Value%flowTags] = append(r.byTag[v.Value%flowTags], v.Value)
	r.seen[v.Value] = true
	r.total++
}

func (r *received) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// check: every point 0..n-1 arrived, and per tag the first arrivals are
// in increasing order (a value may come again after a redelivery, but no
// older value follows a newer one's first arrival).
func (r *received) check(t testing.TB, sink string, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range n {
		if !r.seen[i] {
			t.Fatalf("%s: point %d never arrived (%d of %d distinct, %d in all)", sink, i, len(r.seen), n, r.total)
		}
	}
	for tag, vals := range r.byTag {
		first := map[int]bool{}
		last := -1
		for _, v := range vals {
			if first[v] {
				continue
			}
			first[v] = true
			if v < last {
				t.Fatalf("%s: tag %d: %d arrived first after %d", sink, tag, v, last)
			}
			last = v
		}
	}
	t.Logf("%s: %d distinct points, %d deliveries (%d duplicates)", sink, len(r.seen), r.total, r.total-len(r.seen))
}

// ---- the publishing side -------------------------------------------------

// publisher is the gateway's publishing path: a Fanout with durable queues
// and both sinks.
type publisher struct {
	f      *publish.Fanout
	metas  []*model.TagMeta
	cancel context.CancelFunc
	done   chan error
}

func startPublisher(storeDir, mqttAddr, kafkaAddr string, log *slog.Logger) (*publisher, error) {
	return startPublisherWith(publish.Options{Logger: log, StoreDir: storeDir, FlushTimeout: 3 * time.Second}, mqttAddr, kafkaAddr, log)
}

func startPublisherWith(opts publish.Options, mqttAddr, kafkaAddr string, log *slog.Logger) (*publisher, error) {
	f := publish.NewFanout(opts)
	ms, err := mqtt.New(mqtt.Config{URL: "mqtt://" + mqttAddr, GatewayID: "gw1", ConnectTimeout: time.Second, AckTimeout: 2 * time.Second, Logger: log})
	if err != nil {
		return nil, err
	}
	ks, err := kafka.New(kafka.Config{Brokers: []string{kafkaAddr}, GatewayID: "gw1", Linger: 2 * time.Millisecond, MetadataMinAge: 100 * time.Millisecond, Logger: log})
	if err != nil {
		return nil, err
	}
	for _, s := range []publish.Sink{ms, ks} {
		if err := f.Add(s); err != nil {
			return nil, err
		}
	}
	p := &publisher{f: f, metas: flowTagMetas(), done: make(chan error, 1)}
	f.SetTags(p.metas)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- f.Run(ctx) }()
	return p, nil
}

// flow publishes points from..to-1 at flowRate in batches of 10 and
// calls after(n) with the count published so far after each batch.
func (p *publisher) flow(from, to int, after func(n int)) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	batch := make([]model.Point, 0, flowRate/100)
	for n := from; n < to; {
		<-tick.C
		batch = batch[:0]
		for k := 0; k < flowRate/100 && n < to; k++ {
			batch = append(batch, flowPoint(p.metas, n))
			n++
		}
		p.f.Publish(batch)
		if after != nil {
			after(n)
		}
	}
}

func (p *publisher) stop() error {
	p.cancel()
	return <-p.done
}

// waitDelivered waits until both sinks have finished every message.
func waitDelivered(t testing.TB, f *publish.Fanout, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		busy := false
		for _, st := range f.Stats() {
			if st.Queued > 0 || st.Inflight > 0 {
				busy = true
			}
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered within %v: %+v", timeout, f.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func quietLog() *slog.Logger {
	if os.Getenv("UNSGATE_OUTAGE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// mqttBroker is a broker the test can stop and start again on the same
// address.
type mqttBroker interface {
	address() string
	stop()
	start(t testing.TB)
}

func (p *mqttPeer) address() string { return p.addr }

// runOutage: 3 s of flow, then the chosen peers down for outage() while
// the flow goes on, then up again for 3 s more of flow; then everything
// must arrive.
func runOutage(t *testing.T, downMQTT, downKafka bool) {
	t.Parallel()
	recMQTT := &received{}
	runOutageWith(t, startMQTT(t, recMQTT), recMQTT, downMQTT, downKafka)
}

func runOutageWith(t *testing.T, mq mqttBroker, recMQTT *received, downMQTT, downKafka bool) {
	kf := startKafka(t)
	p, err := startPublisher(t.TempDir(), mq.address(), kf.addr(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()

	pre := 3 * flowRate
	during := int(outage().Seconds() * flowRate)
	total := pre + during + 3*flowRate
	p.flow(0, pre, nil)
	if downMQTT {
		mq.stop()
	}
	if downKafka {
		kf.stop()
	}
	p.flow(pre, pre+during, nil)
	for _, st := range p.f.Stats() {
		down := st.Name == "mqtt" && downMQTT || st.Name == "kafka" && downKafka
		// Waiting in the queue or taken by the sink and not acknowledged:
		// either way still in the store.
		if down && (st.Queued+st.Inflight < during/2 || st.StoredBytes == 0) {
			t.Errorf("%s during the outage: %+v, want the points held and stored", st.Name, st)
		}
	}
	if downMQTT {
		mq.start(t)
	}
	if downKafka {
		kf.start(t)
	}
	p.flow(pre+during, total, nil)
	waitDelivered(t, p.f, 60*time.Second)

	if got := p.f.Published(); got != uint64(total) {
		t.Fatalf("published %d, want %d", got, total)
	}
	for _, st := range p.f.Stats() {
		if st.Dropped != 0 || st.Rejected != 0 || st.Sent < uint64(total) || st.StoreErrors != 0 {
			t.Errorf("%s: %+v: want nothing dropped or rejected, every point sent", st.Name, st)
		}
	}
	// A subscriber (mosquitto) may still be catching up.
	waitDistinct(t, recMQTT, total, 30*time.Second)
	recMQTT.check(t, "mqtt", total)
	kf.values(t, total, 30*time.Second).check(t, "kafka", total)
	checkRetainedNewest(t, mq.address(), total)
}

// checkRetainedNewest: after the backlog, every tag's retained value on
// the broker is its newest point.
func checkRetainedNewest(t testing.TB, addr string, total int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	retained := map[string]int{}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			var v struct {
				Value int `json:"value"`
			}
			if pr.Packet.Retain && json.Unmarshal(pr.Packet.Payload, &v) == nil && !strings.HasSuffix(pr.Packet.Topic, "/_meta") {
				mu.Lock()
				retained[pr.Packet.Topic] = v.Value
				mu.Unlock()
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "retained-check", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "acme/plant/#", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(retained)
		mu.Unlock()
		if n >= flowTags || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	metas := flowTagMetas()
	for tag := range flowTags {
		newest := total - flowTags + tag
		if got, ok := retained[metas[tag].Topic]; !ok || got != newest {
			t.Errorf("retained value of %s: %d (present %v), want the newest, %d", metas[tag].Topic, got, ok, newest)
		}
	}
}

func waitDistinct(t testing.TB, r *received, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.distinct() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOutageMQTT(t *testing.T)  { runOutage(t, true, false) }
func TestOutageKafka(t *testing.T) { runOutage(t, false, true) }
func TestOutageBoth(t *testing.T)  { runOutage(t, true, true) }

// TestOutageSIGKILL: the publishing process is killed with SIGKILL in the
// middle of an outage of both brokers, and started again on the same
// store: every point it had published before it died arrives, and so does
// everything after.
func TestOutageSIGKILL(t *testing.T) {
	if os.Getenv("UNSGATE_OUTAGE_CHILD") != "" {
		outageChild()
		return
	}
	t.Parallel()
	recMQTT := &received{}
	mq := startMQTT(t, recMQTT)
	kf := startKafka(t)
	store := t.TempDir()

	// First life: 2 s of flow, then both brokers go, and 3 s later the
	// process is killed.
	child, published := startChild(t, store, mq.addr, kf.addr(), 0)
	waitCount(t, published, 2*flowRate)
	mq.stop()
	kf.stop()
	time.Sleep(3 * time.Second) // the outage: the child goes on publishing
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	last := published.get()
	if last < 4*flowRate {
		t.Fatalf("the child published only %d points", last)
	}
	t.Logf("killed after publishing %d points", last)

	// Second life: the brokers are back; the child continues the
	// numbering for 2 s and stops cleanly.
	mq.start(t)
	kf.start(t)
	child, published = startChild(t, store, mq.addr, kf.addr(), last)
	total := last + 2*flowRate
	waitCount(t, published, total)
	child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Fatalf("second life: %v", err)
	}
	recMQTT.check(t, "mqtt", total)
	kf.values(t, total, 30*time.Second).check(t, "kafka", total)
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) set(n int) { c.mu.Lock(); c.n = n; c.mu.Unlock() }
func (c *counter) get() int  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func waitCount(t testing.TB, c *counter, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.get() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the child published %d, waiting for %d", c.get(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startChild runs this test binary as the publishing process; it prints
// the count of points published (Publish returned) after each batch.
func startChild(t testing.TB, store, mqttAddr, kafkaAddr string, from int) (*exec.Cmd, *counter) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutageSIGKILL$")
	cmd.Env = append(os.Environ(), "UNSGATE_OUTAGE_CHILD=1", "CHILD_STORE="+store, "CHILD_MQTT="+mqttAddr,
		"CHILD_KAFKA="+kafkaAddr, "CHILD_FROM="+strconv.Itoa(from))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	c := &counter{n: from}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "published ")); err == nil {
				c.set(n)
			}
		}
		io.Copy(io.Discard, out)
	}()
	return cmd, c
}

// outageChild publishes numbered points from CHILD_FROM on until SIGTERM,
// then shuts down cleanly (flushing what it can).
func outageChild() {
	from, _ := strconv.Atoi(os.Getenv("CHILD_FROM"))
	p, err := startPublisher(os.Getenv("CHILD_STORE"), os.Getenv("CHILD_MQTT"), os.Getenv("CHILD_KAFKA"), quietLog())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	term := make(chan os.Signal, 1)
	signalNotify(term)
	stopFlow := make(chan struct{})
	go func() { <-term; close(stopFlow) }()
	w := bufio.NewWriter(os.Stdout)
	tick := time.NewTicker(10 * time.Millisecond)
	for n := from; ; {
		select {
		case <-stopFlow:
			// Deliver what is queued (the brokers are up), then stop.
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				busy := false
				for _, st := range p.f.Stats() {
					busy = busy || st.Queued > 0 || st.Inflight > 0
				}
				if !busy {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := p.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "child stop:", err)
				os.Exit(1)
			}
			os.Exit(0)
		case <-tick.C:
		}
		batch := make([]model.Point, 0, flowRate/100)
		for range flowRate / 100 {
			batch = append(batch, flowPoint(p.metas, n))
			n++
		}
		p.f.Publish(batch)
		fmt.Fprintf(w, "published %d\n", n)
		w.Flush()
	}
}

// TestOutageMosquitto is the MQTT outage against an independent broker,
// Debian's mosquitto (CI interop, UNSGATE_INTEROP=1): it is stopped for
// outage() and started again with its persistence, and a subscriber with
// a persistent session sees every point.
func TestOutageMosquitto(t *testing.T) {
	if !mosquitto.Enabled() {
		t.Skip("interop test against mosquitto: set UNSGATE_INTEROP=1 (after .ci/interop-mqtt.sh installed it)")
	}
	t.Parallel()
	m := startMosquitto(t)
	rec := &received{}
	subscribePersistent(t, m.address(), "acme/plant/#", rec)
	runOutageWith(t, m, rec, true, false)
}

// mosquittoPeer is mosquitto as an mqttBroker.
type mosquittoPeer struct{ *mosquitto.Peer }

func startMosquitto(t testing.TB) mosquittoPeer { return mosquittoPeer{mosquitto.Start(t)} }

func (m mosquittoPeer) address() string    { return m.Addr() }
func (m mosquittoPeer) start(t testing.TB) { m.Start(t) }
func (m mosquittoPeer) stop()              { m.Stop() }

// subscribePersistent subscribes with QoS 1 and a session that outlives
// disconnects, reconnecting by itself, and records every value.
func subscribePersistent(t testing.TB, addr, filter string, rec *received) {
	t.Helper()
	u, _ := url.Parse("mqtt://" + addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 5, CleanStartOnInitialConnection: true, SessionExpiryInterval: 3600,
		ConnectRetryDelay: 100 * time.Millisecond,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			// Resubscribing is harmless when the session kept the subscription.
			cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "outage-subscriber",
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				if !strings.HasSuffix(pr.Packet.Topic, "/_meta") {
					rec.add(pr.Packet.Payload)
				}
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	if err := cm.AwaitConnection(actx); err != nil {
		t.Fatal(err)
	}
}

func signalNotify(c chan os.Signal) { signal.Notify(c, syscall.SIGTERM, os.Interrupt) }

// TestOutageOverBudget: Kafka is down while more points arrive than its
// store may hold. The oldest waiting points are dropped, the count is
// exact, and Kafka gets every other point, in order. The points come
// faster than MQTT takes them, so its store overflows too: every point is
// delivered or counted there as well.
func TestOutageOverBudget(t *testing.T) {
	t.Parallel()
	recMQTT := &received{}
	mq := startMQTT(t, recMQTT)
	kf := startKafka(t)
	kf.stop()
	const budget = 1 << 20
	p, err := startPublisherWith(publish.Options{Logger: quietLog(), StoreDir: t.TempDir(), QueueLen: 1000,
		Store: publish.StoreOptions{MaxBytes: budget, SegmentBytes: 64 << 10}}, mq.addr, kf.addr(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	const total = 30000 // about 3 MB of records: three times the budget
	publishRange := func(from, to int) {
		for n := from; n < to; n += 100 {
			batch := make([]model.Point, 0, 100)
			for k := range min(100, to-n) {
				batch = append(batch, flowPoint(p.metas, n+k))
			}
			p.f.Publish(batch)
		}
	}
	kafkaStats := func() publish.SinkStats {
		for _, st := range p.f.Stats() {
			if st.Name == "kafka" {
				return st
			}
		}
		t.Fatal("no kafka sink")
		return publish.SinkStats{}
	}
	// First as many points as the sink takes while Kafka is away (its
	// window), and wait until it holds them all: then the flood behind
	// them only waits in the queue, and which points the budget drops does
	// not depend on when the sink takes its batches.
	window := kafka.DefaultMaxInflight
	publishRange(0, window)
	waitFor := time.Now().Add(10 * time.Second)
	for kafkaStats().Inflight < window {
		if time.Now().After(waitFor) {
			t.Fatalf("the kafka sink did not fill its window: %+v", kafkaStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	publishRange(window, total)
	ks := kafkaStats()
	if ks.Dropped == 0 || ks.StoredBytes > budget {
		t.Fatalf("kafka over budget: %+v", ks)
	}
	kf.start(t)
	waitDelivered(t, p.f, 60*time.Second)
	kept := total - int(ks.Dropped)
	got := kf.values(t, kept, 30*time.Second)
	// The missing points are one run: the oldest of those waiting in the
	// queue (the ones the sink had already taken, waiting for Kafka, are
	// not dropped), exactly as many as counted.
	got.mu.Lock()
	first, last := -1, -1
	for i := range total {
		if !got.seen[i] {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	distinct := len(got.seen)
	got.mu.Unlock()
	if distinct != kept || first < 0 || last-first+1 != int(ks.Dropped) {
		t.Fatalf("kafka got %d distinct points, missing %d..%d; %d counted as dropped", distinct, first, last, ks.Dropped)
	}
	got.check(t, "kafka", 0)
	// MQTT was up, but the points came faster than its broker takes them,
	// so its store overflowed too: what it did not deliver is counted.
	for _, st := range p.f.Stats() {
		if st.Name == "mqtt" && recMQTT.distinct()+int(st.Dropped) != total {
			t.Fatalf("mqtt: %d delivered + %d dropped, want %d", recMQTT.distinct(), st.Dropped, total)
		}
	}
	recMQTT.check(t, "mqtt", 0)
	t.Logf("kafka: points %d..%d dropped (%d, counted), %d delivered", first, last, ks.Dropped, kept)
}
