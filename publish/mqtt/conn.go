package mqtt

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// bufConn is the connection paho reads from and everybody writes to.
//
// Reads are buffered: paho reads each packet a byte or two at a time, which
// would cost several syscalls per PUBACK. Writes are appended to a buffer
// that one flusher goroutine writes out: a burst of publishes becomes a
// few large writes instead of one syscall each, and a writer only waits
// for the network when writeBufMax bytes are pending.
//
// PUBACKs never reach paho: Read takes them out of the stream and hands
// them straight to onPuback (the sink's session), which saves paho's
// decoding and a dozen allocations per acknowledgement. Every other packet
// passes through to paho unchanged.
//
// It implements sync.Locker so that paho's ControlPacket.WriteTo, which
// writes a packet in several pieces, holds the packet lock throughout.
type bufConn struct {
	net.Conn
	r            *bufio.Reader
	onPuback     func(id uint16, reason byte)
	onFlushed    func(c *bufConn, upto uint64) // may be nil
	passLeft     int                           // bytes of the current non-PUBACK packet still to hand to paho
	pkt          sync.Mutex                    // one whole packet at a time
	writeTimeout time.Duration

	mu      sync.Mutex
	room    sync.Cond // on mu: the buffer was taken, or the conn failed or is closing
	buf     []byte
	err     error // sticky: the first write error
	closing bool
	written uint64 // bytes ever appended to buf

	socketBytes atomic.Uint64 // bytes ever written to the socket

	kick      chan struct{} // one token: "the buffer may have data"
	flushed   chan struct{} // closed when the flusher exits
	closeOnce sync.Once
	closeErr  error
}

const (
	readBufSize = 32 << 10
	writeBufMax = 256 << 10
	// closeFlushMax bounds how long Close waits to flush what is buffered
	// (a DISCONNECT, the last publishes).
	closeFlushMax = time.Second
)

// newBufConn wraps c. onFlushed, if not nil, is called by the flusher
// after each successful socket write with the total bytes written so far.
func newBufConn(c net.Conn, writeTimeout time.Duration, onPuback func(id uint16, reason byte), onFlushed func(c *bufConn, upto uint64)) *bufConn {
	b := &bufConn{
		Conn:         c,
		r:            bufio.NewReaderSize(c, readBufSize),
		onPuback:     onPuback,
		onFlushed:    onFlushed,
		writeTimeout: writeTimeout,
		kick:         make(chan struct{}, 1),
		flushed:      make(chan struct{}),
	}
	b.room.L = &b.mu
	go b.flush()
	return b
}

// Read hands paho the incoming bytes of every packet except PUBACK (see
// the type comment). Only paho's reader goroutine calls it. After a write
// failure or an abort it reports that cause rather than "use of closed
// network connection".
func (c *bufConn) Read(p []byte) (int, error) {
	for c.passLeft == 0 {
		size, puback, err := c.nextPacket()
		if err != nil {
			return 0, c.cause(err)
		}
		if !puback {
			c.passLeft = size
		}
	}
	n, err := c.r.Read(p[:min(len(p), c.passLeft)])
	c.passLeft -= n
	if err != nil {
		err = c.cause(err)
	}
	return n, err
}

// nextPacket looks at the packet at the head of the stream. A PUBACK is
// consumed and dispatched; for anything else it returns the packet's size.
func (c *bufConn) nextPacket() (size int, puback bool, err error) {
	// Fixed header: type byte, then the remaining length in 1 to 4 bytes.
	remaining, hdr := 0, 0
	for i := 1; ; i++ {
		b, err := c.r.Peek(i + 1)
		if err != nil {
			return 0, false, err
		}
		remaining |= int(b[i]&0x7f) << (7 * (i - 1))
		if b[i]&0x80 == 0 {
			hdr = i + 1
			break
		}
		if i == 4 {
			return 0, false, errors.New("malformed remaining length from broker")
		}
	}
	size = hdr + remaining
	b, err := c.r.Peek(1)
	if err != nil {
		return 0, false, err
	}
	if b[0] != 0x40 || remaining < 2 || size > readBufSize {
		return size, false, nil
	}
	b, err = c.r.Peek(size)
	if err != nil {
		return 0, false, err
	}
	id := uint16(b[hdr])<<8 | uint16(b[hdr+1])
	reason := byte(0) // absent means success
	if remaining > 2 {
		reason = b[hdr+2]
	}
	_, _ = c.r.Discard(size)
	c.onPuback(id, reason)
	return size, true, nil
}

func (c *bufConn) cause(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return err
}

