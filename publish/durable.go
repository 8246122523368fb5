package publish

import "fmt"

// pushDurable stores ms and keeps them in the memory tail. Caller holds
// q.mu. It returns the number of waiting messages dropped (the store's
// budget, or memory while the store fails).
func (q *Queue) pushDurable(ms []Message) int {
	// Our own copy: ms is shared with the other sinks' queues, and Append
	// sets Seq.
	b := append(q.scratch[:0], ms...)
	if q.offline {
		for i := range b {
			b[i].Replay = true
		}
	}
	q.scratch = b[:0]
	defer clear(b) // do not pin payloads

	if len(q.unstored) == 0 {
		_, err := q.st.Append(b)
		if err == nil {
			dropped := q.dropBelow(q.st.Stats().Acked)
			for i := range b {
				q.pushRing(b[i])
			}
			return dropped
		}
		// Messages written before the error are in the store (Seq set);
		// the rest stay in memory, in order, until the store works again.
		q.stErr, q.stErrs = err, q.stErrs+1
		next := q.st.Stats().Next
		k := 0
		for k < len(b) && b[k].Seq != 0 && b[k].Seq < next {
			q.pushRing(b[k])
			k++
		}
		b = b[k:]
	}
	dropped := 0
	for i := range b {
		b[i].Seq = 0
		if len(q.unstored) >= q.max {
			q.unstored = q.unstored[1:]
			q.dropped++
			dropped++
		}
		q.unstored = append(q.unstored, b[i])
	}
	return dropped
}

// pushRing adds a stored message to the memory tail, evicting the oldest
// from memory (not from the store) when the tail is full. Caller holds
// q.mu.
func (q *Queue) pushRing(m Message) {
	if q.n == q.max {
		q.ring[q.head] = Message{}
		if q.head++; q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
		q.ringSeq++
	}
	q.grow(q.n + 1)
	q.ring[q.index(q.n)] = m
	q.n++
}

// dropBelow forgets the waiting messages below seq, which the store no
// longer has (its byte budget), and counts them. Messages in the sink's
// hands are left alone: they are delivered or come back with Requeue.
// Caller holds q.mu.
func (q *Queue) dropBelow(seq uint64) int {
	dropped := 0
	keep := q.front[:0]
	for _, m := range q.front {
		if m.Seq != 0 && m.Seq < seq {
			q.done.mark(m.Seq)
			dropped++
			continue
		}
		keep = append(keep, m)
	}
	clear(q.front[len(keep):])
	q.front = keep
	if q.readSeq < seq {
		q.done.markRange(q.readSeq, seq)
		dropped += int(seq - q.readSeq)
		for q.n > 0 && q.ringSeq < seq {
			q.ring[q.head] = Message{}
			if q.head++; q.head == len(q.ring) {
				q.head = 0
			}
			q.n--
			q.ringSeq++
		}
		q.ringSeq = max(q.ringSeq, seq)
		q.readSeq = seq
	}
	q.dropped += uint64(dropped)
	return dropped
}

// popDurable takes up to maxN messages: requeued ones first, then the
// log's (from disk while the sink is behind the memory tail), then those
// the store did not take. Caller holds q.mu.
func (q *Queue) popDurable(dst []Message, maxN int) ([]Message, error) {
	start := len(dst)
	for len(q.front) > 0 && len(dst)-start < maxN {
		dst = append(dst, q.front[0])
		q.front[0] = Message{}
		q.front = q.front[1:]
	}
	if len(q.front) == 0 {
		q.front = nil
	}
	var err error
	if q.readSeq < q.ringSeq && len(dst)-start < maxN {
		from := len(dst)
		dst, err = q.st.ReadFrom(q.readSeq, dst, min(maxN-(len(dst)-start), int(q.ringSeq-q.readSeq)))
		for i := from; i < len(dst); i++ {
			m := &dst[i]
			if m.Seq > q.readSeq { // lost to damage (the store counts it)
				q.done.markRange(q.readSeq, m.Seq)
			}
			m.Meta = q.metaOf(m.Topic)
			if m.Seq < q.oldSeq {
				m.Replay = true
			}
			q.readSeq = m.Seq + 1
		}
		if err != nil || len(dst) == from {
			// Unreadable (or lost) up to the memory tail: skip it, counted.
			if err == nil {
				err = fmt.Errorf("store: messages %d..%d missing", q.readSeq, q.ringSeq-1)
			}
			q.stErr, q.stErrs = err, q.stErrs+1
			q.done.markRange(q.readSeq, q.ringSeq)
			q.dropped += q.ringSeq - q.readSeq
			q.readSeq = q.ringSeq
			err = nil
		}
	}
	for q.readSeq == q.ringSeq && q.n > 0 && len(dst)-start < maxN {
		dst = append(dst, q.ring[q.head])
		q.ring[q.head] = Message{}
		if q.head++; q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
		q.readSeq++
		q.ringSeq++
	}
	for len(q.unstored) > 0 && len(dst)-start < maxN && q.readSeq == q.ringSeq && q.n == 0 {
		dst = append(dst, q.unstored[0])
		q.unstored[0] = Message{}
		q.unstored = q.unstored[1:]
	}
	if len(q.unstored) == 0 {
		q.unstored = nil
	}
	q.taken.Add(int64(len(dst) - start))
	return dst, err
}

// doneWindow tracks which sequence numbers are finished, from low (every
// one below is) on: a ring of flags, one per sequence number from low.
type doneWindow struct {
	low  uint64
	bits []bool
	head int
}

// mark records seq as finished and moves low past every finished one.
func (w *doneWindow) mark(seq uint64) {
	if seq < w.low || seq == 0 {
		return
	}
	i := seq - w.low
	if i == 0 {
		w.advance(1)
		return
	}
	if i >= uint64(len(w.bits)) {
		w.grow(i + 1)
	}
	w.bits[(w.head+int(i))%len(w.bits)] = true
}

// markRange marks [from, to) finished.
func (w *doneWindow) markRange(from, to uint64) {
	from = max(from, w.low)
	if from >= to {
		return
	}
	if from == w.low {
		w.advance(to - from)
		return
	}
	for s := from; s < to; s++ {
		w.mark(s)
	}
}

// advance moves low by k (the first k are finished), then past every
// finished one after.
func (w *doneWindow) advance(k uint64) {
	if len(w.bits) == 0 {
		w.low += k
		return
	}
	if k >= uint64(len(w.bits)) {
		clear(w.bits)
		w.low += k
		w.head = 0
		return
	}
	for ; k > 0; k-- {
		w.bits[w.head] = false
		w.head = (w.head + 1) % len(w.bits)
		w.low++
	}
	for w.bits[w.head] {
		w.bits[w.head] = false
		w.head = (w.head + 1) % len(w.bits)
		w.low++
	}
}

// grow makes the ring cover at least n sequence numbers from low.
func (w *doneWindow) grow(n uint64) {
	size := max(len(w.bits), 1024)
	for uint64(size) < n {
		size *= 2
	}
	bits := make([]bool, size)
	for i := range w.bits {
		bits[i] = w.bits[(w.head+i)%len(w.bits)]
	}
	w.bits, w.head = bits, 0
}
