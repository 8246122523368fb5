package mqtt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/unsgate/unsgate/publish"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// Our hand-written PUBLISH must decode with paho's own decoder to exactly
// what we meant.
func TestAppendPublishDecodes(t *testing.T) {
	cases := []struct {
		topic   string
		id      uint16
		qos     byte
		retain  bool
		payload []byte
	}{
		{"acme/site/line/temp", 1, 1, true, []byte(`{"timestamp_ms":1,"value":2,"quality":"GOOD"}`)},
		{"a", 65535, 1, false, nil},
		{"qos0/topic", 0, 0, true, []byte("x")},
		{strings.Repeat("t", 300), 77, 1, true, bytes.Repeat([]byte("p"), 20000)}, // 3-byte remaining length
	}
	for _, c := range cases {
		b := appendPublish([]byte("prefix"), c.topic, c.id, c.qos, c.retain, c.payload)
		if string(b[:6]) != "prefix" {
			t.Fatal("prefix overwritten")
		}
		b = b[6:]
		if _, total := publishSize(c.topic, c.qos, len(c.payload)); total != len(b) {
			t.Fatalf("publishSize says %d, packet is %d bytes", total, len(b))
		}
		cp, err := packets.ReadPacket(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", c.topic[:1], err)
		}
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			t.Fatalf("decoded %T", cp.Content)
		}
		if p.Topic != c.topic || p.QoS != c.qos || p.Retain != c.retain || p.Duplicate || !bytes.Equal(p.Payload, c.payload) ||
			p.Properties.ContentType != "application/json" || (c.qos > 0 && p.PacketID != c.id) {
			t.Fatalf("decoded %+v props %+v", p, p.Properties)
		}
	}
}

func FuzzAppendPublish(f *testing.F) {
	f.Add("a/b", uint16(1), true, []byte("{}"))
	f.Add("", uint16(65535), false, []byte{})
	f.Add("ü/\x00", uint16(300), true, bytes.Repeat([]byte{0xff}, 200))
	f.Fuzz(func(t *testing.T, topic string, id uint16, retain bool, payload []byte) {
		if len(topic) > 65535 {
			return
		}
		b := appendPublish(nil, topic, id, 1, retain, payload)
		cp, err := packets.ReadPacket(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		p := cp.Content.(*packets.Publish)
		if p.Topic != topic || p.PacketID != id || p.Retain != retain || !bytes.Equal(p.Payload, payload) || p.Properties.ContentType != "application/json" {
			t.Fatalf("round trip: %+v", p)
		}
	})
}

// bufConn delivers writes in order, coalesced, and its Close flushes.
func TestBufConnWritesInOrderAndFlushesOnClose(t *testing.T) {
	a, b := net.Pipe()
	c := newBufConn(a, time.Second, nil, nil)
	got := make(chan []byte)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				got <- all
				return
			}
		}
	}()
	var want []byte
	for i := range 200 {
		if i%2 == 0 {
			c.Write([]byte{byte(i)})
			want = append(want, byte(i))
		} else {
			c.writePublish("t", uint16(i), 1, true, []byte{byte(i)})
			want = appendPublish(want, "t", uint16(i), 1, true, []byte{byte(i)})
		}
	}
	c.Close()
	b.Close()
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("peer read %d bytes, want %d", len(all), len(want))
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
}

// After an abort, writes and reads report the cause.
func TestBufConnAbortReportsCause(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := newBufConn(a, time.Second, nil, nil)
	cause := errors.New("no PUBACK for 30s")
	c.abort(cause)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, cause) {
		t.Fatalf("read error %v", err)
	}
	if _, err := c.writePublish("t", 1, 1, false, nil); !errors.Is(err, cause) {
		t.Fatalf("write error %v", err)
	}
	c.Close()
}

