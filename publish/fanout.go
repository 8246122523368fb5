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
// Add the sinks, then Run; Publish and SetTags may be called at any time,
// and sinks may be added, replaced and removed while it runs (Add, Replace,
// Remove), which a reload of the gateway's config needs.
type Fanout struct {
	log          *slog.Logger
	queueLen     int
	flushTimeout time.Duration
	storeDir     string
	storeOpts    StoreOptions
	published    atomic.Uint64
	// byTopic finds a UNS path's tag, for messages read back from a
	// store; replaced whole by SetTags.
	byTopic atomic.Pointer[model.TopicIndex]

	// ctl serialises changes of the sink set (Add, Replace, Remove) with
	// each other and with Run's shutdown; Publish never takes it.
	ctl sync.Mutex
	// tagMu serialises handing tags to sinks (SetTags, Add, Replace), so
	// that no sink ends up with older tags than the Fanout's.
	tagMu sync.Mutex
	// wake tells Run that a sink's Run returned.
	wake chan struct{}

	mu       sync.Mutex // guards the fields below; Publish holds it while it encodes and queues
	sinks    []*sinkEntry
	formats  []*format // the sinks grouped by wire format; UNS JSON first
	tags     []*model.TagMeta
	running  bool
	stopping bool            // Run is shutting down or has returned: the sink set is fixed
	sinkCtx  context.Context // parent of the running sinks' contexts
	scratch  []byte          // one point's encoding
	chunk    []byte          // arena: payloads are cut from it and never written again
	noMeta   uint64          // points without Meta, skipped
	noMetaN  uint64          // noMeta already logged
	noMetaT  time.Time       // when noMeta was last logged
}

type sinkEntry struct {
	sink       Sink
	q          *Queue
	obs        Observer  // nil unless the sink is one
	loggedDrop uint64    // Dropped() already reported in a log line
	lastLog    time.Time // when the last drop line was logged

	done chan struct{} // closed when the sink's Run has returned
	err  error         // what Run returned; read after done is closed
	seen bool          // Run has recorded the result (Fanout.Run's goroutine only)

	// Set under Fanout.mu when the sink is started.
	started bool
	cancel  context.CancelFunc
}

func newEntry(s Sink, q *Queue) *sinkEntry {
	e := &sinkEntry{sink: s, q: q, done: make(chan struct{})}
	e.obs, _ = s.(Observer)
	return e
}

// ErrStopped is returned by Add, Replace and Remove once Run is shutting
// down: the set of sinks is then fixed.
var ErrStopped = errors.New("publish: the fan-out is stopping")

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
		storeDir: opts.StoreDir, storeOpts: opts.Store, wake: make(chan struct{}, 1)}
}

