package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish/mqtt"
)

// BenchOptions configures RunBench, the project's load tool.
type BenchOptions struct {
	Tags     int           // number of tags (default 10000)
	Poll     time.Duration // poll interval (default 100ms); every tag changes every poll
	Duration time.Duration // measured time (default 20s)
	Warmup   time.Duration // time before measuring (default 3s)
	// Subscribe adds a QoS 1 subscriber to every tag, which measures
	// source-to-subscriber latency (and costs the broker about as much as
	// the gateway's own publishing).
	Subscribe bool
	// Broker, if set (host:port), is an external MQTT broker to publish
	// to instead of the embedded one, so that CPU and memory are the
	// gateway's (and the simulator's) alone.
	Broker string
	Logger *slog.Logger
	// HeapProfile, if set, receives a heap profile taken at the end of the
	// measured time, after a garbage collection, while the gateway still
	// runs (so it shows what the running gateway keeps).
	HeapProfile io.Writer
}

// BenchResult is what RunBench measured over Duration.
type BenchResult struct {
	Tags         int
	Duration     time.Duration
	Samples      uint64 // raw samples harmonized
	Points       uint64 // points produced
	Sent         uint64 // messages acknowledged by the broker
	Dropped      uint64 // messages dropped by the sink queue
	Delivered    uint64 // messages the subscriber received
	LatencyP50   time.Duration
	LatencyP99   time.Duration
	CPU          time.Duration // process CPU (user+system) over Duration
	RSS, PeakRSS int64         // bytes, at the end
	HeapAlloc    uint64        // Go heap in use (live and not yet collected), at the end
	Mem          benchMem      // where the memory goes, at the end
	inProcess    string        // what shares the process, for Print
}

const (
	benchTagsPerAsset = 10
	benchTagsPerUnit  = 60000
)

// benchModel writes a model of n tags: assets of ten uint16 tags, half of
// them scaled by an expression, spread over as many unit ids as needed.
func benchModel(n int) []byte {
	var b bytes.Buffer
	b.WriteString("base: bench/site/area\ntypes:\n  Cell:\n    tags:\n")
	for i := range benchTagsPerAsset {
		fmt.Fprintf(&b, "      t%d: {address: \"holding:%d\"", i, i)
		if i%2 == 1 {
			b.WriteString(", expr: \"raw * 0.1\", unit: \"m/s\"")
		}
		b.WriteString("}\n")
	}
	b.WriteString("assets:\n")
	for a := 0; a*benchTagsPerAsset < n; a++ {
		unit := 1 + a*benchTagsPerAsset/benchTagsPerUnit
		offset := a*benchTagsPerAsset - (unit-1)*benchTagsPerUnit
		fmt.Fprintf(&b, "  u%d/c%d: {type: Cell, source: plc, unit_id: %d, offset: %d}\n", unit, a, unit, offset)
	}
	return b.Bytes()
}

