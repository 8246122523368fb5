package sparkplug

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
	"github.com/unsgate/unsgate/publish/internal/mosquitto"
)

// rx is one message the test host received.
type rx struct {
	Topic   string
	QoS     byte
	Retain  bool
	Raw     []byte
	Payload Payload
	Err     error
}

// host is a Sparkplug host application for tests: a plain MQTT v5 client
// subscribed to the whole namespace at QoS 2 with retain-as-published, so
// it sees every message with the QoS and retain flag it was published with.
type host struct {
	t    testing.TB
	c    *paho.Client
	mu   sync.Mutex
	msgs []rx
	news chan struct{}
}

func newHost(t testing.TB, addr string, filters ...string) *host {
	t.Helper()
	if len(filters) == 0 {
		filters = []string{Namespace + "/#"}
	}
	h := &host{t: t, news: make(chan struct{}, 1)}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h.c = paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			m := rx{Topic: p.Topic, QoS: p.QoS, Retain: p.Retain, Raw: append([]byte(nil), p.Payload...)}
			if len(p.Topic) > 8 && p.Topic[:8] == Namespace+"/" && !isStateTopic(p.Topic) {
				m.Payload, m.Err = Decode(p.Payload)
			}
			h.mu.Lock()
			h.msgs = append(h.msgs, m)
			h.mu.Unlock()
			select {
			case h.news <- struct{}{}:
			default:
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.c.Connect(ctx, &paho.Connect{ClientID: "test-host-" + t.Name(), CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: paho.Uint16(65535)}}); err != nil {
		t.Fatal(err)
	}
	var subs []paho.SubscribeOptions
	for _, f := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 2, RetainAsPublished: true})
	}
	if _, err := h.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.c.Disconnect(&paho.Disconnect{}) })
	return h
}

func isStateTopic(topic string) bool {
	return len(topic) >= len(Namespace)+7 && topic[:len(Namespace)+7] == Namespace+"/STATE"
}

// all returns what arrived so far.
func (h *host) all() []rx {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]rx(nil), h.msgs...)
}

// waitFor waits until a message after the first `from` satisfies pred and
// returns its index.
func (h *host) waitFor(from int, what string, pred func(rx) bool) int {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs := h.all()
		for i := from; i < len(msgs); i++ {
			if pred(msgs[i]) {
				return i
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no %s within 10s; got %s", what, summary(msgs[from:]))
		}
		select {
		case <-h.news:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (h *host) publish(topic string, payload []byte, retain bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: payload}); err != nil {
		h.t.Fatal(err)
	}
}

func summary(msgs []rx) string {
	s := ""
	for i, m := range msgs {
		if i == 30 {
			return s + " ..."
		}
		s += "\n  " + m.Topic
		if m.Payload.HasSeq {
			s += " seq=" + itoa(m.Payload.Seq)
		}
		s += " metrics=" + itoa(uint64(len(m.Payload.Metrics)))
	}
	return s
}

func itoa(n uint64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

func isType(kind string) func(rx) bool {
	return func(m rx) bool { return msgType(m.Topic) == kind }
}

// msgType is the message type level of a Sparkplug topic.
func msgType(topic string) string {
	parts := splitTopic(topic)
	if len(parts) >= 3 {
		return parts[2]
	}
	return ""
}

func splitTopic(t string) []string {
	var out []string
	start := 0
	for i := 0; i < len(t); i++ {
		if t[i] == '/' {
			out = append(out, t[start:i])
			start = i + 1
		}
	}
	return append(out, t[start:])
}

// relay forwards TCP connections to a broker and can cut them all, so a
// test can make the gateway lose its connection without a DISCONNECT (and
// the broker publish its Will).
//
// It also reads what the client sends, packet by packet, and records the
// CONNECT and PUBLISH headers: the QoS and retain flags a publisher used are
// only visible on its own connection (brokers deliver at the subscriber's
// QoS; the embedded one grants QoS 0).
type relay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
	pkts   []wirePkt
	back   []byte // types of the packets the broker sent
}

// wirePkt is the header of a packet the client sent.
type wirePkt struct {
	Type   byte // 1 CONNECT, 3 PUBLISH, 14 DISCONNECT ...
	Topic  string
	QoS    byte
	Retain bool
	// CONNECT only.
	CleanStart, WillFlag, WillRetain bool
	WillQoS                          byte
	// DISCONNECT only.
	Reason byte
}

// sent returns the packets the client sent so far.
func (r *relay) sent() []wirePkt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wirePkt(nil), r.pkts...)
}

