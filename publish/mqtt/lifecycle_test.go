package mqtt

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

// The connection drops in the middle of the _meta burst (and again later);
// every value still arrives, Sent counts exactly the values, nothing stays
// taken, and each topic ends with its newest value.
func TestSinkCutDuringMetaBurst(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	p := startProxy(t, b.Addr())
	var cuts sync.Map
	rec.onPub = func(n int) {
		if n == 300 || n == 2500 {
			if _, dup := cuts.LoadOrStore(n, true); !dup {
				go p.cut()
			}
		}
	}
	tags := testTags(1000)
	cfg := fastConfig("mqtt://" + p.addr())
	cfg.MaxInflight = 50
	sink := newSink(t, cfg)
	sink.SetTags(tags)
	q := publish.NewQueue(5000)
	msgs := messagesFor(points(tags, 3000))
	q.PushBatch(msgs)
	runSink(t, sink, q)
	waitFor(t, "all sent", 20*time.Second, func() bool { return sink.Status().Sent == 3000 })
	st := sink.Status()
	if st.Connects < 2 || q.Taken() != 0 || q.Len() != 0 || st.Inflight != 0 {
		t.Fatalf("status %+v taken %d len %d", st, q.Taken(), q.Len())
	}
	// per-topic order of the last occurrence of each value must end with the newest
	last := map[string]string{}
	for _, r := range rec.values(valuePrefix) {
		if !isMeta(r.topic) {
			last[r.topic] = r.payload
		}
	}
	for i := 2000; i < 3000; i++ {
		if last[msgs[i].Topic] != string(msgs[i].Payload) {
			t.Fatalf("topic %s ends with %s, want %s", msgs[i].Topic, last[msgs[i].Topic], msgs[i].Payload)
		}
	}
}

// SetTags hammered while Run delivers (under -race).
func TestSinkSetTagsConcurrentWithRun(t *testing.T) {
	b := startBroker(t, broker.Config{})
	sink := newSink(t, fastConfig(b.URL()))
	q := publish.NewQueue(20000)
	stop := runSink(t, sink, q)
	tags := testTags(50)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			sink.SetTags(tags[:1+i%50])
			time.Sleep(100 * time.Microsecond)
		}
	}()
	msgs := messagesFor(points(tags, 10000))
	q.PushBatch(msgs)
	waitFor(t, "all sent", 20*time.Second, func() bool { return sink.Status().Sent == 10000 })
	cancel()
	wg.Wait()
	stop()
	if q.Taken() != 0 {
		t.Fatalf("taken %d", q.Taken())
	}
}

// ctx cancelled while the sink is stuck connecting (TCP accepted, no CONNACK).
func TestSinkCancelDuringConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	sink := newSink(t, fastConfig("mqtt://"+ln.Addr().String()))
	q := publish.NewQueue(10)
	q.PushBatch(messagesFor(points(testTags(2), 4)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx, q) }()
	select { // the sink has connected and now waits for a CONNACK
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the sink never connected")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run hung")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Run took %v", el)
	}
	if q.Len() != 4 || q.Taken() != 0 {
		t.Fatalf("len %d taken %d", q.Len(), q.Taken())
	}
}
