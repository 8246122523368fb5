package mqtt

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

// startMochiCaps runs a plain mochi broker with the given capabilities
// (the embedded broker package does not expose them).
func startMochiCaps(t *testing.T, caps func(*mochi.Capabilities), hooks ...mochi.Hook) string {
	t.Helper()
	c := mochi.NewDefaultServerCapabilities()
	caps(c)
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler), Capabilities: c})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return l.Address()
}

// A broker without QoS 1 (Maximum QoS 0) or without retain must refuse a
// CONNECT whose Will asks for them [MQTT-3.2.2-12, -13] (0x9B, 0x9A). The
// gateway always configures a presence topic, so the sink must lower its
// Will after such a refusal, connect, and deliver (on a QoS 0 broker,
// "sent" means written to the socket).
func TestSinkWillFollowsBrokerQoSAndRetain(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps func(*mochi.Capabilities)
	}{
		{"maxqos0", func(c *mochi.Capabilities) { c.MaximumQos = 0 }},
		{"noretain", func(c *mochi.Capabilities) { c.RetainAvailable = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMochiCaps(t, tc.caps)
			sink := newSink(t, fastConfig("mqtt://"+addr))
			q := publish.NewQueue(100)
			q.PushBatch(messagesFor(points(testTags(2), 4)))
			runSink(t, sink, q)
			deadline := time.Now().Add(3 * time.Second)
			// Connects is counted in autopaho's connection-up callback,
			// which may run after the first publishes went out.
			for time.Now().Before(deadline) && (sink.Status().Sent < 4 || sink.Status().Connects == 0) {
				time.Sleep(10 * time.Millisecond)
			}
			if st := sink.Status(); st.Connects == 0 || st.Sent != 4 {
				t.Fatalf("sink never got through: %+v", st)
			}
		})
	}
}

// Broker Receive Maximum 1 and 10: every message is delivered once, in
// order, and mochi (which disconnects on receive-maximum violations) never
// drops the connection.
func TestSinkSmallReceiveMaximumKeepsOrder(t *testing.T) {
	for _, rm := range []uint16{1, 10} {
		t.Run("", func(t *testing.T) {
			rec := &recorder{client: "unsgate-gw1"}
			addr := startMochiCaps(t, func(c *mochi.Capabilities) { c.ReceiveMaximum = rm }, rec)
			tags := testTags(7)
			sink := newSink(t, fastConfig("mqtt://"+addr))
			sink.SetTags(tags)
			q := publish.NewQueue(5000)
			msgs := messagesFor(points(tags, 3000))
			q.PushBatch(msgs)
			runSink(t, sink, q)
			waitFor(t, "all sent", 20*time.Second, func() bool { return sink.Status().Sent == 3000 })
			st := sink.Status()
			if st.Connects != 1 || st.Redelivered != 0 || q.Taken() != 0 {
				t.Fatalf("status %+v taken %d", st, q.Taken())
			}
			got := rec.values(valuePrefix)
			var vals []recorded
			for _, r := range got {
				if !isMeta(r.topic) {
					vals = append(vals, r)
				}
			}
			if len(vals) != 3000 {
				t.Fatalf("broker got %d values", len(vals))
			}
			for i, r := range vals {
				if r.payload != string(msgs[i].Payload) {
					t.Fatalf("value %d out of order", i)
				}
			}
		})
	}
}

// blockingHandler is a slog handler that blocks the logging goroutine on the
// first record whose message contains match, until release is closed.
type blockingHandler struct {
	match   string
	once    sync.Once
	blocked chan struct{}
	release chan struct{}
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler            { return h }
func (h *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.once.Do(func() {
			close(h.blocked)
			<-h.release
		})
	}
	return nil
}

