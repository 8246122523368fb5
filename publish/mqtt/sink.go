package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// Sink publishes UNS JSON messages to an MQTT v5 broker: QoS 1, retained,
// content type application/json, with a window of publishes in flight (never
// one PUBACK at a time). After each connect it publishes, in this order, the
// retained presence {"online":true,...}, the retained _meta of every tag,
// then the queued values.
//
// Delivery is at least once: a message counts as Sent only on its PUBACK;
// messages in flight when a connection drops are sent again, in their
// original order and ahead of newer ones, on the next connection, so the
// broker may see some of them twice (Status().Redelivered counts them).
// Order per topic is kept: a batch is sent on one connection, or what that
// connection lost goes first. A broker without QoS 1 gets QoS 0, and a
// message then counts as Sent once written to the socket (see the package
// doc); one without retain gets messages (and the Will) not retained.
type Sink struct {
	cfg  *settings
	log  *slog.Logger
	sess *session

	running     atomic.Bool
	queue       atomic.Pointer[publish.Queue] // of the current Run, for Done
	sent        atomic.Uint64
	rejected    atomic.Uint64
	redelivered atomic.Uint64
	connects    atomic.Uint64
	held        atomic.Int64 // taken from the queue, not yet handed to the session
	flaps       atomic.Int64 // consecutive connections that died young
	upSince     atomic.Int64 // unix nanos of the current connection's start
	// The broker refused our Will's QoS 1 (0x9B) or retain (0x9A): the
	// following CONNECTs carry a QoS 0 / not retained Will.
	willQoS0, willNoRetain atomic.Bool

	problems publish.Problems

	mu      sync.Mutex
	tags    []*model.TagMeta
	tagsVer uint64
	wake    context.CancelFunc // interrupts the sender's wait for messages
}

var _ publish.Sink = (*Sink)(nil)

// Tuning.
const (
	popBatch       = 256              // messages taken from the queue at once
	offlineTimeout = 1 * time.Second  // wait for the offline presence's PUBACK at shutdown
	stopTimeout    = 2 * time.Second  // wait for the client to disconnect at shutdown
	stableAfter    = 10 * time.Second // a connection that lived this long resets the backoff
)

// New validates cfg and returns a sink. Every error wraps ErrConfig.
func New(cfg Config) (*Sink, error) {
	st, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: st, log: st.Logger}
	s.sess = newSession(st.MaxInflight)
	s.sess.onAck = s.onAck
	s.sess.onLost = s.interrupt
	return s, nil
}

// Name is the sink's name from the config.
func (s *Sink) Name() string { return s.cfg.Name }

// SetTags replaces the tag metadata. While connected, the _meta of new or
// changed tags is published at once; every _meta is published again on
// each connect. Removed tags keep their retained messages.
func (s *Sink) SetTags(tags []*model.TagMeta) {
	s.mu.Lock()
	s.tags = tags
	s.tagsVer++
	s.mu.Unlock()
	s.interrupt()
}

// Status reports the connection and delivery counters.
func (s *Sink) Status() publish.SinkStatus {
	connected, inflight := s.sess.snapshot()
	lastErr, lastErrAt := s.problems.Last()
	return publish.SinkStatus{
		Connected:   connected,
		LastError:   lastErr,
		LastErrorAt: lastErrAt,
		Sent:        s.sent.Load(),
		Inflight:    inflight + int(s.held.Load()),
		Rejected:    s.rejected.Load(),
		Redelivered: s.redelivered.Load(),
		Connects:    s.connects.Load(),
	}
}

