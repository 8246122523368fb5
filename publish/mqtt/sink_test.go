package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

const presenceTopic = "acme/site/_gateways/gw1/status"

const valuePrefix = "acme/site/area/"

func isMeta(topic string) bool { return strings.HasSuffix(topic, publish.MetaSuffix) }

func checkPresence(t *testing.T, payload string, online bool) {
	t.Helper()
	var p struct {
		Online      *bool  `json:"online"`
		Gateway     string `json:"gateway"`
		TimestampMS int64  `json:"timestamp_ms"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		t.Fatalf("presence %s: %v", payload, err)
	}
	if p.Online == nil || *p.Online != online || p.Gateway != "gw1" || time.Since(time.UnixMilli(p.TimestampMS)) > time.Minute {
		t.Fatalf("presence %s, want online=%v gateway gw1 and a recent timestamp", payload, online)
	}
	want := fmt.Sprintf(`{"online":%v,"gateway":"gw1","timestamp_ms":%d}`, online, p.TimestampMS)
	if payload != want {
		t.Fatalf("presence %s, want exactly %s", payload, want)
	}
}

// The whole path with real peers: fan-out -> sink -> embedded broker ->
// independent subscribers.
func TestSinkDeliversRetainedJSONWithMetaAndPresence(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	live := subscribe(t, b.Addr(), nil, "acme/#")

	tags := testTags(50)
	sink := newSink(t, fastConfig(b.URL()))
	f := publish.NewFanout(publish.Options{})
	f.Add(sink)
	f.SetTags(tags)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	pts := points(tags, 500)
	f.Publish(pts[:123])
	f.Publish(pts[123:])
	waitFor(t, "500 acknowledged", 10*time.Second, func() bool { return f.Stats()[0].Sent == 500 })

	// What the broker received, in order: presence, every _meta, values.
	got := rec.values("acme/")
	if len(got) != 1+50+500 {
		t.Fatalf("broker received %d publishes, want 551", len(got))
	}
	for _, r := range got {
		if r.qos != 1 || !r.retain || r.ctype != "application/json" {
			t.Fatalf("publish %+v: want QoS 1, retained, application/json", r)
		}
	}
	if got[0].topic != presenceTopic {
		t.Fatalf("first publish is %s, want the presence", got[0].topic)
	}
	checkPresence(t, got[0].payload, true)
	for i, tag := range tags {
		r := got[1+i]
		if r.topic != tag.Topic+"/_meta" || r.payload != string(publish.AppendMetaJSON(nil, tag)) {
			t.Fatalf("meta %d: %s %s", i, r.topic, r.payload)
		}
	}
	for i := range pts {
		r := got[51+i]
		if r.topic != pts[i].Meta.Topic || r.payload != payload(&pts[i]) {
			t.Fatalf("value %d: got %s %s, want %s %s", i, r.topic, r.payload, pts[i].Meta.Topic, payload(&pts[i]))
		}
	}

	// A subscriber arriving now gets the retained state: presence, every
	// _meta and the last value of each tag, flagged retained.
	late := subscribe(t, b.Addr(), nil, "acme/#")
	waitFor(t, "retained messages", 5*time.Second, func() bool { return len(late.messages()) == 101 })
	lastValue := map[string]string{}
	for i := range pts {
		lastValue[pts[i].Meta.Topic] = payload(&pts[i])
	}
	for _, m := range late.messages() {
		// The embedded broker grants subscribers QoS 0 (see broker's guard);
		// the QoS the sink published with is checked on the broker side above.
		if !m.Retain || m.QoS != 0 || m.ContentType != "application/json" {
			t.Fatalf("retained delivery %+v: want retain flag, QoS 0, application/json", m)
		}
		switch {
		case m.Topic == presenceTopic:
			checkPresence(t, m.Payload, true)
		case isMeta(m.Topic):
			if !strings.HasPrefix(m.Payload, `{"datatype":"float64","unit":"degC","description":"temperature `) {
				t.Fatalf("meta %s: %s", m.Topic, m.Payload)
			}
		default:
			if m.Payload != lastValue[m.Topic] {
				t.Fatalf("retained %s = %s, want %s", m.Topic, m.Payload, lastValue[m.Topic])
			}
		}
	}

	// The live subscriber got every value, in order per topic. (Retained
	// copies are skipped: mochi may send one after the SUBACK.)
	liveValues := func() (out []delivered) {
		for _, m := range live.messages() {
			if !m.Retain && m.Topic != presenceTopic && !isMeta(m.Topic) {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, "live deliveries", 5*time.Second, func() bool { return len(liveValues()) == 500 })
	next := map[string]int{}
	for _, m := range liveValues() {
		if m.QoS != 0 || m.ContentType != "application/json" {
			t.Fatalf("live delivery %+v", m)
		}
		var v struct{ Value int }
		if err := json.Unmarshal([]byte(m.Payload), &v); err != nil {
			t.Fatal(err)
		}
		if v.Value < next[m.Topic] {
			t.Fatalf("%s: value %d after %d", m.Topic, v.Value, next[m.Topic]-1)
		}
		next[m.Topic] = v.Value + 1
	}

	// Clean shutdown: an explicit, retained online:false before DISCONNECT.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "offline presence", 5*time.Second, func() bool {
		m, ok := live.last(presenceTopic)
		return ok && strings.HasPrefix(m.Payload, `{"online":false`)
	})
	m, _ := live.last(presenceTopic)
	checkPresence(t, m.Payload, false)
	after := subscribe(t, b.Addr(), nil, presenceTopic)
	waitFor(t, "retained offline presence", 5*time.Second, func() bool { return len(after.messages()) == 1 })
	if r := after.messages()[0]; !r.Retain || r.Payload != m.Payload {
		t.Fatalf("retained presence %+v, want %s", r, m.Payload)
	}
	if st := sink.Status(); st.Connected || st.Sent != 500 || st.Inflight != 0 || st.Connects != 1 || st.Redelivered != 0 {
		t.Fatalf("status after shutdown %+v", st)
	}
}

