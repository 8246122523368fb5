package opcua

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

var (
	_ connectors.Source  = (*Source)(nil)
	_ connectors.Metered = (*Source)(nil)
)

// minKeepAlive is the shortest KeepAlive: the watchdog reads every
// KeepAlive/2 and needs a round trip within that.
const minKeepAlive = 10 * time.Millisecond

// MaxQueueSize bounds a monitored item's queue: a server sends a whole
// queue in one publish, so larger queues only hide a too slow publishing
// interval.
const MaxQueueSize = 65535

// Source reads one OPC UA server. Create it with New; it may run many
// sessions one after the other, never two at once.
//
// Values: Boolean, SByte…UInt64, Float (a 32-bit float value), Double and
// String as themselves; DateTime as RFC 3339 UTC text with milliseconds
// (2024-05-30T12:30:00.123Z; 0 is null); ByteString as standard base64;
// LocalizedText as its text; Guid as lower-case 8-4-4-4-12 text; one-
// dimensional arrays of these as arrays; an empty variant as null. Other
// types are BAD with BadNotSupported. Quality follows the status code's
// severity (good, uncertain, bad), the code is kept when not good, and a
// BAD sample has no value. The timestamp is the SourceTimestamp, else the
// ServerTimestamp, else none (the engine then uses the receive time).
type Source struct {
	cfg   Config // defaults applied
	log   *slog.Logger
	binds []binding // sorted by key
	keys  []string

	running atomic.Bool
	// problems remembers the resolution problem last logged per key, so a
	// reconnecting source logs a problem when it appears or changes, not at
	// every session. Only Run touches it.
	problems map[string]string

	connects      atomic.Uint64
	errs          atomic.Uint64
	notifications atomic.Uint64
	samples       atomic.Uint64
	reads         atomic.Uint64
	createCalls   atomic.Uint64
	items         atomic.Int64
	unresolved    atomic.Int64
	unknown       atomic.Uint64
	meter         connectors.Meter

	// livenessRefused is set once a server refused the liveness item, so
	// that is logged as a warning once.
	livenessRefused atomic.Bool
}

// binding is one key: tags sharing the key are merged into it.
type binding struct {
	key  string
	addr model.OPCUAAddress // of the first tag with this key
	// node is the node id of an ns= binding, fixed at New; nil for nsu=
	// and browse paths, which are resolved at every connect.
	node *ua.NodeID

	sampling time.Duration
	queue    uint32
	deadband float64
	poll     time.Duration
}

// Stats are the source's counters since New, over all sessions.
type Stats struct {
	Connects      uint64 // sessions that connected
	Errors        uint64 // sessions that ended with an error
	Notifications uint64 // data change notifications received (not counting those with only the liveness item)
	Samples       uint64 // samples emitted (values and BAD markers)
	Reads         uint64 // Read requests: poll batches and initial-value reads
	// CreateMonitoredItemsCalls counts the CreateMonitoredItems requests
	// that created the bindings' items. (The liveness item rides in the
	// last of them; only when that one is full does it need a request of
	// its own, which is not counted.)
	CreateMonitoredItemsCalls uint64
	// MonitoredItems is the number of monitored items the server accepted
	// (subscribe mode) or of nodes read (poll mode) in the current (or
	// last) session; Unresolved the number of bindings whose namespace URI
	// or browse path did not resolve then, or whose monitored item the
	// server refused.
	MonitoredItems int
	Unresolved     int
	// UnknownHandles counts notifications for client handles the session
	// never created (a server bug), which are dropped.
	UnknownHandles uint64
}

// Stats returns the counters; safe to call at any time.
func (src *Source) Stats() Stats {
	return Stats{
		Connects:                  src.connects.Load(),
		Errors:                    src.errs.Load(),
		Notifications:             src.notifications.Load(),
		Samples:                   src.samples.Load(),
		Reads:                     src.reads.Load(),
		CreateMonitoredItemsCalls: src.createCalls.Load(),
		MonitoredItems:            int(src.items.Load()),
		Unresolved:                int(src.unresolved.Load()),
		UnknownHandles:            src.unknown.Load(),
	}
}

// Meter counts the Read requests (poll batches, first values and the
// keep-alive reads of the server state, which in subscribe mode are most
// of them) and their round trips. A Read that fails is lost: gopcua ends
// the session on a service fault as on a broken connection.
func (src *Source) Meter() *connectors.Meter { return &src.meter }

