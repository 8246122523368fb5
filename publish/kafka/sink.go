package kafka

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// Sink produces UNS values to Kafka. Each queue message with a tag (Meta)
// becomes one record on the value topic (the default topic or the first
// matching route's) and, with a state topic, one more record there; a
// message counts as Sent once all its records are acknowledged (acks=all).
//
// Records of one tag keep their order: they share a key and so a
// partition, the idempotent producer keeps a partition's order across its
// own retries, and when the client fails records (the topic does not
// exist, the client is closed) the sink stops producing, waits for what is
// in flight, and puts the failed messages back at the front of the queue
// in their original order before it produces anything else. Such messages
// may reach Kafka twice (Status().Redelivered counts them).
type Sink struct {
	cfg *settings
	log *slog.Logger

	running     atomic.Bool
	sent        atomic.Uint64
	rejected    atomic.Uint64
	redelivered atomic.Uint64
	connects    atomic.Uint64
	skipped     atomic.Uint64 // messages without a tag: not for Kafka
	up          atomic.Bool
	lastOK      atomic.Int64 // unix nanos of the last good read from a broker

	problems publish.Problems

	mu       sync.Mutex
	win      *window // the current Run's, for Status
	version  string  // last model version seen, and its header bytes
	versionB []byte
}

var _ publish.Sink = (*Sink)(nil)

// Tuning.
const (
	popBatch     = 512                    // messages taken from the queue at once
	pingEvery    = time.Second            // an idle client checks a broker this often
	pingTimeout  = 2 * time.Second        // bound of one check
	staleAfter   = 3 * pingEvery          // no good read for this long: not connected
	closeWait    = time.Second            // wait for promises after the client closed
	backoffFirst = 250 * time.Millisecond // pause after failed records were requeued
	backoffMax   = 10 * time.Second
)

// New validates cfg and returns a sink. Every error wraps ErrConfig.
func New(cfg Config) (*Sink, error) {
	st, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: st, log: st.Logger}, nil
}

// Name is the sink's name from the config.
func (s *Sink) Name() string { return s.cfg.Name }

// SetTags is a no-op: tag metadata (_meta) is not sent to Kafka.
func (s *Sink) SetTags([]*model.TagMeta) {}

// Skipped is the number of queue messages that were not tag values and so
// not for Kafka (finished with Done, neither sent nor lost).
func (s *Sink) Skipped() uint64 { return s.skipped.Load() }

// Status reports the connection and delivery counters.
func (s *Sink) Status() publish.SinkStatus {
	var st publish.SinkStatus
	st.LastError, st.LastErrorAt = s.problems.Last()
	s.mu.Lock()
	w := s.win
	s.mu.Unlock()
	if w != nil {
		st.Inflight = w.inflight()
	}
	st.Connected = s.up.Load() && time.Since(time.Unix(0, s.lastOK.Load())) < staleAfter
	st.Sent = s.sent.Load()
	st.Rejected = s.rejected.Load()
	st.Redelivered = s.redelivered.Load()
	st.Connects = s.connects.Load()
	return st
}

// Run produces messages from q until ctx is done. Then it waits up to
// FlushTimeout for the records in flight, closes the client and puts
// whatever was not acknowledged back at the front of q, in order. It
// returns nil unless the client cannot be created.
func (s *Sink) Run(ctx context.Context, q *publish.Queue) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kafka: sink is already running")
	}
	defer s.running.Store(false)

	w := newWindow(s, q)
	client, err := kgo.NewClient(s.clientOpts()...)
	if err != nil {
		return fmt.Errorf("kafka %s: start client: %w", s.cfg.Name, err)
	}
	s.mu.Lock()
	s.win = w
	s.mu.Unlock()
	s.log.Info("kafka sink starting", "sink", s.cfg.Name, "brokers", s.cfg.Brokers, "topic", s.cfg.Topic,
		"state_topic", s.cfg.StateTopic, "compression", s.cfg.Compression, "client_id", s.cfg.ClientID)

	watchDone := make(chan struct{})
	go func() { defer close(watchDone); s.watch(ctx, client) }()
	held := w.produce(ctx, client)

	// Shutdown: give what is in flight a bounded chance, then close the
	// client (which fails the rest) and requeue everything not acked.
	fctx, cancel := context.WithTimeout(context.Background(), s.cfg.FlushTimeout)
	if err := client.Flush(fctx); err != nil {
		s.log.Warn("kafka flush timeout: requeueing what was not acknowledged", "sink", s.cfg.Name,
			"timeout", s.cfg.FlushTimeout, "inflight", w.inflight())
	}
	cancel()
	client.Close()
	<-watchDone
	w.waitIdle(closeWait)
	back := w.close(held)
	q.Requeue(back)
	s.up.Store(false)
	return nil
}

