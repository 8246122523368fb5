package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/publish/mqtt"
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

var subscribers atomic.Int64 // for unique client ids

func subscribe(t *testing.T, addr string, filters ...string) *subscriber {
	t.Helper()
	s := &subscriber{last: map[string]received{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	id := fmt.Sprintf("test-sub-%s-%d", t.Name(), subscribers.Add(1))
	_, err := mqtt.Subscribe(ctx, addr, id, filters, 1, func(p *paho.Publish) {
		r := received{Topic: p.Topic, Payload: append([]byte(nil), p.Payload...), Retained: p.Retain, At: time.Now()}
		s.mu.Lock()
		s.msgs = append(s.msgs, r)
		s.last[r.Topic] = r
		s.mu.Unlock()
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
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