func (src *Source) meterRead(took time.Duration, err error) {
	if err != nil {
		src.meter.Lost()
		return
	}
	src.meter.Answered(took, false)
}

// configProblems collects every problem in a config so a user fixes it in
// one pass.
type configProblems []string

func (p *configProblems) add(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

func (p configProblems) err(name string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("opcua %s: %w: %s", name, connectors.ErrConfig, strings.Join(p, "; "))
}

// New validates cfg, applies its defaults and merges tags that share a
// key. Every problem is reported at once in an error wrapping
// connectors.ErrConfig.
func New(cfg Config) (*Source, error) {
	var probs configProblems
	normalize(&cfg, &probs)
	binds := buildBindings(&cfg, &probs)
	if uint64(len(binds)) >= math.MaxUint32-1 {
		// Client handles are 1..len(binds)+1 (see itemHandle).
		probs.add("%d node bindings; at most %d", len(binds), uint64(math.MaxUint32-2))
	}
	if err := probs.err(cfg.Name); err != nil {
		return nil, err
	}
	src := &Source{cfg: cfg, log: cfg.Logger.With("source", cfg.Name), binds: binds, problems: map[string]string{}}
	for i := range binds {
		src.keys = append(src.keys, binds[i].key)
	}
	return src, nil
}

// Name returns the source id.
func (src *Source) Name() string { return src.cfg.Name }

// Addresses returns every binding key, sorted, each once.
func (src *Source) Addresses() []string { return slices.Clone(src.keys) }

// normalize validates cfg and applies its defaults in place; connect gets
// the result.
func normalize(cfg *Config, probs *configProblems) {
	if cfg.Name == "" {
		probs.add("name is empty")
	}
	checkEndpoint(cfg.Endpoint, probs)
	if cfg.Mode != ModeSubscribe && cfg.Mode != ModePoll {
		probs.add("unknown mode %d; use subscribe or poll", cfg.Mode)
	}
	duration := func(what string, d *time.Duration, def time.Duration) {
		switch {
		case *d < 0:
			probs.add("%s %v is negative", what, *d)
		case *d == 0:
			*d = def
		}
	}
	duration("publishing interval", &cfg.PublishingInterval, DefaultPublishingInterval)
	duration("sampling interval", &cfg.SamplingInterval, cfg.PublishingInterval)
	duration("poll interval", &cfg.Poll, DefaultPoll)
	duration("timeout", &cfg.Timeout, DefaultTimeout)
	duration("keep-alive", &cfg.KeepAlive, DefaultKeepAlive)
	duration("session timeout", &cfg.SessionTimeout, DefaultSessionTimeout)
	// OPC UA counts intervals in milliseconds, and the keep-alive watchdog
	// reads twice per KeepAlive.
	if cfg.PublishingInterval > 0 && cfg.PublishingInterval < time.Millisecond {
		probs.add("publishing interval %v is below 1ms", cfg.PublishingInterval)
	}
	if cfg.KeepAlive > 0 && cfg.KeepAlive < minKeepAlive {
		probs.add("keep-alive %v is below %v", cfg.KeepAlive, minKeepAlive)
	}
	switch {
	case cfg.QueueSize < 0 || cfg.QueueSize > MaxQueueSize:
		probs.add("queue size %d out of range 1..%d", cfg.QueueSize, MaxQueueSize)
	case cfg.QueueSize == 0:
		cfg.QueueSize = DefaultQueueSize
	}
	if !validDeadband(cfg.Deadband) {
		probs.add("deadband %v must be a finite number >= 0", cfg.Deadband)
	}
	if cfg.MaxMonitoredItemsPerCall < 0 {
		probs.add("max monitored items per call %d is negative", cfg.MaxMonitoredItemsPerCall)
	}
	if cfg.MaxNodesPerRead < 0 {
		probs.add("max nodes per read %d is negative", cfg.MaxNodesPerRead)
	}
	checkSecurity(cfg, (*[]string)(probs))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

func validDeadband(d float64) bool {
	return d >= 0 && !math.IsInf(d, 0) && !math.IsNaN(d)
}

// checkEndpoint accepts opc.tcp://host:port[/path].
func checkEndpoint(raw string, probs *configProblems) {
	if !strings.HasPrefix(raw, "opc.tcp://") {
		probs.add("endpoint %q: scheme must be opc.tcp (opc.tcp://host:4840)", raw)
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		probs.add("endpoint %q: %v", raw, err)
		return
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		probs.add("endpoint %q: only opc.tcp://host:port[/path] is allowed", raw)
		return
	}
	host, port := u.Hostname(), u.Port()
	switch {
	case host == "":
		probs.add("endpoint %q: host is missing", raw)
	case port == "":
		probs.add("endpoint %q: port is missing (OPC UA servers usually listen on 4840)", raw)
	default:
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			probs.add("endpoint %q: port %q out of range 1..65535", raw, port)
		}
	}
}

// buildBindings checks every tag and merges tags sharing a key.
func buildBindings(cfg *Config, probs *configProblems) []binding {
	byKey := map[string]int{}
	var binds []binding
	for i := range cfg.Tags {
		t := &cfg.Tags[i]
		key := t.Key
		if key == "" {
			key = t.Addr.Key()
		}
		where := fmt.Sprintf("tag %d (%s)", i+1, key)
		if key == "" {
			where = fmt.Sprintf("tag %d", i+1)
		}
		node, msg := checkAddress(&t.Addr)
		if msg != "" {
			probs.add("%s: %s", where, msg)
			continue
		}
		a := &t.Addr
		bad := false
		if a.Sampling < 0 {
			probs.add("%s: sampling interval %v is negative", where, a.Sampling)
			bad = true
		}
		if a.QueueSize < 0 || a.QueueSize > MaxQueueSize {
			probs.add("%s: queue size %d out of range 0..%d", where, a.QueueSize, MaxQueueSize)
			bad = true
		}
		if !validDeadband(a.Deadband) {
			probs.add("%s: deadband %v must be a finite number >= 0", where, a.Deadband)
			bad = true
		}
		if t.Poll < 0 {
			probs.add("%s: poll interval %v is negative", where, t.Poll)
			bad = true
		}
		if bad {
			continue
		}
		b := binding{
			key:      key,
			addr:     *a,
			node:     node,
			sampling: orDefault(a.Sampling, cfg.SamplingInterval),
			queue:    uint32(orDefault(a.QueueSize, cfg.QueueSize)),
			deadband: orDefault(a.Deadband, cfg.Deadband),
			poll:     orDefault(t.Poll, cfg.Poll),
		}
		j, seen := byKey[key]
		if !seen {
			byKey[key] = len(binds)
			binds = append(binds, b)
			continue
		}
		m := &binds[j]
		if m.addr.Key() != a.Key() {
			probs.add("%s: the key is already bound to %s, not %s; one key names one node", where, m.addr.Key(), a.Key())
			continue
		}
		m.sampling = min(m.sampling, b.sampling)
		m.poll = min(m.poll, b.poll)
		m.deadband = min(m.deadband, b.deadband)
		m.queue = max(m.queue, b.queue)
	}
	slices.SortFunc(binds, func(a, b binding) int { return strings.Compare(a.key, b.key) })
	return binds
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// checkAddress reports what is wrong with a ("" when it can be read) and,
// for an ns= node id, returns the node id.
func checkAddress(a *model.OPCUAAddress) (*ua.NodeID, string) {
	if a.IDType == 0 {
		if len(a.BrowsePath) == 0 {
			return nil, "no node id and no browse path"
		}
		for i, seg := range a.BrowsePath {
			if _, name, _ := model.SplitQualified(seg); name == "" {
				return nil, fmt.Sprintf("browse path segment %d is empty", i+1)
			}
		}
		return nil, ""
	}
	node, err := nodeIDFor(a, a.Namespace)
	if err != nil {
		return nil, err.Error()
	}
	if a.NamespaceURI != "" {
		return nil, "" // the index comes from the server at connect
	}
	return node, ""
}

// nodeIDFor builds a's node id in namespace index ns.
func nodeIDFor(a *model.OPCUAAddress, ns uint16) (*ua.NodeID, error) {
	switch a.IDType {
	case 'i':
		n, err := strconv.ParseUint(a.ID, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("numeric identifier %q is not a number in 0..4294967295", a.ID)
		}
		return ua.NewNumericNodeID(ns, uint32(n)), nil
	case 's':
		if a.ID == "" {
			return nil, fmt.Errorf("empty string identifier")
		}
		return ua.NewStringNodeID(ns, a.ID), nil
	case 'g':
		if len(a.ID) != 36 || ua.NewGUID(a.ID) == nil {
			return nil, fmt.Errorf("GUID %q: want 8-4-4-4-12 hexadecimal digits", a.ID)
		}
		return ua.NewGUIDNodeID(ns, a.ID), nil
	case 'b':
		raw, err := base64.StdEncoding.DecodeString(a.ID)
		if err != nil || len(raw) == 0 {
			return nil, fmt.Errorf("opaque identifier %q is not non-empty standard base64", a.ID)
		}
		return ua.NewByteStringNodeID(ns, raw), nil
	}
	return nil, fmt.Errorf("unknown identifier type %q", a.IDType)
}

// Run handles one session: it connects, reads the server's namespace
// array and operation limits, resolves every binding, then subscribes (or
// polls) until ctx is done (returning nil) or the session breaks
// (returning the error). It never reconnects by itself.
//
// Resolution happens at every connect: nsu= bindings look their namespace
// up in the server's namespace array, browse paths are walked from the
// Root folder. A binding that does not resolve, and a monitored item the
// server refuses, is emitted BAD with the OPC UA status code
// (BadNodeIdUnknown, BadNoMatch, ...) and logged when the problem is new;
// the other tags run.
//
// Subscribe mode: one subscription with PublishingInterval, keep-alive
// count chosen so the server's keep-alive is about KeepAlive; monitored
// items (sampling interval, queue size, discard oldest, absolute deadband
// filter when set) created in batches of MaxMonitoredItemsPerCall. Each
// notification message is emitted as one batch. The server sends every
// item's current value first; items that have not reported within a few
// publishing intervals are read once instead, so every good tag gets a
// first sample.
//
// Poll mode: the bindings are read every poll interval (tags grouped by
// interval) in Read requests of at most MaxNodesPerRead nodes, each
// request emitted as one batch, on a fixed grid that skips missed ticks.
//
// The session ends with an error when the client reports the connection
// lost, when the server state (i=2259) read every KeepAlive/2 fails or
// takes longer than KeepAlive/2 (so a silent server is noticed within
// KeepAlive), when the subscription reports an error or a bad status
// change, or when the subscription falls silent while the connection
// works (see session.livenessHandle), which gopcua does not report. On the way out
// the subscription is deleted and the session closed within a short
// deadline; the supervisor then marks every tag BAD and reconnects, and
// the next session subscribes anew.
func (src *Source) Run(ctx context.Context, emit connectors.Emit) error {
	if ctx.Err() != nil {
		return nil
	}
	if !src.running.CompareAndSwap(false, true) {
		return fmt.Errorf("opcua %s: Run called while a session is running", src.cfg.Name)
	}
	defer src.running.Store(false)
	err := newSession(src, emit).run(ctx)
	if ctx.Err() != nil {
		return nil // cancelled: whatever broke on the way out is not news
	}
	if err != nil {
		src.errs.Add(1)
	}
	return err
}

// session is one connection's worth of state; Run creates one per call.
type session struct {
	src  *Source
	cfg  *Config
	log  *slog.Logger
	emit connectors.Emit
	c    *opcua.Client

	limits limits
	// nodes holds each binding's node id for this session (index as in
	// src.binds); nil when it did not resolve or the server refused it.
	nodes []*ua.NodeID
	conv  converter
	last  []model.Value // per binding, for converter reuse
	batch []model.Sample

	// subscribe mode
	notifs          chan *opcua.PublishNotificationData
	revisedInterval time.Duration
	reported        []bool // per binding: a first value arrived
	pending         int    // monitored items without a first value
	liveness        bool   // the server accepted the liveness item
	// livenessSampling is the server's sampling interval for it.
	livenessSampling time.Duration
	alive            bool // a liveness sample arrived since listen last looked

	lost     chan struct{} // closed when the client reports the connection lost
	lostOnce sync.Once
	failed   chan error // the watchdog's verdict
	wg       sync.WaitGroup
}

// limits are the server's operation limits, merged with the config.
type limits struct {
	namespaces        []string
	maxNodesPerRead   int
	maxItemsPerCall   int
	maxNodesPerBrowse int
}

func newSession(src *Source, emit connectors.Emit) *session {
	return &session{
		src:    src,
		cfg:    &src.cfg,
		log:    src.log,
		emit:   emit,
		nodes:  make([]*ua.NodeID, len(src.binds)),
		last:   make([]model.Value, len(src.binds)),
		lost:   make(chan struct{}),
		failed: make(chan error, 1),
	}
}

func (ss *session) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// connect adds the source name to its logs itself.
	c, err := connect(ctx, ss.cfg, ss.cfg.Logger, ss.onState)
	if err != nil {
		return fmt.Errorf("opcua %s: connect: %w", ss.cfg.Name, err)
	}
	ss.c = c
	ss.src.connects.Add(1)
	ss.log.Debug("connected", "endpoint", ss.cfg.Endpoint)
	sub, err := ss.serve(ctx)
	cancel() // stops the watchdog
	ss.wg.Wait()
	ss.close(sub, err)
	return err
}

// serve runs the connected session; sub is the subscription, if one was
// created.
func (ss *session) serve(ctx context.Context) (sub *opcua.Subscription, err error) {
	name := ss.cfg.Name
	if err := ss.readServerInfo(ctx); err != nil {
		return nil, fmt.Errorf("opcua %s: %w", name, err)
	}
	if err := ss.resolve(ctx); err != nil {
		return nil, fmt.Errorf("opcua %s: resolve node bindings: %w", name, err)
	}
	if ss.cfg.Mode == ModePoll {
		ss.startWatchdog(ctx)
		return nil, ss.poll(ctx)
	}
	sub, err = ss.subscribe(ctx)
	if err != nil {
		return sub, fmt.Errorf("opcua %s: %w", name, err)
	}
	ss.startWatchdog(ctx)
	return sub, ss.listen(ctx, sub)
}

// onState runs on the client's goroutines, also after Run returned.
func (ss *session) onState(s opcua.ConnState) {
	if s == opcua.Disconnected || s == opcua.Closed {
		ss.lostOnce.Do(func() { close(ss.lost) })
	}
}

// errLost is the error of a session whose connection the client reported
// lost.
func (ss *session) errLost() error {
	return fmt.Errorf("opcua %s: connection to %s lost", ss.cfg.Name, ss.cfg.Endpoint)
}

// closeTimeout bounds the goodbye: deleting the subscription and closing
// the session of a server that may not answer any more.
func (ss *session) closeTimeout() time.Duration { return min(ss.cfg.Timeout, time.Second) }

// close deletes the subscription (closing the session does that too on a
// server that follows the specification; some do not) and closes the
// session and the connection, each within closeTimeout. When the
// connection is gone or the server stopped answering (err), it only closes
// the connection: a goodbye would just wait out its deadline.
func (ss *session) close(sub *opcua.Subscription, err error) {
	gone := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ua.StatusBadTimeout)
	select {
	case <-ss.lost:
		gone = true
	default:
	}
	if sub != nil && !gone {
		ctx, cancel := context.WithTimeout(context.Background(), ss.closeTimeout())
		if err := sub.Cancel(ctx); err != nil {
			ss.log.Debug("delete subscription", "err", err)
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), ss.closeTimeout())
	if gone {
		cancel() // Close then skips CloseSession and just hangs up
	}
	_ = ss.c.Close(ctx) // nothing to do about a failed goodbye
	cancel()
}

