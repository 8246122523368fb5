package sparkplug

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// Node metric names.
const (
	MetricBdSeq   = "bdSeq"
	MetricRebirth = "Node Control/Rebirth"
)

// Sink is a Sparkplug B 3.0 edge node: one MQTT session per connection,
// NDEATH as the Will, births, one seq counter, DATA by exception, rebirth
// on command, primary host awareness, DDEATH and DBIRTH as sources go and
// come, historical replay of what waited in the store. It implements
// publish.Sink, publish.EncodingSink (its queue holds pre-encoded metrics,
// see Encoder) and publish.Observer (it births with the newest values,
// including those still queued).
type Sink struct {
	cfg      *settings
	log      *slog.Logger
	problems publish.Problems
	bdSeq    *bdSeqFile
	aliases  *aliasTable

	mu       sync.Mutex // guards tags, tagsVer, wake, the metrics' cur fields, host*
	tags     *tagset
	tagsVer  uint64
	wake     context.CancelFunc
	hostUp   bool  // the primary host's last STATE said online
	hostTs   int64 // timestamp of the last STATE taken
	hostSeen bool

	rebirthReq atomic.Bool // an NCMD asked for a rebirth

	online      atomic.Bool // births are out on the current connection
	connects    atomic.Uint64
	sent        atomic.Uint64
	skipped     atomic.Uint64
	births      atomic.Uint64
	rebirths    atomic.Uint64
	deaths      atomic.Uint64
	badCommands atomic.Uint64
	inflight    atomic.Int64
	curBdSeq    atomic.Uint64

	// Run goroutine only.
	seq      uint64 // of the last message that carried one
	buf      []byte
	bornDead []*device
}

// New validates cfg and loads the persisted state (bdSeq, aliases).
func New(cfg Config) (*Sink, error) {
	st, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: st, log: st.Logger.With("sink", st.Name)}
	if s.bdSeq, err = loadBdSeq(st.StateDir); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if s.aliases, err = loadAliases(st.StateDir); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return s, nil
}

// Name implements publish.Sink.
func (s *Sink) Name() string { return s.cfg.Name }

// Encoder implements publish.EncodingSink.
func (s *Sink) Encoder() publish.Encoder { return Encoder }

// Counters are the edge node's own figures beyond publish.SinkStatus.
type Counters struct {
	BdSeq       uint64 // of the current or last connection
	Births      uint64 // NBIRTH messages (one per session start or rebirth)
	Rebirths    uint64 // rebirths: NCMD, a new model, a metric's type became known
	DeviceDeath uint64 // DDEATH messages
	Skipped     uint64 // points not sent (see Status' Rejected)
	BadCommands uint64 // NCMD or STATE messages that could not be read
}

// Counters returns a snapshot.
func (s *Sink) Counters() Counters {
	return Counters{BdSeq: s.curBdSeq.Load(), Births: s.births.Load(), Rebirths: s.rebirths.Load(),
		DeviceDeath: s.deaths.Load(), Skipped: s.skipped.Load(), BadCommands: s.badCommands.Load()}
}

// Status implements publish.Sink. Connected means the births are out;
// Rejected counts points that could not be sent as Sparkplug: their tag left
// the model, their device was offline, or their value's type differs from
// the one the host was given and a newer value of the right type exists.
func (s *Sink) Status() publish.SinkStatus {
	last, at := s.problems.Last()
	return publish.SinkStatus{Connected: s.online.Load(), LastError: last, LastErrorAt: at,
		Sent: s.sent.Load(), Inflight: int(s.inflight.Load()), Rejected: s.skipped.Load(),
		Connects: s.connects.Load()}
}

