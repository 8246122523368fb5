package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
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
	Dropped uint64 // messages dropped: the queue full, or its store over budget
	// Durable queues: bytes on disk, failed writes to the store (those
	// messages were kept in memory only) and the last such error.
	StoredBytes    int64
	StoreErrors    uint64
	LastStoreError string
}

// Options configures a Fanout. Zero values mean the defaults.
type Options struct {
	Logger *slog.Logger // nil: discard
	// QueueLen is each sink's queue capacity in messages (default 100000).
	QueueLen int
	// FlushTimeout bounds how long Run lets the sinks drain their queues
	// after its context is done (default 5s).
	FlushTimeout time.Duration
	// StoreDir, when set, makes every sink's queue durable (store and
	// forward): a Store in StoreDir/<sink name>, with QueueLen messages
	// also kept in memory. What an earlier run left there is sent first.
	StoreDir string
	Store    StoreOptions
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
	storeDir     string
	storeOpts    StoreOptions
	published    atomic.Uint64
	// byTopic maps a UNS path to its tag, for messages read back from a
	// store; replaced whole by SetTags.
	byTopic atomic.Pointer[map[string]*model.TagMeta]

	mu      sync.Mutex // guards the fields below; Publish holds it while it encodes and queues
	sinks   []*sinkEntry
	formats []*format // the sinks grouped by wire format; UNS JSON first
	tags    []*model.TagMeta
	running bool
	scratch []byte    // one point's encoding
	chunk   []byte    // arena: payloads are cut from it and never written again
	noMeta  uint64    // points without Meta, skipped
	noMetaN uint64    // noMeta already logged
	noMetaT time.Time // when noMeta was last logged
}

type sinkEntry struct {
	sink       Sink
	q          *Queue
	obs        Observer  // nil unless the sink is one
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
	return &Fanout{log: opts.Logger, queueLen: opts.QueueLen, flushTimeout: opts.FlushTimeout,
		storeDir: opts.StoreDir, storeOpts: opts.Store}
}

// Add registers a sink with its own queue. It must be called before Run
// (it panics after), and gives the sink the tags set so far. With a
// StoreDir it fails when the sink's store cannot be opened (or the sink's
// name is not usable as a folder name).
func (f *Fanout) Add(s Sink) error {
	q := (*Queue)(nil)
	if f.storeDir != "" {
		name := s.Name()
		if !validSinkName(name) {
			return fmt.Errorf("publish: sink name %q: use letters, digits, '-' and '_' (it names the sink's store folder)", name)
		}
		var err error
		if q, err = OpenQueue(filepath.Join(f.storeDir, name), f.queueLen, f.storeOpts, f.metaOf); err != nil {
			return fmt.Errorf("publish: sink %s: %w", name, err)
		}
		if n := q.Len(); n > 0 {
			f.log.Info("messages stored by an earlier run will be sent first", "sink", name, "messages", n)
		}
	} else {
		q = NewQueue(f.queueLen)
	}
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		q.Close()
		panic("publish: Fanout.Add called after Run")
	}
	e := &sinkEntry{sink: s, q: q}
	e.obs, _ = s.(Observer)
	f.sinks = append(f.sinks, e)
	fm := f.formatOf(s)
	fm.sinks = append(fm.sinks, e)
	tags := f.tags
	f.mu.Unlock()
	if tags != nil {
		s.SetTags(tags)
	}
	return nil
}

func validSinkName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Close closes the sinks' durable queues (Run does it when it returns);
// use it when Run never ran. It is idempotent.
func (f *Fanout) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, e := range f.sinks {
		errs = append(errs, e.q.Close())
	}
	return errors.Join(errs...)
}

// format is one wire format in use and the sinks that take it.
type format struct {
	enc   Encoder // nil: UNS JSON
	sinks []*sinkEntry
	msgs  []Message // one batch, reused
	obs   bool      // some sink of the format is an Observer
}

// formatOf returns the format group of s, creating it. Caller holds mu.
func (f *Fanout) formatOf(s Sink) *format {
	var enc Encoder
	if es, ok := s.(EncodingSink); ok {
		enc = es.Encoder()
	}
	if len(f.formats) == 0 {
		f.formats = append(f.formats, &format{}) // JSON, even when unused: the common case stays first
	}
	for _, fm := range f.formats {
		if fm.enc == enc {
			if _, ok := s.(Observer); ok {
				fm.obs = true
			}
			return fm
		}
	}
	fm := &format{enc: enc}
	_, fm.obs = s.(Observer)
	f.formats = append(f.formats, fm)
	return fm
}