func (s *Sink) clientOpts() []kgo.Opt {
	c := s.cfg
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		// acks=all and idempotence are franz-go's defaults; say so, and
		// never add DisableIdempotentWrite.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Java's murmur2 on the key: one tag, one partition, the same
		// partition Java clients would pick.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Never fail a record for retries or age: while the brokers are
		// away records wait (and the queue behind them, with its own
		// budget); a record failed for these reasons would be a silent
		// loss or a reordering.
		kgo.RecordRetries(math.MaxInt),
		kgo.RecordDeliveryTimeout(0),
		kgo.ProducerBatchCompression(c.compression),
		kgo.ProducerLinger(c.Linger),
		kgo.ProducerBatchMaxBytes(int32(c.BatchBytes)),
		// The window bounds what is buffered; Produce must never block.
		kgo.MaxBufferedRecords(2*c.MaxInflight + 2*popBatch),
		kgo.WithHooks(hooks{s}),
		kgo.WithLogger(clientLogger{s}),
	}
	if c.MetadataMinAge > 0 {
		opts = append(opts, kgo.MetadataMinAge(c.MetadataMinAge))
	}
	if c.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tls))
	}
	if c.sasl != nil {
		opts = append(opts, kgo.SASL(c.sasl))
	}
	return opts
}

// watch keeps Connected current while nothing is produced: a client that
// has not heard from a broker for pingEvery asks one.
func (s *Sink) watch(ctx context.Context, client *kgo.Client) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastOK.Load())) < pingEvery {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := client.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.down("ping", "no broker answers: "+describe(err))
		}
	}
}

// alive records a good answer from a broker.
func (s *Sink) alive() {
	s.lastOK.Store(time.Now().UnixNano())
	if !s.up.Swap(true) {
		s.connects.Add(1)
		s.log.Info("kafka connected", "sink", s.cfg.Name, "brokers", s.cfg.Brokers)
	}
}

// down records a failed connection or check.
func (s *Sink) down(kind, msg string) {
	if s.up.Swap(false) {
		s.log.Warn("kafka brokers unreachable", "sink", s.cfg.Name, "err", msg)
	}
	s.problem(kind, msg)
}

// problem records a delivery or connection problem and logs it, at most
// once per publish.ProblemLogEvery for each kind.
func (s *Sink) problem(kind, msg string) {
	if s.problems.Note(kind, msg) {
		s.log.Warn(msg, "sink", s.cfg.Name)
	}
}

// modelVersion returns the model_version header value, nil for none.
func (s *Sink) modelVersion() []byte {
	if s.cfg.ModelVersion == nil {
		return nil
	}
	v := s.cfg.ModelVersion()
	if v == "" {
		return nil
	}
	if v != s.version { // the sender's goroutine only
		s.version, s.versionB = v, []byte(v)
	}
	return s.versionB
}

// hooks feed Connected from the client's connections.
type hooks struct{ s *Sink }

var (
	_ kgo.HookBrokerConnect = hooks{}
	_ kgo.HookBrokerRead    = hooks{}
)

func (h hooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	msg := "connect to " + net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))) + ": " + describe(err)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// Closed while setting up: some brokers answer bad credentials
		// or a protocol mismatch that way.
		switch {
		case h.s.cfg.sasl != nil:
			msg += " (the broker closed the connection during setup: check sasl mechanism, username and password)"
		case h.s.cfg.tls == nil:
			msg += " (the broker closed the connection during setup: does it want TLS or SASL?)"
		}
	}
	h.s.down("connect", msg)
}

// Answers to the requests that set a connection up (ApiVersions, SASL)
// do not show that the broker accepts us.
const (
	keySASLHandshake    = 17
	keyAPIVersions      = 18
	keySASLAuthenticate = 36
)