// SetTags implements publish.Sink: the tags become the node's devices and
// metrics. When a session is up this causes a rebirth.
func (s *Sink) SetTags(tags []*model.TagMeta) {
	s.mu.Lock()
	ts := buildTagset(tags, s.cfg.DevicePrefix, s.cfg.GroupID, s.cfg.EdgeNodeID, s.aliases)
	err := s.aliases.save()
	if old := s.tags; old != nil {
		for topic, m := range ts.byTopic {
			if o := old.byTopic[topic]; o != nil {
				m.cur, m.curMs = o.cur, o.curMs
			}
		}
		byID := map[string]*device{}
		for _, d := range old.devices {
			byID[d.id] = d
		}
		for _, d := range ts.devices {
			if o := byID[d.id]; o != nil && d.source != "" {
				d.alive.Store(o.alive.Load())
			}
		}
	}
	s.tags = ts
	s.tagsVer++
	s.mu.Unlock()
	if err != nil {
		s.problem("state", fmt.Sprintf("saving the alias table: %v", err))
	}
	for _, why := range ts.invalid {
		s.log.Warn("tag left out of Sparkplug", "tag", why)
	}
	s.interrupt()
}

// Queued implements publish.Observer: it keeps the newest value of every
// metric and whether each device's source is up.
func (s *Sink) Queued(msgs []publish.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tags
	if ts == nil {
		return
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Meta == nil {
			if src, up, ok := publish.SourceEvent(m); ok {
				for _, d := range ts.bySource[src] {
					d.alive.Store(up)
				}
			}
			continue
		}
		if mt := ts.lookup(m.Meta, m.Topic); mt != nil {
			mt.cur = append(mt.cur[:0], m.Payload...)
			mt.curMs = m.TimeMs
		}
	}
}

func (s *Sink) problem(kind, msg string) {
	if s.problems.Note(kind, msg) {
		s.log.Warn("sparkplug: "+msg, "kind", kind)
	}
}

// interrupt wakes Run from waiting on its queue.
func (s *Sink) interrupt() {
	s.mu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.mu.Unlock()
}

func (s *Sink) armWake(ctx context.Context) context.Context {
	wctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.wake = cancel
	s.mu.Unlock()
	return wctx
}

func (s *Sink) topic(kind string) string {
	return Namespace + "/" + s.cfg.GroupID + "/" + kind + "/" + s.cfg.EdgeNodeID
}

// errHostOffline ends a session because the primary host went offline.
var errHostOffline = errors.New("primary host application went offline")