// Lock and Unlock delimit one packet (see the type comment).
func (c *bufConn) Lock()   { c.pkt.Lock() }
func (c *bufConn) Unlock() { c.pkt.Unlock() }

// Write buffers p. Paho calls it with the packet lock held.
func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	err := c.waitRoom()
	if err == nil {
		c.buf = append(c.buf, p...)
		c.written += uint64(len(p))
	}
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	c.signal()
	return len(p), nil
}

// writePublish buffers one PUBLISH packet, encoded in place. It returns
// the write offset just past the packet: once flushedTo reaches it, the
// packet has been written to the socket.
func (c *bufConn) writePublish(topic string, id uint16, qos byte, retain bool, payload []byte) (end uint64, err error) {
	c.pkt.Lock()
	c.mu.Lock()
	err = c.waitRoom()
	if err == nil {
		n := len(c.buf)
		c.buf = appendPublish(c.buf, topic, id, qos, retain, payload)
		c.written += uint64(len(c.buf) - n)
		end = c.written
	}
	c.mu.Unlock()
	c.pkt.Unlock()
	if err != nil {
		return 0, err
	}
	c.signal()
	return end, nil
}

// flushedTo returns how many bytes have been written to the socket.
func (c *bufConn) flushedTo() uint64 { return c.socketBytes.Load() }

// waitRoom blocks while the buffer is full. Caller holds mu.
func (c *bufConn) waitRoom() error {
	for c.err == nil && !c.closing && len(c.buf) >= writeBufMax {
		c.room.Wait()
	}
	if c.err != nil {
		return c.err
	}
	if c.closing {
		return net.ErrClosed
	}
	return nil
}

func (c *bufConn) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// flush writes the buffer out whenever it has data, until the conn fails
// or is closed and drained.
func (c *bufConn) flush() {
	defer close(c.flushed)
	var out []byte
	for {
		c.mu.Lock()
		for len(c.buf) == 0 && !c.closing && c.err == nil {
			c.mu.Unlock()
			<-c.kick
			c.mu.Lock()
		}
		if len(c.buf) == 0 || c.err != nil {
			c.mu.Unlock()
			return
		}
		out, c.buf = c.buf, out[:0]
		upto := c.written
		c.room.Broadcast()
		c.mu.Unlock()

		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		if _, err := c.Conn.Write(out); err != nil {
			c.fail(fmt.Errorf("write: %w", err))
			return
		}
		c.socketBytes.Store(upto)
		if c.onFlushed != nil {
			c.onFlushed(c, upto)
		}
	}
}

// fail records err for all later writes and closes the socket, which also
// ends paho's reader so the client notices.
func (c *bufConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.buf = nil
	c.room.Broadcast()
	c.mu.Unlock()
	_ = c.Conn.Close()
}

// abort drops the connection at once, without flushing.
func (c *bufConn) abort(reason error) {
	c.fail(reason)
	c.signal()
}

// Close flushes what is buffered (bounded by closeFlushMax) and closes.
func (c *bufConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.room.Broadcast()
		c.mu.Unlock()
		c.signal()
		t := time.NewTimer(min(closeFlushMax, c.writeTimeout))
		select {
		case <-c.flushed:
		case <-t.C:
		}
		t.Stop()
		c.closeErr = c.Conn.Close()
		<-c.flushed // the socket is closed, so a stuck write has returned
	})
	return c.closeErr
}

// contentTypeProp is the MQTT 5 Content Type property (0x03) with its
// length-prefixed value.
const contentTypeProp = "\x03\x00\x10application/json"

// publishSize returns the remaining length and the total size of a PUBLISH.
func publishSize(topic string, qos byte, payload int) (remaining, total int) {
	remaining = 2 + len(topic) + 1 + len(contentTypeProp) + payload
	if qos > 0 {
		remaining += 2
	}
	return remaining, 1 + vbiLen(remaining) + remaining
}

// appendPublish appends a PUBLISH packet with the content type property.
func appendPublish(dst []byte, topic string, id uint16, qos byte, retain bool, payload []byte) []byte {
	remaining, _ := publishSize(topic, qos, len(payload))
	flags := byte(0x30) | qos<<1
	if retain {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = appendVBI(dst, remaining)
	dst = append(dst, byte(len(topic)>>8), byte(len(topic)))
	dst = append(dst, topic...)
	if qos > 0 {
		dst = append(dst, byte(id>>8), byte(id))
	}
	dst = append(dst, byte(len(contentTypeProp)))
	dst = append(dst, contentTypeProp...)
	return append(dst, payload...)
}

// appendVBI appends n as an MQTT variable byte integer.
func appendVBI(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}

func vbiLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}