// A connection that dies without DISCONNECT makes the broker publish the
// retained Will; the sink reconnects and says online again.
func TestSinkWillOnAbruptDisconnect(t *testing.T) {
	b := startBroker(t, broker.Config{})
	p := startProxy(t, b.Addr())
	watch := subscribe(t, b.Addr(), nil, presenceTopic)
	sink := newSink(t, fastConfig("mqtt://"+p.addr()))
	runSink(t, sink, publish.NewQueue(10))

	waitFor(t, "online", 5*time.Second, func() bool {
		m, ok := watch.last(presenceTopic)
		return ok && strings.HasPrefix(m.Payload, `{"online":true`)
	})
	p.cut()
	const will = `{"online":false,"gateway":"gw1"}`
	sawWill := func() int {
		for i, m := range watch.messages() {
			if m.Payload == will {
				return i
			}
		}
		return -1
	}
	waitFor(t, "the Will", 5*time.Second, func() bool { return sawWill() >= 0 })
	waitFor(t, "online again after reconnect", 5*time.Second, func() bool {
		m, ok := watch.last(presenceTopic)
		return ok && strings.HasPrefix(m.Payload, `{"online":true`) && sink.Status().Connects == 2
	})
	msgs := watch.messages()
	if msgs[sawWill()].QoS != 0 { // subscribers get QoS 0 from the embedded broker
		t.Fatalf("will delivered with QoS %d", msgs[sawWill()].QoS)
	}
	if st := sink.Status(); !st.Connected || st.LastError == "" {
		t.Fatalf("status %+v: want connected, with the lost connection as last error", st)
	}
}