// FuzzBufConnRead: whatever the broker sends, reading through bufConn
// gives paho exactly the packets it would have read itself, minus the
// PUBACKs, which go to onPuback with their ids, in order. Never a panic.
func FuzzBufConnRead(f *testing.F) {
	puback := func(id uint16, rest ...byte) []byte {
		return append([]byte{0x40, byte(2 + len(rest)), byte(id >> 8), byte(id)}, rest...)
	}
	var seed []byte
	seed = append(seed, puback(1)...)
	seed = append(seed, 0xd0, 0x00) // PINGRESP
	seed = append(seed, puback(2, 0x87)...)
	seed = append(seed, puback(3, 0x10, 0x03, 0x1f, 0x00, 0x00)...) // with a reason string property
	seed = append(seed, 0xe0, 0x01, 0x8b)                           // DISCONNECT server shutting down
	f.Add(seed)
	f.Add([]byte{0x40, 0x80, 0x80, 0x80, 0x80, 0x01}) // remaining length too long
	f.Add([]byte{0x40, 0x01, 0x00})                   // PUBACK too short
	f.Add(appendPublish(nil, "a/b", 7, 1, true, []byte("{}")))
	f.Fuzz(func(t *testing.T, stream []byte) {
		// Reference: paho straight on the bytes.
		var want []*packets.ControlPacket
		var wantIDs []uint16
		r := bytes.NewReader(stream)
		for {
			// paho accepts a remaining length of more than 4 bytes; MQTT
			// (and bufConn) do not. Compare only up to such a packet.
			if at := len(stream) - r.Len(); vbiBytes(stream[at:]) > 4 {
				break
			}
			cp, err := packets.ReadPacket(r)
			if err != nil {
				break
			}
			if pa, ok := cp.Content.(*packets.Puback); ok && cp.Flags == 0 {
				wantIDs = append(wantIDs, pa.PacketID)
				continue
			}
			want = append(want, cp)
		}

		a, b := net.Pipe()
		go func() { b.Write(stream); b.Close() }()
		var gotIDs []uint16
		c := newBufConn(a, time.Second, func(id uint16, _ byte) { gotIDs = append(gotIDs, id) }, nil)
		defer c.Close()
		var got []*packets.ControlPacket
		for {
			cp, err := packets.ReadPacket(c)
			if err != nil {
				break
			}
			got = append(got, cp)
		}
		// Up to the first packet paho rejects, both views agree.
		n := min(len(got), len(want))
		for i := range n {
			if got[i].Type != want[i].Type || got[i].String() != want[i].String() {
				t.Fatalf("packet %d: %v, want %v", i, got[i], want[i])
			}
		}
		if len(got) < len(want) {
			t.Fatalf("read %d packets through bufConn, paho alone read %d", len(got), len(want))
		}
		for i := range min(len(gotIDs), len(wantIDs)) {
			if gotIDs[i] != wantIDs[i] {
				t.Fatalf("PUBACK ids %v, want %v", gotIDs, wantIDs)
			}
		}
		if len(gotIDs) < len(wantIDs) {
			t.Fatalf("PUBACK ids %v, want %v", gotIDs, wantIDs)
		}
	})
}

// vbiBytes counts the bytes of the remaining length of the packet at the
// start of b.
func vbiBytes(b []byte) int {
	n := 0
	for i := 1; i < len(b); i++ {
		n++
		if b[i]&0x80 == 0 {
			break
		}
	}
	return n
}

// On a QoS 0 connection there is no PUBACK: a message counts as sent once
// it was written to the socket, not when it was buffered. What was still
// unwritten when the connection is lost comes back from takeLost, in
// order, and was never counted.
func TestSessionQoS0CountsOnlyWrittenMessages(t *testing.T) {
	var mu sync.Mutex
	var acked []string
	s := newSession(10)
	s.onAck = func(f flight, _ byte) {
		mu.Lock()
		acked = append(acked, f.msg.Topic)
		mu.Unlock()
	}
	ackedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	connect := func() (*bufConn, net.Conn, uint64) {
		a, b := net.Pipe()
		c := newBufConn(a, 5*time.Second, s.puback, s.flushed)
		zero := byte(0)
		if err := s.ConAckReceived(c, nil, &packets.Connack{Properties: &packets.Properties{MaximumQOS: &zero}}); err != nil {
			t.Fatal(err)
		}
		gen, _, ok := s.current()
		if !ok {
			t.Fatal("not connected")
		}
		return c, b, gen
	}
	msg := func(topic string) publish.Message {
		return publish.Message{Topic: topic, Payload: []byte("{}"), Retain: true}
	}

	// Nobody reads the other end: the first write blocks in the flusher.
	c, peer, gen := connect()
	for _, topic := range []string{"a", "b", "c"} {
		if err := s.send(context.Background(), gen, msg(topic), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := ackedNow(); len(got) != 0 {
		t.Fatalf("counted before anything was written: %v", got)
	}
	s.ConnectionLost(nil)
	c.abort(errors.New("test: lost"))
	peer.Close()
	var lost []string
	for _, m := range s.takeLost() {
		lost = append(lost, m.Topic)
	}
	if !slices.Equal(lost, []string{"a", "b", "c"}) {
		t.Fatalf("lost %v, want [a b c]", lost)
	}
	// A send for the old connection is refused even though a new one is up.
	c, peer, gen2 := connect()
	defer c.Close()
	if err := s.send(context.Background(), gen, msg("x"), false, nil); !errors.Is(err, errNotConnected) {
		t.Fatalf("send on a lost connection: %v", err)
	}

	// The peer reads: each message counts once written, in order.
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	done := make(chan struct{})
	for _, topic := range []string{"a", "b", "c"} {
		var d chan struct{}
		if topic == "c" {
			d = done
		}
		if err := s.send(context.Background(), gen2, msg(topic), false, d); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("never written")
	}
	if got := ackedNow(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("counted %v, want [a b c]", got)
	}
	if _, n := s.snapshot(); n != 0 {
		t.Fatalf("%d still in flight", n)
	}
}
