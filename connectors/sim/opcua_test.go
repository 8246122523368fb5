package sim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// testCtx is a context for one test step: everything on 127.0.0.1 is fast,
// so a step that takes seconds has failed.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startUA(t *testing.T, opts OPCUAOptions) *OPCUAServer {
	t.Helper()
	s, err := StartOPCUA(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// dialUA connects a gopcua client (no reconnects, like the gateway).
func dialUA(t *testing.T, endpoint string, opts ...opcua.Option) *opcua.Client {
	t.Helper()
	c, err := dialUAErr(t, endpoint, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	return c
}

func dialUAErr(t *testing.T, endpoint string, opts ...opcua.Option) (*opcua.Client, error) {
	t.Helper()
	opts = append([]opcua.Option{opcua.AutoReconnect(false), opcua.RequestTimeout(10 * time.Second)}, opts...)
	c, err := opcua.NewClient(endpoint, opts...)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(testCtx(t)); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	// gopcua's client queues a pause for its publish loop at NewClient and
	// a resume at Subscribe, and takes them in random order if the loop
	// has not started by then: it may stay paused for good. A round trip
	// first gives the loop time to take the pause (as the gateway's reads
	// before subscribing do).
	if _, err := c.Read(testCtx(t), &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_State), AttributeID: ua.AttributeIDValue}}}); err != nil {
		return nil, err
	}
	return c, nil
}

func readAttr(t *testing.T, c *opcua.Client, attr ua.AttributeID, nids ...string) []*ua.DataValue {
	t.Helper()
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, n := range nids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.MustParseNodeID(n), AttributeID: attr})
	}
	res, err := c.Read(testCtx(t), req)
	if err != nil {
		t.Fatalf("read %v: %v", nids, err)
	}
	if len(res.Results) != len(nids) {
		t.Fatalf("read %d nodes: %d results", len(nids), len(res.Results))
	}
	return res.Results
}

func readValues(t *testing.T, c *opcua.Client, nids ...string) []*ua.DataValue {
	t.Helper()
	return readAttr(t, c, ua.AttributeIDValue, nids...)
}

