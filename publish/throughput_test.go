package publish_test

import (
	"context"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/mqtt"
)

// benchFanout is a Fanout with both real sinks, to the embedded broker and
// to kfake, with durable queues in a temporary folder (memory queues when
// storeDir is "").
func benchFanout(b *testing.B, storeDir string, queueLen int) (*publish.Fanout, []*model.TagMeta) {
	b.Helper()
	mq := startMQTT(b, &received{})
	kf := startKafka(b)
	f := publish.NewFanout(publish.Options{StoreDir: storeDir, QueueLen: queueLen})
	ms, err := mqtt.New(mqtt.Config{URL: "mqtt://" + mq.addr, GatewayID: "gw1"})
	if err != nil {
		b.Fatal(err)
	}
	ks, err := kafka.New(kafka.Config{Brokers: []string{kf.addr()}, GatewayID: "gw1", MetadataMinAge: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []publish.Sink{ms, ks} {
		if err := f.Add(s); err != nil {
			b.Fatal(err)
		}
	}
	metas := flowTagMetas()
	f.SetTags(metas)
	return f, metas
}

func runFanout(b *testing.B, f *publish.Fanout) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
}

// sentAll waits until both sinks have sent n messages.
func sentAll(b *testing.B, f *publish.Fanout, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ok := true
		for _, st := range f.Stats() {
			ok = ok && st.Sent >= uint64(n)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("not sent in time: %+v", f.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkFanoutBothSinks: points/s from Publish to acknowledged by both
// the MQTT broker (QoS 1) and Kafka (acks=all), through durable queues.
// The brokers run in the same process: run with -cpu 1 for "one core".
func BenchmarkFanoutBothSinks(b *testing.B) {
	for _, c := range []struct {
		name    string
		durable bool
	}{{"memory", false}, {"durable", true}} {
		b.Run(c.name, func(b *testing.B) {
			dir := ""
			if c.durable {
				dir = b.TempDir()
			}
			f, metas := benchFanout(b, dir, 1<<20)
			runFanout(b, f)
			batch := make([]model.Point, 100)
			b.ReportAllocs()
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i += len(batch) {
				for k := range batch {
					batch[k] = flowPoint(metas, i+k)
				}
				f.Publish(batch[:min(len(batch), b.N-i)])
			}
			sentAll(b, f, b.N)
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "points/s")
		})
	}
}

// BenchmarkDrainAfterOutage: a backlog of b.N points stored while no sink
// ran (as during an outage), then the rate at which both sinks deliver it
// once they run; the memory tail is small, so the backlog is read back
// from disk.
func BenchmarkDrainAfterOutage(b *testing.B) {
	f, metas := benchFanout(b, b.TempDir(), 1000)
	batch := make([]model.Point, 100)
	for i := 0; i < b.N; i += len(batch) {
		for k := range batch {
			batch[k] = flowPoint(metas, i+k)
		}
		f.Publish(batch[:min(len(batch), b.N-i)])
	}
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	runFanout(b, f)
	sentAll(b, f, b.N)
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "points/s")
}