// request returns a context for one request: Timeout, and the session's
// end.
func (ss *session) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ss.cfg.Timeout)
}

// Standard nodes read at connect (OPC UA Part 5).
var (
	nodeNamespaceArray    = ua.NewNumericNodeID(0, id.Server_NamespaceArray)
	nodeServerState       = ua.NewNumericNodeID(0, id.Server_ServerStatus_State)
	nodeCurrentTime       = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)
	nodeMaxNodesPerRead   = ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
	nodeMaxItemsPerCall   = ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
	nodeMaxNodesPerBrowse = ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse)
)

// DefaultMaxNodesPerBrowse is used when the server does not publish its
// MaxNodesPerBrowse limit.
const DefaultMaxNodesPerBrowse = 1000

// readServerInfo reads the namespace array and the operation limits in
// one request. A limit the server does not publish (or publishes as 0)
// takes the default; a configured limit is lowered to the server's.
func (ss *session) readServerInfo(ctx context.Context) error {
	rctx, cancel := ss.request(ctx)
	defer cancel()
	res, err := ss.c.Read(rctx, &ua.ReadRequest{
		TimestampsToReturn: ua.TimestampsToReturnNeither,
		NodesToRead: []*ua.ReadValueID{
			{NodeID: nodeNamespaceArray, AttributeID: ua.AttributeIDValue},
			{NodeID: nodeMaxNodesPerRead, AttributeID: ua.AttributeIDValue},
			{NodeID: nodeMaxItemsPerCall, AttributeID: ua.AttributeIDValue},
			{NodeID: nodeMaxNodesPerBrowse, AttributeID: ua.AttributeIDValue},
		},
	})
	ss.src.reads.Add(1)
	if err != nil {
		return fmt.Errorf("read namespace array and operation limits: %w", err)
	}
	if len(res.Results) != 4 {
		return fmt.Errorf("read namespace array and operation limits: %d results for 4 nodes", len(res.Results))
	}
	l := &ss.limits
	if dv := res.Results[0]; dv != nil && quality(dv.Status) == model.QualityGood && dv.Value != nil {
		l.namespaces, _ = dv.Value.Value().([]string)
	}
	if l.namespaces == nil {
		// The client read it too when it connected.
		l.namespaces = ss.c.Namespaces()
	}
	limit := func(dv *ua.DataValue, configured, def int) int {
		server := 0
		if dv != nil && quality(dv.Status) == model.QualityGood && dv.Value != nil {
			if n, ok := dv.Value.Value().(uint32); ok {
				server = int(min(n, math.MaxInt32))
			}
		}
		switch {
		case configured > 0 && server > 0:
			return min(configured, server)
		case configured > 0:
			return configured
		case server > 0:
			return server
		}
		return def
	}
	l.maxNodesPerRead = limit(res.Results[1], ss.cfg.MaxNodesPerRead, DefaultMaxNodesPerRead)
	l.maxItemsPerCall = limit(res.Results[2], ss.cfg.MaxMonitoredItemsPerCall, DefaultMaxMonitoredItemsPerCall)
	l.maxNodesPerBrowse = limit(res.Results[3], 0, DefaultMaxNodesPerBrowse)
	ss.log.Debug("server info", "namespaces", len(l.namespaces), "max_nodes_per_read", l.maxNodesPerRead,
		"max_monitored_items_per_call", l.maxItemsPerCall, "max_nodes_per_browse", l.maxNodesPerBrowse)
	return nil
}