// Run implements publish.Sink: session after session until ctx is done.
func (s *Sink) Run(ctx context.Context, q *publish.Queue) error {
	failures := 0
	for {
		start := time.Now()
		err := s.session(ctx, q)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, errHostOffline) {
			s.problem("session", err.Error())
			s.log.Debug("session ended", "err", err)
		}
		if time.Since(start) > 2*s.cfg.BackoffMax {
			failures = 0
		}
		failures++
		d := s.cfg.BackoffMin
		for i := 1; i < failures && d < s.cfg.BackoffMax; i++ {
			d *= 2
		}
		d = min(d, s.cfg.BackoffMax)
		d = d/2 + rand.N(d/2+1)
		if errors.Is(err, errHostOffline) {
			// Reconnect soon and wait for the host there; not at once, so
			// the broker has dropped the old connection (and with it, in
			// some brokers, the subscriptions of our client id).
			d = s.cfg.BackoffMin
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// conn bounds every write, so a stalled broker cannot block a publish.
//
// It is a sync.Locker: paho writes a packet in several pieces and, given a
// Locker, holds it for the whole packet. Without that, a PINGREQ from
// paho's pinger could land inside another packet (the wrapper turns paho's
// one writev into several writes), and the broker would drop the
// connection as malformed.
type conn struct {
	net.Conn
	timeout time.Duration
	mu      sync.Mutex
}

func (c *conn) Lock()   { c.mu.Lock() }
func (c *conn) Unlock() { c.mu.Unlock() }

func (c *conn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

func (s *Sink) dial(ctx context.Context) (net.Conn, error) {
	c, err := publish.DialBroker(ctx, s.cfg.url.Host, s.cfg.tls, s.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, timeout: s.cfg.Timeout}, nil
}

// session runs one MQTT connection: CONNECT with the NDEATH as Will,
// subscriptions, waiting for the primary host, births, then data until the
// connection breaks, the host goes offline or ctx is done.
func (s *Sink) session(ctx context.Context, q *publish.Queue) error {
	bd, err := s.bdSeq.next()
	if err != nil {
		return err
	}
	s.curBdSeq.Store(bd)
	nc, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", s.cfg.url.Host, err)
	}
	c := paho.NewClient(paho.ClientConfig{
		ClientID:      s.cfg.ClientID,
		Conn:          nc,
		PacketTimeout: s.cfg.Timeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			s.command(pr.Packet.Topic, pr.Packet.Payload)
			return true, nil
		}},
		OnClientError: func(err error) { s.problem("connection", err.Error()) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			s.problem("connection", fmt.Sprintf("broker disconnected us: reason 0x%02X", d.ReasonCode))
		},
	})
	defer c.Disconnect(&paho.Disconnect{ReasonCode: 0x04}) // no-op when already closed; keeps the Will
	cp := &paho.Connect{
		ClientID:   s.cfg.ClientID,
		CleanStart: true,
		KeepAlive:  uint16(s.cfg.KeepAlive / time.Second),
		WillMessage: &paho.WillMessage{
			Topic: s.topic("NDEATH"), QoS: 1, Retain: false, Payload: s.deathPayload(bd),
		},
	}
	if s.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = s.cfg.Username, true
	}
	if s.cfg.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(s.cfg.Password), true
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	ca, err := c.Connect(cctx, cp)
	cancel()
	if err != nil {
		if ca != nil && ca.ReasonCode != 0 {
			return fmt.Errorf("broker %s refused the connection: reason 0x%02X %s", s.cfg.url.Host, ca.ReasonCode, ca.Properties.ReasonString)
		}
		return fmt.Errorf("connecting to %s: %w", s.cfg.url.Host, err)
	}
	s.connects.Add(1)
	s.log.Info("sparkplug edge node connected", "broker", s.cfg.url.Host, "bdSeq", bd)
	// A lost connection must wake Run from waiting on its queue.
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-c.Done():
			s.interrupt()
		case <-ended:
		}
	}()

	subs := []paho.SubscribeOptions{{Topic: s.topic("NCMD"), QoS: 1}}
	if h := s.cfg.PrimaryHost; h != "" {
		subs = append(subs, paho.SubscribeOptions{Topic: Namespace + "/STATE/" + h, QoS: 1},
			paho.SubscribeOptions{Topic: "STATE/" + h, QoS: 1})
	}
	sa, err := s.subscribe(ctx, c, subs)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", subs[0].Topic, err)
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			return fmt.Errorf("broker refused the subscription to %s: reason 0x%02X", subs[min(i, len(subs)-1)].Topic, rc)
		}
	}

	if s.cfg.PrimaryHost != "" {
		if err := s.waitForHost(ctx, c); err != nil {
			return err
		}
	}
	s.rebirthReq.Store(false)
	if err := s.birthAll(c); err != nil {
		return err
	}
	s.online.Store(true)
	defer s.online.Store(false)
	s.mu.Lock()
	ver := s.tagsVer
	s.mu.Unlock()

	batch := make([]publish.Message, 0, popBatch)
	for {
		wctx := s.armWake(ctx)
		switch {
		case ctx.Err() != nil:
			return s.stop(c, bd)
		case isDone(c):
			return errors.New("connection lost")
		case s.cfg.PrimaryHost != "" && !s.hostOnline():
			s.log.Warn("primary host application offline: NDEATH and reconnect", "host", s.cfg.PrimaryHost)
			_ = s.stop(c, bd)
			return errHostOffline
		}
		s.mu.Lock()
		changed := s.tagsVer != ver
		ver = s.tagsVer
		s.mu.Unlock()
		if changed || s.rebirthReq.Swap(false) {
			if err := s.rebirth(c); err != nil {
				return err
			}
			continue
		}
		var err error
		batch, err = q.PopBatch(wctx, batch[:0], popBatch)
		if err != nil {
			continue // woken: look at the connection, the host, the tags
		}
		s.inflight.Store(int64(len(batch)))
		err = s.process(c, q, batch)
		s.inflight.Store(0)
		clear(batch)
		if err != nil {
			return err
		}
	}
}