func (h hooks) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && key != keyAPIVersions && key != keySASLHandshake && key != keySASLAuthenticate {
		h.s.alive()
	}
}

// clientLogger passes franz-go's warnings and errors on as problems
// (rate-limited, and shown as LastError), its info as debug logs.
type clientLogger struct{ s *Sink }

func (l clientLogger) Level() kgo.LogLevel {
	if l.s.log.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (l clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level > kgo.LogLevelWarn {
		l.s.log.Debug("kafka client: "+msg, append([]any{"sink", l.s.cfg.Name}, keyvals...)...)
		return
	}
	text := "kafka client: " + msg
	for i := 0; i+1 < len(keyvals); i += 2 {
		text += fmt.Sprintf(" %v=%v", keyvals[i], keyvals[i+1])
	}
	l.s.problem("client: "+msg, text)
}

// permanent reports whether the broker (or the client, for a record larger
// than a batch) refused a record for good: sending it again cannot help.
func permanent(err error) bool {
	for _, e := range []error{
		kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.TopicAuthorizationFailed,
		kerr.InvalidRecord, kerr.InvalidTopicException, kerr.InvalidTimestamp, kerr.PolicyViolation,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// describe names the likely cause of a client error.
func describe(err error) string {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	var recHeader tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown), errors.As(err, &certErr):
		return err.Error() + " (is ca_file the CA that signed the broker's certificate?)"
	case errors.As(err, &hostErr):
		return err.Error() + " (does the broker address or server_name match the broker's certificate?)"
	case errors.As(err, &recHeader):
		return err.Error() + " (does this listener speak TLS?)"
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState),
		errors.Is(err, kerr.UnsupportedSaslMechanism):
		return err.Error() + " (check sasl mechanism, username and password)"
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return err.Error() + " (the user needs Write on the topics, and IdempotentWrite on the cluster before Kafka 3.0)"
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return err.Error() + " (create the topic: the sink does not create topics)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return err.Error() + " (is the broker running, and are brokers right?)"
	}
	return err.Error()
}

// ---- the window of messages in flight ----------------------------------------

// entry is one queue message being produced: its records (value topic and
// maybe state topic) and their shared headers. Entries are reused, so a
// message costs no allocation.
type entry struct {
	// The records' Context is the entry itself, which is how a promise
	// finds its entry without a closure per record.
	context.Context

	msg     publish.Message
	seq     uint64
	idx     int // in window.live
	recs    [2]kgo.Record
	nrec    int
	pending int
	failed  error // first error worth retrying: the message goes back to the queue
	refused error // first permanent refusal
	hdrs    [6]kgo.RecordHeader
	ts      [20]byte
}

// window tracks the messages taken from the queue and not finished.
type window struct {
	s *Sink
	q *publish.Queue

	mu      sync.Mutex
	live    []*entry // produced and not finished with, in no particular order
	free    []*entry
	seq     uint64
	open    int  // entries with records outstanding
	failed  int  // entries whose records all returned, at least one failed
	held    int  // taken from the queue, not produced yet
	failing bool // a record failed: stop producing until it is requeued
	closed  bool // Run is over: promises are ignored
	waiting bool // the sender waits on wake
	wake    chan struct{}
	// stopWait interrupts the sender's wait for queue messages; armed
	// again after each failure.
	stopWait context.CancelFunc
}

func newWindow(s *Sink, q *publish.Queue) *window {
	return &window{s: s, q: q, wake: make(chan struct{}, 1)}
}

func (w *window) inflight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open + w.failed + w.held
}

// Constant header values; records only read them.
var (
	hdrJSON    = []byte(publish.ContentType)
	hdrTrue    = []byte("true")
	hdrQuality = [...][]byte{
		model.QualityBad:       []byte(model.QualityBad.String()),
		model.QualityUncertain: []byte(model.QualityUncertain.String()),
		model.QualityGood:      []byte(model.QualityGood.String()),
	}
)