// Run connects (and reconnects, with backoff) and publishes messages from q
// until ctx is done. Then it publishes the offline presence, disconnects
// cleanly and puts whatever was not acknowledged back at the front of q.
// It returns nil unless the client cannot be started.
func (s *Sink) Run(ctx context.Context, q *publish.Queue) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("mqtt: sink is already running")
	}
	defer s.running.Store(false)
	s.queue.Store(q)

	// The client outlives ctx by a little: it still has to say goodbye.
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	cm, err := autopaho.NewConnection(connCtx, s.clientConfig())
	if err != nil {
		return fmt.Errorf("mqtt %s: start client: %w", s.cfg.Name, err)
	}
	go s.watchdog(ctx)
	runDone := make(chan struct{})
	defer close(runDone)
	go s.abortOnShutdown(ctx, runDone)
	held := s.deliver(ctx, q)

	s.sayOffline()
	stopConn()
	t := time.NewTimer(stopTimeout)
	select {
	case <-cm.Done():
	case <-t.C:
		s.log.Warn("mqtt client did not stop in time", "sink", s.cfg.Name, "timeout", stopTimeout)
		s.sess.abortCurrent(errShutdown) // release whatever still waits on it
	}
	t.Stop()
	s.sess.ConnectionLost(nil) // in case the client did not get that far
	back := append(s.sess.takeLost(), held...)
	s.held.Store(0)
	q.Requeue(back)
	return nil
}

var errShutdown = errors.New("shutting down: the broker did not take the last messages in time")

// abortOnShutdown drops the connection offlineTimeout after ctx is done,
// unless Run finished first. A broker that stopped reading without closing
// the connection would otherwise hold every writer (the sender, the
// offline presence, paho's DISCONNECT) until the write deadline
// (AckTimeout); with it Run returns within about offlineTimeout +
// stopTimeout. The broker then publishes the Will, which says offline too.
func (s *Sink) abortOnShutdown(ctx context.Context, runDone <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-runDone:
		return
	}
	t := time.NewTimer(offlineTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		s.sess.abortCurrent(errShutdown)
	case <-runDone:
	}
}

// deliver is the sender: it runs until ctx is done and returns the messages
// it holds that were never handed to a connection.
func (s *Sink) deliver(ctx context.Context, q *publish.Queue) (held []publish.Message) {
	batch := make([]publish.Message, 0, popBatch)
	metaSent := map[string]uint64{} // topic -> hash of the _meta payload published on this connection
	var metaBuf []byte
	wctx, _ := s.armWake(ctx)
	for {
		gen, _, err := s.sess.waitUp(ctx)
		if err != nil {
			return held
		}
		// What the last connection lost goes first, then what we held back.
		lost := s.sess.takeLost()
		if len(lost)+len(held) > 0 {
			s.redelivered.Add(uint64(len(lost)))
			q.Requeue(append(lost, held...))
			held = held[:0]
			s.held.Store(0)
		}
		if err := s.sendPresence(ctx, gen, true); err != nil {
			if ctx.Err() != nil {
				return held
			}
			continue
		}
		clear(metaSent)
		tagsVer, err := s.sendMeta(ctx, gen, metaSent, &metaBuf)
		if err != nil {
			if ctx.Err() != nil {
				return held
			}
			continue
		}

		for s.sess.isUp(gen) {
			if wctx.Err() != nil {
				if ctx.Err() != nil {
					return held
				}
				wctx, _ = s.armWake(ctx)
				continue // re-check the connection and the tags after a wake-up
			}
			if v := s.tagsVersion(); v != tagsVer {
				if tagsVer, err = s.sendMeta(ctx, gen, metaSent, &metaBuf); err != nil {
					break
				}
				continue
			}
			batch, err = q.PopBatch(wctx, batch[:0], popBatch)
			if err != nil {
				continue
			}
			s.held.Store(int64(len(batch)))
			// The whole batch goes on connection gen or waits for the
			// next one: once gen is lost, what it lost goes first.
			for i := range batch {
				if err := s.sendValue(ctx, gen, batch[i]); err != nil {
					held = append(held, batch[i:]...)
					break
				}
				s.held.Add(-1)
			}
			clear(batch) // do not pin payloads
			if len(held) > 0 {
				if ctx.Err() != nil {
					return held
				}
				break
			}
		}
	}
}

// armWake makes a fresh context for waiting on the queue, which SetTags
// and a lost connection cancel.
func (s *Sink) armWake(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.wake = cancel
	s.mu.Unlock()
	return wctx, cancel
}

func (s *Sink) interrupt() {
	s.mu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.mu.Unlock()
}

