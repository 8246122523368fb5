package broker

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

type client struct {
	c   *paho.Client
	mu  sync.Mutex
	got []*paho.Publish
}

func dial(t *testing.T, addr, id, user, pass string) (*client, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cl := &client{}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.got = append(cl.got, pr.Packet)
			cl.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	if _, err := cl.c.Connect(ctx, cp); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cl.c.Disconnect(&paho.Disconnect{}) })
	return cl, nil
}

func (cl *client) messages() []*paho.Publish {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]*paho.Publish(nil), cl.got...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBrokerPortZeroRetainAndRestart(t *testing.T) {
	b, err := Start("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	host, port, err := net.SplitHostPort(b.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q, want the bound port", b.Addr())
	}
	if b.URL() != "mqtt://"+b.Addr() {
		t.Fatalf("URL %s", b.URL())
	}

	pub, err := dial(t, b.Addr(), "pub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := pub.c.Publish(ctx, &paho.Publish{Topic: "a/b", QoS: 1, Retain: true, Payload: []byte("42")}); err != nil {
		t.Fatal(err)
	}
	sub, err := dial(t, b.Addr(), "sub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	suback, err := sub.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/#", QoS: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	// Subscribers are granted QoS 0: see guard.
	if len(suback.Reasons) != 1 || suback.Reasons[0] != 0 {
		t.Fatalf("SUBACK reasons %v, want [0] (granted QoS 0)", suback.Reasons)
	}
	waitFor(t, "retained message", func() bool { return len(sub.messages()) == 1 })
	if m := sub.messages()[0]; m.Topic != "a/b" || string(m.Payload) != "42" || !m.Retain || m.QoS != 0 {
		t.Fatalf("got %+v", m)
	}

	// The same address can be taken again right after Close.
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b2, err := Start(addr, nil)
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	defer b2.Close()
	if _, err := dial(t, b2.Addr(), "again", "", ""); err != nil {
		t.Fatal(err)
	}
}

func TestBrokerAddressInUse(t *testing.T) {
	b, err := Start("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Start(b.Addr(), nil); err == nil || !strings.Contains(err.Error(), "listen on "+b.Addr()) {
		t.Fatalf("second broker on the same address: %v", err)
	}
}

func TestBrokerUsers(t *testing.T) {
	b, err := StartWith(Config{Addr: "127.0.0.1:0", Users: map[string]string{"gw": "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, c := range []struct{ user, pass string }{{"gw", "wrong"}, {"", ""}, {"other", "s3cret"}} {
		if _, err := dial(t, b.Addr(), "x", c.user, c.pass); err == nil {
			t.Fatalf("%q/%q was accepted", c.user, c.pass)
		}
	}
	if _, err := dial(t, b.Addr(), "ok", "gw", "s3cret"); err != nil {
		t.Fatal(err)
	}
}

// logRecords keeps the records a logger writes, at every level.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func (l *logRecords) find(msg string) (slog.Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Message == msg {
			return r, true
		}
	}
	return slog.Record{}, false
}

// A client that goes away without DISCONNECT is logged at debug level
// with a message, not as a warning without one.
func TestClientGoneIsNoWarning(t *testing.T) {
	recs := &logRecords{}
	b, err := Start("127.0.0.1:0", slog.New(recs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: "gone", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no DISCONNECT
	waitFor(t, "the connection's end in the log", func() bool { _, ok := recs.find(clientEndMsg); return ok })
	r, _ := recs.find(clientEndMsg)
	var hasErr bool
	r.Attrs(func(a slog.Attr) bool { hasErr = hasErr || a.Key == "error"; return true })
	if r.Level != slog.LevelDebug || !hasErr {
		t.Fatalf("record %v %q, want debug with the error", r.Level, r.Message)
	}
	if _, ok := recs.find(""); ok {
		t.Fatal("a record without a message was passed on")
	}
}
