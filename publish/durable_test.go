package publish

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/unsgate/unsgate/model"
)

func openQueue(t testing.TB, dir string, capacity int, opts StoreOptions) *Queue {
	t.Helper()
	metas := map[string]*model.TagMeta{}
	var mu sync.Mutex
	q, err := OpenQueue(dir, capacity, opts, func(topic string) *model.TagMeta {
		mu.Lock()
		defer mu.Unlock()
		if metas[topic] == nil {
			metas[topic] = &model.TagMeta{Topic: topic}
		}
		return metas[topic]
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func pushNumbered(q *Queue, from, n int) int {
	ms := make([]Message, 0, n)
	for i := range n {
		ms = append(ms, numbered(from+i))
	}
	return q.PushBatch(ms)
}

func popN(t testing.TB, q *Queue, n int) []Message {
	t.Helper()
	var out []Message
	for len(out) < n {
		var err error
		out, err = q.PopBatch(context.Background(), out, min(n-len(out), 64))
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A sink far behind reads the backlog from disk, then the memory tail, in
// one order; nothing is dropped, and Done empties the store.
func TestDurableQueueBacklogFromDisk(t *testing.T) {
	q := openQueue(t, t.TempDir(), 10, StoreOptions{SegmentBytes: 4 << 10})
	q.SetOnline(true)
	for i := 0; i < 500; i += 50 {
		if d := pushNumbered(q, i, 50); d != 0 {
			t.Fatalf("dropped %d", d)
		}
	}
	if q.Len() != 500 || q.Dropped() != 0 {
		t.Fatalf("len %d dropped %d", q.Len(), q.Dropped())
	}
	got := popN(t, q, 500)
	checkRun(t, got, 0)
	for i, m := range got {
		// Read back from disk (all but the memory tail of 10): Meta from metaOf.
		fromDisk := i < 490
		if (fromDisk && (m.Meta == nil || m.Meta.Topic != m.Topic)) || m.Replay || m.Seq != uint64(i+1) {
			t.Fatalf("message %d: meta %v replay %v seq %d", i, m.Meta, m.Replay, m.Seq)
		}
	}
	if q.Len() != 0 || q.Taken() != 500 {
		t.Fatalf("len %d taken %d", q.Len(), q.Taken())
	}
	q.Done(got...)
	if st := q.st.Stats(); st.Pending() != 0 || q.Taken() != 0 || !q.idle() {
		t.Fatalf("store %+v taken %d", st, q.Taken())
	}
}

// Acknowledgements out of order: the store forgets a message only when
// everything before it is done.
func TestDurableQueueDoneOutOfOrder(t *testing.T) {
	q := openQueue(t, t.TempDir(), 100, StoreOptions{})
	pushNumbered(q, 0, 10)
	got := popN(t, q, 10)
	q.Done(got[5:]...)
	if a := q.st.Stats().Acked; a != 1 {
		t.Fatalf("acked %d with 0..4 outstanding", a)
	}
	q.Done(got[1:5]...)
	if a := q.st.Stats().Acked; a != 1 {
		t.Fatalf("acked %d with 0 outstanding", a)
	}
	q.Done(got[0])
	if a := q.st.Stats().Acked; a != 11 {
		t.Fatalf("acked %d, want 11", a)
	}
}

// Restarted: messages taken and not done, and those waiting, come back in
// order, marked Replay; those done do not.
func TestDurableQueueRestart(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, 16, StoreOptions{})
	q.SetOnline(true)
	pushNumbered(q, 0, 50)
	got := popN(t, q, 20)
	q.Done(got[:10]...)
	q.Close()

	q = openQueue(t, dir, 16, StoreOptions{})
	if q.Len() != 40 {
		t.Fatalf("len %d after restart, want 40", q.Len())
	}
	got = popN(t, q, 40)
	checkRun(t, got, 10)
	for _, m := range got {
		if !m.Replay || m.Meta == nil {
			t.Fatalf("message %d after restart: replay %v meta %v", m.Seq, m.Replay, m.Meta)
		}
	}
	// New messages after a restart are live again.
	q.SetOnline(true)
	pushNumbered(q, 50, 1)
	if m := popN(t, q, 1)[0]; m.Replay || m.Seq != 51 {
		t.Fatalf("new message: replay %v seq %d", m.Replay, m.Seq)
	}
}

// Messages queued while the sink is offline are marked Replay.
func TestDurableQueueOfflineMarksReplay(t *testing.T) {
	q := openQueue(t, t.TempDir(), 100, StoreOptions{})
	pushNumbered(q, 0, 2) // new queues start offline
	q.SetOnline(true)
	pushNumbered(q, 2, 2)
	q.SetOnline(false)
	pushNumbered(q, 4, 2)
	got := popN(t, q, 6)
	for i, want := range []bool{true, true, false, false, true, true} {
		if got[i].Replay != want {
			t.Fatalf("message %d replay %v, want %v", i, got[i].Replay, want)
		}
	}
}

// Requeued messages go out first again, and stay in the store until done.
func TestDurableQueueRequeue(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, 100, StoreOptions{})
	pushNumbered(q, 0, 10)
	got := popN(t, q, 6)
	q.Done(got[:2]...)
	q.Requeue(got[2:])
	if q.Taken() != 0 || q.Len() != 8 {
		t.Fatalf("taken %d len %d", q.Taken(), q.Len())
	}
	checkRun(t, popN(t, q, 8), 2)
}

// Over the store's budget the oldest waiting messages are dropped and
// counted exactly; messages in the sink's hands are not counted, and come
// back with Requeue.
func TestDurableQueueBudgetDropsOldestExactly(t *testing.T) {
	q := openQueue(t, t.TempDir(), 64, StoreOptions{MaxBytes: 32 << 10, SegmentBytes: 4 << 10})
	pushNumbered(q, 0, 10)
	held := popN(t, q, 10) // in the sink's hands
	dropped := 0
	total := 10
	for range 40 {
		dropped += pushNumbered(q, total, 50)
		total += 50
	}
	if dropped == 0 || uint64(dropped) != q.Dropped() {
		t.Fatalf("PushBatch reported %d dropped, Dropped() = %d", dropped, q.Dropped())
	}
	if q.Len()+dropped+len(held) != total {
		t.Fatalf("len %d + dropped %d + held %d != pushed %d", q.Len(), dropped, len(held), total)
	}
	q.Requeue(held)
	got := popN(t, q, q.Len())
	checkRun(t, got[:10], 0) // the requeued ones, kept in memory
	checkRun(t, got[10:], total-(len(got)-10))
	q.Done(got...)
	if st := q.st.Stats(); st.Pending() != 0 {
		t.Fatalf("store %+v", st)
	}
}

// A store that fails: messages stay in memory, in order, and the errors
// are counted.
func TestDurableQueueStoreFailure(t *testing.T) {
	q := openQueue(t, t.TempDir(), 100, StoreOptions{})
	q.SetOnline(true)
	pushNumbered(q, 0, 5)
	q.st.active.Close() // every append fails from now on
	pushNumbered(q, 5, 5)
	pushNumbered(q, 10, 5)
	st := q.Stats()
	if st.StoreErrors == 0 || st.LastError == "" || st.Queued != 15 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := popN(t, q, 15)
	checkRun(t, got[:5], 0)
	for k, m := range got[5:] { // not stored: no sequence number
		if want := numbered(5 + k); m.Topic != want.Topic || string(m.Payload) != string(want.Payload) || m.Seq != 0 {
			t.Fatalf("message %d: %+v, want %+v", 5+k, m, want)
		}
	}
	q.Done(got...)
	if !q.idle() {
		t.Fatal("not idle")
	}
}

// A producer and a consumer that acknowledges at random, requeues now and
// then: every message is delivered or dropped, in order, and the store is
// empty at the end.
func TestDurableQueueConcurrent(t *testing.T) {
	q := openQueue(t, t.TempDir(), 256, StoreOptions{SegmentBytes: 16 << 10})
	q.SetOnline(true)
	const total = 20000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < total; i += 100 {
			pushNumbered(q, i, 100)
		}
	}()
	next := 0
	r := rand.New(rand.NewPCG(1, 2))
	var held []Message
	for next < total {
		got, err := q.PopBatch(context.Background(), nil, 1+r.IntN(200))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range got {
			if m.Seq != uint64(next+1) {
				t.Fatalf("got seq %d, want %d", m.Seq, next+1)
			}
			next++
		}
		held = append(held, got...)
		switch r.IntN(4) {
		case 0:
			r.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
			q.Done(held...)
			held = held[:0]
		case 1: // lost: back to the front, in order
			if len(held) > 0 && len(got) == len(held) {
				q.Requeue(got)
				next -= len(got)
				held = held[:0]
			}
		}
	}
	<-done
	q.Done(held...)
	if st := q.st.Stats(); st.Pending() != 0 || q.Dropped() != 0 || !q.idle() {
		t.Fatalf("store %+v dropped %d", st, q.Dropped())
	}
}