// Messages the broker received but whose PUBACK never reached the sink are
// not counted as sent; they are sent again, in order, after a reconnect.
func TestSinkRedeliversWhatWasNotAcknowledged(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	p := startProxy(t, b.Addr())
	sink := newSink(t, fastConfig("mqtt://"+p.addr()))
	q := publish.NewQueue(1000)
	runSink(t, sink, q)
	waitFor(t, "connected", 5*time.Second, func() bool { return len(rec.values(presenceTopic)) == 1 })

	p.holdDownstream() // the broker's PUBACKs stop here
	msgs := messagesFor(points(testTags(10), 50))
	q.PushBatch(msgs)
	waitFor(t, "broker has all 50", 5*time.Second, func() bool { return len(rec.values(valuePrefix)) == 50 })
	if st := sink.Status(); st.Sent != 0 || st.Inflight != 50 {
		t.Fatalf("with PUBACKs held back: sent %d inflight %d, want 0 and 50", st.Sent, st.Inflight)
	}

	p.cut()
	waitFor(t, "all acknowledged", 10*time.Second, func() bool { return sink.Status().Sent == 50 })
	st := sink.Status()
	if st.Redelivered != 50 || st.Inflight != 0 || st.Connects != 2 || q.Taken() != 0 {
		t.Fatalf("status %+v, want 50 redelivered", st)
	}
	got := rec.values(valuePrefix)
	if len(got) != 100 {
		t.Fatalf("broker got %d value publishes, want 50 twice", len(got))
	}
	for i, r := range got {
		if m := msgs[i%50]; r.topic != m.Topic || r.payload != string(m.Payload) {
			t.Fatalf("publish %d: %s %s, want %s %s", i, r.topic, r.payload, m.Topic, m.Payload)
		}
	}
	if int(st.Sent) > rec.acks() {
		t.Fatalf("sent %d > PUBACKs the broker wrote %d", st.Sent, rec.acks())
	}
}

// A broker that takes publishes but never acknowledges them is dropped
// after AckTimeout, and the messages go out again.
func TestSinkAckTimeoutReconnects(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	p := startProxy(t, b.Addr())
	cfg := fastConfig("mqtt://" + p.addr())
	cfg.AckTimeout = 200 * time.Millisecond
	sink := newSink(t, cfg)
	q := publish.NewQueue(100)
	runSink(t, sink, q)
	waitFor(t, "connected", 5*time.Second, func() bool { return len(rec.values(presenceTopic)) == 1 })
	p.holdDownstream()
	q.PushBatch(messagesFor(points(testTags(3), 9)))
	waitFor(t, "delivery after the watchdog reconnects", 10*time.Second, func() bool { return sink.Status().Sent == 9 })
	st := sink.Status()
	if st.Connects < 2 || !strings.Contains(st.LastError, "no PUBACK") || st.Redelivered != 9 {
		t.Fatalf("status %+v", st)
	}
}