func (s *Sink) tagsVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tagsVer
}

func (s *Sink) sendValue(ctx context.Context, gen uint64, m publish.Message) error {
	err := s.sess.send(ctx, gen, m, false, nil)
	if errors.Is(err, errTooLarge) {
		s.rejected.Add(1)
		s.queue.Load().Done(m)
		s.problem("too-large", fmt.Sprintf("message for %s (%d bytes) is larger than the broker accepts; dropped", m.Topic, len(m.Payload)))
		return nil
	}
	return err
}

// sendMeta publishes, on connection gen, the _meta of every tag whose
// metadata differs from what this connection already published, and
// returns the tags version it worked from.
func (s *Sink) sendMeta(ctx context.Context, gen uint64, sent map[string]uint64, buf *[]byte) (uint64, error) {
	s.mu.Lock()
	tags, ver := s.tags, s.tagsVer
	s.mu.Unlock()
	for _, t := range tags {
		*buf = publish.AppendMetaJSON((*buf)[:0], t)
		sum := fnv64(*buf)
		if prev, ok := sent[t.Topic]; ok && prev == sum {
			continue
		}
		m := publish.Message{Topic: t.Topic + publish.MetaSuffix, Payload: *buf, Retain: true}
		switch err := s.sess.send(ctx, gen, m, true, nil); {
		case errors.Is(err, errTooLarge):
			s.problem("too-large", fmt.Sprintf("metadata for %s (%d bytes) is larger than the broker accepts; not published", t.Topic, len(*buf)))
		case err != nil:
			return ver, err
		}
		sent[t.Topic] = sum
	}
	return ver, nil
}

// fnv64 is FNV-1a, inline so hashing a tag's metadata does not allocate.
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// presence returns the presence payload; the Will has no timestamp, since
// the broker sends it at some unknown later time.
func (s *Sink) presence(online bool, withTime bool) []byte {
	b := []byte(`{"online":`)
	b = strconv.AppendBool(b, online)
	b = append(b, `,"gateway":`...)
	b = model.AppendJSONString(b, s.cfg.GatewayID)
	if withTime {
		b = append(b, `,"timestamp_ms":`...)
		b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	}
	return append(b, '}')
}

func (s *Sink) sendPresence(ctx context.Context, gen uint64, online bool) error {
	if s.cfg.PresenceTopic == "" {
		return nil
	}
	m := publish.Message{Topic: s.cfg.PresenceTopic, Payload: s.presence(online, true), Retain: true}
	return s.sess.send(ctx, gen, m, true, nil)
}

// sayOffline publishes the offline presence before a clean disconnect
// (which makes the broker discard the Will) and waits, briefly, for its
// PUBACK.
func (s *Sink) sayOffline() {
	if s.cfg.PresenceTopic == "" {
		return
	}
	gen, down, ok := s.sess.current()
	if !ok {
		return // not connected: the broker has published the Will
	}
	ctx, cancel := context.WithTimeout(context.Background(), offlineTimeout)
	defer cancel()
	done := make(chan struct{})
	m := publish.Message{Topic: s.cfg.PresenceTopic, Payload: s.presence(false, true), Retain: true}
	if err := s.sess.send(ctx, gen, m, true, done); err != nil {
		return
	}
	select {
	case <-done:
	case <-down:
	case <-ctx.Done():
		s.log.Warn("offline presence not acknowledged in time", "sink", s.cfg.Name, "timeout", offlineTimeout)
	}
}

// onAck counts a PUBACK (called by the session, from paho's reader).
func (s *Sink) onAck(f flight, reason byte) {
	if f.ctl {
		if reason >= 0x80 {
			s.problem("puback", fmt.Sprintf("broker refused the publish to %s: %s", f.msg.Topic, pubackReason(reason)))
		}
		return
	}
	s.queue.Load().Done(f.msg)
	if reason < 0x80 {
		s.sent.Add(1)
		return
	}
	s.rejected.Add(1)
	s.problem("puback", fmt.Sprintf("broker refused the publish to %s: %s", f.msg.Topic, pubackReason(reason)))
}

