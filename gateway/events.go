package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server-sent events for the status page (/api/v1/events). Every interval
// the hub encodes the status report once and offers it to every stream
// without waiting: each stream holds at most streamBuffer frames, and a
// frame a stream has no room for is dropped and counted, the stream then
// sends the full tag table again. The tag rows are not buffered at all:
// each stream asks the live store for what changed since its last event,
// so a slow browser gets fewer, larger updates and never holds up the
// gateway or the other browsers.

const (
	// streamBuffer is how many status frames a stream may have waiting.
	streamBuffer = 2
	// maxStreams bounds the open event streams (browser tabs).
	maxStreams = 64
	// streamWriteTimeout ends a stream whose browser stopped reading.
	streamWriteTimeout = 15 * time.Second
	// defaultTagLimit caps the rows of one tags event or /api/v1/tags
	// response unless the request's limit says otherwise.
	defaultTagLimit = 10000
)

type eventHub struct {
	every   time.Duration
	mu      sync.Mutex
	clients map[*eventStream]struct{}
	dropped atomic.Uint64
}

type eventStream struct {
	frames chan []byte
	resync atomic.Bool // a frame was dropped: send the full table next
}

func newEventHub(every time.Duration) *eventHub {
	return &eventHub{every: every, clients: map[*eventStream]struct{}{}}
}

func (h *eventHub) join() (*eventStream, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= maxStreams {
		return nil, false
	}
	c := &eventStream{frames: make(chan []byte, streamBuffer)}
	h.clients[c] = struct{}{}
	return c, true
}

func (h *eventHub) leave(c *eventStream) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

func (h *eventHub) streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// run offers a status frame from encode to every stream each interval
// until ctx is done. Nothing is encoded while no stream is open.
func (h *eventHub) run(ctx context.Context, encode func() []byte) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if h.streams() == 0 {
			continue
		}
		frame := encode()
		h.mu.Lock()
		for c := range h.clients {
			select {
			case c.frames <- frame:
			default:
				h.dropped.Add(1)
				c.resync.Store(true)
			}
		}
		h.mu.Unlock()
	}
}

// tagsEvent is the data of a tags event: the full table (full) or the
// rows that changed since the stream's last tags event (then Selected
// counts the changed ones).
type tagsEvent struct {
	Full bool `json:"full"`
	tagsResponse
}

// events serves /api/v1/events?filter=F&limit=N: a status event at once and
// then every interval, each followed by a tags event when tags changed.
func (w *webServer) events(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	match := tagFilter(q.Get("filter"))
	limit, err := tagLimit(q.Get("limit"))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	c, ok := w.hub.join()
	if !ok {
		http.Error(rw, "too many event streams open; close a status page", http.StatusServiceUnavailable)
		return
	}
	defer w.hub.leave(c)
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy must not hold events back
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(rw)
	var (
		buf      []byte
		rows     []tagRow
		reports  []tagReport
		seq, gen uint64
		full     = true
	)
	send := func(status []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) // not every writer has deadlines (tests)
		buf = append(buf[:0], "event: status\ndata: "...)
		buf = append(buf, status...)
		buf = append(buf, "\n\n"...)
		var since uint64
		if !full {
			since = seq
		}
		var selected int
		var g uint64
		rows, seq, g, selected = w.g.live.rowsSince(rows, since, match, limit)
		if !full && (g != gen || selected > len(rows)) {
			// The plan changed since the last event (the rows are of
			// another table), or more rows changed than a delta carries:
			// the table then, up to the limit.
			full = true
			rows, seq, g, selected = w.g.live.rowsSince(rows, 0, match, limit)
		}
		gen = g
		if full || len(rows) > 0 {
			now := time.Now()
			reports = reports[:0]
			for i := range rows {
				reports = append(reports, rows[i].report(now))
			}
			data, err := json.Marshal(tagsEvent{Full: full, tagsResponse: tagsResponse{Selected: selected, Truncated: selected > len(rows), Tags: reports}})
			if err != nil {
				return err
			}
			buf = append(buf, "event: tags\ndata: "...)
			buf = append(buf, data...)
			buf = append(buf, "\n\n"...)
		}
		full = false
		if _, err := rw.Write(buf); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The browser reconnects after 2 s when the stream breaks.
	if _, err := rw.Write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	if err := send(w.statusJSON()); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case frame := <-c.frames:
			if c.resync.Swap(false) {
				full = true
			}
			if err := send(frame); err != nil {
				w.logger.Debug("event stream ended", "remote", r.RemoteAddr, "err", err)
				return
			}
		}
	}
}

// tagLimit parses a limit parameter: default defaultTagLimit, 0 for none.
func tagLimit(s string) (int, error) {
	if s == "" {
		return defaultTagLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errBadLimit
	}
	return n, nil
}

var errBadLimit = errors.New("limit: want a number of rows, 0 for all")
