// Package broker runs the embedded MQTT broker (mochi-mqtt) that the
// gateway starts when no external broker is configured, and that tests use
// as a real peer. Retained messages live in memory only.
//
// It must not know about UNS topics or payloads; it is a plain broker.
package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// DefaultAddr is where Start listens when addr is empty: loopback only.
const DefaultAddr = "127.0.0.1:1883"

// Config configures StartWith.
type Config struct {
	// Addr is host:port to listen on (default DefaultAddr); port 0 picks a
	// free port, which Addr reports.
	Addr   string
	Logger *slog.Logger // nil: discard
	// TLS, if set, makes the listener mqtts. Set ClientAuth to require
	// client certificates.
	TLS *tls.Config
	// Users, if not nil, is the only accepted username/password pairs;
	// nil allows every client.
	Users map[string]string
	// Hooks are extra mochi hooks (metrics, tests), added after auth.
	Hooks []mochi.Hook
}

// Broker is a running embedded broker.
type Broker struct {
	srv       *mochi.Server
	mochiL    *listeners.Net
	tracker   *trackingListener
	addr      string
	tls       bool
	closeOnce sync.Once
}

// Start runs a broker on addr (default DefaultAddr) that accepts every
// client.
func Start(addr string, logger *slog.Logger) (*Broker, error) {
	return StartWith(Config{Addr: addr, Logger: logger})
}

// StartWith runs a broker as cfg says. It returns once the listener is
// bound.
func StartWith(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := mochi.New(&mochi.Options{
		Logger:                  slog.New(clientEndHandler{cfg.Logger.Handler()}),
		InlineClient:            false,
		ClientNetReadBufferSize: 16 << 10,
	})
	// mochi refuses every client unless an auth hook says otherwise.
	var err error
	if cfg.Users == nil {
		err = srv.AddHook(new(auth.AllowHook), nil)
	} else {
		ledger := &auth.Ledger{Users: auth.Users{}}
		for u, p := range cfg.Users {
			ledger.Users[u] = auth.UserRule{Username: auth.RString(u), Password: auth.RString(p)}
		}
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger})
	}
	if err != nil {
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	// See guard: mochi v2.7.9 can deadlock on QoS 1 deliveries and reads
	// retained state unguarded.
	if err := srv.AddHook(newGuard(srv.Options.Capabilities.TopicAliasMaximum), nil); err != nil {
		return nil, fmt.Errorf("broker: guard: %w", err)
	}
	for _, h := range cfg.Hooks {
		if err := srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("broker: hook %s: %w", h.ID(), err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w", cfg.Addr, err)
	}
	tracker := newTrackingListener(ln)
	var served net.Listener = tracker
	if cfg.TLS != nil {
		served = tls.NewListener(tracker, cfg.TLS)
	}
	l := listeners.NewNet("tcp", served)
	if err := srv.AddListener(l); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("broker: listen on %s: %w", cfg.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	// The bound address matters for port 0.
	return &Broker{srv: srv, mochiL: l, tracker: tracker, addr: ln.Addr().String(), tls: cfg.TLS != nil}, nil
}

// Addr is the bound host:port.
func (b *Broker) Addr() string { return b.addr }

// URL is mqtt://Addr, or mqtts://Addr with TLS.
func (b *Broker) URL() string {
	if b.tls {
		return "mqtts://" + b.addr
	}
	return "mqtt://" + b.addr
}

// Close disconnects every client (with reason "server shutting down") and
// stops listening; retained messages are gone. Calling it again does
// nothing. It gives up after closeTimeout rather than hang a shutdown.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		// Stop accepting first; mochi's own Close then finds its listener
		// closed and skips its client scan, which can deadlock (see
		// drain.go), leaving the clients to drain.
		b.mochiL.Close(func(string) {})
		b.tracker.drain(b.srv, closeTimeout/2)
		done := make(chan error, 1)
		go func() { done <- b.srv.Close() }()
		select {
		case err = <-done:
		case <-time.After(closeTimeout):
			err = fmt.Errorf("broker: close: clients still attached after %s", closeTimeout)
		}
	})
	return err
}

// closeTimeout bounds Close; clients get half of it to leave.
const closeTimeout = 5 * time.Second