// sameValue compares a value as set with the value a client decoded.
func sameValue(want, got any) bool {
	switch w := want.(type) {
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g.Equal(w)
	case *ua.LocalizedText:
		g, ok := got.(*ua.LocalizedText)
		return ok && g.Text == w.Text && g.Locale == w.Locale
	case *ua.GUID:
		g, ok := got.(*ua.GUID)
		return ok && g.String() == w.String()
	case []byte:
		g, ok := got.([]byte)
		return ok && slices.Equal(g, w)
	}
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	if wv.Kind() == reflect.Slice {
		if gv.Kind() != reflect.Slice || gv.Type() != wv.Type() || gv.Len() != wv.Len() {
			return false
		}
		for i := 0; i < wv.Len(); i++ {
			if !sameValue(wv.Index(i).Interface(), gv.Index(i).Interface()) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, got)
}

func testDataTypes(t *testing.T, s *OPCUAServer) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456700, time.UTC)
	cases := []struct {
		name  string
		value any
		dt    uint32
		id    string
	}{
		{"Bool", true, id.Boolean, ""},
		{"SByte", int8(-8), id.SByte, ""},
		{"Int16", int16(-1600), id.Int16, ""},
		{"Int32", int32(-320000), id.Int32, "i=1001"},
		{"Int64", int64(-64e12), id.Int64, ""},
		{"Byte", uint8(200), id.Byte, ""},
		{"UInt16", uint16(60000), id.UInt16, ""},
		{"UInt32", uint32(4e9), id.UInt32, ""},
		{"UInt64", uint64(1 << 60), id.UInt64, ""},
		{"Float", float32(3.5), id.Float, ""},
		{"Double", -2.25, id.Double, "g=72962B91-FA75-4AE6-8D28-B404DC7DAF63"},
		{"String", "héllo wörld", id.String, "s=Custom Name"},
		{"DateTime", ts, id.DateTime, ""},
		{"ByteString", []byte{0, 1, 2, 255}, id.ByteString, "b=AQID"},
		{"LocalizedText", &ua.LocalizedText{Locale: "de", Text: "Füllen"}, id.LocalizedText, ""},
		{"Guid", ua.NewGUID("0D4A5F6E-1111-2222-3333-444455556666"), id.GUID, ""},
		{"DoubleArray", []float64{1.5, -2.5, 3}, id.Double, ""},
		{"Int32Array", []int32{1, -2, 3}, id.Int32, ""},
		{"UInt16Array", []uint16{7, 8}, id.UInt16, ""},
		{"StringArray", []string{"a", "", "c"}, id.String, ""},
		{"BoolArray", []bool{true, false}, id.Boolean, ""},
		{"FloatArray", []float32{0.5}, id.Float, ""},
		{"DateTimeArray", []time.Time{ts, ts.Add(time.Hour)}, id.DateTime, ""},
		{"LocalizedTextArray", []*ua.LocalizedText{{Text: "x"}, {Locale: "en", Text: "y"}}, id.LocalizedText, ""},
		{"GuidArray", []*ua.GUID{ua.NewGUID("0D4A5F6E-1111-2222-3333-444455556666")}, id.GUID, ""},
		{"EmptyInt64Array", []int64{}, id.Int64, ""},
	}
	var nids []string
	for _, tc := range cases {
		var idText []string
		if tc.id != "" {
			idText = append(idText, tc.id)
		}
		nid := s.AddVariable("Types/"+tc.name, tc.value, idText...)
		nids = append(nids, nid)
		want := fmt.Sprintf("ns=%d;s=Types.%s", s.NamespaceIndex(), tc.name)
		if tc.id != "" {
			want = fmt.Sprintf("ns=%d;%s", s.NamespaceIndex(), tc.id)
		}
		if nid != want {
			t.Errorf("%s: node id %s, want %s", tc.name, nid, want)
		}
		if got := s.NodeID("Types/" + tc.name); got != nid {
			t.Errorf("%s: NodeID %s, AddVariable said %s", tc.name, got, nid)
		}
	}
	c := dialUA(t, s.Endpoint())
	values := readValues(t, c, nids...)
	types := readAttr(t, c, ua.AttributeIDDataType, nids...)
	ranks := readAttr(t, c, ua.AttributeIDValueRank, nids...)
	for i, tc := range cases {
		dv := values[i]
		if dv.Status != ua.StatusOK {
			t.Errorf("%s (%s): status %v", tc.name, nids[i], dv.Status)
			continue
		}
		if got := dv.Value.Value(); !sameValue(tc.value, got) {
			t.Errorf("%s: read %#v (%T), want %#v", tc.name, got, got, tc.value)
		}
		if dv.SourceTimestamp.IsZero() || dv.ServerTimestamp.IsZero() {
			t.Errorf("%s: timestamps %v %v", tc.name, dv.SourceTimestamp, dv.ServerTimestamp)
		}
		if got, ok := types[i].Value.Value().(*ua.NodeID); !ok || got.IntID() != tc.dt || got.Namespace() != 0 {
			t.Errorf("%s: data type %v, want i=%d", tc.name, types[i].Value.Value(), tc.dt)
		}
		wantRank := int32(-1)
		if k := reflect.TypeOf(tc.value).Kind(); k == reflect.Slice && tc.dt != id.ByteString {
			wantRank = 1
		}
		if got := ranks[i].Value.Value(); got != wantRank {
			t.Errorf("%s: value rank %v, want %d", tc.name, got, wantRank)
		}
	}
	// A client's later changes to a set slice do not reach the server.
	buf := []float64{1, 2}
	s.Set("Types/DoubleArray", buf)
	buf[0] = 99
	if got := readValues(t, c, s.NodeID("Types/DoubleArray"))[0].Value.Value(); !sameValue([]float64{1, 2}, got) {
		t.Errorf("after Set and caller change: %v", got)
	}
}

func testUnknownNodeAndAttributes(t *testing.T, s *OPCUAServer) {
	nid := s.AddVariable("U/B", 1.0)
	c := dialUA(t, s.Endpoint())
	ns := s.NamespaceIndex()
	res := readValues(t, c, fmt.Sprintf("ns=%d;s=U.Nope", ns), fmt.Sprintf("ns=%d;s=U", ns), nid)
	if res[0].Status != ua.StatusBadNodeIDUnknown {
		t.Errorf("unknown node: %v", res[0].Status)
	}
	if res[1].Status != ua.StatusBadAttributeIDInvalid {
		t.Errorf("value of a folder: %v", res[1].Status)
	}
	if res[2].Status != ua.StatusOK {
		t.Errorf("A/B: %v", res[2].Status)
	}
	al := readAttr(t, c, ua.AttributeIDAccessLevel, nid)[0]
	if al.Value.Value() != byte(ua.AccessLevelTypeCurrentRead) {
		t.Errorf("access level %v", al.Value.Value())
	}
	nc := readAttr(t, c, ua.AttributeIDNodeClass, nid, fmt.Sprintf("ns=%d;s=U", ns))
	if nc[0].Value.Value() != int32(ua.NodeClassVariable) || nc[1].Value.Value() != int32(ua.NodeClassObject) {
		t.Errorf("node classes %v %v", nc[0].Value.Value(), nc[1].Value.Value())
	}
	bn := readAttr(t, c, ua.AttributeIDBrowseName, nid)[0].Value.Value().(*ua.QualifiedName)
	if bn.Name != "B" || bn.NamespaceIndex != ns {
		t.Errorf("browse name %+v", bn)
	}
}

