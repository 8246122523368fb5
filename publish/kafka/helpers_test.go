package kafka

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// startCluster starts a one-broker kfake cluster on 127.0.0.1 (a random
// port unless opts say otherwise) and closes it when the test ends.
func startCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// freePort returns a loopback port nothing listens on (for a broker that
// starts later, or restarts on the same port).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testConfig is a sink config for tests: quick metadata refreshes.
func testConfig(brokers ...string) Config {
	return Config{
		Brokers:        brokers,
		GatewayID:      "gw1",
		Linger:         2 * time.Millisecond,
		MetadataMinAge: 100 * time.Millisecond,
		FlushTimeout:   500 * time.Millisecond,
	}
}

func newSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
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
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

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

// tags returns n tags under prefix.
func tags(prefix string, n int) []*model.TagMeta {
	out := make([]*model.TagMeta, n)
	for i := range out {
		out[i] = &model.TagMeta{Topic: fmt.Sprintf("%s/cell%d/temp", prefix, i), Name: "temp", Index: i}
	}
	return out
}

var baseMs = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC).UnixMilli()

// values returns n value messages round-robin over ts; message i carries
// value i and time baseMs+i, encoded the way the fan-out does.
func values(ts []*model.TagMeta, from, n int) []publish.Message {
	out := make([]publish.Message, n)
	for k := range out {
		i := from + k
		p := model.Point{Meta: ts[i%len(ts)], Value: model.IntValue(int64(i)), Quality: model.QualityGood,
			Time: time.UnixMilli(baseMs + int64(i))}
		out[k] = publish.Message{Topic: p.Meta.Topic, Payload: publish.AppendJSON(nil, &p), Retain: true, Meta: p.Meta,
			Quality: p.Quality, TimeMs: p.Time.UnixMilli()}
	}
	return out
}

// record is what a consumer read.
type record struct {
	topic     string
	partition int32
	key       string
	value     string
	headers   map[string]string
	hdrOrder  []string
	timestamp time.Time
}

// consume reads topic from the start until want records arrived or the
// timeout passed, and returns what it read.
func consume(t testing.TB, brokers []string, topic string, want int, timeout time.Duration, opts ...kgo.Opt) []record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []record
	for len(out) < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			rec := record{topic: r.Topic, partition: r.Partition, key: string(r.Key), value: string(r.Value),
				headers: map[string]string{}, timestamp: r.Timestamp}
			for _, h := range r.Headers {
				rec.headers[h.Key] = string(h.Value)
				rec.hdrOrder = append(rec.hdrOrder, h.Key)
			}
			out = append(out, rec)
		})
	}
	if len(out) < want {
		t.Fatalf("read %d records of %d from %s within %v", len(out), want, topic, timeout)
	}
	return out
}

// checkOrder checks that every message of msgs arrived in recs, and that
// per key the values arrived in the order sent (a record sent twice may
// repeat, but nothing may come before one sent earlier).
func checkOrder(t testing.TB, msgs []publish.Message, recs []record) {
	t.Helper()
	want := map[string][]string{}
	for _, m := range msgs {
		want[m.Topic] = append(want[m.Topic], string(m.Payload))
	}
	got := map[string][]string{}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.key+"\x00"+r.value] {
			continue // a redelivery
		}
		seen[r.key+"\x00"+r.value] = true
		got[r.key] = append(got[r.key], r.value)
	}
	for key, w := range want {
		g := got[key]
		if len(g) != len(w) {
			t.Errorf("key %s: %d distinct records, want %d", key, len(g), len(w))
			continue
		}
		for i := range w {
			if g[i] != w[i] {
				t.Errorf("key %s: record %d is %s, want %s (out of order)", key, i, g[i], w[i])
				break
			}
		}
	}
}

func addrs(c *kfake.Cluster) []string { return c.ListenAddrs() }

func portAddr(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
