package kafka

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// Every value becomes one record: key = UNS path, value = the payload as
// is, timestamp = the point's, and the headers; messages without a tag
// are finished without a record.
func TestRecordsCarryKeyValueHeadersAndTime(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, DefaultTopic))
	var version atomic.Value
	version.Store("")
	cfg := testConfig(addrs(c)...)
	cfg.ModelVersion = func() string { return version.Load().(string) }
	s := newSink(t, cfg)
	q := publish.NewQueue(1000)
	runSink(t, s, q)

	ts := tags("acme/munich/bottling/line1", 3)
	first := values(ts, 0, 6)
	first[1].Quality = model.QualityUncertain
	first[2].Quality = model.QualityBad
	first[3].Replay = true
	payloads := make([][]byte, len(first))
	for i := range first {
		payloads[i] = slices.Clone(first[i].Payload)
	}
	q.PushBatch(first)
	q.Push(publish.Message{Topic: ts[0].Topic + publish.MetaSuffix, Payload: []byte(`{"datatype":"float"}`), Retain: true})
	waitFor(t, "first values sent", 10*time.Second, func() bool { return s.Status().Sent == 6 && q.Taken() == 0 })

	version.Store("3f9c2a1b")
	second := values(ts, 6, 3)
	q.PushBatch(second)
	waitFor(t, "second values sent", 10*time.Second, func() bool { return s.Status().Sent == 9 && q.Taken() == 0 })
	if s.Skipped() != 1 {
		t.Errorf("skipped = %d, want 1 (the _meta message)", s.Skipped())
	}
	for i := range first {
		if string(first[i].Payload) != string(payloads[i]) {
			t.Fatalf("payload %d was modified", i)
		}
	}

	recs := consume(t, addrs(c), DefaultTopic, 9, 10*time.Second)
	byValue := map[string]record{}
	for _, r := range recs {
		byValue[r.value] = r
	}
	if len(recs) != 9 || len(byValue) != 9 {
		t.Fatalf("read %d records (%d distinct), want 9", len(recs), len(byValue))
	}
	for i, m := range append(first, second...) {
		r, ok := byValue[string(m.Payload)]
		if !ok {
			t.Fatalf("no record with value %s", m.Payload)
		}
		if r.key != m.Topic {
			t.Errorf("record %d: key %q, want %q", i, r.key, m.Topic)
		}
		if !r.timestamp.Equal(time.UnixMilli(m.TimeMs)) {
			t.Errorf("record %d: timestamp %v, want %v", i, r.timestamp, time.UnixMilli(m.TimeMs))
		}
		want := map[string]string{
			"content-type": "application/json",
			"quality":      m.Quality.String(),
			"timestamp_ms": strconv.FormatInt(m.TimeMs, 10),
			"gateway":      "gw1",
		}
		order := []string{"content-type", "quality", "timestamp_ms", "gateway"}
		if i >= len(first) {
			want["model_version"] = "3f9c2a1b"
			order = append(order, "model_version")
		}
		if m.Replay {
			want["replay"] = "true"
			order = append(order, "replay")
		}
		if fmt.Sprint(r.headers) != fmt.Sprint(want) || !slices.Equal(r.hdrOrder, order) {
			t.Errorf("record %d headers %v (order %v), want %v (order %v)", i, r.headers, r.hdrOrder, want, order)
		}
	}
	st := s.Status()
	if !st.Connected || st.Connects != 1 || st.Inflight != 0 || st.Rejected != 0 || st.Redelivered != 0 {
		t.Errorf("status %+v", st)
	}
}