// Add registers a sink with its own queue and gives it the tags set so far.
// Before Run the sink starts with Run; after, at once. Sink names must be
// unique. With a StoreDir it fails when the sink's store cannot be opened
// (or the sink's name is not usable as a folder name); what an earlier sink
// of that name left in its store is sent first.
func (f *Fanout) Add(s Sink) error {
	f.ctl.Lock()
	defer f.ctl.Unlock()
	name := s.Name()
	f.mu.Lock()
	stopping, dup := f.stopping, f.find(name) != nil
	f.mu.Unlock()
	switch {
	case stopping:
		return ErrStopped
	case dup:
		return fmt.Errorf("publish: a sink named %q was already added", name)
	}
	q := (*Queue)(nil)
	if f.storeDir != "" {
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
	e := newEntry(s, q)
	f.tagMu.Lock()
	f.mu.Lock()
	f.sinks = append(f.sinks, e)
	fm := f.formatOf(s)
	fm.sinks = append(fm.sinks, e)
	tags := f.tags
	f.mu.Unlock()
	if tags != nil {
		s.SetTags(tags)
	}
	f.tagMu.Unlock()
	f.mu.Lock()
	if f.running {
		f.start(e)
	}
	f.mu.Unlock()
	return nil
}

// Replace puts s in the place of the sink with the same name: s takes over
// that sink's queue, so nothing queued for it is lost, durable or not. The
// old sink is stopped (its Run hands back what it had taken, per the Sink
// contract) before s starts; Replace waits for that, however long the old
// sink takes to honour its cancelled context. s must use the same wire
// format. Sinks Replace removes are not run again.
func (f *Fanout) Replace(s Sink) error {
	f.ctl.Lock()
	defer f.ctl.Unlock()
	name := s.Name()
	f.tagMu.Lock()
	f.mu.Lock()
	if f.stopping {
		f.mu.Unlock()
		f.tagMu.Unlock()
		return ErrStopped
	}
	old := f.find(name)
	if old == nil {
		f.mu.Unlock()
		f.tagMu.Unlock()
		return fmt.Errorf("publish: replace: no sink named %q", name)
	}
	fm := f.formatOf(old.sink)
	if encoderOf(s) != fm.enc {
		f.mu.Unlock()
		f.tagMu.Unlock()
		return fmt.Errorf("publish: replace sink %s: the new sink uses another wire format", name)
	}
	e := newEntry(s, old.q)
	e.loggedDrop, e.lastLog = old.loggedDrop, old.lastLog
	tags := f.tags
	f.mu.Unlock()
	// The tags first, then the swap: Publish may queue for s (and tell it
	// as an Observer) from the swap on.
	if tags != nil {
		s.SetTags(tags)
	}
	f.mu.Lock()
	f.sinks[slices.Index(f.sinks, old)] = e
	fm.sinks[slices.Index(fm.sinks, old)] = e
	fm.obs = slices.ContainsFunc(fm.sinks, func(e *sinkEntry) bool { return e.obs != nil })
	oldStarted := old.started
	f.mu.Unlock()
	f.tagMu.Unlock()

	if oldStarted {
		old.cancel()
		<-old.done
		if err := old.err; err != nil && !errors.Is(err, context.Canceled) {
			f.log.Warn("replaced sink had stopped with an error", "sink", name, "err", err)
		}
	}
	f.mu.Lock()
	if f.running {
		f.start(e)
	}
	f.mu.Unlock()
	return nil
}

// Remove takes the sink named name out of the fan-out: nothing more is
// queued for it; a running sink that is connected gets up to FlushTimeout
// to deliver what its queue holds, then it is stopped and its queue
// closed. What a durable queue still holds stays in its store, sent first
// if a sink of that name is added again (also by a later process); what a
// memory queue holds is dropped, and logged. It returns the error the
// sink's Run returned, if any.
func (f *Fanout) Remove(name string) error {
	f.ctl.Lock()
	defer f.ctl.Unlock()
	f.mu.Lock()
	if f.stopping {
		f.mu.Unlock()
		return ErrStopped
	}
	e := f.find(name)
	if e == nil {
		f.mu.Unlock()
		return fmt.Errorf("publish: remove: no sink named %q", name)
	}
	f.sinks = slices.DeleteFunc(f.sinks, func(x *sinkEntry) bool { return x == e })
	fm := f.formatOf(e.sink)
	fm.sinks = slices.DeleteFunc(fm.sinks, func(x *sinkEntry) bool { return x == e })
	fm.obs = slices.ContainsFunc(fm.sinks, func(e *sinkEntry) bool { return e.obs != nil })
	started := e.started
	f.mu.Unlock()

	var err error
	if started {
		f.drain([]*sinkEntry{e})
		e.cancel()
		<-e.done
		if e.err != nil && !errors.Is(e.err, context.Canceled) {
			err = fmt.Errorf("sink %s: %w", name, e.err)
		}
	}
	f.mu.Lock()
	f.logDrops(e, time.Now().Add(dropLogInterval))
	f.mu.Unlock()
	if n := e.q.Len() + e.q.Taken(); n > 0 {
		if e.q.Durable() {
			f.log.Info("removed sink: messages not delivered stay stored", "sink", name, "messages", n)
		} else {
			f.log.Warn("removed sink: messages not delivered are dropped", "sink", name, "messages", n)
		}
	}
	return errors.Join(err, e.q.Close())
}

// find returns the sink named name, or nil. Caller holds mu.
func (f *Fanout) find(name string) *sinkEntry {
	for _, e := range f.sinks {
		if e.sink.Name() == name {
			return e
		}
	}
	return nil
}

// start runs e's sink under the sinks' context. Caller holds mu, and Run
// has set sinkCtx.
func (f *Fanout) start(e *sinkEntry) {
	if e.started {
		return // started already (Run and Add raced)
	}
	ctx, cancel := context.WithCancel(f.sinkCtx)
	e.started, e.cancel = true, cancel
	go func() {
		e.err = e.sink.Run(ctx, e.q)
		close(e.done)
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}()
}

// stopped reports whether e's Run has returned.
func (e *sinkEntry) stopped() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
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
	enc := encoderOf(s)
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

// encoderOf is the sink's wire format: nil for UNS JSON.
func encoderOf(s Sink) Encoder {
	if es, ok := s.(EncodingSink); ok {
		return es.Encoder()
	}
	return nil
}

// metaOf is the tag of a UNS path in the current tags, or a bare one (the
// tag left the model since the message was stored); nil for a source event.
func (f *Fanout) metaOf(topic string) *model.TagMeta {
	if isEventTopic(topic) {
		return nil
	}
	if ix := f.byTopic.Load(); ix != nil {
		if meta := ix.Tag(topic); meta != nil {
			return meta
		}
	}
	return &model.TagMeta{Topic: topic}
}

// SetTags forwards the metadata of every tag to each sink (and to sinks
// added later).
func (f *Fanout) SetTags(tags []*model.TagMeta) {
	f.tagMu.Lock()
	defer f.tagMu.Unlock()
	tags = slices.Clone(tags)
	ix := model.NewTopicIndex(tags)
	f.byTopic.Store(&ix)
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

// Run runs every sink, also those added later, until ctx is done. Then it
// waits, up to FlushTimeout, until each connected sink has finished every
// message of its queue (see Queue.Done; a disconnected sink is not waited
// for), stops the sinks and waits for them to return. Whatever is still
// queued then stays in the queues. It returns nil after a normal shutdown,
// or the errors of sinks that stopped on their own (as soon as all of them
// have).
func (f *Fanout) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running || f.stopping {
		f.mu.Unlock()
		return errors.New("publish: Fanout.Run called twice")
	}
	// Sinks get their own context so they can keep draining after ctx ends.
	sinkCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	f.running, f.sinkCtx = true, sinkCtx
	for _, e := range f.sinks {
		f.start(e)
	}
	f.mu.Unlock()

	tick := time.NewTicker(dropLogInterval)
	defer tick.Stop()
	// Durable queues mark what is queued while their sink is offline;
	// looked at here, not in Publish, to keep Status off the hot path.
	online := time.NewTicker(onlinePoll)
	defer online.Stop()
	f.markOnline(f.current())

	var errs []error
	// record notes the result of each sink that has stopped; it reports
	// whether every sink has (and there is one).
	record := func() bool {
		f.mu.Lock()
		sinks := slices.Clone(f.sinks)
		f.mu.Unlock()
		all := len(sinks) > 0
		for _, e := range sinks {
			if !e.stopped() {
				all = false
				continue
			}
			if e.seen {
				continue
			}
			e.seen = true
			if e.err != nil && !errors.Is(e.err, context.Canceled) {
				f.log.Error("sink stopped", "sink", e.sink.Name(), "err", e.err)
				errs = append(errs, fmt.Errorf("sink %s: %w", e.sink.Name(), e.err))
			}
		}
		return all
	}
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-f.wake:
			if record() {
				break wait
			}
		case <-online.C:
			f.markOnline(f.current())
		case now := <-tick.C:
			f.mu.Lock()
			for _, e := range f.sinks {
				f.logDrops(e, now)
			}
			f.mu.Unlock()
		}
	}

	// From here on the set of sinks is fixed; a change in progress ends
	// first.
	f.ctl.Lock()
	f.mu.Lock()
	f.stopping = true
	sinks := slices.Clone(f.sinks)
	f.mu.Unlock()
	f.ctl.Unlock()

	f.drain(sinks)
	stop()
	for _, e := range sinks {
		<-e.done
	}
	record()
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

// current returns the sinks now in the fan-out.
func (f *Fanout) current() []*sinkEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sinks)
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

// drain waits until every running, connected sink of sinks has an empty
// queue and nothing taken, or FlushTimeout passes.
func (f *Fanout) drain(sinks []*sinkEntry) {
	deadline := time.NewTimer(f.flushTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for {
		busy := 0
		for _, e := range sinks {
			if e.stopped() {
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
		case <-poll.C:
		}
	}
}
