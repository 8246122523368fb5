package kafka

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/unsgate/unsgate/publish"
)

// BenchmarkProduce measures messages through the sink to an in-process
// kfake broker on loopback, acks=all, counted when every record is
// acknowledged: 1000 tags, the fan-out's JSON payloads, default linger.
// The broker discards record bytes (BlackholeProduce) so that its storage
// stays out of the figure; its request handling (in this process) does
// not, and neither do its allocations.
func BenchmarkProduce(b *testing.B) {
	for _, compression := range Compressions {
		b.Run(compression, func(b *testing.B) {
			c := startCluster(b, kfake.SeedTopics(6, DefaultTopic), kfake.BlackholeProduce())
			cfg := testConfig(addrs(c)...)
			cfg.Linger = 0 // the default
			cfg.Compression = compression
			s := newSink(b, cfg)
			q := publish.NewQueue(1 << 20)
			msgs := values(tags("acme/munich/bottling/line1", 1000), 0, 10000)
			runSink(b, s, q)
			// Warm up: connect, producer id, metadata.
			q.PushBatch(msgs[:100])
			waitFor(b, "warm-up", 10*time.Second, func() bool { return s.Status().Sent == 100 })

			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for pushed := 0; pushed < b.N; {
				n := min(1000, b.N-pushed)
				q.PushBatch(msgs[pushed%10000 : pushed%10000+n])
				pushed += n
				for q.Len() > 100000 { // do not let the queue drop
					time.Sleep(100 * time.Microsecond)
				}
			}
			for s.Status().Sent < uint64(b.N)+100 {
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