// browsePath resolves names from the Objects folder the way a client must
// on gopcua's server: by Browse over hierarchical references.
func browsePath(t *testing.T, c *opcua.Client, names ...string) (*ua.NodeID, error) {
	t.Helper()
	cur := ua.NewNumericNodeID(0, id.ObjectsFolder)
	for _, name := range names {
		res, err := c.Browse(testCtx(t), &ua.BrowseRequest{
			NodesToBrowse: []*ua.BrowseDescription{{
				NodeID:          cur,
				BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
				IncludeSubtypes: true,
				ResultMask:      uint32(ua.BrowseResultMaskAll),
			}},
		})
		if err != nil {
			return nil, err
		}
		if res.Results[0].StatusCode != ua.StatusOK {
			return nil, res.Results[0].StatusCode
		}
		var next *ua.NodeID
		for _, r := range res.Results[0].References {
			if r.BrowseName.Name == name {
				next = r.NodeID.NodeID
			}
		}
		if next == nil {
			return nil, fmt.Errorf("%s: no child %q", cur, name)
		}
		cur = next
	}
	return cur, nil
}

func testBrowse(t *testing.T, s *OPCUAServer) {
	speed := s.AddVariable("Line/Filler/Speed", 1.0)
	top := s.AddVariable("TopLevel", int32(5))
	c := dialUA(t, s.Endpoint())
	for _, tc := range []struct {
		path []string
		want string
	}{
		{[]string{"Line", "Filler", "Speed"}, speed},
		{[]string{"TopLevel"}, top},
		{[]string{"Line"}, s.NodeID("Line")},
		{[]string{"Server"}, "i=2253"}, // namespace 0's own nodes are still there
	} {
		got, err := browsePath(t, c, tc.path...)
		if err != nil {
			t.Errorf("%v: %v", tc.path, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("%v: %s, want %s", tc.path, got, tc.want)
		}
	}

	// Filters: only Organizes (folders) and only variables.
	browse := func(bd *ua.BrowseDescription) []*ua.ReferenceDescription {
		t.Helper()
		res, err := c.Browse(testCtx(t), &ua.BrowseRequest{NodesToBrowse: []*ua.BrowseDescription{bd}})
		if err != nil || res.Results[0].StatusCode != ua.StatusOK {
			t.Fatalf("browse %v: %v %v", bd.NodeID, err, res)
		}
		return res.Results[0].References
	}
	filler := ua.MustParseNodeID(s.NodeID("Line/Filler"))
	refs := browse(&ua.BrowseDescription{NodeID: filler, BrowseDirection: ua.BrowseDirectionForward,
		ReferenceTypeID: ua.NewNumericNodeID(0, id.Organizes), IncludeSubtypes: true})
	if len(refs) != 0 {
		t.Errorf("Organizes from Filler: %v", refs)
	}
	refs = browse(&ua.BrowseDescription{NodeID: filler, BrowseDirection: ua.BrowseDirectionForward,
		ReferenceTypeID: ua.NewNumericNodeID(0, id.HasChild), IncludeSubtypes: true,
		NodeClassMask: uint32(ua.NodeClassVariable)})
	if len(refs) != 1 || refs[0].NodeID.NodeID.String() != speed || refs[0].TypeDefinition.NodeID.IntID() != id.BaseDataVariableType {
		t.Errorf("HasChild variables of Filler: %v", refs)
	}
	refs = browse(&ua.BrowseDescription{NodeID: filler, BrowseDirection: ua.BrowseDirectionInverse, IncludeSubtypes: true})
	if len(refs) != 1 || refs[0].NodeID.NodeID.String() != s.NodeID("Line") || refs[0].IsForward {
		t.Errorf("inverse of Filler: %v", refs)
	}
	refs = browse(&ua.BrowseDescription{NodeID: filler, BrowseDirection: ua.BrowseDirectionBoth,
		ReferenceTypeID: ua.NewNumericNodeID(0, id.HasTypeDefinition)})
	if len(refs) != 1 || refs[0].NodeID.NodeID.IntID() != id.FolderType {
		t.Errorf("type definition of Filler: %v", refs)
	}
	res, err := c.Browse(testCtx(t), &ua.BrowseRequest{NodesToBrowse: []*ua.BrowseDescription{{NodeID: ua.MustParseNodeID(fmt.Sprintf("ns=%d;s=Nope", s.NamespaceIndex()))}}})
	if err != nil || res.Results[0].StatusCode != ua.StatusBadNodeIDUnknown {
		t.Errorf("browse unknown node: %v %v", err, res)
	}
}

// waitNotification waits for a data change of handle that satisfies ok.
func waitNotification(t *testing.T, ch <-chan *opcua.PublishNotificationData, handle uint32, ok func(*ua.DataValue) bool) *ua.DataValue {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case n := <-ch:
			if n.Error != nil {
				t.Fatalf("subscription error: %v", n.Error)
			}
			dcn, isDC := n.Value.(*ua.DataChangeNotification)
			if !isDC {
				continue
			}
			for _, it := range dcn.MonitoredItems {
				if it.ClientHandle == handle && ok(it.Value) {
					return it.Value
				}
			}
		case <-deadline:
			t.Fatalf("no matching notification for handle %d", handle)
		}
	}
}