// watchdog drops a connection whose publishes stay unacknowledged for
// AckTimeout: the broker is alive enough for TCP but not for us.
func (s *Sink) watchdog(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.AckTimeout/4, time.Millisecond))
	defer t.Stop()
	var lastGen, lastAcks uint64
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			gen, inflight, acks := s.sess.progress()
			if inflight == 0 || gen != lastGen || acks != lastAcks {
				lastGen, lastAcks, since = gen, acks, now
				continue
			}
			if now.Sub(since) >= s.cfg.AckTimeout {
				err := fmt.Errorf("no PUBACK for %v with %d publishes in flight; reconnecting", s.cfg.AckTimeout, inflight)
				s.problem("ack-timeout", err.Error())
				s.sess.abort(gen, err)
				since = now
			}
		}
	}
}

// problem records a delivery or connection problem and logs it, at most
// once per publish.ProblemLogEvery for each kind.
func (s *Sink) problem(kind, msg string) {
	if s.problems.Note(kind, msg) {
		s.log.Warn(msg, "sink", s.cfg.Name, "url", s.cfg.url.Redacted())
	}
}

func (s *Sink) clientConfig() autopaho.ClientConfig {
	will := s.presence(false, false)
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{s.cfg.url},
		TlsCfg:                        s.cfg.tls,
		KeepAlive:                     uint16(s.cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              s.backoff,
		ConnectTimeout:                s.cfg.ConnectTimeout,
		AttemptConnection:             s.dial,
		OnConnectionUp:                s.onUp,
		OnConnectionDown:              s.onDown,
		OnConnectError:                s.onConnectError,
		ConnectUsername:               s.cfg.Username,
		ConnectPassword:               []byte(s.cfg.Password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			// Every connection starts clean: the sink resends what a lost
			// connection had in flight itself.
			cp.CleanStart = true
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			// We subscribe to nothing; a small receive maximum keeps paho's
			// inbound buffer small.
			rm := uint16(16)
			cp.Properties.ReceiveMaximum = &rm
			if cp.WillMessage != nil && (s.willQoS0.Load() || s.willNoRetain.Load()) {
				w := *cp.WillMessage // shared with the config: copy
				if s.willQoS0.Load() {
					w.QoS = 0
				}
				if s.willNoRetain.Load() {
					w.Retain = false
				}
				cp.WillMessage = &w
			}
			return cp, nil
		},
		ClientConfig: paho.ClientConfig{
			ClientID:           s.cfg.ClientID,
			Session:            s.sess,
			PacketTimeout:      s.cfg.ConnectTimeout,
			OnClientError:      s.onClientError,
			OnServerDisconnect: s.onServerDisconnect,
		},
	}
	if s.cfg.PresenceTopic != "" {
		cc.WillMessage = &paho.WillMessage{Topic: s.cfg.PresenceTopic, Payload: will, QoS: 1, Retain: true}
		cc.WillProperties = &paho.WillProperties{ContentType: publish.ContentType}
	}
	return cc
}

// dial opens the TCP (and TLS) connection, bounded by ConnectTimeout.
func (s *Sink) dial(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	c, err := publish.DialBroker(ctx, u.Host, s.cfg.tls, s.cfg.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	return newBufConn(c, s.cfg.AckTimeout, s.sess.puback, s.sess.flushed), nil
}

// backoff is the delay before connection attempt n of one reconnect
// cycle. autopaho restarts n at 0 after every connection; flaps carries
// the count over when connections keep dying young, so a broker that
// accepts and then drops us is not hammered.
func (s *Sink) backoff(attempt int) time.Duration {
	n := attempt + int(s.flaps.Load())
	if n <= 0 {
		return 0
	}
	d := s.cfg.BackoffMin
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1) // jitter, so gateways do not reconnect in step
}

