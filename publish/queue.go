package publish

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/unsgate/unsgate/model"
)

// Message is one encoded message for a sink. Payload is shared by every
// sink's queue and must never be modified.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
	// Meta is the tag the message carries a value of; nil for messages that
	// are not tag values.
	Meta *model.TagMeta
	// Quality and TimeMs (the point's timestamp, ms since the Unix epoch)
	// repeat what Payload says, for sinks that need them beside it (Kafka
	// headers) without parsing it.
	Quality model.Quality
	TimeMs  int64
	// Replay marks a message delivered late from the sink's store rather
	// than live (Sparkplug's is_historical).
	Replay bool
	// Seq is the message's sequence number in a sink's Store (0 when the
	// message was never stored).
	Seq uint64
}

// Queue is a bounded in-memory FIFO of messages for one sink. Producers
// never block: when the queue is full, the oldest message is dropped and
// counted. One sink consumes it: PopBatch takes messages, Done reports
// those it finished with (delivered, or refused for good), Requeue hands
// back those it could not deliver. The queue thus knows exactly how many
// messages are still unfinished, which is what a flush waits for.
//
// The method set is deliberately small so that a disk-spilling queue can
// take its place.
type Queue struct {
	mu      sync.Mutex
	ring    []Message // grows by doubling up to max, so an idle sink costs little
	head, n int
	max     int
	dropped uint64
	taken   atomic.Int64  // popped, neither Done nor requeued; changed under mu except by Done
	ready   chan struct{} // one token: "there may be messages"
}

// minRing is the initial ring size; the ring grows on demand up to the
// queue's capacity.
const minRing = 1024

// NewQueue returns a queue that holds at most capacity messages (at least 1).
func NewQueue(capacity int) *Queue {
	capacity = max(capacity, 1)
	return &Queue{
		ring:  make([]Message, min(capacity, minRing)),
		max:   capacity,
		ready: make(chan struct{}, 1),
	}
}

// Cap is the capacity in messages.
func (q *Queue) Cap() int { return q.max }

// Len is the number of messages waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Dropped is the number of messages dropped because the queue was full,
// since the queue was made.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Push appends m, dropping the oldest message if the queue is full. It
// returns the number of messages dropped (0 or 1).
func (q *Queue) Push(m Message) int {
	return q.PushBatch([]Message{m})
}

// PushBatch appends ms in order, dropping the oldest messages as needed to
// stay within capacity. It returns the number of messages dropped.
func (q *Queue) PushBatch(ms []Message) int {
	if len(ms) == 0 {
		return 0
	}
	q.mu.Lock()
	dropped := 0
	if len(ms) > q.max {
		// Only the newest max survive; the rest never enter.
		dropped = len(ms) - q.max
		ms = ms[dropped:]
	}
	if over := q.n + len(ms) - q.max; over > 0 {
		q.discardFront(over)
		dropped += over
	}
	q.grow(q.n + len(ms))
	tail := q.index(q.n)
	for i := range ms {
		q.ring[tail] = ms[i]
		if tail++; tail == len(q.ring) {
			tail = 0
		}
	}
	q.n += len(ms)
	q.dropped += uint64(dropped)
	q.mu.Unlock()
	q.signal()
	return dropped
}

// Requeue puts ms back at the front of the queue, in their order, ahead of
// everything queued: a sink uses it for messages it took but could not
// deliver (they stop counting as taken). If the queue has no room for all of them, the oldest of ms are
// dropped (they are the oldest messages of all) and counted. It returns the
// number dropped.
func (q *Queue) Requeue(ms []Message) int {
	if len(ms) == 0 {
		return 0
	}
	q.mu.Lock()
	dropped := 0
	if room := q.max - q.n; len(ms) > room {
		dropped = len(ms) - room
		ms = ms[dropped:]
	}
	q.grow(q.n + len(ms))
	q.head -= len(ms)
	if q.head < 0 {
		q.head += len(q.ring)
	}
	i := q.head
	for k := range ms {
		q.ring[i] = ms[k]
		if i++; i == len(q.ring) {
			i = 0
		}
	}
	q.n += len(ms)
	q.dropped += uint64(dropped)
	q.taken.Add(-int64(len(ms) + dropped))
	q.mu.Unlock()
	q.signal()
	return dropped
}

// Done reports that n messages taken with PopBatch are finished with:
// acknowledged, or refused by the destination and not to be retried.
func (q *Queue) Done(n int) { q.taken.Add(-int64(n)) }

// Taken is the number of messages taken with PopBatch and neither Done nor
// requeued: in the sink's hands.
func (q *Queue) Taken() int { return int(q.taken.Load()) }

// idle reports whether nothing is queued or taken, read atomically with
// respect to PopBatch and Requeue.
func (q *Queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n == 0 && q.taken.Load() <= 0
}

// PopBatch waits until at least one message is queued or ctx is done, then
// removes up to maxN messages from the front and appends them to dst. It
// returns ctx.Err() (and dst unchanged) only when nothing was taken.
func (q *Queue) PopBatch(ctx context.Context, dst []Message, maxN int) ([]Message, error) {
	maxN = max(maxN, 1)
	for {
		q.mu.Lock()
		if q.n > 0 {
			k := min(q.n, maxN)
			for range k {
				dst = append(dst, q.ring[q.head])
				q.ring[q.head] = Message{} // release the payload for the GC
				if q.head++; q.head == len(q.ring) {
					q.head = 0
				}
			}
			q.n -= k
			q.taken.Add(int64(k))
			more := q.n > 0
			q.mu.Unlock()
			if more {
				q.signal() // another consumer may be waiting
			}
			return dst, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
}

func (q *Queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// index maps a position counted from the head to a ring index.
func (q *Queue) index(pos int) int {
	i := q.head + pos
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	return i
}

// discardFront drops k messages from the front. Caller holds mu.
func (q *Queue) discardFront(k int) {
	for range k {
		q.ring[q.head] = Message{}
		if q.head++; q.head == len(q.ring) {
			q.head = 0
		}
	}
	q.n -= k
}

// grow makes room for need messages (need <= max). Caller holds mu.
func (q *Queue) grow(need int) {
	if need <= len(q.ring) {
		return
	}
	size := len(q.ring)
	for size < need {
		size *= 2
	}
	size = min(size, q.max)
	ring := make([]Message, size)
	for i := range q.n {
		ring[i] = q.ring[q.index(i)]
	}
	q.ring = ring
	q.head = 0
}