// murmur2 is Kafka's Java murmur2 (org.apache.kafka.common.utils.Utils),
// written from the algorithm: seed 0x9747b28c, m 0x5bd1e995, r 24, four
// little-endian bytes at a time.
func murmur2(data []byte) int32 {
	const m, r = uint32(0x5bd1e995), 24
	h := uint32(0x9747b28c) ^ uint32(len(data))
	n := len(data) / 4
	for i := range n {
		k := uint32(data[4*i]) | uint32(data[4*i+1])<<8 | uint32(data[4*i+2])<<16 | uint32(data[4*i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[4*n:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// javaPartition is what Java's default partitioner picks for a keyed
// record: toPositive(murmur2(key)) % partitions.
func javaPartition(key string, partitions int32) int32 {
	return (murmur2([]byte(key)) & 0x7fffffff) % partitions
}

// The reference values of Kafka's own murmur2 test (UtilsTest).
func TestMurmur2MatchesJava(t *testing.T) {
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := murmur2([]byte(in)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

// A tag lands in the partition Java's murmur2 picks, every time.
func TestKeyLandsInJavaPartition(t *testing.T) {
	const parts = 7
	c := startCluster(t, kfake.SeedTopics(parts, DefaultTopic))
	s := newSink(t, testConfig(addrs(c)...))
	q := publish.NewQueue(1000)
	runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 40)
	msgs := values(ts, 0, 120)
	q.PushBatch(msgs)
	waitFor(t, "values sent", 10*time.Second, func() bool { return s.Status().Sent == 120 })
	recs := consume(t, addrs(c), DefaultTopic, 120, 10*time.Second)
	used := map[int32]bool{}
	for _, r := range recs {
		if want := javaPartition(r.key, parts); r.partition != want {
			t.Errorf("key %s in partition %d, Java's murmur2 says %d", r.key, r.partition, want)
		}
		used[r.partition] = true
	}
	if len(used) < 4 {
		t.Errorf("40 keys used only partitions %v: is the key hashed at all?", used)
	}
	checkOrder(t, msgs, recs)
}

func TestRouteMatch(t *testing.T) {
	for _, c := range []struct {
		filter, path string
		want         bool
	}{
		{"acme/munich/bottling/#", "acme/munich/bottling/line1/filler/temp", true},
		{"acme/munich/bottling/#", "acme/munich/bottling", true},
		{"acme/munich/bottling/#", "acme/munich/packaging/line1/temp", false},
		{"+/+/packaging/#", "acme/berlin/packaging/l2/temp", true},
		{"+/+/packaging/#", "acme/packaging/l2/temp", false},
		{"+/+/+", "a/b/c", true},
		{"+/+/+", "a/b", false},
		{"+/+/+", "a/b/c/d", false},
		{"a/b", "a/b", true},
		{"a/b", "a/bc", false},
		{"a/b", "a", false},
		{"#", "a/b/c", true},
		{"a/+/c/#", "a/x/c", true},
	} {
		levels, err := parseFilter(c.filter)
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		r := route{levels: levels}
		if got := r.match(c.path); got != c.want {
			t.Errorf("%s matches %s = %v, want %v", c.filter, c.path, got, c.want)
		}
	}
	for _, bad := range []string{"", "a//b", "/a", "a/", "a/#/b", "a/b#", "a+/b"} {
		if err := CheckFilter(bad); err == nil {
			t.Errorf("filter %q accepted", bad)
		}
	}
	r := route{levels: []string{"+", "+"}}
	if n := testing.AllocsPerRun(100, func() { r.match("acme/munich") }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
}

// Routes pick the topic (first match wins), the rest goes to the default
// topic, and the state topic gets every value too.
func TestRoutesAndStateTopic(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(2, DefaultTopic, "uns.v1.bottling", "uns.v1.packaging", "uns.v1.state"))
	cfg := testConfig(addrs(c)...)
	cfg.Routes = []Route{
		{Match: "acme/munich/bottling/#", Topic: "uns.v1.bottling"},
		{Match: "+/+/packaging/#", Topic: "uns.v1.packaging"},
		{Match: "acme/munich/#", Topic: "uns.v1.never"}, // shadowed for bottling
	}
	cfg.StateTopic = "uns.v1.state"
	s := newSink(t, cfg)
	q := publish.NewQueue(1000)
	runSink(t, s, q)

	bottling := values(tags("acme/munich/bottling/line1", 2), 0, 4)
	packaging := values(tags("acme/berlin/packaging/line2", 2), 100, 4)
	other := values(tags("acme/berlin/bottling/line3", 2), 200, 4)
	all := slices.Concat(bottling, packaging, other)
	q.PushBatch(all)
	waitFor(t, "values sent", 10*time.Second, func() bool { return s.Status().Sent == 12 })

	for topic, want := range map[string][]publish.Message{
		"uns.v1.bottling": bottling, "uns.v1.packaging": packaging, DefaultTopic: other, "uns.v1.state": all,
	} {
		recs := consume(t, addrs(c), topic, len(want), 10*time.Second)
		if len(recs) != len(want) {
			t.Errorf("%s: %d records, want %d", topic, len(recs), len(want))
		}
		checkOrder(t, want, recs)
		for _, r := range recs {
			if r.headers["content-type"] != "application/json" || r.headers["gateway"] != "gw1" {
				t.Errorf("%s: record headers %v", topic, r.headers)
			}
		}
	}
	if st := s.Status(); st.Inflight != 0 || q.Taken() != 0 {
		t.Errorf("after delivery: status %+v, taken %d", st, q.Taken())
	}
}

// A steady flow over many keys with a small window: every record arrives
// once, in order per key.
func TestOrderPerKeyUnderSteadyFlow(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(4, DefaultTopic))
	cfg := testConfig(addrs(c)...)
	cfg.MaxInflight = 64
	s := newSink(t, cfg)
	q := publish.NewQueue(100000)
	runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 20)
	const total = 5000
	msgs := values(ts, 0, total)
	for i := 0; i < total; i += 50 {
		q.PushBatch(msgs[i : i+50])
		if i%1000 == 0 {
			time.Sleep(time.Millisecond) // a flow, not one burst
		}
	}
	waitFor(t, "all sent", 20*time.Second, func() bool { return s.Status().Sent == total })
	recs := consume(t, addrs(c), DefaultTopic, total, 20*time.Second)
	if len(recs) != total {
		t.Errorf("%d records, want %d (duplicates?)", len(recs), total)
	}
	checkOrder(t, msgs, recs)
	if st := s.Status(); st.Redelivered != 0 || st.Rejected != 0 {
		t.Errorf("status %+v", st)
	}
}

// No broker at first: the sink says so, keeps everything, and delivers it
// in order once the broker is there.
func TestBrokerUnavailableAtStart(t *testing.T) {
	port := freePort(t)
	s := newSink(t, testConfig(portAddr(port)))
	q := publish.NewQueue(1000)
	runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 5)
	msgs := values(ts, 0, 200)
	q.PushBatch(msgs)
	waitFor(t, "a connection error", 10*time.Second, func() bool { return s.Status().LastError != "" })
	if st := s.Status(); st.Connected || st.Sent != 0 || st.Inflight+q.Len() != 200 {
		t.Fatalf("without a broker: status %+v, queued %d", st, q.Len())
	}
	if !strings.Contains(s.Status().LastError, "refused") {
		t.Errorf("last error %q does not say the connection was refused", s.Status().LastError)
	}

	c := startCluster(t, kfake.Ports(port), kfake.SeedTopics(3, DefaultTopic))
	waitFor(t, "delivery after the broker came", 15*time.Second, func() bool { return s.Status().Sent == 200 })
	recs := consume(t, addrs(c), DefaultTopic, 200, 10*time.Second)
	checkOrder(t, msgs, recs)
	st := s.Status()
	if !st.Connected || st.Connects != 1 || st.Inflight != 0 || q.Taken() != 0 {
		t.Errorf("status %+v, taken %d", st, q.Taken())
	}
}

// The broker goes away mid-flow and comes back with its data: nothing is
// lost, order per key holds, and the counters account for every message.
func TestBrokerRestartMidFlow(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(3, DefaultTopic)}
	c1, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, testConfig(portAddr(port)))
	q := publish.NewQueue(100000)
	runSink(t, s, q)

	ts := tags("acme/munich/bottling/line1", 10)
	const total = 3000
	msgs := values(ts, 0, total)
	pushed := 0
	push := func(n int) {
		for k := 0; k < n; k += 20 {
			q.PushBatch(msgs[pushed : pushed+20])
			pushed += 20
			time.Sleep(200 * time.Microsecond)
		}
	}
	push(1000)
	waitFor(t, "first part sent", 10*time.Second, func() bool { return s.Status().Sent >= 500 })
	c1.Close()
	push(1000)
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !s.Status().Connected })
	push(500)
	c2, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	push(500)
	waitFor(t, "everything sent after the restart", 20*time.Second, func() bool { return s.Status().Sent == uint64(pushed) })

	recs := consume(t, addrs(c2), DefaultTopic, total, 15*time.Second)
	checkOrder(t, msgs, recs)
	st := s.Status()
	if st.Sent != total || st.Rejected != 0 || st.Inflight != 0 || q.Len() != 0 || q.Taken() != 0 || q.Dropped() != 0 {
		t.Errorf("counters do not add up: status %+v, queued %d, taken %d, dropped %d", st, q.Len(), q.Taken(), q.Dropped())
	}
	if st.Connects < 2 {
		t.Errorf("connects = %d, want at least 2", st.Connects)
	}
	t.Logf("status after the restart: %+v; %d records read (%d duplicates)", st, len(recs), len(recs)-total)
}