// The broker goes away mid-stream and comes back on the same port: the sink
// reconnects and delivers everything at least once, and counts as sent
// exactly what was acknowledged.
func TestSinkSurvivesBrokerRestart(t *testing.T) {
	const n = 6000
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	addr := b.Addr()
	restarted := make(chan *broker.Broker, 1)
	var once sync.Once
	rec.onPub = func(count int) {
		if count < n/3 {
			return
		}
		once.Do(func() {
			go func() {
				b.Close()
				nb, err := broker.StartWith(broker.Config{Addr: addr, Hooks: []mochi.Hook{rec}})
				if err != nil {
					t.Errorf("restart: %v", err)
				}
				restarted <- nb
			}()
		})
	}
	tags := testTags(100)
	sink := newSink(t, fastConfig(b.URL()))
	sink.SetTags(tags)
	q := publish.NewQueue(n)
	pts := points(tags, n)
	msgs := messagesFor(pts)
	q.PushBatch(msgs)
	runSink(t, sink, q)

	var nb *broker.Broker
	select {
	case nb = <-restarted:
	case <-time.After(20 * time.Second):
		t.Fatal("broker was not restarted")
	}
	if nb == nil {
		t.FailNow()
	}
	t.Cleanup(func() { nb.Close() })
	waitFor(t, "all acknowledged", 20*time.Second, func() bool {
		st := sink.Status()
		return st.Sent == n && st.Inflight == 0 && q.Len() == 0 && q.Taken() == 0
	})
	st := sink.Status()
	if st.Connects < 2 {
		t.Fatalf("connects %d", st.Connects)
	}
	seen := map[string]int{}
	for _, r := range rec.values(valuePrefix) {
		if !isMeta(r.topic) {
			seen[r.payload]++
		}
	}
	dups := 0
	for i := range msgs {
		c := seen[string(msgs[i].Payload)]
		if c == 0 {
			t.Fatalf("message %d never reached a broker", i)
		}
		dups += c - 1
	}
	if int(st.Sent) > rec.acks() {
		t.Fatalf("sent %d > PUBACKs written by the brokers %d", st.Sent, rec.acks())
	}
	t.Logf("restart: %d connects, %d redelivered, %d duplicates at the broker", st.Connects, st.Redelivered, dups)

	// The new broker holds the latest value of every tag and every _meta.
	late := subscribe(t, nb.Addr(), nil, "acme/#")
	waitFor(t, "retained state", 5*time.Second, func() bool { return len(late.messages()) == 201 })
	lastValue := map[string]string{}
	for i := range pts {
		lastValue[pts[i].Meta.Topic] = payload(&pts[i])
	}
	for _, m := range late.messages() {
		if m.Topic != presenceTopic && !isMeta(m.Topic) && m.Payload != lastValue[m.Topic] {
			t.Fatalf("retained %s = %s, want %s", m.Topic, m.Payload, lastValue[m.Topic])
		}
	}
}

