package broker

import (
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker.Close disconnects the clients itself, because mochi v2.7.9's
// Server.Close can deadlock doing it (mochi issue 488): it lists the clients
// with Clients.GetByListener, which holds the client map's read lock and
// takes it a second time inside (Clients.Len). A client that connects or
// leaves at that moment adds or deletes itself in the map, waiting for the
// write lock; a waiting writer blocks the second read lock, and both
// goroutines wait forever. A gateway shutting down, or a test closing its
// broker, would hang. mochi's Close also keeps accepting connections while
// it waits for the old ones, a data race on its client WaitGroup.
//
// So the broker listens through a trackingListener. Close shuts it first,
// which makes mochi's Close skip its client scan (its listener is already
// closed), then drains: it disconnects every registered client with reason
// "server shutting down", cuts connections that had not finished their
// CONNECT, and waits until mochi has closed each of them. mochi's Close then
// only waits for their goroutines to end.

// trackingListener knows every connection it accepted that mochi has not
// closed yet.
type trackingListener struct {
	net.Listener

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
	// gone is signalled (without blocking) whenever a connection closes.
	gone chan struct{}
}

func newTrackingListener(l net.Listener) *trackingListener {
	return &trackingListener{Listener: l, conns: map[*trackedConn]struct{}{}, gone: make(chan struct{}, 1)}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed { // accepted as the broker closed: never handed to mochi
		_ = c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

// Close stops accepting. Calling it again does nothing.
func (l *trackingListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.Listener.Close()
}

// open lists the connections not closed yet.
func (l *trackingListener) open() []*trackedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// drain disconnects srv's clients and waits (up to wait) until mochi has
// closed every connection. The listener must be closed already.
func (l *trackingListener) drain(srv *mochi.Server, wait time.Duration) {
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Closed() {
			_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
	// What is left had not finished connecting (or is leaving by itself):
	// cut the socket under mochi, whose read then fails and closes it.
	for _, c := range l.open() {
		_ = c.Conn.Close()
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for len(l.open()) > 0 {
		select {
		case <-l.gone:
		case <-deadline.C:
			return
		}
	}
}

// trackedConn leaves its listener's set when mochi closes it.
type trackedConn struct {
	net.Conn
	l *trackingListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	select {
	case c.l.gone <- struct{}{}:
	default:
	}
	return c.Conn.Close()
}
