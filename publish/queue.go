package publish

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/unsgate/unsgate/model"
)

// Message is one encoded message for a sink. Payload is shared by every
// sink's queue and must never be modified.
type Message struct {
	Topic   string
	Payload []byte
	// Meta is the tag the message carries a value of; nil for messages that
	// are not tag values.
	Meta *model.TagMeta
	// TimeMs and Quality (the point's timestamp, ms since the Unix epoch)
	// repeat what Payload says, for sinks that need them beside it (Kafka
	// headers) without parsing it.
	TimeMs int64
	// Seq is the message's sequence number in a sink's Store (0 when the
	// message was never stored).
	Seq     uint64
	Quality model.Quality
	Retain  bool
	// Replay marks a message delivered late from the sink's store rather
	// than live (Sparkplug's is_historical). The one-byte fields are last,
	// so that a Message is 72 bytes, not 88: a queue's ring holds many.
	Replay bool
}

// Queue is a sink's FIFO of messages. Producers never block. One sink
// consumes it: PopBatch takes messages, Done reports those it finished with
// (delivered, or refused for good), Requeue hands back those it could not
// deliver. The queue thus knows exactly which messages are unfinished,
// which is what a flush waits for and what a durable queue keeps on disk.
//
// A memory queue (NewQueue) holds at most its capacity; when full, the
// oldest message is dropped and counted.
//
// A durable queue (OpenQueue) writes every message to its Store first and
// keeps the newest capacity messages in memory as well, so a sink that
// keeps up never reads the disk; a sink that falls behind, or a gateway
// that restarts, reads the backlog back from the Store, in order. Messages
// leave the Store when Done; over the Store's byte budget the oldest
// waiting messages are dropped and counted. Messages queued while the sink
// is offline (SetOnline) and those an earlier process left are marked
// Replay.
type Queue struct {
	mu      sync.Mutex
	ring    []Message // grows by doubling up to max, so an idle sink costs little
	head, n int
	max     int
	dropped uint64
	taken   atomic.Int64  // popped, neither Done nor requeued; changed under mu except by Done
	ready   chan struct{} // one token: "there may be messages"

	// Durable queues only.
	st      *Store
	metaOf  func(topic string) *model.TagMeta
	offline bool
	front   []Message // requeued: handed out before anything else
	readSeq uint64    // next log message to hand out
	ringSeq uint64    // seq of ring's first message; the ring holds [ringSeq, ringSeq+n)
	oldSeq  uint64    // messages below were queued by an earlier process
	done    doneWindow
	stErr   error  // the last Store error
	stErrs  uint64 // Store errors; their messages were kept in memory only
	// unstored holds messages the store failed to take, in memory, after
	// everything stored; new messages join them until they are gone.
	unstored []Message
	scratch  []Message
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

// OpenQueue opens a durable queue on the store in dir, with the newest
// capacity messages also in memory. What an earlier process left in dir
// is queued first. metaOf gives messages read back from disk their Meta
// (nil: a bare one with the topic only).
func OpenQueue(dir string, capacity int, opts StoreOptions, metaOf func(topic string) *model.TagMeta) (*Queue, error) {
	st, err := OpenStore(dir, opts)
	if err != nil {
		return nil, err
	}
	if metaOf == nil {
		// Sinks take a message without Meta for one that is not a value.
		metaOf = func(topic string) *model.TagMeta { return &model.TagMeta{Topic: topic} }
	}
	q := NewQueue(capacity)
	q.st, q.metaOf = st, metaOf
	stats := st.Stats()
	q.readSeq, q.ringSeq, q.oldSeq = stats.Acked, stats.Next, stats.Next
	q.done.low = stats.Acked
	q.offline = true // until the sink says otherwise
	return q, nil
}

// Durable reports whether the queue keeps its messages in a Store.
func (q *Queue) Durable() bool { return q.st != nil }

// SetOnline tells the queue whether its sink is connected: messages
// queued while it is not are marked Replay (they will arrive late).
func (q *Queue) SetOnline(online bool) {
	q.mu.Lock()
	q.offline = !online
	q.mu.Unlock()
}

// Close closes a durable queue's store, flushing it to the device. Nothing
// may use the queue after. A memory queue has nothing to close.
func (q *Queue) Close() error {
	if q.st == nil {
		return nil
	}
	return q.st.Close()
}

// QueueStats is a snapshot of a queue.
type QueueStats struct {
	Queued  int    // waiting to be taken
	Taken   int    // in the sink's hands
	Dropped uint64 // dropped: memory full, or the store's budget or damage
	// Durable queues only.
	StoreBytes  int64  // bytes of segments on disk
	StoreErrors uint64 // failed writes to the store (those messages were kept in memory only)
	LastError   string // the last store error
}

// Stats returns the queue's counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := QueueStats{Queued: q.lenLocked(), Taken: int(q.taken.Load()), Dropped: q.dropped, StoreErrors: q.stErrs}
	if q.st != nil {
		ss := q.st.Stats()
		st.StoreBytes = ss.Bytes
		st.Dropped += ss.Damaged
		if q.stErr != nil {
			st.LastError = q.stErr.Error()
		}
	}
	return st
}