// metaOf is the tag of a UNS path in the current tags, or a bare one (the
// tag left the model since the message was stored); nil for a source event.
func (f *Fanout) metaOf(topic string) *model.TagMeta {
	if isEventTopic(topic) {
		return nil
	}
	if m := f.byTopic.Load(); m != nil {
		if meta := (*m)[topic]; meta != nil {
			return meta
		}
	}
	return &model.TagMeta{Topic: topic}
}

// SetTags forwards the metadata of every tag to each sink (and to sinks
// added later).
func (f *Fanout) SetTags(tags []*model.TagMeta) {
	tags = slices.Clone(tags)
	byTopic := make(map[string]*model.TagMeta, len(tags))
	for _, t := range tags {
		if t != nil {
			byTopic[t.Topic] = t
		}
	}
	f.byTopic.Store(&byTopic)
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
	counted := false
	for _, fm := range f.formats {
		if len(fm.sinks) == 0 {
			continue
		}
		msgs := fm.msgs[:0]
		noMeta := uint64(0)
		for i := range points {
			p := &points[i]
			if p.Meta == nil {
				noMeta++
				continue
			}
			retain := true
			if fm.enc == nil {
				f.scratch = AppendJSON(f.scratch[:0], p)
			} else {
				f.scratch = fm.enc.AppendPoint(f.scratch[:0], p)
				retain = false
			}
			msgs = append(msgs, Message{
				Topic:   p.Meta.Topic,
				Payload: f.place(f.scratch, len(points)-i),
				Retain:  retain,
				Meta:    p.Meta,
				Quality: p.Quality,
				TimeMs:  p.Time.UnixMilli(),
				Replay:  p.Replay,
			})
		}
		if !counted {
			counted = true
			f.noMeta += noMeta
			f.published.Add(uint64(len(msgs)))
		}
		f.push(fm, msgs)
		clear(msgs) // the batch must not pin payloads after delivery
		fm.msgs = msgs[:0]
	}
	if f.noMeta > f.noMetaN {
		f.logNoMeta(time.Now())
	}
}

// push hands one batch of a format to each of its sinks: observers see it
// first, then it is queued. Caller holds mu.
func (f *Fanout) push(fm *format, msgs []Message) {
	if len(msgs) == 0 {
		return
	}
	now := time.Time{}
	for _, e := range fm.sinks {
		if e.obs != nil {
			e.obs.Queued(msgs)
		}
		if e.q.PushBatch(msgs) > 0 {
			if now.IsZero() {
				now = time.Now()
			}
			f.logDrops(e, now)
		}
	}
}

// SourceState tells the sinks that keep state (Observer) that a source
// went up (its session delivers) or down (its session failed; its tags were
// just published BAD). The event is queued in order with the points, so a
// sink sees it exactly where it happened. Other sinks do not see it.
func (f *Fanout) SourceState(source string, up bool) {
	payload := eventDown
	if up {
		payload = eventUp
	}
	m := []Message{{Topic: eventPrefix + source, Payload: []byte(payload), TimeMs: time.Now().UnixMilli()}}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fm := range f.formats {
		if !fm.obs {
			continue
		}
		now := time.Time{}
		for _, e := range fm.sinks {
			if e.obs == nil {
				continue
			}
			e.obs.Queued(m)
			if e.q.PushBatch(m) > 0 {
				if now.IsZero() {
					now = time.Now()
				}
				f.logDrops(e, now)
			}
		}
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
		qs := e.q.Stats()
		out[i] = SinkStats{Name: e.sink.Name(), SinkStatus: e.sink.Status(), Queued: qs.Queued, Dropped: qs.Dropped,
			StoredBytes: qs.StoreBytes, StoreErrors: qs.StoreErrors, LastStoreError: qs.LastError}
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
	// Durable queues mark what is queued while their sink is offline;
	// looked at here, not in Publish, to keep Status off the hot path.
	online := time.NewTicker(onlinePoll)
	defer online.Stop()
	f.markOnline(sinks)

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
		case <-online.C:
			f.markOnline(sinks)
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
		if e.q.Durable() {
			if n := e.q.Len() + e.q.Taken(); n > 0 {
				f.log.Info("messages not delivered stay stored for the next start", "sink", e.sink.Name(), "messages", n)
			}
			if err := e.q.Close(); err != nil {
				f.log.Error("closing the sink's store", "sink", e.sink.Name(), "err", err)
			}
		}
	}
	f.mu.Unlock()
	return errors.Join(errs...)
}

// onlinePoll is how often Run tells durable queues whether their sink is
// connected.
const onlinePoll = 100 * time.Millisecond

func (f *Fanout) markOnline(sinks []*sinkEntry) {
	for _, e := range sinks {
		if e.q.Durable() {
			e.q.SetOnline(e.sink.Status().Connected)
		}
	}
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