// The connection drops and a new one comes up while the sender is between
// two sends of one batch (here: held up by a slow log handler while it
// reports a too-large message; in general: simply not scheduled). The rest
// of the batch must not go out on the new connection before what the old
// one lost is resent, or older values would be published after the newer
// one and the broker's retained value for the topic would go back in time.
// session.send takes the connection number the batch started on and
// refuses to write on another.
func TestSinkNoReorderWhenReconnectingMidBatch(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	p := startProxy(t, b.Addr())
	h := &blockingHandler{match: "larger than the broker accepts", blocked: make(chan struct{}), release: make(chan struct{})}
	cfg := fastConfig("mqtt://" + p.addr())
	cfg.Logger = slog.New(h)
	sink := newSink(t, cfg)
	q := publish.NewQueue(100)
	runSink(t, sink, q)
	waitFor(t, "connected", 5*time.Second, func() bool { return len(rec.values(presenceTopic)) == 1 })

	p.holdDownstream() // PUBACKs stop: v1..v5 stay in flight
	tags := testTags(1)
	pts := points(tags, 6)
	msgs := messagesFor(pts)
	big := publish.Message{Topic: strings.Repeat("x", 70000), Payload: []byte("{}"), Retain: true}
	batch := append(append(append([]publish.Message{}, msgs[:5]...), big), msgs[5])
	q.PushBatch(batch)

	select {
	case <-h.blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("sender never reported the too-large message")
	}
	waitFor(t, "broker has v1..v5", 5*time.Second, func() bool { return len(rec.values(valuePrefix)) == 5 })
	p.cut()
	waitFor(t, "reconnected", 5*time.Second, func() bool { return sink.Status().Connects == 2 })
	close(h.release)
	waitFor(t, "all acknowledged", 10*time.Second, func() bool { return sink.Status().Sent == 6 })

	got := rec.values(valuePrefix)
	var order []string
	for _, r := range got {
		order = append(order, r.payload)
	}
	last := got[len(got)-1]
	if last.payload != string(msgs[5].Payload) {
		t.Fatalf("broker's last (retained) value for %s is %s, want the newest %s\nbroker received, in order:\n%s",
			tags[0].Topic, last.payload, msgs[5].Payload, strings.Join(order, "\n"))
	}
}

// stallProxy forwards to upstream and can stop reading from the client, so
// the client's TCP send path fills up (a broker that hangs without closing).
type stallProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	stalled  bool
	resume   chan struct{}
	conns    []net.Conn
}

func startStallProxy(t *testing.T, upstream string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, upstream: upstream, resume: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		if p.stalled {
			close(p.resume)
			p.stalled = false
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(c, s); c.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					p.mu.Lock()
					st, res := p.stalled, p.resume
					p.mu.Unlock()
					if st {
						<-res
					}
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := s.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						s.Close()
						return
					}
				}
			}()
		}
	}()
	return p
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

// With a broker that stops reading (TCP zero window, no RST), the sender
// and the offline presence block in bufConn.waitRoom until the socket
// write deadline (AckTimeout). Cancelling Run's ctx must still stop the
// sink within about offlineTimeout + stopTimeout (1s + 2s): the connection
// is dropped offlineTimeout after ctx is done. The fan-out's shutdown
// waits for Run.
func TestSinkShutdownWithStalledBrokerIsBounded(t *testing.T) {
	b := startBroker(t, broker.Config{})
	p := startStallProxy(t, b.Addr())
	cfg := fastConfig("mqtt://" + p.ln.Addr().String())
	cfg.AckTimeout = 12 * time.Second
	sink := newSink(t, cfg)
	q := publish.NewQueue(4000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx, q) }()
	waitFor(t, "connected", 5*time.Second, func() bool { return sink.Status().Connected })

	p.stall()
	tag := &model.TagMeta{Topic: "acme/site/area/line/cell/big"}
	payload := make([]byte, 32<<10)
	for i := range payload {
		payload[i] = 'a'
	}
	var msgs []publish.Message
	for range 1200 {
		msgs = append(msgs, publish.Message{Topic: tag.Topic, Payload: payload, Retain: true, Meta: tag})
	}
	q.PushBatch(msgs)
	time.Sleep(1500 * time.Millisecond) // let the sender fill socket buffers and bufConn

	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return at all")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Run took %v to return after ctx was cancelled (documented: ~offlineTimeout+stopTimeout = 3s)", el.Round(100*time.Millisecond))
	}
}