// RunBench runs a simulated PLC whose n registers all change every poll,
// the embedded broker, and a gateway between them, and measures rates, CPU
// and memory. Everything runs in this process, so CPU includes the
// simulator, the broker and the subscriber.
func RunBench(ctx context.Context, o BenchOptions) (BenchResult, error) {
	o.Tags = max(o.Tags, benchTagsPerAsset)
	o.Tags -= o.Tags % benchTagsPerAsset
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	res := BenchResult{Tags: o.Tags, Duration: o.Duration, inProcess: "PLC simulator, gateway"}
	if o.Broker == "" {
		res.inProcess += ", embedded broker"
	}
	if o.Subscribe {
		res.inProcess += ", subscriber"
	}
	units := (o.Tags + benchTagsPerUnit - 1) / benchTagsPerUnit
	var unitIDs []uint8
	for u := 1; u <= units; u++ {
		unitIDs = append(unitIDs, uint8(u))
	}
	plc, err := sim.Listen("127.0.0.1:0", sim.WithUnits(unitIDs...))
	if err != nil {
		return res, err
	}
	defer plc.Close()

	m, err := model.LoadFiles([]model.File{{Name: "bench.yaml", Data: benchModel(o.Tags)}})
	if err != nil {
		return res, fmt.Errorf("bench model: %w", err)
	}
	// The sinks' stores (store and forward, as in production) live in a
	// folder of the run's own, so no run replays another's leftovers.
	dataDir, err := os.MkdirTemp("", "unsgate-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dataDir)
	cfg, err := ParseConfig("bench.yaml", []byte(fmt.Sprintf(
		"id: bench\nmodels: [bench.yaml]\ndata_dir: %q\nshutdown_timeout: 5s\nhttp: {disabled: true}\nsources:\n  plc: {url: %q, poll: %s, timeout: 2s}\n%s",
		dataDir, plc.URL(), o.Poll, benchSink(o.Broker))), func(string) (string, bool) { return "", false })
	if err != nil {
		return res, err
	}
	m, plan, err := CompileModel(cfg, m)
	if err != nil {
		return res, err
	}
	g, err := New(cfg, m, plan, o.Logger)
	if err != nil {
		return res, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Change every register twice per poll so that every poll reads a new
	// value for every tag.
	go func() {
		t := time.NewTicker(o.Poll / 2)
		defer t.Stop()
		regs := make([]uint16, benchTagsPerUnit)
		for n := uint16(1); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for u := range units {
				count := min(benchTagsPerUnit, o.Tags-u*benchTagsPerUnit)
				for i := range count {
					regs[i] = n + uint16(i)
				}
				plc.SetHolding(uint8(u+1), 0, regs[:count]...)
			}
		}
	}()

	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx, started) }()
	select {
	case err := <-errc:
		return res, err
	case <-started:
	}
	brokerAddr := g.BrokerAddr()
	if o.Broker != "" {
		brokerAddr = o.Broker
	}
	var lat *latencies
	if o.Subscribe {
		if lat, err = subscribeLatency(ctx, brokerAddr, "bench/#"); err != nil {
			return res, err
		}
	}

	select {
	case <-time.After(o.Warmup):
	case err := <-errc:
		return res, err
	}
	before, cpu0 := g.Stats(), processCPU()
	if lat != nil {
		lat.reset()
	}
	select {
	case <-time.After(o.Duration):
	case err := <-errc:
		return res, err
	}
	after, cpu1 := g.Stats(), processCPU()

	res.Samples = after.Engine.Samples - before.Engine.Samples
	res.Points = after.Engine.Points - before.Engine.Points
	for i := range after.Sinks {
		res.Sent += after.Sinks[i].Sent - before.Sinks[i].Sent
		res.Dropped += after.Sinks[i].Dropped - before.Sinks[i].Dropped
	}
	res.CPU = cpu1 - cpu0
	if lat != nil {
		res.Delivered, res.LatencyP50, res.LatencyP99 = lat.summary()
	}
	res.RSS, res.PeakRSS = readRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapAlloc = ms.HeapAlloc
	res.Mem = readBenchMem()
	if o.HeapProfile != nil {
		runtime.GC()
		if err := pprof.Lookup("heap").WriteTo(o.HeapProfile, 0); err != nil {
			cancel()
			<-errc
			return res, fmt.Errorf("heap profile: %w", err)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		return res, err
	}
	return res, nil
}

func benchSink(broker string) string {
	if broker == "" {
		return "broker: {listen: \"127.0.0.1:0\"}\n"
	}
	return fmt.Sprintf("sinks:\n  mqtt: {url: \"mqtt://%s\", client_id: unsgate-bench}\n", broker)
}

// Print writes the result for people.
func (r BenchResult) Print(w io.Writer) {
	sec := r.Duration.Seconds()
	rate := func(n uint64) string { return fmt.Sprintf("%10.0f/s", float64(n)/sec) }
	fmt.Fprintf(w, "unsgate bench: %d tags, measured for %v\n", r.Tags, r.Duration)
	fmt.Fprintf(w, "  samples harmonized      %s\n", rate(r.Samples))
	fmt.Fprintf(w, "  points published        %s  (acknowledged by the broker: %s, dropped: %d)\n", rate(r.Points), strings.TrimSpace(rate(r.Sent)), r.Dropped)
	if r.Delivered > 0 {
		fmt.Fprintf(w, "  delivered to subscriber %s  latency p50 %v, p99 %v (source response to subscriber)\n", rate(r.Delivered), r.LatencyP50, r.LatencyP99)
	}
	if r.Points > 0 {
		fmt.Fprintf(w, "  CPU                     %.2f cores, %.1f µs per point (this process: %s)\n",
			r.CPU.Seconds()/sec, float64(r.CPU.Microseconds())/float64(r.Points), r.inProcess)
	}
	fmt.Fprintf(w, "  memory                  RSS %.1f MB, peak %.1f MB, Go heap %.1f MB\n", float64(r.RSS)/1e6, float64(r.PeakRSS)/1e6, float64(r.HeapAlloc)/1e6)
	mb := func(n uint64) float64 { return float64(n) / 1e6 }
	m := r.Mem
	fmt.Fprintf(w, "  Go runtime              heap live %.1f MB (GC goal %.1f MB), objects %.1f MB, free %.1f MB, stacks %.1f MB, runtime %.1f MB, profiling %.1f MB mapped\n",
		mb(m.live), mb(m.goal), mb(m.objects), mb(m.free), mb(m.stacks), mb(m.runtime), mb(m.profiling))
}

