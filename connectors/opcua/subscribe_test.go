package opcua

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

func TestSubscribeValues(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	speed := srv.AddVariable(dir+"/Filler/Speed", 1.5)
	count := srv.AddVariable(dir+"/Filler/Count", uint32(7))
	path := "/Objects/" + dir + "/Filler/Speed"
	src := mustNew(t, testConfig(srv.Endpoint(), tag(t, speed), tag(t, count), tag(t, path)))
	rec := newRecorder()
	run(t, src, rec.emit)

	rec.waitValue(t, speed, model.QualityGood, model.FloatValue(1.5))
	rec.waitValue(t, count, model.QualityGood, model.UintValue(7))
	rec.waitValue(t, path, model.QualityGood, model.FloatValue(1.5))
	srv.Set(dir+"/Filler/Speed", 2.5)
	rec.waitValue(t, speed, model.QualityGood, model.FloatValue(2.5))
	rec.waitValue(t, path, model.QualityGood, model.FloatValue(2.5))
	s, _ := rec.get(speed)
	if s.Source != "ua1" || s.SourceTime.IsZero() || s.ReceiveTime.IsZero() || s.Status != 0 {
		t.Fatalf("sample %+v: want source ua1, source time and receive time set, status 0", s)
	}
	if st := src.Stats(); st.MonitoredItems != 3 || st.CreateMonitoredItemsCalls != 1 || st.Connects != 1 || st.Unresolved != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// dataTypeCases are the OPC UA types a source carries, as the sim serves
// them, and the values they become.
func dataTypeCases() []struct {
	name string
	in   any
	want model.Value
} {
	ts := time.Date(2024, 5, 30, 12, 30, 0, 123_000_000, time.UTC)
	g := ua.NewGUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63")
	s := model.StringValue
	arr := func(v ...model.Value) model.Value { return model.ArrayValue(v) }
	return []struct {
		name string
		in   any
		want model.Value
	}{
		{"Boolean", true, model.BoolValue(true)},
		{"SByte", int8(-8), model.IntValue(-8)},
		{"Byte", uint8(200), model.UintValue(200)},
		{"Int16", int16(-1600), model.IntValue(-1600)},
		{"UInt16", uint16(65000), model.UintValue(65000)},
		{"Int32", int32(math.MinInt32), model.IntValue(math.MinInt32)},
		{"UInt32", uint32(math.MaxUint32), model.UintValue(math.MaxUint32)},
		{"Int64", int64(math.MinInt64), model.IntValue(math.MinInt64)},
		{"UInt64", uint64(math.MaxUint64), model.UintValue(math.MaxUint64)},
		{"Float", float32(500.1), model.Float32Value(500.1)},
		{"Double", 23.4, model.FloatValue(23.4)},
		{"String", "Füller", s("Füller")},
		{"DateTime", ts, s("2024-05-30T12:30:00.123Z")},
		{"ByteString", []byte{0xde, 0xad, 0xbe, 0xef}, s("3q2+7w==")},
		{"LocalizedText", ua.NewLocalizedTextWithLocale("Abfüllen", "de"), s("Abfüllen")},
		{"Guid", g, s("72962b91-fa75-4ae6-8d28-b404dc7daf63")},
		{"BooleanArray", []bool{true, false}, arr(model.BoolValue(true), model.BoolValue(false))},
		{"SByteArray", []int8{-1, 1}, arr(model.IntValue(-1), model.IntValue(1))},
		{"ByteArray", ua.ByteArray{1, 255}, arr(model.UintValue(1), model.UintValue(255))},
		{"Int16Array", []int16{-2}, arr(model.IntValue(-2))},
		{"UInt16Array", []uint16{2}, arr(model.UintValue(2))},
		{"Int32Array", []int32{-3, 3}, arr(model.IntValue(-3), model.IntValue(3))},
		{"UInt32Array", []uint32{3}, arr(model.UintValue(3))},
		{"Int64Array", []int64{-4}, arr(model.IntValue(-4))},
		{"UInt64Array", []uint64{math.MaxUint64}, arr(model.UintValue(math.MaxUint64))},
		{"FloatArray", []float32{0.1, 2}, arr(model.Float32Value(0.1), model.Float32Value(2))},
		{"DoubleArray", []float64{1.25}, arr(model.FloatValue(1.25))},
		{"StringArray", []string{"a", ""}, arr(s("a"), s(""))},
		{"DateTimeArray", []time.Time{ts}, arr(s("2024-05-30T12:30:00.123Z"))},
		{"LocalizedTextArray", []*ua.LocalizedText{ua.NewLocalizedText("x"), ua.NewLocalizedText("y")}, arr(s("x"), s("y"))},
		{"GuidArray", []*ua.GUID{g}, arr(s("72962b91-fa75-4ae6-8d28-b404dc7daf63"))},
		{"EmptyArray", []int32{}, arr()},
	}
}

// Every data type, in both modes, from the server through the wire. (Not
// ByteString arrays: gopcua v0.9.0 cannot encode them, so no gopcua server
// can serve one; TestValueByteStringArray decodes one from wire bytes.)
func TestDataTypes(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	cases := dataTypeCases()
	var tags []Tag
	keys := make([]string, len(cases))
	for i, c := range cases {
		keys[i] = srv.AddVariable(dir+"/"+c.name, c.in)
		tags = append(tags, tag(t, keys[i]))
	}
	for _, mode := range []Mode{ModeSubscribe, ModePoll} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := testConfig(srv.Endpoint(), tags...)
			cfg.Mode = mode
			rec := newRecorder()
			run(t, mustNew(t, cfg), rec.emit)
			for i, c := range cases {
				rec.waitValue(t, keys[i], model.QualityGood, c.want)
				got, _ := rec.get(keys[i])
				if got.Value.Is32() != c.want.Is32() {
					t.Errorf("%s: float32 flag %v, want %v", c.name, got.Value.Is32(), c.want.Is32())
				}
			}
		})
	}
}

