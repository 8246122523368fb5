package mqtt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	paholog "github.com/eclipse/paho.golang/paho/log"
	pahosession "github.com/eclipse/paho.golang/paho/session"

	"github.com/unsgate/unsgate/publish"
)

// session replaces paho's session state. Paho still connects, keeps the
// connection alive and reads every packet; the sink writes its PUBLISH
// packets itself (no per-message goroutine, timer or channel) and this
// session hands out packet identifiers, enforces the in-flight window and
// maps each PUBACK back to the queue message it acknowledges.
//
// Every connection starts clean: what was in flight when a connection is
// lost is handed back to the sink (takeLost) to be sent again, in its
// original order, on the next connection. That is at-least-once delivery:
// a message whose PUBACK was lost reaches the broker twice.
type session struct {
	maxInflight int
	onAck       func(f flight, reason byte) // called without mu held
	onLost      func()                      // called without mu held

	mu        sync.Mutex
	conn      *bufConn      // nil while disconnected
	gen       uint64        // connection number
	up        chan struct{} // closed while connected
	down      chan struct{} // closed when connection gen is lost
	window    int
	refill    int // free slots a sender waiting on a full window waits for
	qos       byte
	retain    bool
	maxPacket int      // 0: no limit
	slots     []flight // slot i carries packet identifier i+1
	unflushed []flight // QoS 0 publishes not yet written to the socket, in order
	free      []uint16 // free slot indexes
	inflight  int
	seq       uint64
	acks      uint64 // PUBACKs received, for the ack watchdog
	lost      []publish.Message
	space     chan struct{} // one token: "a slot was freed"
}

// flight is one publish awaiting its PUBACK.
type flight struct {
	msg  publish.Message
	seq  uint64 // send order; 0 marks a free slot
	ctl  bool   // presence or _meta: not requeued, the next connection republishes it
	done chan struct{}
	end  uint64 // QoS 0: the connection's write offset just past this publish
}

var (
	errNotConnected = errors.New("not connected")
	errTooLarge     = errors.New("message larger than the broker accepts")
)

var _ pahosession.SessionManager = (*session)(nil)

func newSession(maxInflight int) *session {
	return &session{
		maxInflight: maxInflight,
		slots:       make([]flight, maxInflight),
		up:          make(chan struct{}),
		space:       make(chan struct{}, 1),
	}
}

// connInfo describes the current connection for logs.
type connInfo struct {
	window    int
	qos       byte
	retain    bool
	maxPacket int
}

// ConAckReceived starts a connection: paho calls it after a successful
// CONNACK, before it reads anything else.
func (s *session) ConAckReceived(w io.Writer, _ *packets.Connect, ca *packets.Connack) error {
	bc, ok := w.(*bufConn)
	if !ok {
		return fmt.Errorf("session: unexpected connection type %T", w)
	}
	window, qos, retain, maxPacket := s.maxInflight, byte(1), true, 0
	if p := ca.Properties; p != nil {
		if p.ReceiveMaximum != nil && *p.ReceiveMaximum > 0 {
			window = min(window, int(*p.ReceiveMaximum))
		}
		if p.MaximumQOS != nil && *p.MaximumQOS == 0 {
			qos = 0
		}
		if p.RetainAvailable != nil && *p.RetainAvailable == 0 {
			retain = false
		}
		if p.MaximumPacketSize != nil && *p.MaximumPacketSize > 0 && *p.MaximumPacketSize < math.MaxInt32 {
			maxPacket = int(*p.MaximumPacketSize)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.connectionLost() // cannot happen with paho; be safe
	}
	s.conn = bc
	s.gen++
	s.down = make(chan struct{})
	s.window, s.qos, s.retain, s.maxPacket = window, qos, retain, maxPacket
	// Refilling a full window one slot per PUBACK would cost a wake-up and
	// a write syscall per message; waiting for a few free slots lets the
	// sender write them as one burst, at no cost in throughput.
	s.refill = max(1, min(64, window/4))
	s.free = s.free[:0]
	for i := window - 1; i >= 0; i-- {
		s.free = append(s.free, uint16(i))
	}
	close(s.up)
	return nil
}

// ConnectionLost ends the connection: whatever is in flight moves to the
// lost list. Paho may call it more than once per connection.
func (s *session) ConnectionLost(*packets.Disconnect) error {
	s.mu.Lock()
	lost := s.connectionLost()
	s.mu.Unlock()
	if lost {
		s.signalSpace()
		if s.onLost != nil {
			s.onLost()
		}
	}
	return nil
}

// connectionLost does ConnectionLost's work. Caller holds mu.
func (s *session) connectionLost() bool {
	if s.conn == nil {
		return false
	}
	s.conn = nil
	s.up = make(chan struct{})
	close(s.down)
	type sent struct {
		seq uint64
		msg publish.Message
	}
	var pending []sent
	for i := range s.slots {
		f := &s.slots[i]
		if f.seq != 0 && !f.ctl {
			pending = append(pending, sent{f.seq, f.msg})
		}
		*f = flight{}
	}
	for _, f := range s.unflushed {
		if !f.ctl {
			pending = append(pending, sent{f.seq, f.msg})
		}
	}
	clear(s.unflushed)
	s.unflushed = s.unflushed[:0]
	// Slots are not in send order; the next connection must resend in it.
	slices.SortFunc(pending, func(a, b sent) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range pending {
		s.lost = append(s.lost, p.msg)
	}
	s.inflight = 0
	return true
}

// takeLost returns, and forgets, the messages that were in flight when
// connections were lost, oldest first.
func (s *session) takeLost() []publish.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	lost := s.lost
	s.lost = nil
	return lost
}

// waitUp blocks until a connection is up or ctx is done; it returns the
// connection's number and the channel closed when it goes down.
func (s *session) waitUp(ctx context.Context) (gen uint64, down <-chan struct{}, err error) {
	for {
		s.mu.Lock()
		if s.conn != nil {
			gen, down = s.gen, s.down
			s.mu.Unlock()
			return gen, down, nil
		}
		up := s.up
		s.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
}

// current returns the number and the down channel of the connection, if
// one is up.
func (s *session) current() (gen uint64, down <-chan struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.down, s.conn != nil
}

// isUp reports whether connection gen is still up.
func (s *session) isUp(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil && s.gen == gen
}

func (s *session) info() connInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return connInfo{window: s.window, qos: s.qos, retain: s.retain, maxPacket: s.maxPacket}
}

// snapshot returns whether a connection is up and how many messages are in
// flight or waiting to be sent again.
func (s *session) snapshot() (connected bool, inflight int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.lost)
	for _, f := range s.unflushed {
		if !f.ctl {
			n++
		}
	}
	for i := range s.slots[:s.window] {
		if f := &s.slots[i]; f.seq != 0 && !f.ctl {
			n++
		}
	}
	return s.conn != nil, n
}