// subscribe subscribes, waiting at most Timeout for the SUBACK, as for
// every other answer from the broker (a broker across a slow link may take
// a while). Without one the session ends with the error and starts over.
func (s *Sink) subscribe(ctx context.Context, c *paho.Client, subs []paho.SubscribeOptions) (*paho.Suback, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return c.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
}

// popBatch is how many queued points one round handles.
const popBatch = 1000

func isDone(c *paho.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// stop ends a session on purpose: NDEATH (QoS 1, acknowledged or timed
// out), then DISCONNECT with reason 0x04 so the broker sends the Will as
// well if our NDEATH was lost.
func (s *Sink) stop(c *paho.Client, bd uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	_, err := c.Publish(ctx, &paho.Publish{Topic: s.topic("NDEATH"), QoS: 1, Payload: s.deathPayload(bd)})
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0x04})
	s.online.Store(false)
	if err != nil {
		return fmt.Errorf("publishing NDEATH: %w", err)
	}
	s.log.Info("sparkplug edge node stopped", "bdSeq", bd)
	return nil
}

// waitForHost blocks until the primary host's STATE says online.
func (s *Sink) waitForHost(ctx context.Context, c *paho.Client) error {
	logged := false
	for {
		wctx := s.armWake(ctx) // before looking, so a STATE arriving now wakes us
		if s.hostOnline() {
			return nil
		}
		if !logged {
			s.log.Info("waiting for the primary host application to be online before births", "host", s.cfg.PrimaryHost)
			logged = true
		}
		select {
		case <-ctx.Done():
			return s.stop(c, s.curBdSeq.Load())
		case <-c.Done():
			return errors.New("connection lost while waiting for the primary host")
		case <-wctx.Done():
		}
	}
}

func (s *Sink) hostOnline() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostUp
}

// command handles NCMD and STATE messages (on paho's goroutine).
func (s *Sink) command(topic string, payload []byte) {
	switch {
	case topic == s.topic("NCMD"):
		p, err := Decode(payload)
		if err != nil {
			s.badCommands.Add(1)
			s.problem("command", fmt.Sprintf("NCMD ignored: %v", err))
			return
		}
		for _, m := range p.Metrics {
			if m.Name == MetricRebirth && m.Value == metricBooleanValue && m.Bool {
				s.log.Info("rebirth requested by NCMD")
				s.rebirthReq.Store(true)
				s.interrupt()
			} else {
				s.log.Debug("NCMD metric not supported, ignored", "metric", m.Name)
			}
		}
	case s.cfg.PrimaryHost != "" && (topic == Namespace+"/STATE/"+s.cfg.PrimaryHost || topic == "STATE/"+s.cfg.PrimaryHost):
		online, ts, legacy, err := parseState(payload)
		if err != nil {
			s.badCommands.Add(1)
			s.problem("command", fmt.Sprintf("STATE on %s ignored: %v", topic, err))
			return
		}
		s.mu.Lock()
		take := legacy || !s.hostSeen || ts >= s.hostTs
		if take {
			s.hostUp, s.hostSeen = online, true
			if !legacy {
				s.hostTs = ts
			}
		}
		s.mu.Unlock()
		if take {
			s.log.Info("primary host state", "host", s.cfg.PrimaryHost, "online", online, "timestamp", ts)
			s.interrupt()
		} else {
			s.log.Debug("older STATE ignored", "timestamp", ts)
		}
	}
}