// connects counts the CONNECT packets the client sent.
func (r *relay) connects() uint64 {
	n := uint64(0)
	for _, p := range r.sent() {
		if p.Type == 1 {
			n++
		}
	}
	return n
}

// publishesTo returns the PUBLISH headers sent to topic.
func (r *relay) publishesTo(topic string) []wirePkt {
	var out []wirePkt
	for _, p := range r.sent() {
		if p.Type == 3 && p.Topic == topic {
			out = append(out, p)
		}
	}
	return out
}

// copyPackets copies MQTT packets from src to dst one by one, handing each
// packet's first byte and body to seen before it is forwarded.
func copyPackets(dst io.Writer, src io.Reader, seen func(first byte, body []byte)) {
	br := bufio.NewReader(src)
	for {
		first, err := br.ReadByte()
		if err != nil {
			return
		}
		n, mult := 0, 1
		hdr := []byte{first}
		for {
			b, err := br.ReadByte()
			if err != nil {
				return
			}
			hdr = append(hdr, b)
			n += int(b&0x7f) * mult
			if b&0x80 == 0 {
				break
			}
			mult *= 128
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		seen(first, body)
		if _, err := dst.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

// tapBack copies broker bytes to the client, recording packet types.
func (r *relay) tapBack(dst io.Writer, src io.Reader) {
	copyPackets(dst, src, func(first byte, _ []byte) {
		r.mu.Lock()
		r.back = append(r.back, first>>4)
		r.mu.Unlock()
	})
}

// tap copies client bytes to the broker packet by packet, recording headers.
func (r *relay) tap(dst io.Writer, src io.Reader) {
	copyPackets(dst, src, func(first byte, body []byte) {
		p := wirePkt{Type: first >> 4}
		switch p.Type {
		case 3:
			p.QoS, p.Retain = first>>1&3, first&1 != 0
			if len(body) >= 2 {
				l := int(body[0])<<8 | int(body[1])
				if 2+l <= len(body) {
					p.Topic = string(body[2 : 2+l])
				}
			}
		case 1:
			// protocol name (2+4), version, flags
			if len(body) >= 8 {
				f := body[7]
				p.CleanStart, p.WillFlag = f&2 != 0, f&4 != 0
				p.WillQoS, p.WillRetain = f>>3&3, f&0x20 != 0
			}
		case 14:
			if len(body) > 0 {
				p.Reason = body[0]
			}
		}
		r.mu.Lock()
		r.pkts = append(r.pkts, p)
		r.mu.Unlock()
	})
}

func newRelay(t testing.TB, target string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); r.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			if r.down {
				r.mu.Unlock()
				c.Close()
				continue
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				r.mu.Unlock()
				c.Close()
				continue
			}
			r.conns = append(r.conns, c, b)
			r.mu.Unlock()
			go func() { r.tap(b, c); b.Close() }()
			go func() { r.tapBack(c, b); c.Close() }()
		}
	}()
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

// cut closes every relayed connection.
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// setDown refuses (true) or accepts (false) new connections.
func (r *relay) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
	if down {
		r.cut()
	}
}

// testTags makes the tags of two devices fed by source plc1 and one fed by
// plc2: filler (speed float64, count int16, state string, alarm bool),
// capper (torque float32, total uint32), mixer (level int8) .
func testTags() []*model.TagMeta {
	mk := func(asset, name, src string, k model.Kind, width uint8) *model.TagMeta {
		return &model.TagMeta{Topic: asset + "/" + name, Asset: asset, Name: name, Source: src, Datatype: k, Width: width, Type: "T"}
	}
	tags := []*model.TagMeta{
		mk("acme/munich/bottling/line1/filler", "speed", "plc1", model.KindFloat, 0),
		mk("acme/munich/bottling/line1/filler", "counters/good", "plc1", model.KindInt, 16),
		mk("acme/munich/bottling/line1/filler", "state", "plc1", model.KindString, 0),
		mk("acme/munich/bottling/line1/filler", "alarm", "plc1", model.KindBool, 0),
		mk("acme/munich/bottling/line1/capper", "torque", "plc1", model.KindFloat, 32),
		mk("acme/munich/bottling/line1/capper", "total", "plc1", model.KindUint, 32),
		mk("acme/munich/bottling/line1/mixer", "level", "plc2", model.KindInt, 8),
	}
	for i, t := range tags {
		t.Index = i
	}
	return tags
}