// produce is the sender: it takes messages from the queue and produces
// them until ctx is done, and returns the messages it took but did not
// produce.
func (w *window) produce(ctx context.Context, client *kgo.Client) (held []publish.Message) {
	s := w.s
	batch := make([]publish.Message, 0, popBatch)
	gateway := []byte(s.cfg.GatewayID)
	backoff := time.Duration(0)
	wctx := w.armWake(ctx)
	for {
		if w.isFailing() {
			if !w.waitFor(ctx, func() bool { return w.open == 0 }) {
				return held
			}
			n := w.requeueFailed(held)
			s.redelivered.Add(uint64(n - len(held)))
			held = held[:0]
			backoff = min(max(2*backoff, backoffFirst), backoffMax)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return held
			case <-t.C:
			}
			wctx = w.armWake(ctx)
			continue
		}
		if !w.waitFor(ctx, func() bool { return w.failing || w.open+w.failed < s.cfg.MaxInflight }) {
			return held
		}
		w.mu.Lock()
		room := s.cfg.MaxInflight - w.open - w.failed
		w.mu.Unlock()
		if room <= 0 {
			continue // failing
		}
		var err error
		batch, err = w.q.PopBatch(wctx, batch[:0], min(popBatch, room))
		if err != nil {
			if ctx.Err() != nil {
				return held
			}
			continue // woken: a record failed
		}
		w.mu.Lock()
		w.held += len(batch)
		w.mu.Unlock()
		version := s.modelVersion()
		for i := range batch {
			m := &batch[i]
			if m.Meta == nil {
				// _meta and other non-values: not for Kafka, finished.
				s.skipped.Add(1)
				w.done(m)
				w.mu.Lock()
				w.held--
				w.mu.Unlock()
				continue
			}
			e := w.start(m)
			if e == nil { // a record failed meanwhile: keep the rest back
				held = append(held, batch[i:]...)
				break
			}
			w.fill(e, version, gateway)
			for j := range e.nrec {
				client.Produce(context.Background(), &e.recs[j], w.promise)
			}
		}
		clear(batch) // do not pin payloads
		if backoff > 0 && !w.isFailing() {
			backoff = 0
		}
	}
}

// armWake returns a context for waiting on the queue, which the first
// failed record cancels.
func (w *window) armWake(ctx context.Context) context.Context {
	wctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	if w.stopWait != nil {
		w.stopWait()
	}
	w.stopWait = cancel
	w.mu.Unlock()
	return wctx
}

func (w *window) isFailing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failing
}

// waitFor waits until cond (called with mu held) is true or ctx is done.
func (w *window) waitFor(ctx context.Context, cond func() bool) bool {
	for {
		w.mu.Lock()
		if cond() {
			w.waiting = false
			w.mu.Unlock()
			return true
		}
		w.waiting = true
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			w.mu.Lock()
			w.waiting = false
			w.mu.Unlock()
			return false
		}
	}
}

// waitIdle waits up to d for every outstanding promise.
func (w *window) waitIdle(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w.waitFor(ctx, func() bool { return w.open == 0 })
}

// start registers m as produced, unless a record failed: then it returns
// nil and m stays held.
func (w *window) start(m *publish.Message) *entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing {
		return nil
	}
	var e *entry
	if n := len(w.free); n > 0 {
		e = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		e = &entry{Context: context.Background()}
	}
	w.seq++
	e.msg, e.seq, e.failed, e.refused = *m, w.seq, nil, nil
	e.nrec = 1
	if w.s.cfg.StateTopic != "" {
		e.nrec = 2
	}
	e.pending = e.nrec
	e.idx = len(w.live)
	w.live = append(w.live, e)
	w.open++
	w.held--
	return e
}

// fill builds e's records. The key and value alias the message's topic
// and payload: the client only reads them.
func (w *window) fill(e *entry, version, gateway []byte) {
	m := &e.msg
	key := unsafe.Slice(unsafe.StringData(m.Topic), len(m.Topic))
	q := m.Quality
	if int(q) >= len(hdrQuality) {
		q = model.QualityBad
	}
	h := e.hdrs[:0]
	h = append(h,
		kgo.RecordHeader{Key: "content-type", Value: hdrJSON},
		kgo.RecordHeader{Key: "quality", Value: hdrQuality[q]},
		kgo.RecordHeader{Key: "timestamp_ms", Value: strconv.AppendInt(e.ts[:0], m.TimeMs, 10)},
		kgo.RecordHeader{Key: "gateway", Value: gateway},
	)
	if version != nil {
		h = append(h, kgo.RecordHeader{Key: "model_version", Value: version})
	}
	if m.Replay {
		h = append(h, kgo.RecordHeader{Key: "replay", Value: hdrTrue})
	}
	ts := time.UnixMilli(m.TimeMs)
	e.recs[0] = kgo.Record{Key: key, Value: m.Payload, Headers: h, Timestamp: ts, Topic: w.s.cfg.topicFor(m.Topic, assetType(m.Meta)), Context: e}
	if e.nrec == 2 {
		e.recs[1] = kgo.Record{Key: key, Value: m.Payload, Headers: h, Timestamp: ts, Topic: w.s.cfg.StateTopic, Context: e}
	}
}