// Cap is the capacity in messages.
func (q *Queue) Cap() int { return q.max }

// Len is the number of messages waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lenLocked()
}

func (q *Queue) lenLocked() int {
	if q.st == nil {
		return q.n
	}
	return len(q.front) + int(q.ringSeq-q.readSeq) + q.n + len(q.unstored)
}

// Dropped is the number of messages dropped because the queue was full,
// since the queue was made.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.st != nil {
		return q.dropped + q.st.Stats().Damaged
	}
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
	if q.st != nil {
		dropped := q.pushDurable(ms)
		q.mu.Unlock()
		q.signal()
		return dropped
	}
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
	if q.st != nil {
		// Still in the store: nothing to drop. Kept in memory, in front.
		q.front = append(slices.Clone(ms), q.front...)
		q.taken.Add(-int64(len(ms)))
		q.mu.Unlock()
		q.signal()
		return 0
	}
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

// Done reports that messages taken with PopBatch are finished with:
// acknowledged, or refused by the destination and not to be retried. A
// durable queue then lets the store forget them.
func (q *Queue) Done(ms ...Message) {
	if q.st == nil {
		q.taken.Add(-int64(len(ms)))
		return
	}
	q.mu.Lock()
	low := q.done.low
	for i := range ms {
		q.done.mark(ms[i].Seq)
	}
	newLow := q.done.low
	q.taken.Add(-int64(len(ms)))
	q.mu.Unlock()
	if newLow != low {
		q.st.Ack(newLow) // the store ignores an older value from a racing Done
	}
}

// Taken is the number of messages taken with PopBatch and neither Done nor
// requeued: in the sink's hands.
func (q *Queue) Taken() int { return int(q.taken.Load()) }

// idle reports whether nothing is queued or taken, read atomically with
// respect to PopBatch and Requeue.
func (q *Queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lenLocked() == 0 && q.taken.Load() <= 0
}

// PopBatch waits until at least one message is queued or ctx is done, then
// removes up to maxN messages from the front and appends them to dst. It
// returns ctx.Err() (and dst unchanged) only when nothing was taken.
func (q *Queue) PopBatch(ctx context.Context, dst []Message, maxN int) ([]Message, error) {
	maxN = max(maxN, 1)
	for {
		q.mu.Lock()
		if q.st != nil && q.lenLocked() > 0 {
			var err error
			dst, err = q.popDurable(dst, maxN)
			more := q.lenLocked() > 0
			q.mu.Unlock()
			if more {
				q.signal()
			}
			if err != nil {
				return dst, err
			}
			return dst, nil
		}
		if q.st == nil && q.n > 0 {
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