// parseState reads a STATE payload: the 3.0 JSON form
// {"online":true,"timestamp":T} or the older ONLINE / OFFLINE text.
func parseState(b []byte) (online bool, ts int64, legacy bool, err error) {
	switch strings.TrimSpace(string(b)) {
	case "ONLINE":
		return true, 0, true, nil
	case "OFFLINE":
		return false, 0, true, nil
	}
	var st struct {
		Online    *bool  `json:"online"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return false, 0, false, fmt.Errorf("not a STATE payload: %v", err)
	}
	if st.Online == nil || st.Timestamp == nil {
		return false, 0, false, errors.New(`STATE payload lacks "online" or "timestamp"`)
	}
	return *st.Online, *st.Timestamp, false, nil
}

// nextSeq advances the node's seq (0..255).
func (s *Sink) nextSeq() uint64 {
	s.seq = (s.seq + 1) % 256
	return s.seq
}

func nowMs() uint64 { return uint64(time.Now().UnixMilli()) }

// deathPayload is the NDEATH: a timestamp and the bdSeq, no seq.
func (s *Sink) deathPayload(bd uint64) []byte {
	b := appendVarint(nil, payloadTimestamp, nowMs())
	var m []byte
	m = appendString(m, metricName, MetricBdSeq)
	m = appendVarint(m, metricTimestamp, nowMs())
	m = appendVarint(m, metricDatatype, uint64(TypeInt64))
	m = appendVarint(m, metricLongValue, bd)
	return appendBytes(b, payloadMetrics, m)
}

func (s *Sink) publish(c *paho.Client, topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 0, Payload: payload}); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	return nil
}

// birthAll publishes NBIRTH (seq 0) and a DBIRTH for every device whose
// source is up; the others are born when they come back.
func (s *Sink) birthAll(c *paho.Client) error {
	s.seq = 0
	b := appendVarint(s.buf[:0], payloadTimestamp, nowMs())
	var m []byte
	m = appendString(m, metricName, MetricBdSeq)
	m = appendVarint(m, metricTimestamp, nowMs())
	m = appendVarint(m, metricDatatype, uint64(TypeInt64))
	m = appendVarint(m, metricLongValue, s.curBdSeq.Load())
	b = appendBytes(b, payloadMetrics, m)
	m = appendString(m[:0], metricName, MetricRebirth)
	m = appendVarint(m, metricTimestamp, nowMs())
	m = appendVarint(m, metricDatatype, uint64(TypeBoolean))
	m = appendBool(m, metricBooleanValue, false)
	b = appendBytes(b, payloadMetrics, m)
	b = appendVarint(b, payloadSeq, 0)
	s.buf = b
	if err := s.publish(c, s.topic("NBIRTH"), b); err != nil {
		return err
	}
	s.births.Add(1)
	s.mu.Lock()
	ts := s.tags
	s.mu.Unlock()
	s.bornDead = s.bornDead[:0]
	if ts == nil {
		return nil
	}
	for _, d := range ts.devices {
		d.born, d.bornDead = false, false
		d.pend, d.pendIdx = d.pend[:0], d.pendIdx[:0]
		if d.alive.Load() {
			if err := s.birthDevice(c, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// rebirth republishes every birth on the same connection (same bdSeq).
func (s *Sink) rebirth(c *paho.Client) error {
	s.rebirths.Add(1)
	s.log.Info("sparkplug rebirth", "bdSeq", s.curBdSeq.Load())
	return s.birthAll(c)
}

// birthDevice publishes d's DBIRTH with the newest value of each metric.
func (s *Sink) birthDevice(c *paho.Client, d *device) error {
	now := nowMs()
	b := appendVarint(s.buf[:0], payloadTimestamp, now)
	var m []byte
	s.mu.Lock()
	for _, mt := range d.metrics {
		dt := TypeUnknown
		if len(mt.cur) > 0 {
			dt = DataType(mt.cur[0])
		}
		switch {
		case dt != TypeUnknown:
		case mt.declared != TypeUnknown:
			dt = mt.declared
		case mt.bornDT != TypeUnknown:
			dt = mt.bornDT
		default:
			dt = TypeString // not known before a value arrives; a rebirth follows then
		}
		m = appendString(m[:0], metricName, mt.name)
		if !s.cfg.NoAliases {
			m = appendVarint(m, metricAlias, mt.alias)
		}
		m = appendVarint(m, metricDatatype, uint64(dt))
		if len(mt.cur) > 0 {
			m = append(m, mt.cur[1:]...)
			mt.bornMs = mt.curMs
			mt.bornVal = append(mt.bornVal[:0], mt.cur...)
		} else {
			m = appendVarint(m, metricTimestamp, now)
			m = appendBool(m, metricIsNull, true)
			m = appendQuality(m, QualityBad)
			mt.bornMs = 0
			mt.bornVal = mt.bornVal[:0]
		}
		mt.bornDT = dt
		b = appendBytes(b, payloadMetrics, m)
	}
	s.mu.Unlock()
	b = appendVarint(b, payloadSeq, s.nextSeq())
	s.buf = b
	if err := s.publish(c, d.birthT, b); err != nil {
		return err
	}
	d.born = true
	d.pendGen++
	return nil
}

// deathDevice publishes d's DDEATH.
func (s *Sink) deathDevice(c *paho.Client, d *device) error {
	b := appendVarint(s.buf[:0], payloadTimestamp, nowMs())
	b = appendVarint(b, payloadSeq, s.nextSeq())
	s.buf = b
	if err := s.publish(c, d.deathT, b); err != nil {
		return err
	}
	d.born, d.bornDead = false, false
	s.deaths.Add(1)
	return nil
}

// maxPending bounds one DDATA payload.
const maxPending = 64 << 10

// process sends one batch: points become DDATA metrics, gathered per
// device; source events become DDEATH. Every message is Done once what
// carries it is written, or skipped and counted; on a connection failure
// the unsent rest goes back to the queue.
func (s *Sink) process(c *paho.Client, q *publish.Queue, batch []publish.Message) error {
	sent := make([]bool, len(batch))
	var touched []*device
	s.mu.Lock()
	ts := s.tags
	s.mu.Unlock()
	flush := func(d *device) error {
		if len(d.pendIdx) == 0 {
			return nil
		}
		b := appendVarint(s.buf[:0], payloadTimestamp, nowMs())
		b = append(b, d.pend...)
		b = appendVarint(b, payloadSeq, s.nextSeq())
		s.buf = b
		if err := s.publish(c, d.dataT, b); err != nil {
			return err
		}
		for _, i := range d.pendIdx {
			sent[i] = true
		}
		d.pend, d.pendIdx = d.pend[:0], d.pendIdx[:0]
		d.pendGen++
		return nil
	}
	flushAll := func() error {
		for _, d := range touched {
			if err := flush(d); err != nil {
				return err
			}
		}
		touched = touched[:0]
		return nil
	}
	err := func() error {
		for i := range batch {
			m := &batch[i]
			if m.Meta == nil {
				if src, _, ok := publish.SourceEvent(m); ok && ts != nil {
					for _, d := range ts.bySource[src] {
						if d.born && !d.alive.Load() {
							if err := flush(d); err != nil {
								return err
							}
							if err := s.deathDevice(c, d); err != nil {
								return err
							}
						}
					}
				}
				sent[i] = true
				continue
			}
			var mt *metric
			if ts != nil {
				mt = ts.lookup(m.Meta, m.Topic)
			}
			if mt == nil || len(m.Payload) == 0 {
				s.skip(i, sent, "unknown", "its tag is not in the model any more", m.Topic)
				continue
			}
			d := mt.dev
			if !d.born {
				switch {
				case d.alive.Load():
				case m.Replay:
					d.bornDead = true // history of a device that is down now
					s.bornDead = append(s.bornDead, d)
				default:
					s.skip(i, sent, "offline", "its device is offline", m.Topic)
					continue
				}
				if err := s.birthDevice(c, d); err != nil {
					return err
				}
			}
			dt := DataType(m.Payload[0])
			if dt != TypeUnknown && dt != mt.bornDT {
				s.mu.Lock()
				curDT := TypeUnknown
				if len(mt.cur) > 0 {
					curDT = DataType(mt.cur[0])
				}
				s.mu.Unlock()
				if curDT == mt.bornDT {
					s.skip(i, sent, "type", fmt.Sprintf("a value of type %s, but the host knows the metric as %s", dt, mt.bornDT), m.Topic)
					continue
				}
				// The metric's type changed (or became known): the host
				// needs new births before it can take the value.
				if err := flushAll(); err != nil {
					return err
				}
				s.log.Info("metric type changed: rebirth", "metric", m.Topic, "from", mt.bornDT, "to", curDT)
				if err := s.rebirth(c); err != nil {
					return err
				}
				if !d.born {
					s.skip(i, sent, "offline", "its device is offline", m.Topic)
					continue
				}
			}
			if m.TimeMs == mt.bornMs && bytes.Equal(m.Payload, mt.bornVal) {
				sent[i] = true // the birth carried it
				continue
			}
			// Older than what the birth gave the host as current: history.
			// A point with the birth's timestamp but another payload is the
			// born value with a new quality (gone stale or BAD), a live
			// change. The queue's Replay mark alone would also call points
			// live that were queued in the moments before the queue learnt
			// of the reconnect; it decides only for metrics the birth had
			// no value for (points an earlier process left).
			hist := m.TimeMs < mt.bornMs || m.Replay && mt.bornMs == 0
			if mt.pendGen == d.pendGen && m.TimeMs <= mt.pendMs || len(d.pend) > maxPending {
				// Values of one metric in one message need rising timestamps.
				if err := flush(d); err != nil {
					return err
				}
			}
			if len(d.pendIdx) == 0 {
				touched = append(touched, d)
			}
			d.pend = s.appendDataMetric(d.pend, mt, m.Payload[1:], hist)
			d.pendIdx = append(d.pendIdx, i)
			mt.pendGen, mt.pendMs = d.pendGen, m.TimeMs
		}
		if err := flushAll(); err != nil {
			return err
		}
		// Devices born only to carry history die again once it is out.
		if q.Len() == 0 && len(s.bornDead) > 0 {
			for _, d := range s.bornDead {
				if d.born && d.bornDead && !d.alive.Load() {
					if err := s.deathDevice(c, d); err != nil {
						return err
					}
				}
				d.bornDead = false
			}
			s.bornDead = s.bornDead[:0]
		}
		return nil
	}()
	var done, back []publish.Message
	for i := range batch {
		if sent[i] {
			done = append(done, batch[i])
		} else {
			back = append(back, batch[i])
		}
	}
	for _, d := range touched {
		d.pend, d.pendIdx = d.pend[:0], d.pendIdx[:0]
		d.pendGen++
	}
	q.Done(done...)
	s.sent.Add(uint64(len(done)))
	if len(back) > 0 {
		q.Requeue(back)
	}
	return err
}

// skip counts a point that cannot be sent and marks it finished.
func (s *Sink) skip(i int, sent []bool, kind, why, topic string) {
	s.skipped.Add(1)
	sent[i] = true
	s.problem("skip-"+kind, fmt.Sprintf("point of %s not sent: %s", topic, why))
}

// appendDataMetric appends one DDATA metric: the alias (or the name), the
// queued fields and is_historical when set.
func (s *Sink) appendDataMetric(dst []byte, mt *metric, body []byte, hist bool) []byte {
	n := len(body)
	if s.cfg.NoAliases {
		n += 1 + varintLen(uint64(len(mt.name))) + len(mt.name)
	} else {
		n += 1 + varintLen(mt.alias)
	}
	if hist {
		n += 2
	}
	dst = appendKey(dst, payloadMetrics, wireBytes)
	dst = appendUvarint(dst, uint64(n))
	if s.cfg.NoAliases {
		dst = appendString(dst, metricName, mt.name)
	} else {
		dst = appendVarint(dst, metricAlias, mt.alias)
	}
	dst = append(dst, body...)
	if hist {
		dst = appendBool(dst, metricIsHistorical, true)
	}
	return dst
}
