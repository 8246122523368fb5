package gateway

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// subscriber is a real MQTT v5 client that records every message it gets.
type subscriber struct {
	mu   sync.Mutex
	msgs []received
	last map[string]received
}

type received struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time
}

type uns struct {
	TimestampMS int64  `json:"timestamp_ms"`
	Value       any    `json:"value"`
	Quality     string `json:"quality"`
	Unit        string `json:"unit"`
	Stale       bool   `json:"stale"`
}

func subscribe(t *testing.T, addr string, filters ...string) *subscriber {
	t.Helper()
	s := &subscriber{last: map[string]received{}}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial broker: %v", err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			r := received{Topic: pr.Packet.Topic, Payload: append([]byte(nil), pr.Packet.Payload...), Retained: pr.Packet.Retain, At: time.Now()}
			s.mu.Lock()
			s.msgs = append(s.msgs, r)
			s.last[r.Topic] = r
			s.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "test-sub-" + t.Name(), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	subs := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// value returns the last UNS message on topic, decoded.
func (s *subscriber) value(topic string) (uns, bool) {
	s.mu.Lock()
	r, ok := s.last[topic]
	s.mu.Unlock()
	if !ok {
		return uns{}, false
	}
	var u uns
	if err := json.Unmarshal(r.Payload, &u); err != nil {
		return uns{}, false
	}
	return u, true
}

func (s *subscriber) raw(topic string) (received, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.last[topic]
	return r, ok
}

// history returns every message received on topic, in order.
func (s *subscriber) history(topic string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []received
	for _, m := range s.msgs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}