// benchMem is the Go runtime's account of the process's memory
// (runtime/metrics): how much of the RSS is live data, how much the
// garbage collector's headroom (the goal is twice the live heap at the
// default GOGC, and freed pages stay resident up to about the goal), and
// how much stacks and the runtime's own structures. The rest of the RSS is
// mostly the executable's pages.
type benchMem struct {
	live      uint64 // heap reachable at the last collection
	goal      uint64 // heap size at which the next collection starts
	objects   uint64 // heap objects, live or garbage not yet swept, with their spans' unused slots
	free      uint64 // heap memory free and not returned to the OS (mostly resident)
	stacks    uint64 // goroutine stacks
	runtime   uint64 // the runtime's own structures: GC metadata, spans, other
	profiling uint64 // heap profiling buckets, mapped (its hash table, 1.4 MB, is resident only where touched)
}

func readBenchMem() benchMem {
	names := []string{
		"/gc/heap/live:bytes",
		"/gc/heap/goal:bytes",
		"/memory/classes/heap/objects:bytes",
		"/memory/classes/heap/unused:bytes",
		"/memory/classes/heap/free:bytes",
		"/memory/classes/heap/stacks:bytes",
		"/memory/classes/os-stacks:bytes",
		"/memory/classes/metadata/other:bytes",
		"/memory/classes/metadata/mcache/inuse:bytes",
		"/memory/classes/metadata/mcache/free:bytes",
		"/memory/classes/metadata/mspan/inuse:bytes",
		"/memory/classes/metadata/mspan/free:bytes",
		"/memory/classes/other:bytes",
		"/memory/classes/profiling/buckets:bytes",
	}
	samples := make([]metrics.Sample, len(names))
	for i, n := range names {
		samples[i].Name = n
	}
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	return benchMem{
		live: v(0), goal: v(1), objects: v(2) + v(3), free: v(4), stacks: v(5) + v(6),
		runtime: v(7) + v(8) + v(9) + v(10) + v(11) + v(12), profiling: v(13),
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// readRSS returns the resident set size and its peak from /proc (Linux);
// zero elsewhere.
func readRSS() (rss, peak int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// latencies records, per message, the time from the value's timestamp
// (when the PLC's response arrived) to its delivery to a subscriber.
type latencies struct {
	mu sync.Mutex
	ms []int64
	n  uint64
}

func (l *latencies) add(d int64) {
	l.mu.Lock()
	l.n++
	if len(l.ms) < 1_000_000 {
		l.ms = append(l.ms, d)
	}
	l.mu.Unlock()
}

func (l *latencies) reset() {
	l.mu.Lock()
	l.ms, l.n = l.ms[:0], 0
	l.mu.Unlock()
}

func (l *latencies) summary() (n uint64, p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ms) == 0 {
		return l.n, 0, 0
	}
	s := slices.Clone(l.ms)
	slices.Sort(s)
	at := func(q float64) time.Duration { return time.Duration(s[int(q*float64(len(s)-1))]) * time.Millisecond }
	return l.n, at(0.50), at(0.99)
}

var timestampKey = []byte(`"timestamp_ms":`)

func subscribeLatency(ctx context.Context, addr, filter string) (*latencies, error) {
	l := &latencies{}
	_, err := mqtt.Subscribe(ctx, addr, "unsgate-bench-sub", []string{filter}, 1, func(p *paho.Publish) {
		i := bytes.Index(p.Payload, timestampKey)
		if i < 0 || p.Retain {
			return
		}
		rest := p.Payload[i+len(timestampKey):]
		j := bytes.IndexByte(rest, ',')
		if ts, err := strconv.ParseInt(string(rest[:max(j, 0)]), 10, 64); err == nil {
			l.add(time.Now().UnixMilli() - ts)
		}
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("bench subscriber: %w", err)
	}
	return l, nil
}