// Status severity maps to quality; the code is kept when not good and the
// value dropped when bad.
func TestStatusMapping(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	key := srv.AddVariable(dir+"/V", 42.0)
	for _, mode := range []Mode{ModeSubscribe, ModePoll} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := testConfig(srv.Endpoint(), tag(t, key))
			cfg.Mode = mode
			rec := newRecorder()
			run(t, mustNew(t, cfg), rec.emit)
			rec.waitValue(t, key, model.QualityGood, model.FloatValue(42))

			srv.SetStatus(dir+"/V", ua.StatusUncertainSensorNotAccurate)
			rec.waitValue(t, key, model.QualityUncertain, model.FloatValue(42))
			if s, _ := rec.get(key); s.Status != uint32(ua.StatusUncertainSensorNotAccurate) || s.SourceTime.IsZero() {
				t.Fatalf("uncertain sample %+v: want status %#x and a source time", s, uint32(ua.StatusUncertainSensorNotAccurate))
			}
			srv.SetStatus(dir+"/V", ua.StatusBadSensorFailure)
			rec.waitValue(t, key, model.QualityBad, model.Null())
			if s, _ := rec.get(key); s.Status != uint32(ua.StatusBadSensorFailure) {
				t.Fatalf("bad sample status %#x, want %#x", s.Status, uint32(ua.StatusBadSensorFailure))
			}
			srv.SetStatus(dir+"/V", ua.StatusGood)
			rec.waitValue(t, key, model.QualityGood, model.FloatValue(42))
			if s, _ := rec.get(key); s.Status != 0 {
				t.Fatalf("good sample status %#x, want 0", s.Status)
			}
			srv.SetStatus(dir+"/V", ua.StatusGood) // leave it good for the other mode
		})
	}
}

