package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

// ---- broker side -----------------------------------------------------------

// recorder is a mochi hook that sees what the broker receives from, and
// acknowledges to, one client id prefix. It survives broker restarts (the
// same hook is given to each instance).
type recorder struct {
	mochi.HookBase
	client string // client id prefix to watch
	deny   string // topics with this prefix are refused with "not authorized"

	mu       sync.Mutex
	received []recorded  // PUBLISH packets from the client, in arrival order
	pubacks  int         // PUBACKs written to the client
	onPub    func(n int) // called after each received publish with the count so far
}

type recorded struct {
	topic   string
	payload string
	retain  bool
	qos     byte
	ctype   string
}

func (r *recorder) ID() string { return "test-recorder" }

func (r *recorder) Provides(b byte) bool {
	return b == mochi.OnPublish || b == mochi.OnPacketSent
}

func (r *recorder) OnPublish(cl *mochi.Client, pk mpackets.Packet) (mpackets.Packet, error) {
	if !strings.HasPrefix(cl.ID, r.client) {
		return pk, nil
	}
	r.mu.Lock()
	r.received = append(r.received, recorded{pk.TopicName, string(pk.Payload), pk.FixedHeader.Retain, pk.FixedHeader.Qos, pk.Properties.ContentType})
	n := len(r.received)
	f := r.onPub
	r.mu.Unlock()
	if f != nil {
		f(n)
	}
	if r.deny != "" && strings.HasPrefix(pk.TopicName, r.deny) {
		return pk, mpackets.ErrNotAuthorized
	}
	return pk, nil
}

func (r *recorder) OnPacketSent(cl *mochi.Client, pk mpackets.Packet, _ []byte) {
	if pk.FixedHeader.Type == mpackets.Puback && strings.HasPrefix(cl.ID, r.client) {
		r.mu.Lock()
		r.pubacks++
		r.mu.Unlock()
	}
}

// values returns the received publishes on topics with the prefix.
func (r *recorder) values(prefix string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, m := range r.received {
		if strings.HasPrefix(m.topic, prefix) {
			out = append(out, m)
		}
	}
	return out
}

func (r *recorder) acks() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pubacks
}

func startBroker(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	b, err := broker.StartWith(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// ---- subscriber ------------------------------------------------------------

// subscriber is an independent MQTT v5 client (paho, without autopaho)
// that records what the broker delivers.
type subscriber struct {
	c   *paho.Client
	mu  sync.Mutex
	got []delivered
}

type delivered struct {
	Topic       string
	Payload     string
	Retain      bool
	QoS         byte
	ContentType string
}

func subscribe(t testing.TB, addr string, tlsCfg *tls.Config, filters ...string) *subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if tlsCfg != nil {
		conn, err = tls.Dial("tcp", addr, tlsCfg)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{}
	s.c = paho.NewClient(paho.ClientConfig{
		// paho writes a packet in several Writes when the connection
		// cannot take them in one (a tls.Conn does not): without its lock
		// a PINGREQ or PUBACK can land inside a SUBSCRIBE, and the broker
		// drops the client as malformed.
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			d := delivered{Topic: p.Topic, Payload: string(p.Payload), Retain: p.Retain, QoS: p.QoS}
			if p.Properties != nil {
				d.ContentType = p.Properties.ContentType
			}
			s.mu.Lock()
			s.got = append(s.got, d)
			s.mu.Unlock()
			return true, nil
		}},
	})
	if _, err := s.c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("sub-%p", s), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.c.Disconnect(&paho.Disconnect{}) })
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	if _, err := s.c.Subscribe(ctx, sub); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *subscriber) messages() []delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivered(nil), s.got...)
}

// last returns the last message on topic, if any.
func (s *subscriber) last(topic string) (delivered, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.got) - 1; i >= 0; i-- {
		if s.got[i].Topic == topic {
			return s.got[i], true
		}
	}
	return delivered{}, false
}

// ---- TCP proxy between sink and broker ---------------------------------------

// proxy forwards TCP connections to a broker and lets a test cut them
// abruptly (no DISCONNECT, like a pulled cable) or hold back what the broker
// sends (PUBACKs) on the current connections.
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	links    []*link
}

type link struct {
	client, server net.Conn
	mu             sync.Mutex
	held           bool
	release        chan struct{}
}

func startProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.accept()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s, release: make(chan struct{})}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go l.downstream()
	}
}

// downstream copies broker -> client, waiting while the link is held.
func (l *link) downstream() {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			l.mu.Lock()
			held, release := l.held, l.release
			l.mu.Unlock()
			if held {
				<-release // cut() closes it; the data is then dropped
				l.mu.Lock()
				held = l.held
				l.mu.Unlock()
				if held {
					return
				}
			}
			if _, werr := l.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			l.client.Close()
			return
		}
	}
}

// holdDownstream stops forwarding broker -> client on current connections.
func (p *proxy) holdDownstream() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.mu.Lock()
		l.held = true
		l.mu.Unlock()
	}
}

// cut closes every current connection at once, both sides, dropping
// whatever was held.
func (p *proxy) cut() {
	p.mu.Lock()
	links := p.links
	p.links = nil
	p.mu.Unlock()
	for _, l := range links {
		l.client.Close()
		l.server.Close()
		l.mu.Lock()
		select {
		case <-l.release:
		default:
			close(l.release)
		}
		l.mu.Unlock()
	}
}

// ---- fixtures ----------------------------------------------------------------

func testTags(n int) []*model.TagMeta {
	tags := make([]*model.TagMeta, n)
	for i := range tags {
		tags[i] = &model.TagMeta{
			Topic:       fmt.Sprintf("acme/site/area/line/cell%d/temp", i),
			Name:        "temp",
			Datatype:    model.KindFloat,
			Unit:        "degC",
			Description: fmt.Sprintf("temperature %d", i),
			Source:      "plc1",
			Address:     fmt.Sprintf("holding:%d:float32", i*2),
			Index:       i,
		}
	}
	return tags
}

// points returns n points round-robin over tags, value i for point i.
func points(tags []*model.TagMeta, n int) []model.Point {
	pts := make([]model.Point, n)
	base := time.UnixMilli(1717083000000)
	for i := range pts {
		pts[i] = model.Point{Meta: tags[i%len(tags)], Value: model.IntValue(int64(i)), Quality: model.QualityGood, Time: base.Add(time.Duration(i) * time.Millisecond)}
	}
	return pts
}

func payload(p *model.Point) string { return string(publish.AppendJSON(nil, p)) }

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fastConfig is a sink config for tests: quick reconnects.
func fastConfig(url string) Config {
	return Config{
		URL:           url,
		GatewayID:     "gw1",
		PresenceTopic: "acme/site/_gateways/gw1/status",
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    50 * time.Millisecond,
	}
}

// runSink runs s on q until the test ends (or stop is called) and returns
// stop, which cancels and waits for Run to return.
func runSink(t testing.TB, s *Sink, q *publish.Queue) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, q) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// messagesFor encodes points the way the fan-out does.
func messagesFor(pts []model.Point) []publish.Message {
	out := make([]publish.Message, len(pts))
	for i := range pts {
		out[i] = publish.Message{Topic: pts[i].Meta.Topic, Payload: publish.AppendJSON(nil, &pts[i]), Retain: true, Meta: pts[i].Meta}
	}
	return out
}
