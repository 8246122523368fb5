package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Sink delivers messages to one destination (an MQTT broker, Kafka, ...).
type Sink interface {
	// Name identifies the sink in logs, stats and metrics labels.
	Name() string
	// Run connects and delivers messages taken from q until ctx is done; it
	// owns reconnects. It calls q.Done for each message it finished with
	// (acknowledged, or refused for good); messages it took but could not
	// deliver go back to the front of q (Queue.Requeue), at the latest when
	// it returns. It returns nil when ctx was cancelled, and an error only
	// for a problem retrying cannot fix.
	Run(ctx context.Context, q *Queue) error
	// SetTags gives the metadata of every tag (for _meta messages). It may
	// be called at any time, also before and during Run, and must not block.
	SetTags(tags []*model.TagMeta)
	// Status is a snapshot of the sink's state; cheap, safe at any time.
	Status() SinkStatus
}

// SinkStatus is what a sink reports about itself.
type SinkStatus struct {
	Connected   bool
	LastError   string    // most recent connection or delivery problem; kept after recovery
	LastErrorAt time.Time // zero when there was none
	// Sent counts queue messages the destination acknowledged.
	Sent uint64
	// Inflight counts messages taken from the queue and not yet
	// acknowledged, including those waiting to be sent again after a
	// reconnect.
	Inflight int
	// Rejected counts messages the destination refused (not authorized,
	// too large, ...). They are not retried.
	Rejected uint64
	// Redelivered counts messages sent again after a connection was lost
	// before their acknowledgement; the destination may have them twice.
	Redelivered uint64
	// Connects counts successful connections (1 after the first).
	Connects uint64
}

// SinkStats is one sink's line in Fanout.Stats.
type SinkStats struct {
	Name string
	SinkStatus
	Queued  int    // messages waiting in the sink's queue
	Dropped uint64 // messages dropped because the queue was full
}

// Options configures a Fanout. Zero values mean the defaults.
type Options struct {
	Logger *slog.Logger // nil: discard
	// QueueLen is each sink's queue capacity in messages (default 100000).
	QueueLen int
	// FlushTimeout bounds how long Run lets the sinks drain their queues
	// after its context is done (default 5s).
	FlushTimeout time.Duration
}

// Defaults for Options.
const (
	DefaultQueueLen     = 100000
	DefaultFlushTimeout = 5 * time.Second
)

// dropLogInterval limits drop warnings to one per sink per interval.
const dropLogInterval = 10 * time.Second

// Arena chunk sizes: one chunk usually holds a whole batch of payloads.
const (
	chunkMin = 64 << 10
	chunkMax = 1 << 20
)

// Fanout encodes each point once and queues the message for every sink.
// Add the sinks, then Run; Publish and SetTags may be called at any time.
type Fanout struct {
	log          *slog.Logger
	queueLen     int
	flushTimeout time.Duration
	published    atomic.Uint64

	mu      sync.Mutex // guards the fields below; Publish holds it while it encodes and queues
	sinks   []*sinkEntry
	tags    []*model.TagMeta
	running bool
	scratch []byte    // one point's encoding
	chunk   []byte    // arena: payloads are cut from it and never written again
	msgs    []Message // one batch, reused
	noMeta  uint64    // points without Meta, skipped
	noMetaN uint64    // noMeta already logged
	noMetaT time.Time // when noMeta was last logged
}

type sinkEntry struct {
	sink       Sink
	q          *Queue
	loggedDrop uint64    // Dropped() already reported in a log line
	lastLog    time.Time // when the last drop line was logged
}

// NewFanout returns a Fanout without sinks.
func NewFanout(opts Options) *Fanout {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	return &Fanout{log: opts.Logger, queueLen: opts.QueueLen, flushTimeout: opts.FlushTimeout}
}

// Add registers a sink with its own queue. It must be called before Run
// (it panics after), and gives the sink the tags set so far.
func (f *Fanout) Add(s Sink) {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		panic("publish: Fanout.Add called after Run")
	}
	f.sinks = append(f.sinks, &sinkEntry{sink: s, q: NewQueue(f.queueLen)})
	tags := f.tags
	f.mu.Unlock()
	if tags != nil {
		s.SetTags(tags)
	}
}

// SetTags forwards the metadata of every tag to each sink (and to sinks
// added later).
func (f *Fanout) SetTags(tags []*model.TagMeta) {
	tags = slices.Clone(tags)
	f.mu.Lock()
	f.tags = tags
	sinks := f.sinkList()
	f.mu.Unlock()
	for _, s := range sinks {
		s.SetTags(tags)
	}
}

func (f *Fanout) sinkList() []Sink {
	out := make([]Sink, len(f.sinks))
	for i, e := range f.sinks {
		out[i] = e.sink
	}
	return out
}

// Publish encodes each point once and queues the message (the same bytes)
// for every sink. It never blocks on a sink: a full queue drops its oldest
// message. Points must carry Meta; one without is skipped and logged.
// Publish does not keep points.
func (f *Fanout) Publish(points []model.Point) {
	if len(points) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	msgs := f.msgs[:0]
	for i := range points {
		p := &points[i]
		if p.Meta == nil {
			f.noMeta++
			continue
		}
		f.scratch = AppendJSON(f.scratch[:0], p)
		msgs = append(msgs, Message{
			Topic:   p.Meta.Topic,
			Payload: f.place(f.scratch, len(points)-i),
			Retain:  true,
			Meta:    p.Meta,
			Quality: p.Quality,
			TimeMs:  p.Time.UnixMilli(),
			Replay:  p.Replay,
		})
	}
	f.published.Add(uint64(len(msgs)))
	now := time.Time{}
	for _, e := range f.sinks {
		if e.q.PushBatch(msgs) > 0 {
			if now.IsZero() {
				now = time.Now()
			}
			f.logDrops(e, now)
		}
	}
	clear(msgs) // the batch must not pin payloads after delivery
	f.msgs = msgs[:0]
	if f.noMeta > f.noMetaN {
		f.logNoMeta(time.Now())
	}
}