// progress reports, for the ack watchdog, the connection number, the
// publishes in flight and the PUBACKs received so far.
func (s *session) progress() (gen uint64, inflight int, acks uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return s.gen, 0, s.acks
	}
	return s.gen, s.inflight, s.acks
}

// abort drops connection gen, if it is still the current one.
func (s *session) abort(gen uint64, reason error) {
	s.mu.Lock()
	c := s.conn
	if s.gen != gen {
		c = nil
	}
	s.mu.Unlock()
	if c != nil {
		c.abort(reason)
	}
}

// abortCurrent drops the current connection, if there is one.
func (s *session) abortCurrent(reason error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.abort(reason)
	}
}

// send writes m as a PUBLISH on connection gen (from waitUp or current),
// waiting for a free slot in the in-flight window. Once send returns nil
// the session owns the message: onAck reports its PUBACK (on a QoS 0
// connection: that it was written to the socket), or the lost list gets it
// back. done, if not nil, is closed then. It returns errNotConnected when
// connection gen is gone, even if another one is up already (the caller
// keeps m: what gen lost must be resent first, or a topic's values would
// reach the broker out of order), errTooLarge when the broker would refuse
// the packet, or ctx.Err().
func (s *session) send(ctx context.Context, gen uint64, m publish.Message, ctl bool, done chan struct{}) error {
	if len(m.Topic) > math.MaxUint16 {
		return errTooLarge
	}
	waited := false
	for {
		s.mu.Lock()
		c := s.conn
		if c == nil || s.gen != gen {
			s.mu.Unlock()
			return errNotConnected
		}
		if _, size := publishSize(m.Topic, s.qos, len(m.Payload)); s.maxPacket > 0 && size > s.maxPacket || size > maxPacketSize {
			s.mu.Unlock()
			return errTooLarge
		}
		retain := m.Retain && s.retain
		if s.qos == 0 {
			s.seq++
			seq := s.seq
			s.mu.Unlock()
			return s.sendQoS0(c, flight{msg: m, seq: seq, ctl: ctl, done: done}, retain)
		}
		if free := s.window - s.inflight; free > 0 && (!waited || free >= s.refill) {
			idx := s.free[len(s.free)-1]
			s.free = s.free[:len(s.free)-1]
			s.seq++
			f := flight{msg: m, seq: s.seq, ctl: ctl, done: done}
			if ctl {
				f.msg.Payload = nil // written below and never resent
			}
			s.slots[idx] = f
			s.inflight++
			s.mu.Unlock()
			// A failed write is a lost connection: the slot moves to the
			// lost list, so the message is not the caller's any more.
			_, _ = c.writePublish(m.Topic, idx+1, 1, retain, m.Payload)
			return nil
		}
		space, down := s.space, s.down
		s.mu.Unlock()
		waited = true
		select {
		case <-space:
		case <-down:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendQoS0 writes f on c, a connection to a broker that cannot do QoS 1:
// there is no PUBACK, so the best we get is that the packet was written to
// the socket. Until then f waits in unflushed, and a lost connection hands
// it back like a publish in flight.
func (s *session) sendQoS0(c *bufConn, f flight, retain bool) error {
	end, err := c.writePublish(f.msg.Topic, 0, 0, retain, f.msg.Payload)
	if err != nil {
		return errNotConnected
	}
	if f.ctl {
		f.msg.Payload = nil // never resent; the caller may reuse it
	}
	s.mu.Lock()
	switch {
	case c.flushedTo() >= end:
		s.mu.Unlock()
		s.confirm(f)
		return nil
	case s.conn != c:
		// Lost before the write was confirmed: the caller keeps it.
		s.mu.Unlock()
		return errNotConnected
	}
	f.end = end
	s.unflushed = append(s.unflushed, f)
	s.mu.Unlock()
	return nil
}

// flushed is bufConn's report that everything before offset upto was
// written to the socket: the QoS 0 publishes up to there are done.
func (s *session) flushed(c *bufConn, upto uint64) {
	s.mu.Lock()
	if s.conn != c || len(s.unflushed) == 0 || s.unflushed[0].end > upto {
		s.mu.Unlock()
		return
	}
	n := 0
	for n < len(s.unflushed) && s.unflushed[n].end <= upto {
		n++
	}
	done := slices.Clone(s.unflushed[:n])
	rest := copy(s.unflushed, s.unflushed[n:])
	clear(s.unflushed[rest:])
	s.unflushed = s.unflushed[:rest]
	s.mu.Unlock()
	for _, f := range done {
		s.confirm(f)
	}
}

// confirm reports a QoS 0 publish as written.
func (s *session) confirm(f flight) {
	f.end = 0
	s.onAck(f, 0)
	if f.done != nil {
		close(f.done)
	}
}

// maxPacketSize is MQTT's limit: 1 + 4 bytes of header, 268435455 remaining.
const maxPacketSize = 268435460

func (s *session) signalSpace() {
	select {
	case s.space <- struct{}{}:
	default:
	}
}

// PacketReceived handles acknowledgements (and, should a broker send any,
// publishes) that paho read.
func (s *session) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	switch p := cp.Content.(type) {
	case *packets.Puback:
		s.puback(p.PacketID, p.ReasonCode) // bufConn normally takes them first
	case *packets.Pubrec:
		// We never publish with QoS 2; a PUBREC acknowledges nothing of ours.
	case *packets.Publish:
		pubs <- p // paho routes it and calls Ack
	case *packets.Pubrel:
		s.write(&packets.Pubcomp{PacketID: p.PacketID})
	}
	return nil
}

func (s *session) puback(id uint16, reason byte) {
	s.mu.Lock()
	if id == 0 || int(id) > len(s.slots) || s.slots[id-1].seq == 0 {
		s.mu.Unlock()
		return // not ours, or from a connection already given up
	}
	f := s.slots[id-1]
	s.slots[id-1] = flight{}
	s.free = append(s.free, id-1)
	s.inflight--
	s.acks++
	wake := s.window-s.inflight >= s.refill
	s.mu.Unlock()
	if wake {
		s.signalSpace()
	}
	s.onAck(f, reason)
	if f.done != nil {
		close(f.done)
	}
}

// Ack acknowledges a publish the broker sent us (we subscribe to nothing,
// so this is for completeness).
func (s *session) Ack(pb *packets.Publish) error {
	switch pb.QoS {
	case 1:
		return s.write(&packets.Puback{PacketID: pb.PacketID, Properties: &packets.Properties{}})
	case 2:
		return s.write(&packets.Pubrec{PacketID: pb.PacketID, Properties: &packets.Properties{}})
	}
	return nil
}

func (s *session) write(p interface {
	WriteTo(io.Writer) (int64, error)
}) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return errNotConnected
	}
	_, err := p.WriteTo(c)
	return err
}

// AddToSession is how paho would send its own QoS 1/2 packets; the sink
// never asks paho to publish or subscribe.
func (s *session) AddToSession(context.Context, pahosession.Packet, chan<- packets.ControlPacket) error {
	return errors.New("mqtt sink session: packets are sent by the sink only")
}

func (s *session) Close() error                  { return nil }
func (s *session) SetErrorLogger(paholog.Logger) {}
func (s *session) SetDebugLogger(paholog.Logger) {}