// rig runs a Fanout with one Sparkplug sink against an embedded broker,
// reached through a relay.
type rig struct {
	t      testing.TB
	b      peer
	relay  *relay
	f      *publish.Fanout
	s      *Sink
	tags   []*model.TagMeta
	cancel context.CancelFunc
	done   chan error
}

func testConfig(url string) Config {
	return Config{URL: url, GroupID: "munich", EdgeNodeID: "gw1", DevicePrefix: "acme/munich",
		BackoffMin: 300 * time.Millisecond, BackoffMax: 600 * time.Millisecond, Timeout: 5 * time.Second}
}

// peer is a test's MQTT broker.
type peer interface{ Addr() string }

// startBroker starts the embedded broker, or mosquitto for the tests that
// TestMosquitto runs.
func startBroker(t testing.TB) peer {
	if strings.HasPrefix(t.Name(), "TestMosquitto/") {
		return mosquitto.Start(t)
	}
	b, err := broker.Start("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// startNode starts a broker (see startBroker), a host subscribed to it and
// a rig (see newRig), and waits for the node's NBIRTH: it returns the host,
// the rig and the NBIRTH's index in the host's messages.
func startNode(t testing.TB, opts publish.Options, mod func(*Config)) (*host, *rig, int) {
	t.Helper()
	b := startBroker(t)
	h := newHost(t, b.Addr())
	r := newRig(t, b, opts, mod)
	return h, r, h.waitFor(0, "NBIRTH", isType("NBIRTH"))
}

// newRig starts the sink; edit cfg with mod (the URL is set already).
func newRig(t testing.TB, b peer, opts publish.Options, mod func(*Config)) *rig {
	t.Helper()
	return newRigWith(t, b, opts, testTags(), mod)
}

// newRigWith is newRig with other tags.
func newRigWith(t testing.TB, b peer, opts publish.Options, tags []*model.TagMeta, mod func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, b: b, relay: newRelay(t, b.Addr()), tags: tags}
	cfg := testConfig("mqtt://" + r.relay.addr())
	logs := &syncBuf{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			r.relay.mu.Lock()
			t.Logf("broker sent packet types %v", r.relay.back)
			var sent []byte
			for _, p := range r.relay.pkts {
				sent = append(sent, p.Type)
			}
			t.Logf("client sent packet types %v", sent)
			r.relay.mu.Unlock()
			t.Logf("sink log:\n%s", logs.String())
		}
	})
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	r.f = publish.NewFanout(opts)
	if err := r.f.Add(s); err != nil {
		t.Fatal(err)
	}
	r.f.SetTags(r.tags)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.f.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop stops the Fanout (a clean stop: the sink publishes NDEATH).
func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			r.t.Errorf("fanout: %v", err)
		}
	case <-time.After(20 * time.Second):
		r.t.Errorf("fanout did not stop")
	}
}

func (r *rig) up(src string)   { r.f.SourceState(src, true) }
func (r *rig) down(src string) { r.f.SourceState(src, false) }

// point publishes one value of tag i.
func (r *rig) point(i int, v model.Value, q model.Quality, at time.Time) {
	r.f.Publish([]model.Point{{Meta: r.tags[i], Value: v, Quality: q, Time: at}})
}

// firstValues publishes a GOOD value for every tag at time at.
func (r *rig) firstValues(at time.Time) {
	vals := []model.Value{model.FloatValue(120.5), model.IntValue(-12), model.StringValue("running"),
		model.BoolValue(true), model.Float32Value(2.5), model.UintValue(4000000000), model.IntValue(-7)}
	pts := make([]model.Point, len(r.tags))
	for i := range r.tags {
		pts[i] = model.Point{Meta: r.tags[i], Value: vals[i], Quality: model.QualityGood, Time: at}
	}
	r.f.Publish(pts)
}

func metricByName(p Payload, name string) (Metric, bool) {
	for _, m := range p.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

func interop() bool { return os.Getenv("UNSGATE_INTEROP") != "" }

// syncBuf is a log destination safe for concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