// place copies b into the arena and returns the copy, capped so that an
// append to it can never reach a neighbour. A new chunk is sized for the
// rest of the batch (left points like this one), so a batch usually costs
// one allocation.
func (f *Fanout) place(b []byte, left int) []byte {
	if cap(f.chunk)-len(f.chunk) < len(b) {
		size := max(chunkMin, min(chunkMax, len(b)*left), len(b))
		f.chunk = make([]byte, 0, size)
	}
	start := len(f.chunk)
	f.chunk = append(f.chunk, b...)
	return f.chunk[start:len(f.chunk):len(f.chunk)]
}

// logDrops reports new drops of one sink, at most once per interval.
// Caller holds mu.
func (f *Fanout) logDrops(e *sinkEntry, now time.Time) {
	d := e.q.Dropped()
	if d == e.loggedDrop || now.Sub(e.lastLog) < dropLogInterval {
		return
	}
	f.log.Warn("sink queue full: dropped oldest messages",
		"sink", e.sink.Name(), "dropped", d-e.loggedDrop, "dropped_total", d, "queue_cap", e.q.Cap())
	e.loggedDrop = d
	e.lastLog = now
}

// logNoMeta reports skipped points, at most once per interval. Caller
// holds mu.
func (f *Fanout) logNoMeta(now time.Time) {
	if now.Sub(f.noMetaT) < dropLogInterval {
		return
	}
	f.log.Error("points without tag metadata skipped (a bug in the engine)",
		"skipped", f.noMeta-f.noMetaN, "skipped_total", f.noMeta)
	f.noMetaN = f.noMeta
	f.noMetaT = now
}

// Published is the number of points queued since the Fanout was made (each
// counted once, whatever the number of sinks).
func (f *Fanout) Published() uint64 { return f.published.Load() }

// Stats reports each sink, in the order they were added.
func (f *Fanout) Stats() []SinkStats {
	f.mu.Lock()
	sinks := slices.Clone(f.sinks)
	f.mu.Unlock()
	out := make([]SinkStats, len(sinks))
	for i, e := range sinks {
		out[i] = SinkStats{Name: e.sink.Name(), SinkStatus: e.sink.Status(), Queued: e.q.Len(), Dropped: e.q.Dropped()}
	}
	return out
}

type sinkResult struct {
	e   *sinkEntry
	err error
}

// Run runs every sink until ctx is done. Then it waits, up to FlushTimeout,
// until each connected sink has finished every message of its queue (see
// Queue.Done; a disconnected sink is not waited for), stops the sinks and
// waits for them to return. Whatever is still queued then stays in the
// queues. It returns nil after a normal shutdown, or the errors of sinks
// that stopped on their own (as soon as all of them have).
func (f *Fanout) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return errors.New("publish: Fanout.Run called twice")
	}
	f.running = true
	sinks := slices.Clone(f.sinks)
	f.mu.Unlock()

	// Sinks get their own context so they can keep draining after ctx ends.
	sinkCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	results := make(chan sinkResult, len(sinks))
	for _, e := range sinks {
		go func() { results <- sinkResult{e, e.sink.Run(sinkCtx, e.q)} }()
	}
	tick := time.NewTicker(dropLogInterval)
	defer tick.Stop()

	var errs []error
	stopped := map[*sinkEntry]bool{}
	record := func(r sinkResult) {
		stopped[r.e] = true
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			f.log.Error("sink stopped", "sink", r.e.sink.Name(), "err", r.err)
			errs = append(errs, fmt.Errorf("sink %s: %w", r.e.sink.Name(), r.err))
		}
	}
wait:
	for len(stopped) < len(sinks) {
		select {
		case <-ctx.Done():
			break wait
		case r := <-results:
			record(r)
		case now := <-tick.C:
			f.mu.Lock()
			for _, e := range sinks {
				f.logDrops(e, now)
			}
			f.mu.Unlock()
		}
	}
	if len(sinks) == 0 {
		<-ctx.Done()
	}

	f.drain(sinks, stopped, results, record)
	stop()
	for len(stopped) < len(sinks) {
		record(<-results)
	}
	f.mu.Lock()
	for _, e := range sinks {
		f.logDrops(e, time.Now().Add(dropLogInterval)) // final account, not rate-limited
	}
	f.mu.Unlock()
	return errors.Join(errs...)
}

// drainPoll is how often drain looks at the sinks; shutdown only.
const drainPoll = 5 * time.Millisecond

// drain waits until every running, connected sink has an empty queue and
// nothing taken, or FlushTimeout passes.
func (f *Fanout) drain(sinks []*sinkEntry, stopped map[*sinkEntry]bool, results <-chan sinkResult, record func(sinkResult)) {
	deadline := time.NewTimer(f.flushTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for {
		busy := 0
		for _, e := range sinks {
			if stopped[e] {
				continue
			}
			if !e.q.idle() && e.sink.Status().Connected {
				busy++
			}
		}
		if busy == 0 {
			return
		}
		select {
		case <-deadline.C:
			f.log.Warn("flush timeout: stopping sinks with messages still queued", "timeout", f.flushTimeout)
			return
		case r := <-results:
			record(r)
		case <-poll.C:
		}
	}
}