// A record larger than a batch may be is refused for good: counted,
// finished, and the others flow.
func TestTooLargeIsRejectedOthersFlow(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		c := startCluster(t, kfake.SeedTopics(1, DefaultTopic))
		cfg := testConfig(addrs(c)...)
		cfg.BatchBytes = 4096
		tooLarge(t, c, cfg)
	})
	t.Run("broker", func(t *testing.T) {
		c := startCluster(t, kfake.SeedTopics(1, DefaultTopic), kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4096"}))
		cfg := testConfig(addrs(c)...)
		cfg.Compression = "none"
		tooLarge(t, c, cfg)
	})
}

func tooLarge(t *testing.T, c *kfake.Cluster, cfg Config) {
	s := newSink(t, cfg)
	q := publish.NewQueue(1000)
	runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 2)
	before := values(ts, 0, 4)
	q.PushBatch(before)
	waitFor(t, "values before", 10*time.Second, func() bool { return s.Status().Sent == 4 })
	big := values(ts, 4, 1)[0]
	big.Payload = []byte(`{"value":"` + strings.Repeat("x", 10000) + `"}`)
	q.Push(big)
	waitFor(t, "the large one rejected", 10*time.Second, func() bool { return s.Status().Rejected == 1 })
	after := values(ts, 5, 4)
	q.PushBatch(after)
	waitFor(t, "values after", 10*time.Second, func() bool { return s.Status().Sent == 8 && q.Taken() == 0 })
	st := s.Status()
	if !strings.Contains(st.LastError, "MESSAGE_TOO_LARGE") || !strings.Contains(st.LastError, "acme/munich/bottling/line1/cell0/temp") {
		t.Errorf("last error %q does not name the problem and the tag", st.LastError)
	}
	recs := consume(t, addrs(c), DefaultTopic, 8, 10*time.Second)
	checkOrder(t, slices.Concat(before, after), recs)
	if st.Inflight != 0 || q.Len() != 0 {
		t.Errorf("status %+v, queued %d", st, q.Len())
	}
}