// A full queue drops its oldest messages, counted exactly; the sink later
// delivers exactly the newest ones, in order.
func TestSinkQueueOverflowDropsOldest(t *testing.T) {
	b := startBroker(t, broker.Config{})
	tags := testTags(1)
	live := subscribe(t, b.Addr(), nil, tags[0].Topic)
	sink := newSink(t, fastConfig(b.URL()))
	f := publish.NewFanout(publish.Options{QueueLen: 10})
	f.Add(sink)
	pts := points(tags, 25)
	f.Publish(pts) // before Run: nothing drains the queue
	if st := f.Stats()[0]; st.Dropped != 15 || st.Queued != 10 {
		t.Fatalf("dropped %d queued %d, want 15 and 10", st.Dropped, st.Queued)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	// Only live deliveries count: mochi sends retained messages after the
	// SUBACK, so the first value may also arrive once more as retained.
	liveOnly := func() []delivered {
		var out []delivered
		for _, m := range live.messages() {
			if !m.Retain {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, "10 delivered", 5*time.Second, func() bool { return len(liveOnly()) == 10 })
	cancel()
	<-done
	for i, m := range liveOnly() {
		if want := payload(&pts[15+i]); m.Payload != want {
			t.Fatalf("delivery %d = %s, want %s", i, m.Payload, want)
		}
	}
	if st := f.Stats()[0]; st.Sent != 10 || st.Dropped != 15 {
		t.Fatalf("stats %+v", st)
	}
}

// A publish the broker refuses is counted as rejected, not sent, and not
// retried.
func TestSinkCountsRejectedPublishes(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1", deny: "acme/site/area/line/cell1/"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	sink := newSink(t, fastConfig(b.URL()))
	q := publish.NewQueue(100)
	q.PushBatch(messagesFor(points(testTags(5), 10)))
	runSink(t, sink, q)
	waitFor(t, "all answered", 5*time.Second, func() bool {
		st := sink.Status()
		return st.Sent+st.Rejected == 10
	})
	st := sink.Status()
	if st.Sent != 8 || st.Rejected != 2 || !strings.Contains(st.LastError, "not authorized (0x87)") {
		t.Fatalf("status %+v", st)
	}
	if n := len(rec.values(valuePrefix)); n != 10 {
		t.Fatalf("broker saw %d publishes, want 10 (no retries)", n)
	}
}

// SetTags while connected publishes the _meta of new and changed tags
// only.
func TestSinkSetTagsRepublishesChangedMeta(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	sink := newSink(t, fastConfig(b.URL()))
	tags := testTags(20)
	sink.SetTags(tags)
	runSink(t, sink, publish.NewQueue(10))
	metas := func() []recorded {
		var out []recorded
		for _, r := range rec.values("acme/") {
			if isMeta(r.topic) {
				out = append(out, r)
			}
		}
		return out
	}
	waitFor(t, "20 metas", 5*time.Second, func() bool { return len(metas()) == 20 })

	changed := *tags[3]
	changed.Description = "renamed"
	added := &model.TagMeta{Topic: "acme/site/area/line/cell99/pressure", Datatype: model.KindFloat, Unit: "bar"}
	next := append(append([]*model.TagMeta(nil), tags...), added)
	next[3] = &changed
	sink.SetTags(next)
	waitFor(t, "2 more metas", 5*time.Second, func() bool { return len(metas()) == 22 })
	got := metas()[20:]
	if got[0].topic != changed.Topic+"/_meta" || !strings.Contains(got[0].payload, `"description":"renamed"`) ||
		got[1].topic != added.Topic+"/_meta" || got[1].payload != `{"datatype":"float64","unit":"bar"}` {
		t.Fatalf("republished %+v", got)
	}
}

func TestSinkBadCredentials(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Users: map[string]string{"gateway": "s3cret"}, Hooks: []mochi.Hook{rec}})

	cfg := fastConfig(b.URL())
	cfg.Username, cfg.Password = "gateway", "wrong"
	bad := newSink(t, cfg)
	runSink(t, bad, publish.NewQueue(10))
	waitFor(t, "a clear error", 5*time.Second, func() bool {
		return strings.Contains(bad.Status().LastError, "bad user name or password (0x86)")
	})
	if st := bad.Status(); st.Connected || st.Connects != 0 || !strings.Contains(st.LastError, "check username and password") {
		t.Fatalf("status %+v", st)
	}

	cfg.Password = "s3cret"
	cfg.ClientID = "unsgate-gw1-good"
	good := newSink(t, cfg)
	q := publish.NewQueue(10)
	q.PushBatch(messagesFor(points(testTags(2), 4)))
	runSink(t, good, q)
	waitFor(t, "delivery with the right password", 5*time.Second, func() bool { return good.Status().Sent == 4 })
}

func TestSinkInvalidTopicIsNotSentForever(t *testing.T) {
	b := startBroker(t, broker.Config{})
	cfg := fastConfig(b.URL())
	sink := newSink(t, cfg)
	q := publish.NewQueue(10)
	q.Push(publish.Message{Topic: strings.Repeat("x", 70000), Payload: []byte("{}"), Retain: true})
	q.PushBatch(messagesFor(points(testTags(1), 1)))
	runSink(t, sink, q)
	waitFor(t, "the good message", 5*time.Second, func() bool { return sink.Status().Sent == 1 })
	if st := sink.Status(); st.Rejected != 1 || !strings.Contains(st.LastError, "larger than the broker accepts") {
		t.Fatalf("status %+v", st)
	}
}

// Cancelling the fan-out right after a burst still delivers the burst: Run
// lets the sink drain its queue before it stops it.
func TestFanoutShutdownDrainsThroughBroker(t *testing.T) {
	rec := &recorder{client: "unsgate-gw1"}
	b := startBroker(t, broker.Config{Hooks: []mochi.Hook{rec}})
	sink := newSink(t, fastConfig(b.URL()))
	f := publish.NewFanout(publish.Options{FlushTimeout: 10 * time.Second})
	f.Add(sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "connected", 5*time.Second, func() bool { return sink.Status().Connected })
	pts := points(testTags(100), 20000)
	f.Publish(pts)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := f.Stats()[0]; st.Sent != 20000 || st.Queued != 0 || st.Inflight != 0 {
		t.Fatalf("after shutdown: %+v", st)
	}
	if got := len(rec.values(valuePrefix)); got != 20000 {
		t.Fatalf("broker received %d", got)
	}
}