// MaxMonitoredItemsPerCall=7 with 50 tags: 8 CreateMonitoredItems requests
// on the wire, each item with the configured sampling interval, queue
// size, discard oldest, and a deadband filter where set, and the liveness
// item in the last request; the subscription asks for a keep-alive of
// about KeepAlive.
func TestMonitoredItemBatches(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	tap := startTap(t, srv.Endpoint())
	var tags []Tag
	var keys []string
	for i := range 50 {
		k := srv.AddVariable(dir+"/V"+itoa(i), float64(i))
		tg := tag(t, k)
		if i == 3 {
			tg.Addr.Deadband, tg.Addr.Sampling, tg.Addr.QueueSize = 0.5, 250*time.Millisecond, 3
		}
		keys, tags = append(keys, k), append(tags, tg)
	}
	cfg := testConfig(tap.endpoint(), tags...)
	cfg.MaxMonitoredItemsPerCall = 7
	cfg.SamplingInterval = 100 * time.Millisecond
	cfg.QueueSize = 4
	src := mustNew(t, cfg)
	rec := newRecorder()
	run(t, src, rec.emit)
	for i, k := range keys {
		rec.waitValue(t, k, model.QualityGood, model.FloatValue(float64(i)))
	}

	calls := messagesOf[*ua.CreateMonitoredItemsRequest](tap)
	if len(calls) != 8 || src.Stats().CreateMonitoredItemsCalls != 8 {
		t.Fatalf("%d CreateMonitoredItems requests on the wire (stats %d), want 8", len(calls), src.Stats().CreateMonitoredItemsCalls)
	}
	total := 0
	handles := map[uint32]bool{}
	for n, c := range calls {
		if len(c.ItemsToCreate) > 7 {
			t.Fatalf("a request with %d items, limit 7", len(c.ItemsToCreate))
		}
		if c.TimestampsToReturn != ua.TimestampsToReturnBoth {
			t.Fatalf("timestamps to return %v, want both", c.TimestampsToReturn)
		}
		for k, it := range c.ItemsToCreate {
			p := it.RequestedParameters
			if it.ItemToMonitor.NodeID.String() == "i=2258" {
				if n != len(calls)-1 || k != len(c.ItemsToCreate)-1 {
					t.Fatalf("liveness item in request %d at %d, want last", n+1, k+1)
				}
				if f, _ := p.Filter.Value.(*ua.DataChangeFilter); p.ClientHandle != 51 || p.SamplingInterval != 20 ||
					p.QueueSize != 1 || !p.DiscardOldest || f != nil || it.MonitoringMode != ua.MonitoringModeReporting {
					t.Fatalf("liveness item %+v, want handle 51 (after the 50 bindings'), sampling = publishing interval, queue 1, no filter", p)
				}
				continue
			}
			total++
			// Handles 1..50: never 0 or 0xFFFFFFFF, which some servers
			// take for "no handle".
			if h := p.ClientHandle; h < 1 || h > 50 || handles[h] {
				t.Fatalf("item %s: client handle %d, want a distinct one in 1..50", it.ItemToMonitor.NodeID, h)
			}
			handles[p.ClientHandle] = true
			deadband := it.ItemToMonitor.NodeID.String() == keys[3]
			wantSampling, wantQueue := 100.0, uint32(4)
			if deadband {
				wantSampling, wantQueue = 250, 3
			}
			if p.SamplingInterval != wantSampling || p.QueueSize != wantQueue || !p.DiscardOldest ||
				it.MonitoringMode != ua.MonitoringModeReporting || it.ItemToMonitor.AttributeID != ua.AttributeIDValue {
				t.Fatalf("item %s: %+v", it.ItemToMonitor.NodeID, p)
			}
			f, _ := p.Filter.Value.(*ua.DataChangeFilter)
			switch {
			case deadband && (f == nil || f.DeadbandType != uint32(ua.DeadbandTypeAbsolute) || f.DeadbandValue != 0.5 || f.Trigger != ua.DataChangeTriggerStatusValue):
				t.Fatalf("deadband item filter %+v, want absolute 0.5 on status and value", f)
			case !deadband && f != nil:
				t.Fatalf("item %s has filter %+v, want none", it.ItemToMonitor.NodeID, f)
			}
		}
	}
	if total != 50 {
		t.Fatalf("%d items created, want 50", total)
	}
	subs := messagesOf[*ua.CreateSubscriptionRequest](tap)
	// KeepAlive 2s / publishing interval 20ms.
	if len(subs) != 1 || subs[0].RequestedMaxKeepAliveCount != 100 || subs[0].RequestedPublishingInterval != 20 ||
		subs[0].RequestedLifetimeCount != 300 || !subs[0].PublishingEnabled {
		t.Fatalf("create subscription %+v", subs)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// A server that reports an item's first value under a wrong client handle
// (a server bug the rewrite simulates): the notification is dropped and
// counted, and the item's first value is read instead after a short wait.
func TestFirstValueReadWhenNotReported(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	good := srv.AddVariable(dir+"/Good", 1.0)
	silent := srv.AddVariable(dir+"/Silent", 2.0)
	tap := startTap(t, srv.Endpoint())
	tap.setRewrite(func(v any) any {
		req, ok := v.(*ua.CreateMonitoredItemsRequest)
		if !ok {
			return nil
		}
		for _, it := range req.ItemsToCreate {
			if it.ItemToMonitor.NodeID.String() == silent {
				it.RequestedParameters.ClientHandle = 1 << 30
			}
		}
		return req
	})
	src := mustNew(t, testConfig(tap.endpoint(), tag(t, good), tag(t, silent)))
	rec := newRecorder()
	run(t, src, rec.emit)
	rec.waitValue(t, good, model.QualityGood, model.FloatValue(1))
	rec.waitValue(t, silent, model.QualityGood, model.FloatValue(2))
	if src.Stats().UnknownHandles == 0 {
		t.Fatal("the notification with the unknown handle was not counted")
	}
	read := false
	for _, r := range messagesOf[*ua.ReadRequest](tap) {
		if len(r.NodesToRead) == 1 && r.NodesToRead[0].NodeID.String() == silent {
			read = true
		}
	}
	if !read {
		t.Fatal("no Read of the silent item on the wire")
	}
	if n := len(rec.history(silent)); n != 1 {
		t.Fatalf("%d samples of the silent item, want 1 (the read)", n)
	}
}

// The subscription reporting an error or a bad status ends the session;
// a good status change does not.
func TestListenEndsOnSubscriptionTrouble(t *testing.T) {
	src := mustNew(t, Config{Name: "ua1", Endpoint: "opc.tcp://127.0.0.1:4840", SecurityPolicy: "None", AcceptAnyServerCert: true})
	for _, tc := range []struct {
		name string
		data []*opcua.PublishNotificationData
		want string
	}{
		{"error", []*opcua.PublishNotificationData{{Error: ua.StatusBadSubscriptionIDInvalid}}, "StatusBadSubscriptionIDInvalid"},
		{"bad status change", []*opcua.PublishNotificationData{
			{Value: &ua.StatusChangeNotification{Status: ua.StatusGoodSubscriptionTransferred}},
			{Value: &ua.StatusChangeNotification{Status: ua.StatusBadTimeout}},
		}, "status change: The operation timed out. StatusBadTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := newSession(src, newRecorder().emit)
			ss.notifs = make(chan *opcua.PublishNotificationData, len(tc.data))
			for _, d := range tc.data {
				ss.notifs <- d
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := ss.listen(ctx, &opcua.Subscription{SubscriptionID: 9})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "subscription 9") {
				t.Fatalf("listen = %v, want an error naming subscription 9 and %q", err, tc.want)
			}
		})
	}
}

// A subscription with the liveness item that gets no sample of it at all
// (a server that lost it at once, or a client whose publish loop never
// started) ends the session after KeepAlive; without the item (refused)
// only the watchdog would.
func TestListenEndsWhenSilent(t *testing.T) {
	src := mustNew(t, Config{Name: "ua1", Endpoint: "opc.tcp://127.0.0.1:4840", SecurityPolicy: "None", AcceptAnyServerCert: true,
		KeepAlive: 200 * time.Millisecond})
	for _, liveness := range []bool{true, false} {
		ss := newSession(src, newRecorder().emit)
		ss.notifs = make(chan *opcua.PublishNotificationData, 1)
		ss.liveness = liveness
		wait := 2 * time.Second
		if !liveness {
			wait = 500 * time.Millisecond // over twice KeepAlive
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		start := time.Now()
		err := ss.listen(ctx, &opcua.Subscription{SubscriptionID: 9})
		took := time.Since(start)
		cancel()
		switch {
		case liveness && (err == nil || !strings.Contains(err.Error(), "subscription 9 silent for 200ms")):
			t.Fatalf("listen = %v, want subscription 9 silent", err)
		case liveness && (took < 200*time.Millisecond || took > 1500*time.Millisecond):
			t.Fatalf("silence noticed after %v, want after KeepAlive (200ms)", took)
		case !liveness && err != nil:
			t.Fatalf("listen without the liveness item = %v, want nil at the context's end", err)
		}
	}
}

// The notification-to-samples path allocates nothing for scalar values
// once the batch slice has grown.
func TestDataChangeAllocs(t *testing.T) {
	var emitted atomic.Int64
	ss := benchSession(t, 100, &emitted)
	_, n := dataChange(t, 100, func(i int) any {
		switch i % 5 {
		case 0:
			return float64(i)
		case 1:
			return int32(i)
		case 2:
			return true
		case 3:
			return ua.NewLocalizedText("text")
		}
		return "s"
	})
	recv := time.Now()
	ss.dataChange(n, recv)
	if allocs := testing.AllocsPerRun(50, func() { ss.dataChange(n, recv) }); allocs != 0 {
		t.Fatalf("%v allocations per notification, want 0", allocs)
	}
	if e := emitted.Load(); e < 51*100 || e%100 != 0 {
		t.Fatalf("%d samples emitted, want whole notifications of 100", e)
	}
}

// The liveness item's samples arrive (the tap sees them in publish
// responses) but are not emitted, and the source's addresses and counters
// do not show the item.
func TestLivenessItemHidden(t *testing.T) {
	srv := sharedSim(t)
	node := srv.AddVariable(folder(t)+"/V", 1.0)
	tap := startTap(t, srv.Endpoint())
	src := mustNew(t, testConfig(tap.endpoint(), tag(t, node)))
	rec := newRecorder()
	r := run(t, src, rec.emit)
	rec.waitValue(t, node, model.QualityGood, model.FloatValue(1))
	livenessSamples := func() int {
		n := 0
		for _, p := range messagesOf[*ua.PublishResponse](tap) {
			for _, d := range p.NotificationMessage.NotificationData {
				if dcn, ok := d.Value.(*ua.DataChangeNotification); ok {
					for _, it := range dcn.MonitoredItems {
						if it.ClientHandle == 2 { // after the one binding's
							n++
						}
					}
				}
			}
		}
		return n
	}
	waitFor(t, "5 liveness samples on the wire", 5*time.Second, func() bool { return livenessSamples() >= 5 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	total := 0
	for k, h := range rec.all {
		if k != node {
			t.Fatalf("samples for %q emitted: %+v", k, h)
		}
		total += len(h)
	}
	st := src.Stats()
	if st.MonitoredItems != 1 || st.CreateMonitoredItemsCalls != 1 || st.UnknownHandles != 0 || st.Unresolved != 0 ||
		st.Samples != uint64(total) || st.Notifications > uint64(rec.batches) {
		t.Fatalf("stats %+v with %d samples in %d batches", st, total, rec.batches)
	}
	if a := src.Addresses(); len(a) != 1 || a[0] != node {
		t.Fatalf("addresses %q", a)
	}
}

// A server that refuses the liveness item: the session runs on (values
// flow) with the watchdog only, and the refusal is a warning once, not at
// every session.
func TestLivenessRefused(t *testing.T) {
	srv := sharedSim(t)
	dir := folder(t)
	node := srv.AddVariable(dir+"/V", 1.0)
	srv.RefuseMonitoring("i=2258", ua.StatusBadTooManyMonitoredItems)
	t.Cleanup(func() { srv.RefuseMonitoring("i=2258", ua.StatusOK) })
	var logs logBuffer
	cfg := testConfig(srv.Endpoint(), tag(t, node))
	cfg.Logger = logs.logger()
	src := mustNew(t, cfg)
	for i := range 2 {
		rec := newRecorder()
		r := run(t, src, rec.emit)
		rec.waitValue(t, node, model.QualityGood, model.FloatValue(float64(1+i)))
		srv.Set(dir+"/V", float64(2+i))
		rec.waitValue(t, node, model.QualityGood, model.FloatValue(float64(2+i)))
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	out := logs.String()
	const msg = "refused a monitored item on CurrentTime"
	if n := strings.Count(out, msg); n != 2 || strings.Count(out, "level=WARN msg=\"the server "+msg) != 1 || !strings.Contains(out, "StatusBadTooManyMonitoredItems") {
		t.Fatalf("want the refusal logged at both sessions, a warning once, with its status:\n%s", out)
	}
	if st := src.Stats(); st.Errors != 0 || st.MonitoredItems != 1 || st.Unresolved != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The silence allowed is KeepAlive unless the server publishes or samples
// CurrentTime so slowly that two intervals are longer.
func TestLivenessDeadline(t *testing.T) {
	src := mustNew(t, Config{Name: "ua1", Endpoint: "opc.tcp://127.0.0.1:4840", SecurityPolicy: "None", AcceptAnyServerCert: true,
		KeepAlive: 5 * time.Second})
	for _, c := range []struct {
		publishing time.Duration
		revisedMs  float64
		want       time.Duration
	}{
		{time.Second, 1000, 5 * time.Second},
		{4 * time.Second, 1000, 8 * time.Second},
		{time.Second, 4000, 8 * time.Second},
		{time.Second, -1, 5 * time.Second},   // nonsense from a server: ignored
		{time.Second, 1e12, 5 * time.Second}, // likewise
	} {
		ss := newSession(src, newRecorder().emit)
		ss.revisedInterval = c.publishing
		ss.livenessCreated(ua.StatusOK, c.revisedMs)
		if got := ss.livenessDeadline(); got != c.want || !ss.liveness {
			t.Errorf("publishing %v, sampling %vms: deadline %v (liveness %v), want %v", c.publishing, c.revisedMs, got, ss.liveness, c.want)
		}
	}
}