func subscribe(t *testing.T, c *opcua.Client, ch chan *opcua.PublishNotificationData, handle uint32, nid string) *opcua.Subscription {
	t.Helper()
	sub, err := c.Subscribe(testCtx(t), &opcua.SubscriptionParameters{Interval: 20 * time.Millisecond}, ch)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sub.Monitor(testCtx(t), ua.TimestampsToReturnBoth,
		opcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID(nid), ua.AttributeIDValue, handle))
	if err != nil || res.Results[0].StatusCode != ua.StatusOK {
		t.Fatalf("monitor %s: %v %v", nid, err, res)
	}
	return sub
}

func testSubscription(t *testing.T, s *OPCUAServer) {
	nid := s.AddVariable("Line/Count", uint32(41))
	c := dialUA(t, s.Endpoint())
	ch := make(chan *opcua.PublishNotificationData, 64)
	subscribe(t, c, ch, 7, nid)
	waitNotification(t, ch, 7, func(dv *ua.DataValue) bool { return dv.Value.Value() == uint32(41) })

	before := time.Now()
	s.Set("Line/Count", uint32(42))
	dv := waitNotification(t, ch, 7, func(dv *ua.DataValue) bool { return dv.Value.Value() == uint32(42) })
	if dv.SourceTimestamp.Before(before.Add(-time.Millisecond)) {
		t.Errorf("source timestamp %v before Set at %v", dv.SourceTimestamp, before)
	}

	s.SetStatus("Line/Count", ua.StatusUncertainLastUsableValue)
	waitNotification(t, ch, 7, func(dv *ua.DataValue) bool {
		return dv.Status == ua.StatusUncertainLastUsableValue && dv.Value.Value() == uint32(42)
	})
	s.SetStatus("Line/Count", ua.StatusBadCommunicationError)
	waitNotification(t, ch, 7, func(dv *ua.DataValue) bool { return dv.Status == ua.StatusBadCommunicationError })
	if got := readValues(t, c, nid)[0]; got.Status != ua.StatusBadCommunicationError {
		t.Errorf("read after SetStatus: %v", got.Status)
	}
	s.Set("Line/Count", uint32(43))
	waitNotification(t, ch, 7, func(dv *ua.DataValue) bool { return dv.Status == ua.StatusOK && dv.Value.Value() == uint32(43) })

	// A monitored item on an unknown node reports its status.
	ch2 := make(chan *opcua.PublishNotificationData, 8)
	subscribe(t, c, ch2, 8, fmt.Sprintf("ns=%d;s=Nope", s.NamespaceIndex()))
	waitNotification(t, ch2, 8, func(dv *ua.DataValue) bool { return dv.Status == ua.StatusBadNodeIDUnknown })
}