// Shutdown without acknowledgements: Run returns within its bound and every
// message is back in the queue, in the original order, none taken.
func TestShutdownRequeuesInOrder(t *testing.T) {
	port := freePort(t)
	cfg := testConfig(portAddr(port))
	cfg.FlushTimeout = 300 * time.Millisecond
	s := newSink(t, cfg)
	q := publish.NewQueue(1000)
	stop := runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 3)
	msgs := values(ts, 0, 300)
	msgs[7] = publish.Message{Topic: "acme/_gateways/gw1/status", Payload: []byte(`{}`)} // not for Kafka
	q.PushBatch(msgs)
	waitFor(t, "messages taken", 10*time.Second, func() bool { return q.Len() == 0 })
	start := time.Now()
	stop()
	if d := time.Since(start); d > cfg.FlushTimeout+closeWait+2*time.Second {
		t.Errorf("Run took %v to return", d)
	}
	if q.Taken() != 0 || q.Len() != 299 {
		t.Fatalf("after Run: %d queued, %d taken; want 299 and 0", q.Len(), q.Taken())
	}
	got, err := q.PopBatch(t.Context(), nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Delete(slices.Clone(msgs), 7, 8)
	for i := range want {
		if string(got[i].Payload) != string(want[i].Payload) {
			t.Fatalf("requeued message %d is %s, want %s", i, got[i].Payload, want[i].Payload)
		}
	}
	if st := s.Status(); st.Sent != 0 || st.Connected {
		t.Errorf("status %+v", st)
	}
}

// After a shutdown with some messages acknowledged, a new Run delivers the
// rest: the two runs together deliver each message, in order.
func TestShutdownThenRunAgain(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(3, DefaultTopic))
	s := newSink(t, testConfig(addrs(c)...))
	q := publish.NewQueue(100000)
	ts := tags("acme/munich/bottling/line1", 7)
	msgs := values(ts, 0, 20000)
	q.PushBatch(msgs)
	stop := runSink(t, s, q)
	waitFor(t, "some sent", 10*time.Second, func() bool { return s.Status().Sent > 0 })
	stop()
	if q.Taken() != 0 {
		t.Fatalf("taken after Run: %d", q.Taken())
	}
	runSink(t, s, q)
	waitFor(t, "all sent", 20*time.Second, func() bool { return s.Status().Sent == 20000 })
	recs := consume(t, addrs(c), DefaultTopic, 20000, 20*time.Second)
	checkOrder(t, msgs, recs)
}