// promise is called by the client for every record, serially.
func (w *window) promise(r *kgo.Record, err error) {
	e, ok := r.Context.(*entry)
	if !ok {
		return
	}
	s := w.s
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return // requeued already
	}
	if err != nil {
		if permanent(err) {
			if e.refused == nil {
				e.refused = fmt.Errorf("%s: %w", r.Topic, err)
			}
		} else if e.failed == nil {
			e.failed = fmt.Errorf("%s: %w", r.Topic, err)
			if !w.failing {
				w.failing = true
				w.stopWait() // the sender may wait for the queue
			}
		}
	}
	e.pending--
	if e.pending > 0 {
		w.mu.Unlock()
		return
	}
	w.open--
	if failed := e.failed; failed != nil {
		w.failed++
		w.signal()
		path := e.msg.Topic
		w.mu.Unlock()
		s.problem("produce", fmt.Sprintf("produce %s failed, will send it again: %s", path, describe(failed)))
		return
	}
	refused, msg := e.refused, e.msg
	w.remove(e)
	w.signal()
	w.mu.Unlock()
	w.done(&msg)
	if refused != nil {
		s.rejected.Add(1)
		s.problem("rejected", fmt.Sprintf("kafka refused the value of %s (%d bytes) for good; dropped: %s", msg.Topic, len(msg.Payload), describe(refused)))
		return
	}
	s.sent.Add(1)
}

// done tells the queue that m is finished with: acknowledged, refused for
// good, or not for Kafka.
func (w *window) done(m *publish.Message) { w.q.Done(*m) }

// signal wakes the sender if it waits. Caller holds mu.
func (w *window) signal() {
	if !w.waiting {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// remove takes a finished entry out of live and recycles it. Caller holds
// mu.
func (w *window) remove(e *entry) {
	last := len(w.live) - 1
	w.live[e.idx] = w.live[last]
	w.live[e.idx].idx = e.idx
	w.live[last] = nil
	w.live = w.live[:last]
	e.msg = publish.Message{}
	e.recs = [2]kgo.Record{}
	w.free = append(w.free, e)
}

// requeueFailed puts the failed messages back at the front of the queue
// in their original order, followed by held (taken later), and resumes
// producing. Nothing may be outstanding. It returns the number requeued.
func (w *window) requeueFailed(held []publish.Message) int {
	w.mu.Lock()
	var failed []*entry
	for _, e := range w.live {
		if e.failed != nil {
			failed = append(failed, e)
		}
	}
	slices.SortFunc(failed, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	back := make([]publish.Message, 0, len(failed)+len(held))
	for _, e := range failed {
		back = append(back, e.msg)
		w.remove(e)
	}
	back = append(back, held...)
	w.failed -= len(failed)
	w.held -= len(held)
	w.failing = false
	w.mu.Unlock()
	w.q.Requeue(back)
	return len(back)
}

// close ends the window: promises from now on are ignored, and every
// message not finished (failed, or still outstanding after the client
// closed) is returned in its original order, followed by held.
func (w *window) close(held []publish.Message) []publish.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	live := slices.Clone(w.live)
	slices.SortFunc(live, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	back := make([]publish.Message, 0, len(live)+len(held))
	for _, e := range live {
		back = append(back, e.msg)
	}
	back = append(back, held...)
	w.live, w.free = nil, nil
	if w.stopWait != nil {
		w.stopWait()
	}
	w.open, w.failed, w.held = 0, 0, 0
	return back
}

// assetType is the model type of the message's asset, "" when unknown.
func assetType(m *model.TagMeta) string {
	if m == nil {
		return ""
	}
	return m.Type
}
