package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

// cpuTime is the CPU time (user+system) the whole process has used: sink,
// embedded broker and subscriber together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchMessages returns n messages over 1000 topics; payloads are encoded
// once per topic and shared, like the fan-out shares them.
func benchMessages(n int) []publish.Message {
	tags := testTags(1000)
	pts := points(tags, len(tags))
	base := messagesFor(pts)
	out := make([]publish.Message, n)
	for i := range out {
		out[i] = base[i%len(base)]
	}
	return out
}

// countingSubscriber is a QoS 1 subscriber to every value topic that only
// counts what it gets.
func countingSubscriber(b *testing.B, addr string) *atomic.Int64 {
	var n atomic.Int64
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { n.Add(1); return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "counter", CleanStart: true, KeepAlive: 30}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "acme/site/area/#", QoS: 1}}}); err != nil {
		b.Fatal(err)
	}
	return &n
}

func report(b *testing.B, n int, elapsed, cpu time.Duration) {
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/msg")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here; msgs/s says it
}

// BenchmarkSinkThroughput: QoS 1 retained publishes through the embedded
// broker on loopback, timed until every message is acknowledged (and, with
// a subscriber, delivered to it). With broker=process the broker runs in a
// child process, so cpu-µs/msg is the sink's own cost; otherwise it is the
// whole process (sink, broker and subscriber).
func BenchmarkSinkThroughput(b *testing.B) {
	cases := []struct {
		name           string
		child, withSub bool
	}{
		{"broker=inprocess/subscriber=false", false, false},
		{"broker=inprocess/subscriber=true", false, true},
		{"broker=process/subscriber=false", true, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var url, addr string
			if c.child {
				addr = startBrokerProcess(b)
				url = "mqtt://" + addr
			} else {
				brk := startBroker(b, broker.Config{})
				url, addr = brk.URL(), brk.Addr()
			}
			var got *atomic.Int64
			if c.withSub {
				got = countingSubscriber(b, addr)
			}
			sink := newSink(b, Config{URL: url, GatewayID: "bench"})
			n := b.N
			q := publish.NewQueue(n)
			msgs := benchMessages(n)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			q.PushBatch(msgs)
			runSink(b, sink, q)
			waitFor(b, "all acknowledged", 5*time.Minute, func() bool { return sink.Status().Sent == uint64(n) })
			if c.withSub {
				waitFor(b, "all delivered", time.Minute, func() bool { return got.Load() >= int64(n) })
			}
			elapsed, cpu := time.Since(t0), cpuTime()-cpu0
			b.StopTimer()
			report(b, n, elapsed, cpu)
		})
	}
}

// brokerHelperEnv makes the test binary run only an embedded broker (see
// TestMain), so a benchmark can measure the sink's CPU apart from it.
const brokerHelperEnv = "UNSGATE_TEST_BROKER_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(brokerHelperEnv) == "1" {
		b, err := broker.Start("127.0.0.1:0", nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(b.Addr())
		io.Copy(io.Discard, os.Stdin) // until the parent closes our stdin
		b.Close()
		return
	}
	os.Exit(m.Run())
}

func startBrokerProcess(b *testing.B) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), brokerHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("broker process: %v", err)
	}
	return strings.TrimSpace(line)
}

// BenchmarkAutopahoBlockingPublish is the baseline the sink is measured
// against: autopaho's ConnectionManager.Publish, which waits for each
// PUBACK, from 1 or 64 goroutines (64 would also break per-topic order).
func BenchmarkAutopahoBlockingPublish(b *testing.B) {
	for _, workers := range []int{1, 64} {
		b.Run(fmt.Sprintf("publishers=%d", workers), func(b *testing.B) {
			brk := startBroker(b, broker.Config{})
			u, _ := url.Parse(brk.URL())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
				ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
				ClientConfig: paho.ClientConfig{ClientID: "baseline"},
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := cm.AwaitConnection(ctx); err != nil {
				b.Fatal(err)
			}
			msgs := benchMessages(b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1)) - 1
						if i >= len(msgs) {
							return
						}
						m := msgs[i]
						_, err := cm.Publish(ctx, &paho.Publish{Topic: m.Topic, Payload: m.Payload, QoS: 1, Retain: true,
							Properties: &paho.PublishProperties{ContentType: publish.ContentType}})
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed, cpu := time.Since(t0), cpuTime()-cpu0
			b.StopTimer()
			report(b, b.N, elapsed, cpu)
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer dcancel()
			_ = cm.Disconnect(dctx)
		})
	}
}