// A missing topic fails records in the client: they go back to the queue,
// the error says why, and they are delivered once the topic exists.
func TestMissingTopicRequeuesUntilCreated(t *testing.T) {
	c := startCluster(t)
	s := newSink(t, testConfig(addrs(c)...))
	q := publish.NewQueue(1000)
	runSink(t, s, q)
	ts := tags("acme/munich/bottling/line1", 3)
	msgs := values(ts, 0, 30)
	q.PushBatch(msgs)
	waitFor(t, "a requeue", 20*time.Second, func() bool { return s.Status().Redelivered > 0 })
	if st := s.Status(); !strings.Contains(st.LastError, "create the topic") || st.Sent != 0 || st.Rejected != 0 {
		t.Errorf("status %+v", st)
	}
	if err := c.CreateTopic(DefaultTopic, 2, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after the topic was created", 20*time.Second, func() bool { return s.Status().Sent == 30 })
	recs := consume(t, addrs(c), DefaultTopic, 30, 10*time.Second)
	checkOrder(t, msgs, recs)
}

func TestConfigErrors(t *testing.T) {
	_, err := New(Config{
		Brokers:     []string{"kafka1", "h:0"},
		Topic:       "uns values",
		StateTopic:  "..",
		Routes:      []Route{{Match: "a/#/b", Topic: "x"}, {Match: "a/+", Topic: ""}},
		Compression: "snappy",
		SASL:        SASL{Mechanism: "GSSAPI", Username: "u"},
		CAFile:      "ca.pem",
		Linger:      -time.Second,
	})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, want := range []string{
		`broker "kafka1": want host:port`,
		`broker "h:0": port must be 1..65535`,
		`topic: topic name "uns values"`,
		`state topic: ".." is not a valid topic name`,
		`route 1: match "a/#/b": '#' must be the last level`,
		`route 2: topic: empty topic name`,
		`compression "snappy": want one of none, gzip, lz4, zstd`,
		`SASL mechanism "GSSAPI"`,
		`need TLS turned on`,
		`linger -1s out of range`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "at least one seed broker") {
		t.Errorf("no brokers: %v", err)
	}
	s, err := New(Config{Brokers: []string{"127.0.0.1:9092"}, GatewayID: "edge-01"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Topic != DefaultTopic || s.cfg.Compression != "gzip" || s.cfg.Linger != DefaultLinger ||
		s.cfg.BatchBytes != DefaultBatchBytes || s.cfg.ClientID != "unsgate-edge-01" || s.Name() != "kafka" {
		t.Errorf("defaults: %+v", s.cfg.Config)
	}
}

// Routes by the asset's type in the model, alone or with a UNS filter.
func TestRoutesByAssetType(t *testing.T) {
	c := startCluster(t, kfake.SeedTopics(1, DefaultTopic, "uns.v1.pumps", "uns.v1.munich-fillers"))
	cfg := testConfig(addrs(c)...)
	cfg.Routes = []Route{
		{Type: "Pump", Topic: "uns.v1.pumps"},
		{Match: "acme/munich/#", Type: "Filler", Topic: "uns.v1.munich-fillers"},
	}
	s := newSink(t, cfg)
	q := publish.NewQueue(1000)
	runSink(t, s, q)

	typed := func(prefix, typ string) []*model.TagMeta {
		ts := tags(prefix, 2)
		for _, m := range ts {
			m.Type = typ
		}
		return ts
	}
	pumps := values(typed("acme/berlin/utilities/water", "Pump"), 0, 4)
	munichFillers := values(typed("acme/munich/bottling/line1", "Filler"), 100, 4)
	berlinFillers := values(typed("acme/berlin/bottling/line1", "Filler"), 200, 4) // type matches, path does not
	untyped := values(tags("acme/munich/bottling/line2", 2), 300, 4)
	q.PushBatch(slices.Concat(pumps, munichFillers, berlinFillers, untyped))
	waitFor(t, "values sent", 10*time.Second, func() bool { return s.Status().Sent == 16 })
	for topic, want := range map[string][]publish.Message{
		"uns.v1.pumps": pumps, "uns.v1.munich-fillers": munichFillers, DefaultTopic: slices.Concat(berlinFillers, untyped),
	} {
		recs := consume(t, addrs(c), topic, len(want), 10*time.Second)
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records, want %d", topic, len(recs), len(want))
		}
		checkOrder(t, want, recs)
	}
}

func TestRouteNeedsMatchOrType(t *testing.T) {
	cfg := testConfig("127.0.0.1:9092")
	cfg.Routes = []Route{{Topic: "uns.v1.x"}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "route 1: give match") {
		t.Fatalf("New = %v", err)
	}
}