// TestOPCUASubscriptionIDs checks the workaround for gopcua numbering a new
// subscription like a live one after an earlier one was deleted.
func testSubscriptionIDs(t *testing.T, s *OPCUAServer) {
	nid := s.AddVariable("X", int32(0))
	a, b, c := dialUA(t, s.Endpoint()), dialUA(t, s.Endpoint()), dialUA(t, s.Endpoint())
	chA, chB, chC := make(chan *opcua.PublishNotificationData, 64), make(chan *opcua.PublishNotificationData, 64), make(chan *opcua.PublishNotificationData, 64)
	subA := subscribe(t, a, chA, 1, nid)
	subB := subscribe(t, b, chB, 2, nid)
	if err := subA.Cancel(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	subC := subscribe(t, c, chC, 3, nid)
	if subC.SubscriptionID == subB.SubscriptionID {
		t.Fatalf("subscription id %d given twice", subC.SubscriptionID)
	}
	s.Set("X", int32(5))
	waitNotification(t, chB, 2, func(dv *ua.DataValue) bool { return dv.Value.Value() == int32(5) })
	waitNotification(t, chC, 3, func(dv *ua.DataValue) bool { return dv.Value.Value() == int32(5) })

	// Deleting an unknown monitored item is answered, not a crash.
	res, err := subB.Unmonitor(testCtx(t), 999999)
	if err != nil || len(res.Results) != 1 || res.Results[0] != ua.StatusBadMonitoredItemIDInvalid {
		t.Fatalf("unmonitor unknown item: %v %v", err, res)
	}
	s.Set("X", int32(6))
	waitNotification(t, chB, 2, func(dv *ua.DataValue) bool { return dv.Value.Value() == int32(6) })
}

// testSubscriptionIDsNeverReused deletes a subscription and at once
// creates another, many times over: gopcua's server deletes a deleted
// subscription a second time, later, from the subscription's own goroutine,
// so a new subscription given the freed id would die with it. Every id must
// be new, and every new subscription must keep delivering.
func testSubscriptionIDsNeverReused(t *testing.T, s *OPCUAServer) {
	nid := s.AddVariable("Churn", int32(0))
	c := dialUA(t, s.Endpoint())
	// gopcua's client pauses its publish loop when its last subscription
	// goes and may miss the resume that follows at once (both are signals
	// on buffered channels, picked in random order): a subscription kept
	// for the whole test keeps the loop running.
	keep := subscribe(t, c, make(chan *opcua.PublishNotificationData, 256), 9, nid)
	seen := map[uint32]bool{keep.SubscriptionID: true}
	note := func(sub *opcua.Subscription) {
		t.Helper()
		if seen[sub.SubscriptionID] {
			t.Fatalf("subscription id %d handed out twice", sub.SubscriptionID)
		}
		seen[sub.SubscriptionID] = true
	}
	for i := range 20 {
		ch := make(chan *opcua.PublishNotificationData, 64)
		old := subscribe(t, c, ch, 1, nid)
		note(old)
		if err := old.Cancel(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		ch2 := make(chan *opcua.PublishNotificationData, 64)
		sub := subscribe(t, c, ch2, 2, nid)
		note(sub)
		// The late second delete of old comes within milliseconds; a value
		// set after a pause must still reach the new subscription.
		waitNotification(t, ch2, 2, func(*ua.DataValue) bool { return true })
		want := int32(i + 1)
		s.Set("Churn", want)
		waitNotification(t, ch2, 2, func(dv *ua.DataValue) bool { return dv.Value.Value() == want })
		if err := sub.Cancel(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// testCurrentTimeSampled: like a compliant server, the sim samples
// Server_ServerStatus_CurrentTime, so a monitored item on it reports a
// new time every CurrentTimeSampling, with no Set from anyone.
func testCurrentTimeSampled(t *testing.T, s *OPCUAServer) {
	c := dialUA(t, s.Endpoint())
	ch := make(chan *opcua.PublishNotificationData, 64)
	subscribe(t, c, ch, 1, "i=2258")
	var got []time.Time
	for range 4 {
		var last time.Time
		if len(got) > 0 {
			last = got[len(got)-1]
		}
		dv := waitNotification(t, ch, 1, func(dv *ua.DataValue) bool {
			ts, ok := dv.Value.Value().(time.Time)
			return ok && ts.After(last)
		})
		got = append(got, dv.Value.Value().(time.Time))
	}
	// The first is the initial value; then one per sampling period, read
	// when sampled (allow for scheduling jitter under -race).
	if d := got[3].Sub(got[1]); d < 2*CurrentTimeSampling-20*time.Millisecond {
		t.Errorf("samples of CurrentTime %v apart, sampled every %v: %v", d/2, CurrentTimeSampling, got)
	}
}

// testDropSubscriptions: DropSubscriptions deletes the subscriptions and
// their items but leaves the session working; ids stay unused.
func testDropSubscriptions(t *testing.T, s *OPCUAServer) {
	nid := s.AddVariable("Dropped", int32(0))
	c := dialUA(t, s.Endpoint())
	ch := make(chan *opcua.PublishNotificationData, 64)
	sub := subscribe(t, c, ch, 1, nid)
	waitNotification(t, ch, 1, func(*ua.DataValue) bool { return true })
	if n := s.DropSubscriptions(); n < 1 {
		t.Fatalf("DropSubscriptions = %d, want at least the test's one", n)
	}
	// Deleting it again finds nothing. (Not Cancel: the client would
	// forget its last subscription and pause publishing; not Monitor: a
	// ServiceFault makes gopcua's client drop the connection.)
	var res *ua.DeleteSubscriptionsResponse
	err := c.Send(testCtx(t), &ua.DeleteSubscriptionsRequest{SubscriptionIDs: []uint32{sub.SubscriptionID}}, func(r ua.Response) error {
		var ok bool
		if res, ok = r.(*ua.DeleteSubscriptionsResponse); !ok {
			return fmt.Errorf("response %T", r)
		}
		return nil
	})
	if err != nil || len(res.Results) != 1 || res.Results[0] != ua.StatusBadSubscriptionIDInvalid {
		t.Fatalf("delete a dropped subscription: %v %+v, want StatusBadSubscriptionIDInvalid", err, res)
	}
	if got := readValues(t, c, nid)[0]; got.Status != ua.StatusOK {
		t.Fatalf("read after drop: %v", got.Status)
	}
	ch2 := make(chan *opcua.PublishNotificationData, 64)
	sub2 := subscribe(t, c, ch2, 3, nid)
	if sub2.SubscriptionID <= sub.SubscriptionID {
		t.Fatalf("new subscription id %d, dropped one was %d", sub2.SubscriptionID, sub.SubscriptionID)
	}
	s.Set("Dropped", int32(1))
	waitNotification(t, ch2, 3, func(dv *ua.DataValue) bool { return dv.Value.Value() == int32(1) })
}

// TestOPCUAServe runs the checks that need a running server and nothing
// else on one server: gopcua's server takes seconds to start under -race.
func TestOPCUAServe(t *testing.T) {
	s := startUA(t, OPCUAOptions{})
	for name, f := range map[string]func(*testing.T, *OPCUAServer){
		"DataTypes":                  testDataTypes,
		"UnknownNodeAndAttributes":   testUnknownNodeAndAttributes,
		"Browse":                     testBrowse,
		"Subscription":               testSubscription,
		"SubscriptionIDs":            testSubscriptionIDs,
		"SubscriptionIDsNeverReused": testSubscriptionIDsNeverReused,
		"CurrentTimeSampled":         testCurrentTimeSampled,
		"DropSubscriptions":          testDropSubscriptions,
		"PanicsOnMisuse":             testPanicsOnMisuse,
	} {
		t.Run(name, func(t *testing.T) { f(t, s) })
	}
}

// TestOPCUARestart stops a server with a client subscribed, changes values,
// namespaces and node ids while it is down, and starts it again.
func TestOPCUARestart(t *testing.T) {
	s := startUA(t, OPCUAOptions{ExtraNamespaces: []string{"urn:extra:a"}, NamespaceURI: "urn:test:sim"})
	endpoint := s.Endpoint()
	if s.NamespaceIndex() != 2 {
		t.Fatalf("namespace index %d, want 2", s.NamespaceIndex())
	}
	speed := s.AddVariable("Line/Speed", 12.5)
	level := s.AddVariable("Plant/Tank/Level", 1.5)
	if speed != "ns=2;s=Line.Speed" || level != "ns=2;s=Plant.Tank.Level" {
		t.Fatalf("node ids %s %s", speed, level)
	}
	c := dialUA(t, endpoint)
	nsa, err := c.NamespaceArray(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://opcfoundation.org/UA/", "urn:extra:a", "urn:test:sim"}; !slices.Equal(nsa, want) {
		t.Fatalf("namespace array %q, want %q", nsa, want)
	}
	ch := make(chan *opcua.PublishNotificationData, 64)
	before := subscribe(t, c, ch, 1, speed)
	waitNotification(t, ch, 1, func(dv *ua.DataValue) bool { return dv.Value.Value() == 12.5 })

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	// The client's connection is gone: a request fails instead of hanging.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Read(testCtx(t), &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.MustParseNodeID(speed), AttributeID: ua.AttributeIDValue}}})
		if err != nil {
			t.Logf("read on a stopped server: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reads still succeed after Stop")
		}
	}
	if _, err := dialUAErr(t, endpoint); err == nil {
		t.Fatal("connected to a stopped server")
	}
	s.Set("Line/Speed", 13.5) // set while down: served after Start
	s.SetExtraNamespaces("urn:extra:a", "urn:extra:b")
	s.Renumber("Plant/Tank/Level", "i=5001")
	if s.NamespaceIndex() != 2 {
		t.Fatalf("index changed before restart: %d", s.NamespaceIndex())
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.Endpoint() != endpoint {
		t.Fatalf("endpoint %s after restart, was %s", s.Endpoint(), endpoint)
	}
	if s.NamespaceIndex() != 3 {
		t.Fatalf("namespace index %d after restart, want 3", s.NamespaceIndex())
	}
	c2 := dialUA(t, endpoint)
	nsa, err = c2.NamespaceArray(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://opcfoundation.org/UA/", "urn:extra:a", "urn:extra:b", "urn:test:sim"}; !slices.Equal(nsa, want) {
		t.Fatalf("namespace array %q, want %q", nsa, want)
	}
	newSpeed, newLevel := "ns=3;s=Line.Speed", "ns=3;i=5001"
	if got := s.NodeID("Line/Speed"); got != newSpeed {
		t.Errorf("NodeID %s, want %s", got, newSpeed)
	}
	res := readValues(t, c2, newSpeed, speed, newLevel, level, "ns=3;s=Plant.Tank.Level")
	if res[0].Status != ua.StatusOK || res[0].Value.Value() != 13.5 {
		t.Errorf("speed at the new index: %v %v", res[0].Status, res[0].Value)
	}
	if res[1].Status != ua.StatusBadNodeIDUnknown {
		t.Errorf("speed at the old index: %v", res[1].Status)
	}
	if res[2].Status != ua.StatusOK || res[2].Value.Value() != 1.5 {
		t.Errorf("renumbered level: %v %v", res[2].Status, res[2].Value)
	}
	if res[3].Status != ua.StatusBadNodeIDUnknown || res[4].Status != ua.StatusBadNodeIDUnknown {
		t.Errorf("level's old ids: %v %v", res[3].Status, res[4].Status)
	}
	for path, want := range map[string]string{"Line/Speed": newSpeed, "Plant/Tank/Level": newLevel} {
		got, err := browsePath(t, c2, strings.Split(path, "/")...)
		if err != nil || got.String() != want {
			t.Errorf("browse %s: %v %v, want %s", path, got, err, want)
		}
	}
	ch2 := make(chan *opcua.PublishNotificationData, 64)
	// Subscription ids are never reused, not even after a restart.
	if sub := subscribe(t, c2, ch2, 1, newSpeed); sub.SubscriptionID <= before.SubscriptionID {
		t.Errorf("subscription id %d after restart, want above %d", sub.SubscriptionID, before.SubscriptionID)
	}
	// A channel each: waiting for one item skips the other's notifications.
	ch3 := make(chan *opcua.PublishNotificationData, 64)
	subscribe(t, c2, ch3, 2, newLevel)
	s.Set("Line/Speed", 14.5)
	s.Set("Plant/Tank/Level", 2.5)
	waitNotification(t, ch2, 1, func(dv *ua.DataValue) bool { return dv.Value.Value() == 14.5 })
	waitNotification(t, ch3, 2, func(dv *ua.DataValue) bool { return dv.Value.Value() == 2.5 })
}

// clientCertificate makes a client application certificate like a
// gateway's: its own key and application URI.
func clientCertificate(t *testing.T) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := url.Parse("urn:unsgate:test:client")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "unsgate test client"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// TestOPCUASecure checks the endpoints a Secure server offers, connects
// with each policy and mode, a client certificate and a user name, and
// checks that the server certificate survives a restart.
func TestOPCUASecure(t *testing.T) {
	s := startUA(t, OPCUAOptions{Secure: true, NoNone: true, UserName: true})
	nid := s.AddVariable("Secret/Value", "classified")
	cert := s.Certificate()
	parsed, err := x509.ParseCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.URIs) != 1 || parsed.URIs[0].String() != ServerApplicationURI {
		t.Errorf("certificate URIs %v", parsed.URIs)
	}
	if k, ok := parsed.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("certificate key %T", parsed.PublicKey)
	}
	if len(parsed.IPAddresses) == 0 || !parsed.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("certificate IPs %v", parsed.IPAddresses)
	}

	eps, err := opcua.GetEndpoints(testCtx(t), s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	offered := map[string]*ua.EndpointDescription{}
	for _, ep := range eps {
		if ep.EndpointURL != s.Endpoint() {
			t.Errorf("endpoint URL %s, want %s", ep.EndpointURL, s.Endpoint())
		}
		if !slices.Equal(ep.ServerCertificate, cert) {
			t.Errorf("%s %v: other certificate", ep.SecurityPolicyURI, ep.SecurityMode)
		}
		if ep.Server.ApplicationURI != ServerApplicationURI {
			t.Errorf("application URI %q", ep.Server.ApplicationURI)
		}
		offered[ep.SecurityPolicyURI+" "+ep.SecurityMode.String()] = ep
		var user bool
		for _, tok := range ep.UserIdentityTokens {
			user = user || tok.TokenType == ua.UserTokenTypeUserName
		}
		if !user {
			t.Errorf("%s %v: no user-name token", ep.SecurityPolicyURI, ep.SecurityMode)
		}
	}
	if len(offered) != 2*len(SecurePolicies) {
		t.Errorf("endpoints %v", keys(offered))
	}
	for k := range offered {
		if strings.Contains(k, "#None") {
			t.Errorf("NoNone server offers %s", k)
		}
	}
	clientCert, clientKey := clientCertificate(t)
	for _, policy := range SecurePolicies {
		for _, mode := range []ua.MessageSecurityMode{ua.MessageSecurityModeSign, ua.MessageSecurityModeSignAndEncrypt} {
			name := strings.TrimPrefix(policy, "http://opcfoundation.org/UA/SecurityPolicy#") + "/" + mode.String()
			t.Run(name, func(t *testing.T) {
				ep := offered[policy+" "+mode.String()]
				if ep == nil {
					t.Fatalf("not offered; have %v", keys(offered))
				}
				c := dialUA(t, s.Endpoint(),
					opcua.SecurityFromEndpoint(ep, ua.UserTokenTypeUserName),
					opcua.Certificate(clientCert), opcua.PrivateKey(clientKey),
					opcua.AuthUsername("operator", "s3cret"))
				if got := readValues(t, c, nid)[0]; got.Status != ua.StatusOK || got.Value.Value() != "classified" {
					t.Fatalf("read %v %v", got.Status, got.Value)
				}
			})
		}
	}
	// Policy None is refused on a NoNone server (it served GetEndpoints
	// above: discovery only), and so is a policy gopcua implements but the
	// server does not offer.
	if _, err := dialUAErr(t, s.Endpoint()); err == nil {
		t.Error("connected with policy None to a NoNone server")
	} else {
		t.Logf("policy None: %v", err)
	}
	_, err = dialUAErr(t, s.Endpoint(), opcua.SecurityPolicy(ua.SecurityPolicyURIBasic256),
		opcua.SecurityMode(ua.MessageSecurityModeSignAndEncrypt), opcua.RemoteCertificate(cert),
		opcua.Certificate(clientCert), opcua.PrivateKey(clientKey))
	if err == nil {
		t.Error("connected with policy Basic256, which is not offered")
	} else {
		t.Logf("policy Basic256: %v", err)
	}

	// The certificate stays across a restart (a client trusts it once).
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	eps, err = opcua.GetEndpoints(testCtx(t), s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) == 0 || !slices.Equal(eps[0].ServerCertificate, cert) || !slices.Equal(s.Certificate(), cert) {
		t.Error("certificate changed across Stop/Start")
	}
}

func TestOPCUAOptionsChecked(t *testing.T) {
	for _, o := range []OPCUAOptions{{NoNone: true}, {UserName: true}, {Addr: "nohostport"}, {Addr: "127.0.0.1:x"}} {
		if s, err := StartOPCUA(o); err == nil {
			s.Close()
			t.Errorf("%+v: no error", o)
		}
	}
}

func testPanicsOnMisuse(t *testing.T, s *OPCUAServer) {
	s.AddVariable("P/B", 1.0)
	for name, f := range map[string]func(){
		"duplicate path":     func() { s.AddVariable("P/B", 2.0) },
		"variable as folder": func() { s.AddVariable("P/B/C", 2.0) },
		"empty segment":      func() { s.AddVariable("P//C", 2.0) },
		"unsupported type":   func() { s.AddVariable("P/I", 5) },
		"taken id":           func() { s.AddVariable("P/D", 1.0, "s=P.B") },
		"bad id":             func() { s.AddVariable("P/E", 1.0, "x=1") },
		"id with namespace":  func() { s.AddVariable("P/F", 1.0, "ns=1;i=5") },
		"set unknown":        func() { s.Set("P/Z", 1.0) },
		"set folder":         func() { s.Set("P", 1.0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// TestOPCUACloseEndsGoroutines checks that Close leaves nothing running:
// gopcua's own goroutines (accept loop, dispatcher, subscriptions) and the
// relay's. One client goes away before Close, one is still connected.
func TestOPCUACloseEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := StartOPCUA(OPCUAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Certificate() != nil {
		t.Error("certificate without Secure")
	}
	nid := s.AddVariable("A", 1.0)
	connect := func() *opcua.Client {
		c, err := opcua.NewClient(s.Endpoint(), opcua.AutoReconnect(false))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		ch := make(chan *opcua.PublishNotificationData, 16)
		subscribe(t, c, ch, 1, nid)
		waitNotification(t, ch, 1, func(*ua.DataValue) bool { return true })
		return c
	}
	early, late := connect(), connect()
	early.Close(context.Background())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	late.Close(context.Background())
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:n])
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