func (s *Sink) onUp(_ *autopaho.ConnectionManager, ca *paho.Connack) {
	s.connects.Add(1)
	s.upSince.Store(time.Now().UnixNano())
	ci := s.sess.info()
	s.log.Info("mqtt connected", "sink", s.cfg.Name, "url", s.cfg.url.Redacted(), "client_id", s.cfg.ClientID,
		"inflight_window", ci.window, "qos", ci.qos, "retain", ci.retain)
	if ci.qos == 0 {
		s.problem("qos0", "broker does not support QoS 1: publishing with QoS 0, a message counts as sent once written to the socket")
	} else if s.willQoS0.Swap(false) {
		s.log.Info("broker supports QoS 1 again: the next connection's Will uses it", "sink", s.cfg.Name)
	}
	if !ci.retain {
		s.problem("noretain", "broker does not support retained messages: publishing without retain")
	} else if s.willNoRetain.Swap(false) {
		s.log.Info("broker supports retained messages again: the next connection's Will is retained", "sink", s.cfg.Name)
	}
}

func (s *Sink) onDown() bool {
	if time.Since(time.Unix(0, s.upSince.Load())) < stableAfter {
		s.flaps.Add(1)
	} else {
		s.flaps.Store(0)
	}
	s.log.Warn("mqtt connection lost", "sink", s.cfg.Name, "url", s.cfg.url.Redacted())
	return true
}

func (s *Sink) onConnectError(err error) {
	s.problem("connect", "connect to "+s.cfg.url.Redacted()+": "+describe(err))
	// A broker without QoS 1 or retain must refuse a CONNECT whose Will
	// asks for them [MQTT-3.2.2-12, -13]; ask for less next time.
	var ce *autopaho.ConnackError
	if !errors.As(err, &ce) || s.cfg.PresenceTopic == "" {
		return
	}
	switch {
	case ce.ReasonCode == 0x9B && !s.willQoS0.Swap(true):
		s.log.Warn("broker does not support QoS 1: the presence Will is now sent with QoS 0", "sink", s.cfg.Name, "url", s.cfg.url.Redacted())
	case ce.ReasonCode == 0x9A && !s.willNoRetain.Swap(true):
		s.log.Warn("broker does not support retained messages: the presence Will is now sent without retain", "sink", s.cfg.Name, "url", s.cfg.url.Redacted())
	}
}

func (s *Sink) onClientError(err error) {
	s.problem("conn", "connection error: "+err.Error())
}

func (s *Sink) onServerDisconnect(d *paho.Disconnect) {
	msg := fmt.Sprintf("broker closed the connection: %s", reasonText(d.ReasonCode))
	if d.Properties != nil && d.Properties.ReasonString != "" {
		msg += " (" + d.Properties.ReasonString + ")"
	}
	s.problem("disconnect", msg)
}

// describe turns a connect error into a message that names the likely
// cause.
func describe(err error) string {
	var ce *autopaho.ConnackError
	if errors.As(err, &ce) {
		msg := "broker refused the connection: " + reasonText(ce.ReasonCode)
		if ce.Reason != "" {
			msg += " (" + ce.Reason + ")"
		}
		switch ce.ReasonCode {
		case 0x86, 0x87:
			msg += "; check username and password"
		case 0x85:
			msg += "; check client_id"
		}
		return msg
	}
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown), errors.As(err, &certErr):
		return err.Error() + " (is ca_file the CA that signed the broker's certificate?)"
	case errors.As(err, &hostErr):
		return err.Error() + " (does the URL's host match the broker's certificate?)"
	}
	return err.Error()
}

var reasons = map[byte]string{
	0x00: "success", 0x04: "disconnect with will", 0x10: "no matching subscribers",
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
	0x83: "implementation specific error", 0x84: "unsupported protocol version",
	0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
	0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
	0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
	0x90: "topic name invalid", 0x91: "packet identifier in use", 0x93: "receive maximum exceeded",
	0x95: "packet too large", 0x97: "quota exceeded", 0x99: "payload format invalid",
	0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
	0x9D: "server moved", 0x9F: "connection rate exceeded",
}

func reasonText(code byte) string {
	if r, ok := reasons[code]; ok {
		return fmt.Sprintf("%s (0x%02X)", r, code)
	}
	return fmt.Sprintf("reason 0x%02X", code)
}

func pubackReason(code byte) string { return reasonText(code) }
