package publish

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

func msg(i int) Message {
	return Message{Topic: "t/" + strconv.Itoa(i), Payload: []byte(strconv.Itoa(i)), Retain: true}
}

func topics(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Topic
	}
	return out
}

func wantRange(t *testing.T, got []Message, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("got %d messages %v, want t/%d..t/%d", len(got), topics(got), from, to-1)
	}
	for i, m := range got {
		if m.Topic != "t/"+strconv.Itoa(from+i) {
			t.Fatalf("message %d is %s, want t/%d (all: %v)", i, m.Topic, from+i, topics(got))
		}
	}
}

func popAll(t *testing.T, q *Queue) []Message {
	t.Helper()
	var out []Message
	for q.Len() > 0 {
		var err error
		out, err = q.PopBatch(context.Background(), out, 7)
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestQueueFIFOAcrossGrowthAndWrap(t *testing.T) {
	q := NewQueue(5000)
	next := 0
	var got []Message
	// Interleave pushes and pops so the head wraps while the ring grows.
	for round := range 20 {
		var batch []Message
		for range 150 + round*10 {
			batch = append(batch, msg(next))
			next++
		}
		if d := q.PushBatch(batch); d != 0 {
			t.Fatalf("dropped %d below capacity", d)
		}
		var err error
		got, err = q.PopBatch(context.Background(), got, 100+round)
		if err != nil {
			t.Fatal(err)
		}
	}
	got = append(got, popAll(t, q)...)
	wantRange(t, got, 0, next)
	if q.Dropped() != 0 || q.Len() != 0 {
		t.Fatalf("dropped %d len %d", q.Dropped(), q.Len())
	}
}

func TestQueueDropsOldestAndCountsExactly(t *testing.T) {
	q := NewQueue(5)
	dropped := 0
	for i := range 12 {
		dropped += q.Push(msg(i))
	}
	if dropped != 7 || q.Dropped() != 7 || q.Len() != 5 {
		t.Fatalf("dropped %d (counter %d), len %d; want 7, 7, 5", dropped, q.Dropped(), q.Len())
	}
	wantRange(t, popAll(t, q), 7, 12)

	// A batch larger than the capacity keeps only its newest messages.
	q.Push(msg(100))
	var batch []Message
	for i := range 8 {
		batch = append(batch, msg(i))
	}
	if d := q.PushBatch(batch); d != 4 {
		t.Fatalf("PushBatch dropped %d, want 4 (1 queued + 3 of the batch)", d)
	}
	if q.Dropped() != 11 {
		t.Fatalf("counter %d, want 11", q.Dropped())
	}
	wantRange(t, popAll(t, q), 3, 8)
}

func TestQueueRequeueAtFront(t *testing.T) {
	q := NewQueue(10)
	for i := 3; i < 6; i++ {
		q.Push(msg(i))
	}
	if d := q.Requeue([]Message{msg(0), msg(1), msg(2)}); d != 0 {
		t.Fatalf("dropped %d", d)
	}
	wantRange(t, popAll(t, q), 0, 6)

	// Without room, the oldest of the requeued messages go.
	for i := 2; i < 10; i++ {
		q.Push(msg(i))
	}
	if d := q.Requeue([]Message{msg(-1), msg(0), msg(1)}); d != 1 {
		t.Fatalf("Requeue dropped %d, want 1", d)
	}
	if q.Dropped() != 1 || q.Len() != 10 {
		t.Fatalf("dropped %d len %d", q.Dropped(), q.Len())
	}
	wantRange(t, popAll(t, q), 0, 10)
}

func TestQueueRequeueWrapsBelowHead(t *testing.T) {
	q := NewQueue(5) // ring of 5: indexes below are ring slots
	q.PushBatch([]Message{msg(0), msg(1), msg(2)})
	popAll(t, q)                                           // head at 3
	q.PushBatch([]Message{msg(3), msg(4), msg(5), msg(6)}) // slots 3, 4, 0, 1
	got, _ := q.PopBatch(context.Background(), nil, 2)     // head at 0
	q.Requeue(got)                                         // head wraps to 3
	wantRange(t, popAll(t, q), 3, 7)
}

func TestQueuePopBatchWaitsAndHonoursContext(t *testing.T) {
	q := NewQueue(10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := q.PopBatch(ctx, nil, 10)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 0 {
		t.Fatalf("empty queue: got %v, %v", got, err)
	}

	done := make(chan []Message)
	go func() {
		got, err := q.PopBatch(context.Background(), nil, 10)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	q.PushBatch([]Message{msg(0), msg(1)})
	select {
	case got := <-done:
		wantRange(t, got, 0, 2)
	case <-time.After(5 * time.Second):
		t.Fatal("PopBatch did not wake up on Push")
	}
}

// Concurrent producers and one consumer: every message is either popped or
// counted as dropped, and each producer's messages stay in order.
func TestQueueConcurrentAccounting(t *testing.T) {
	const producers, perProducer = 4, 5000
	q := NewQueue(300)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				q.Push(Message{Topic: strconv.Itoa(p), Payload: []byte(strconv.Itoa(i))})
			}
		}()
	}
	popped := 0
	last := map[string]int{}
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		var buf []Message
		for {
			var err error
			buf, err = q.PopBatch(ctx, buf[:0], 64)
			if err != nil {
				return
			}
			for _, m := range buf {
				i, _ := strconv.Atoi(string(m.Payload))
				if prev, ok := last[m.Topic]; ok && i <= prev {
					t.Errorf("producer %s: %d after %d", m.Topic, i, prev)
				}
				last[m.Topic] = i
			}
			popped += len(buf)
		}
	}()
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for q.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-consumerDone
	if total := popped + int(q.Dropped()) + q.Len(); total != producers*perProducer {
		t.Fatalf("popped %d + dropped %d + left %d = %d, want %d", popped, q.Dropped(), q.Len(), total, producers*perProducer)
	}
}

func BenchmarkQueuePushPop(b *testing.B) {
	q := NewQueue(100000)
	batch := make([]Message, 1000)
	for i := range batch {
		batch[i] = msg(i)
	}
	buf := make([]Message, 0, 1000)
	b.ReportAllocs()
	for b.Loop() {
		q.PushBatch(batch)
		buf, _ = q.PopBatch(context.Background(), buf[:0], 1000)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/msg")
}

func TestQueueTracksTakenMessages(t *testing.T) {
	q := NewQueue(3)
	q.PushBatch([]Message{msg(0), msg(1), msg(2), msg(3)}) // msg 0 is dropped
	got, _ := q.PopBatch(context.Background(), nil, 2)
	if q.Taken() != 2 || q.Len() != 1 || q.idle() {
		t.Fatalf("taken %d len %d", q.Taken(), q.Len())
	}
	q.Done(got[0])
	q.Requeue(got[1:])
	if q.Taken() != 0 || q.Len() != 2 {
		t.Fatalf("after Done and Requeue: taken %d len %d", q.Taken(), q.Len())
	}
	got, _ = q.PopBatch(context.Background(), got[:0], 10)
	wantRange(t, got, 2, 4)
	q.PushBatch([]Message{msg(4), msg(5)})
	q.Requeue(got) // room for 1: the older one is dropped, and neither is taken any more
	if q.Taken() != 0 || q.Dropped() != 2 || q.Len() != 3 {
		t.Fatalf("taken %d dropped %d len %d", q.Taken(), q.Dropped(), q.Len())
	}
	q.Done(popAll(t, q)...)
	if !q.idle() {
		t.Fatal("not idle")
	}
}