// startWatchdog reads the server state every KeepAlive/2, each read
// bounded by KeepAlive/2: gopcua does not pass the subscription's
// keep-alives on, and a server that stops answering (a stalled network, a
// hung process) closes no connection. A stall is thus noticed within
// KeepAlive.
func (ss *session) startWatchdog(ctx context.Context) {
	period := ss.cfg.KeepAlive / 2
	req := &ua.ReadRequest{
		TimestampsToReturn: ua.TimestampsToReturnNeither,
		NodesToRead:        []*ua.ReadValueID{{NodeID: nodeServerState, AttributeID: ua.AttributeIDValue}},
	}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(ctx, period)
			sent := time.Now()
			res, err := ss.c.Read(rctx, req)
			cancel()
			if ctx.Err() != nil {
				return
			}
			ss.src.meterRead(time.Since(sent), err)
			if err == nil && (len(res.Results) != 1 || res.Results[0] == nil) {
				err = fmt.Errorf("%d results for 1 node", len(res.Results))
			}
			if err == nil && quality(res.Results[0].Status) == model.QualityBad {
				err = res.Results[0].Status
			}
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					err = fmt.Errorf("no answer within %v: %w", period, err)
				}
				ss.failed <- fmt.Errorf("opcua %s: keep-alive: read server state: %w (is the server or the network down?)", ss.cfg.Name, err)
				return
			}
		}
	}()
}

// emitUnresolved emits one batch with every binding that has no node this
// session BAD, with the status code saying why.
func (ss *session) emitBad(idx []int, status []ua.StatusCode) {
	if len(idx) == 0 {
		return
	}
	now := time.Now()
	b := ss.batch[:0]
	for k, i := range idx {
		b = append(b, model.Sample{Source: ss.cfg.Name, Address: ss.src.binds[i].key,
			Quality: model.QualityBad, Status: uint32(status[k]), ReceiveTime: now})
	}
	ss.batch = b
	ss.src.samples.Add(uint64(len(b)))
	ss.emit(b)
}

// logProblem logs a binding problem when it is new for the key, and
// forget clears it once the key works again.
func (ss *session) logProblem(key, msg string, args ...any) {
	if ss.src.problems[key] == msg {
		ss.log.Debug(msg, append(args, "key", key)...)
		return
	}
	ss.src.problems[key] = msg
	ss.log.Warn(msg, append(args, "key", key)...)
}

func (ss *session) forget(key string) {
	if _, ok := ss.src.problems[key]; ok {
		delete(ss.src.problems, key)
		ss.log.Info("node binding works again", "key", key)
	}
}
