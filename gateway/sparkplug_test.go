package gateway

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/publish/mqtt"
	"github.com/unsgate/unsgate/publish/sparkplug"
)

// spPumpModel keeps every addressed tag of a pump in one block of holding
// registers, so one Modbus request reads them all and each poll is one
// batch: a DBIRTH then carries every metric's value of the same poll.
const spPumpModel = `
base: acme/plant/water
types:
  Pump:
    tags:
      flow:           {address: "holding:0", expr: "raw / 10.0", unit: m3/h}
      pressure:       {address: "holding:1", type: int16, unit: mbar}
      running:        {address: "holding:2.0"}
      counters/good:  {address: "holding:4", type: uint32}
      per_hour:       {expr: "flow * 2"}
assets:
  line1/pump1: {type: Pump, source: plc1}
  line1/pump2: {type: Pump, source: plc2}
`

// The Sparkplug names the test expects: the group defaults to the site
// (acme/plant), the edge node to the gateway id, a device is the asset's
// path below acme/plant with '.' between levels.
const (
	spGroup = "plant"
	spEdge  = "gw-sp"
	spHost  = "scada"
	spPump1 = "water.line1.pump1"
	spPump2 = "water.line1.pump2"
)

// startSparkplugGateway runs a gateway like startGateway, with the Sparkplug
// sink on the embedded broker. The embedded broker starts inside Run, so a
// test can subscribe only after the edge node has connected; the node is
// therefore told to wait for the primary host spHost, and a test that
// subscribes first and then announces the host sees the session from its
// NBIRTH on.
func startSparkplugGateway(t *testing.T, modelText string, urls map[string]string) *Gateway {
	t.Helper()
	text := "id: " + spEdge + "\nmodels: [m.yaml]\nshutdown_timeout: 3s\nbroker: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\nsources:\n"
	for _, name := range slices.Sorted(maps.Keys(urls)) {
		// No stale marking and a generous timeout: a loaded machine must not
		// make values UNCERTAIN or BAD other than by the PLC going away.
		text += "  " + name + ": {url: \"" + urls[name] + "\", poll: 100ms, timeout: 1s, stale_after: -1, backoff: {initial: 50ms, max: 200ms}}\n"
	}
	text += "sinks:\n  sparkplug:\n    primary_host: " + spHost + "\n"
	_, g := buildGateway(t, text, modelText, nil)
	runGateway(t, g)
	if g.sparkplug == nil {
		t.Fatal("no Sparkplug sink after Run started")
	}
	return g
}

// spMsg is one Sparkplug message as a host application receives it.
type spMsg struct {
	Topic  string
	Kind   string // NBIRTH, DDATA, ...
	Group  string
	Edge   string
	Device string // "" for node messages
	Raw    []byte
	P      sparkplug.Payload
	Err    error // decoding failed
}

// spRecorder is a minimal Sparkplug host application: a real MQTT client
// subscribed to spBv1.0/# that keeps every message in arrival order.
type spRecorder struct {
	c    *paho.Client
	mu   sync.Mutex
	msgs []spMsg
}

func recordSparkplug(t *testing.T, addr string) *spRecorder {
	t.Helper()
	r := &spRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := mqtt.Subscribe(ctx, addr, "test-spb-host-"+strings.ReplaceAll(t.Name(), "/", "_"), []string{sparkplug.Namespace + "/#"}, 1,
		func(p *paho.Publish) {
			parts := strings.Split(p.Topic, "/")
			if len(parts) < 4 || parts[1] == "STATE" {
				return // our own STATE
			}
			m := spMsg{Topic: p.Topic, Group: parts[1], Kind: parts[2], Edge: parts[3], Raw: slices.Clone(p.Payload)}
			if len(parts) > 4 {
				m.Device = strings.Join(parts[4:], "/")
			}
			m.P, m.Err = sparkplug.Decode(m.Raw)
			r.mu.Lock()
			r.msgs = append(r.msgs, m)
			r.mu.Unlock()
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	t.Cleanup(func() {
		if t.Failed() {
			r.logAll(t)
		}
	})
	return r
}

// logAll logs every message received, decoded, for a failed test.
func (r *spRecorder) logAll(t *testing.T) {
	t.Helper()
	rd := sparkplug.NewReader()
	for i, m := range r.snapshot() {
		t.Logf("%3d %s %s", i, m.Topic, rd.Text(m.Topic, m.Raw))
	}
}

// hostOnline publishes the primary host's STATE (retained, QoS 1, as a
// Sparkplug 3.0 host application does).
func (r *spRecorder) hostOnline(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	payload := fmt.Sprintf(`{"online":true,"timestamp":%d}`, time.Now().UnixMilli())
	if _, err := r.c.Publish(ctx, &paho.Publish{Topic: sparkplug.Namespace + "/STATE/" + spHost, QoS: 1, Retain: true,
		Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish STATE: %v", err)
	}
}

func (r *spRecorder) snapshot() []spMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// spVal is a metric's value as the host knows it: V is float64 for every
// number, bool or string; nil with Null.
type spVal struct {
	V       any
	Null    bool
	Quality int64 // the Quality property; -1 when absent (GOOD)
}

// spDevice is the host's view of one device.
type spDevice struct {
	Births, Deaths int
	Online         bool
	alias          map[uint64]string
	types          map[string]sparkplug.DataType
	Vals           map[string]spVal
}

// Value fields of the Sparkplug B Metric message (sparkplug_b.proto).
const (
	spIntValue    = 10
	spLongValue   = 11
	spFloatValue  = 12
	spDoubleValue = 13
	spBoolValue   = 14
	spStringValue = 15
)

func spValueOf(m sparkplug.Metric, dt sparkplug.DataType) spVal {
	v := spVal{Null: m.IsNull, Quality: -1}
	if q, ok := m.Properties[sparkplug.QualityKey]; ok {
		v.Quality = int64(int32(q.Int))
	}
	if m.IsNull {
		return v
	}
	switch m.Value {
	case spIntValue:
		switch dt {
		case sparkplug.TypeInt8, sparkplug.TypeInt16, sparkplug.TypeInt32:
			v.V = float64(int32(m.Int))
		default:
			v.V = float64(m.Int)
		}
	case spLongValue:
		if dt == sparkplug.TypeInt64 {
			v.V = float64(int64(m.Long))
		} else {
			v.V = float64(m.Long)
		}
	case spFloatValue:
		v.V = float64(m.Float)
	case spDoubleValue:
		v.V = m.Double
	case spBoolValue:
		v.V = m.Bool
	case spStringValue:
		v.V = m.String
	default:
		v.V = fmt.Sprintf("<value field %d>", m.Value)
	}
	return v
}

// spView replays msgs as a host application would: births define a
// device's metrics and aliases, DATA updates values by alias, DEATH marks
// it offline (keeping the last values).
func spView(msgs []spMsg) map[string]*spDevice {
	devs := map[string]*spDevice{}
	for _, m := range msgs {
		if m.Device == "" || m.Err != nil {
			continue
		}
		d := devs[m.Device]
		if d == nil {
			d = &spDevice{alias: map[uint64]string{}, types: map[string]sparkplug.DataType{}, Vals: map[string]spVal{}}
			devs[m.Device] = d
		}
		switch m.Kind {
		case "DBIRTH":
			d.Births++
			d.Online = true
			clear(d.alias)
			clear(d.Vals)
			for _, mt := range m.P.Metrics {
				d.alias[mt.Alias] = mt.Name
				d.types[mt.Name] = mt.Datatype
				d.Vals[mt.Name] = spValueOf(mt, mt.Datatype)
			}
		case "DDATA":
			for _, mt := range m.P.Metrics {
				name := mt.Name
				if !mt.HasName {
					name = d.alias[mt.Alias]
				}
				dt := d.types[name]
				if mt.HasDatatype {
					dt = mt.Datatype
				}
				d.Vals[name] = spValueOf(mt, dt)
			}
		case "DDEATH":
			d.Deaths++
			d.Online = false
		}
	}
	return devs
}

// spValueNow is a metric's value in the host's view now; false while the
// device is offline.
func spValueNow(r *spRecorder, device, metric string) (spVal, bool) {
	d := spView(r.snapshot())[device]
	if d == nil || !d.Online {
		return spVal{}, false
	}
	v, ok := d.Vals[metric]
	return v, ok
}

func spValueIs(r *spRecorder, device, metric string, want any) func() bool {
	return func() bool {
		v, ok := spValueNow(r, device, metric)
		return ok && !v.Null && v.Quality == -1 && spEqual(v.V, want)
	}
}

func spEqual(got, want any) bool {
	if g, ok := got.(float64); ok {
		w, ok := want.(float64)
		return ok && math.Abs(g-w) < 1e-9
	}
	return got == want
}

// checkSparkplugSession checks what the specification says of a whole
// session as the host saw it: NBIRTH first with seq 0, the connection's bdSeq and
// Node Control/Rebirth; one seq counter that every message but NDEATH
// carries, +1 per message, 255 wrapping to 0; a device's DBIRTH before
// any DDATA or DDEATH of it, no DDATA of a dead device; births with name,
// alias, datatype and a value (or is_null) per metric; DATA by alias only,
// aliases unique in the node.
func checkSparkplugSession(t *testing.T, msgs []spMsg, bdSeq uint64) {
	t.Helper()
	if len(msgs) == 0 {
		t.Fatal("no Sparkplug messages")
	}
	born := map[string]bool{}
	aliasOwner := map[uint64]string{} // alias -> device/metric, from the latest births
	aliases := map[string]map[uint64]bool{}
	var prev uint64
	for i, m := range msgs {
		at := fmt.Sprintf("message %d (%s)", i, m.Topic)
		if m.Err != nil {
			t.Errorf("%s: %v", at, m.Err)
			continue
		}
		if m.Group != spGroup || m.Edge != spEdge {
			t.Errorf("%s: group/edge node %s/%s, want %s/%s", at, m.Group, m.Edge, spGroup, spEdge)
		}
		if i == 0 && m.Kind != "NBIRTH" {
			t.Errorf("%s: the first message of the session is %s, want NBIRTH", at, m.Kind)
		}
		switch {
		case m.Kind == "NDEATH":
			if m.P.HasSeq {
				t.Errorf("%s: NDEATH carries seq %d", at, m.P.Seq)
			}
		case !m.P.HasSeq:
			t.Errorf("%s: no seq", at)
		case m.Kind == "NBIRTH":
			if m.P.Seq != 0 {
				t.Errorf("%s: NBIRTH seq %d, want 0", at, m.P.Seq)
			}
			prev = 0
		default:
			if want := (prev + 1) % 256; m.P.Seq != want {
				t.Errorf("%s: seq %d, want %d (previous + 1)", at, m.P.Seq, want)
			}
			prev = m.P.Seq
		}
		if m.Kind != "NDEATH" && !m.P.HasTimestamp {
			t.Errorf("%s: no payload timestamp", at)
		}
		switch m.Kind {
		case "NBIRTH":
			clear(born)
			clear(aliasOwner)
			clear(aliases)
			checkNBirth(t, at, m.P, bdSeq)
		case "DBIRTH":
			if born[m.Device] {
				t.Errorf("%s: DBIRTH of a device that is born already (no DDEATH or NBIRTH between)", at)
			}
			born[m.Device] = true
			for a, owner := range aliasOwner {
				if strings.HasPrefix(owner, m.Device+"/") {
					delete(aliasOwner, a)
				}
			}
			aliases[m.Device] = map[uint64]bool{}
			for _, mt := range m.P.Metrics {
				if !mt.HasName || !mt.HasAlias || !mt.HasDatatype {
					t.Errorf("%s: birth metric %q without name, alias or datatype: %+v", at, mt.Name, mt)
				}
				if !mt.IsNull && mt.Value == 0 {
					t.Errorf("%s: birth metric %q has neither a value nor is_null", at, mt.Name)
				}
				if o, dup := aliasOwner[mt.Alias]; dup {
					t.Errorf("%s: alias %d of %s is %s's too", at, mt.Alias, mt.Name, o)
				}
				aliasOwner[mt.Alias] = m.Device + "/" + mt.Name
				aliases[m.Device][mt.Alias] = true
			}
		case "DDATA":
			if !born[m.Device] {
				t.Errorf("%s: DDATA of a device without a DBIRTH since its last death", at)
			}
			if len(m.P.Metrics) == 0 {
				t.Errorf("%s: DDATA without metrics", at)
			}
			for _, mt := range m.P.Metrics {
				if mt.HasName || !mt.HasAlias || !aliases[m.Device][mt.Alias] {
					t.Errorf("%s: data metric not by a known alias of the device: name %q alias %d (%v)", at, mt.Name, mt.Alias, mt.HasAlias)
				}
				if !mt.HasTimestamp {
					t.Errorf("%s: data metric alias %d without timestamp", at, mt.Alias)
				}
				if !mt.IsNull && mt.Value == 0 {
					t.Errorf("%s: data metric alias %d has neither a value nor is_null", at, mt.Alias)
				}
			}
		case "DDEATH":
			if !born[m.Device] {
				t.Errorf("%s: DDEATH of a device that is not born", at)
			}
			born[m.Device] = false
		case "NDEATH":
			clear(born)
		}
	}
}

func checkNBirth(t *testing.T, at string, p sparkplug.Payload, bdSeq uint64) {
	t.Helper()
	var bd, rebirth bool
	for _, mt := range p.Metrics {
		switch mt.Name {
		case sparkplug.MetricBdSeq:
			bd = true
			if mt.Datatype != sparkplug.TypeInt64 || mt.Value != spLongValue || mt.Long != bdSeq {
				t.Errorf("%s: bdSeq %+v, want Int64 %d (the connection's, as in its Will)", at, mt, bdSeq)
			}
		case sparkplug.MetricRebirth:
			rebirth = true
			if mt.Datatype != sparkplug.TypeBoolean || mt.Value != spBoolValue || mt.Bool {
				t.Errorf("%s: %s %+v, want Boolean false", at, sparkplug.MetricRebirth, mt)
			}
			if mt.HasAlias {
				t.Errorf("%s: %s has an alias", at, sparkplug.MetricRebirth)
			}
		}
	}
	if !bd || !rebirth {
		t.Errorf("%s: NBIRTH lacks bdSeq or %s: %+v", at, sparkplug.MetricRebirth, p.Metrics)
	}
}

// spNth returns the index of the n-th (from 1) message of kind for device,
// or -1.
func spNth(msgs []spMsg, kind, device string, n int) int {
	for i, m := range msgs {
		if m.Kind == kind && m.Device == device {
			if n--; n == 0 {
				return i
			}
		}
	}
	return -1
}

func spCount(msgs []spMsg, kind, device string) int {
	n := 0
	for _, m := range msgs {
		if m.Kind == kind && m.Device == device {
			n++
		}
	}
	return n
}

// checkBirthValues checks a DBIRTH: every tag of the pump type is a metric
// named by its path in the asset, with the datatype of the tag and the
// given value, GOOD.
func checkBirthValues(t *testing.T, what string, p sparkplug.Payload, want map[string]any) {
	t.Helper()
	types := map[string]sparkplug.DataType{
		"flow": sparkplug.TypeDouble, "pressure": sparkplug.TypeInt16, "running": sparkplug.TypeBoolean,
		"counters/good": sparkplug.TypeUInt32, "per_hour": sparkplug.TypeDouble,
	}
	var names []string
	for _, mt := range p.Metrics {
		names = append(names, mt.Name)
		if mt.Datatype != types[mt.Name] {
			t.Errorf("%s: metric %s has datatype %v, want %v", what, mt.Name, mt.Datatype, types[mt.Name])
		}
		v := spValueOf(mt, mt.Datatype)
		if v.Null || v.Quality != -1 || !spEqual(v.V, want[mt.Name]) {
			t.Errorf("%s: metric %s = %+v, want %v GOOD", what, mt.Name, v, want[mt.Name])
		}
	}
	slices.Sort(names)
	if want := []string{"counters/good", "flow", "per_hour", "pressure", "running"}; !slices.Equal(names, want) {
		t.Errorf("%s: metrics %q, want %q", what, names, want)
	}
}

// A PLC going away makes its device die (DDEATH, after its values were sent
// BAD) and nothing more of it is sent while the other device goes on; when
// the PLC is back the device is born again with its current values and its
// DDATA resumes. One seq counter runs through all of it. This is the path
// connectors.Supervisor.OnState -> Fanout.SourceState -> Sparkplug sink,
// against a real Modbus server and the embedded broker.
func TestSparkplugPLCOutageDeathAndBirth(t *testing.T) {
	plc1 := listenPLC(t)
	plc2 := listenPLC(t)
	// flow 12.3, pressure -12 (int16), running (bit 0), counters/good 70000
	// (uint32 over registers 4-5, high word first).
	plc1.SetHolding(1, 0, 123, uint16(0xFFF4), 1, 0, 70000>>16, 70000&0xFFFF)
	plc2.SetHolding(1, 0, 456)
	g := startSparkplugGateway(t, spPumpModel, map[string]string{"plc1": plc1.URL(), "plc2": plc2.URL()})

	// Both PLCs read (the JSON UNS, on the same broker, says so) before the
	// host comes online: the births then carry every value.
	uns := subscribe(t, g.BrokerAddr(), "acme/#")
	const p1, p2 = "acme/plant/water/line1/pump1/", "acme/plant/water/line1/pump2/"
	waitFor(t, 5*time.Second, "pump1 read", func() bool { u, ok := uns.value(p1 + "per_hour"); return ok && u.Value == 24.6 })
	waitFor(t, 5*time.Second, "pump2 read", func() bool { u, ok := uns.value(p2 + "per_hour"); return ok && u.Value == 91.2 })

	host := recordSparkplug(t, g.BrokerAddr())
	host.hostOnline(t)
	waitFor(t, 5*time.Second, "DBIRTH of both pumps", func() bool {
		v := spView(host.snapshot())
		return v[spPump1] != nil && v[spPump1].Online && v[spPump2] != nil && v[spPump2].Online
	})
	msgs := host.snapshot()
	if msgs[0].Kind != "NBIRTH" || msgs[0].Device != "" {
		t.Fatalf("first message %s, want the NBIRTH", msgs[0].Topic)
	}
	b1, b2 := spNth(msgs, "DBIRTH", spPump1, 1), spNth(msgs, "DBIRTH", spPump2, 1)
	if b1 < 1 || b2 < 1 {
		t.Fatalf("DBIRTHs at %d and %d, want after the NBIRTH", b1, b2)
	}
	checkBirthValues(t, "first DBIRTH of pump1", msgs[b1].P, map[string]any{
		"flow": 12.3, "pressure": -12.0, "running": true, "counters/good": 70000.0, "per_hour": 24.6})
	checkBirthValues(t, "first DBIRTH of pump2", msgs[b2].P, map[string]any{
		"flow": 45.6, "pressure": 0.0, "running": false, "counters/good": 0.0, "per_hour": 91.2})

	// A change is a DDATA (by alias) with the changed metrics.
	plc1.SetHolding(1, 0, 150)
	waitFor(t, 5*time.Second, "pump1 flow 15 by DDATA", spValueIs(host, spPump1, "flow", 15.0))
	waitFor(t, 5*time.Second, "pump1 per_hour 30 by DDATA", spValueIs(host, spPump1, "per_hour", 30.0))
	msgs = host.snapshot()
	if i := spNth(msgs, "DDATA", spPump1, 1); i < b1 {
		t.Errorf("first DDATA of pump1 at %d, DBIRTH at %d", i, b1)
	} else {
		alias := map[uint64]string{}
		for _, mt := range msgs[b1].P.Metrics {
			alias[mt.Alias] = mt.Name
		}
		var changed []string
		for _, mt := range msgs[i].P.Metrics {
			changed = append(changed, alias[mt.Alias])
		}
		slices.Sort(changed)
		if !slices.Equal(changed, []string{"flow", "per_hour"}) {
			t.Errorf("DDATA for a new flow carries %q, want only the changed flow and per_hour", changed)
		}
	}

	// PLC 1 goes away: its values are sent BAD, then its device dies.
	addr := plc1.Addr()
	plc1.Close()
	waitFor(t, 5*time.Second, "DDEATH of pump1", func() bool { return spCount(host.snapshot(), "DDEATH", spPump1) == 1 })
	msgs = host.snapshot()
	d1 := spNth(msgs, "DDEATH", spPump1, 1)
	atDeath := spView(msgs[:d1+1])[spPump1]
	for name, v := range atDeath.Vals {
		if !v.Null || v.Quality != 0 {
			t.Errorf("pump1 %s before its DDEATH = %+v, want is_null with Quality 0 (BAD)", name, v)
		}
	}
	if len(msgs[d1].P.Metrics) != 0 {
		t.Errorf("DDEATH carries metrics: %+v", msgs[d1].P.Metrics)
	}

	// The other PLC goes on, and the dead one stays dead through several
	// failed reconnects (each one a source-down event).
	plc2.SetHolding(1, 0, 789)
	waitFor(t, 5*time.Second, "pump2 flow 78.9 while pump1 is down", spValueIs(host, spPump2, "flow", 78.9))
	waitFor(t, 5*time.Second, "3 failed reconnects of plc1", func() bool {
		for _, s := range g.Stats().Sources {
			if s.Name == "plc1" {
				return s.Failures >= 4 // the session that broke, then 3 reconnects
			}
		}
		return false
	})
	if c := g.sparkplug.Counters(); c.DeviceDeath != 1 {
		t.Errorf("DeviceDeath counter = %d, want 1", c.DeviceDeath)
	}

	// PLC 1 is back (a new one on the same port, its registers all 0): the
	// device is born again with the values read now, then DDATA resumes.
	plc1b, err := sim.Listen(addr)
	if err != nil {
		t.Fatalf("restart PLC on %s: %v", addr, err)
	}
	defer plc1b.Close()
	waitFor(t, 5*time.Second, "second DBIRTH of pump1", func() bool { return spCount(host.snapshot(), "DBIRTH", spPump1) == 2 })
	msgs = host.snapshot()
	rb := spNth(msgs, "DBIRTH", spPump1, 2)
	checkBirthValues(t, "DBIRTH of pump1 after the outage", msgs[rb].P, map[string]any{
		"flow": 0.0, "pressure": 0.0, "running": false, "counters/good": 0.0, "per_hour": 0.0})
	plc1b.SetHolding(1, 0, 321)
	waitFor(t, 5*time.Second, "pump1 DDATA after its rebirth", spValueIs(host, spPump1, "flow", 32.1))

	msgs = host.snapshot()
	checkSparkplugSession(t, msgs, g.sparkplug.Counters().BdSeq)
	if n := spCount(msgs, "NBIRTH", ""); n != 1 {
		t.Errorf("%d NBIRTHs, want 1 (no reconnect or rebirth in this test)", n)
	}
	if n := spCount(msgs, "DDEATH", spPump1); n != 1 {
		t.Errorf("%d DDEATHs of pump1, want 1", n)
	}
	if n, m := spCount(msgs, "DBIRTH", spPump2), spCount(msgs, "DDEATH", spPump2); n != 1 || m != 0 {
		t.Errorf("pump2: %d DBIRTHs and %d DDEATHs, want 1 and 0: its PLC never went away", n, m)
	}
	// pump2's DDATA went on between pump1's death and its birth.
	between := 0
	for _, m := range msgs[d1:rb] {
		if m.Kind == "DDATA" && m.Device == spPump2 {
			between++
		}
	}
	if between == 0 {
		t.Error("no DDATA of pump2 while pump1 was dead")
	}
	// Nothing waited in a queue while the host could not be told: no
	// value is history.
	for i, m := range msgs {
		for _, mt := range m.P.Metrics {
			if mt.IsHistorical {
				t.Errorf("message %d (%s): metric alias %d is_historical", i, m.Topic, mt.Alias)
			}
		}
	}
	if v := spView(msgs)[spPump1]; v.Deaths != 1 || v.Births != 2 || !v.Online {
		t.Errorf("pump1 at the end: %+v", v)
	}
}

// Each mistake in sinks.sparkplug is reported at its key (or at
// sinks.sparkplug for the keys without a position of their own), all at
// once.
func TestConfigSparkplugErrors(t *testing.T) {
	text := `id: gw
models: [m]
sinks:
  sparkplug:
    url: http://broker
    group_id: plant/1
    edge_node_id: "edge+1"
    primary_host: "scada#"
    keepalive: -1s
    tls: {cert_file: c.pem}
`
	wantConfigErrors(t, text,
		`gw.yaml:5:10: sinks.sparkplug.url "http://broker": scheme must be mqtt:// or mqtts://`,
		`gw.yaml:6:15: sinks.sparkplug.group_id "plant/1" contains '+', '/' or '#'`,
		`gw.yaml:7:19: sinks.sparkplug.edge_node_id "edge+1" contains '+', '/' or '#'`,
		`gw.yaml:8:19: sinks.sparkplug.primary_host "scada#" contains '+', '/' or '#'`,
		`gw.yaml:5:5: sinks.sparkplug.keepalive -1s: use 1s to 18h12m15s (65535 s), or leave it out for the default`,
		`gw.yaml:5:5: sinks.sparkplug.tls: cert_file and key_file go together`,
		`gw.yaml:5:5: sinks.sparkplug.tls: stat c.pem: no such file or directory`,
	)

	for _, c := range []struct{ sp, want string }{
		{`{url: "mqtt://"}`, `gw.yaml:4:20: sinks.sparkplug.url "mqtt://": missing host`},
		{`{url: "mqtt://[::1"}`, `gw.yaml:4:20: sinks.sparkplug.url "mqtt://[::1": parse "mqtt://[::1": missing ']' in host`},
		{`{url: "tcp://broker:1883"}`, `gw.yaml:4:20: sinks.sparkplug.url "tcp://broker:1883": scheme must be mqtt:// or mqtts://`},
		{`{group_id: ""}`, `gw.yaml:4:25: sinks.sparkplug.group_id "" is empty`},
		{`{group_id: "a#b"}`, `gw.yaml:4:25: sinks.sparkplug.group_id "a#b" contains '+', '/' or '#'`},
		{`{edge_node_id: "+"}`, `gw.yaml:4:29: sinks.sparkplug.edge_node_id "+" contains '+', '/' or '#'`},
		{`{edge_node_id: ""}`, `gw.yaml:4:29: sinks.sparkplug.edge_node_id "" is empty`},
		{`{groupid: munich}`, `gw.yaml:4:15: unknown key "groupid" (did you mean "group_id"?)`},
		{`{group_id: munich, instead_of_jsno: true}`, `gw.yaml:4:33: unknown key "instead_of_jsno" (did you mean "instead_of_json"?)`},
		{`{aliases: maybe}`, `gw.yaml:4:24: expected true or false, got "maybe"`},
		{`{keepalive: soon}`, `gw.yaml:4:26:`},
		{`{keepalive: 20h}`, `gw.yaml:4:14: sinks.sparkplug.keepalive 20h0m0s: use 1s to 18h12m15s`},
		{`{keepalive: 500ms}`, `gw.yaml:4:14: sinks.sparkplug.keepalive 500ms: use 1s to 18h12m15s`},
		{`{url: "mqtt://broker:1883", tls: {ca_file: /etc/hostname}}`, `gw.yaml:4:20: sinks.sparkplug.url "mqtt://broker:1883": tls files need an mqtts:// url`},
	} {
		text := "id: gw\nmodels: [m]\nsinks:\n  sparkplug: " + c.sp + "\n"
		_, err := ParseConfig("gw.yaml", []byte(text), env(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sparkplug: %s\n got: %v\nwant: %s", c.sp, err, c.want)
		}
	}
}

// sinks.sparkplug: what the config decides by itself (the edge node id,
// the embedded broker, JSON on MQTT or not, paths).
func TestConfigSparkplugDefaults(t *testing.T) {
	parse := func(t *testing.T, sinks string) *Config {
		t.Helper()
		cfg, err := ParseConfig("/srv/gw/gw.yaml", []byte("id: edge-01\nmodels: [m]\nsinks:\n"+sinks), env(map[string]string{"SPB_PASSWORD": "s3cret"}))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	t.Run("empty", func(t *testing.T) {
		cfg := parse(t, "  sparkplug: {}\n")
		sp := cfg.Sinks.Sparkplug
		if sp.EdgeNodeID.V != "edge-01" {
			t.Errorf("edge_node_id = %q, want the gateway id", sp.EdgeNodeID.V)
		}
		// The site is known only with the model: the gateway fills it
		// in (TestSparkplugGatewayDefaults).
		if sp.GroupID.V != "" || sp.URL.V != "" || sp.Aliases != nil || sp.InsteadOfJSON {
			t.Errorf("sparkplug = %+v", sp)
		}
		if !cfg.JSONOverMQTT() || !cfg.EmbeddedBroker() || cfg.Broker == nil || cfg.Broker.Listen.V != DefaultBrokerListen {
			t.Errorf("JSON %v, embedded broker %v %+v; want the JSON UNS and Sparkplug on the embedded broker",
				cfg.JSONOverMQTT(), cfg.EmbeddedBroker(), cfg.Broker)
		}
	})
	t.Run("every key", func(t *testing.T) {
		cfg := parse(t, `  sparkplug:
    url: mqtts://scada-broker:8883
    group_id: "Munich Plant"
    edge_node_id: edge.01
    primary_host: scada1
    aliases: false
    instead_of_json: true
    client_id: spb-edge-01
    username: spb
    password: ${SPB_PASSWORD}
    tls: {insecure_skip_verify: true}
    keepalive: 20s
`)
		sp := cfg.Sinks.Sparkplug
		if sp.URL.V != "mqtts://scada-broker:8883" || sp.GroupID.V != "Munich Plant" || sp.EdgeNodeID.V != "edge.01" ||
			sp.PrimaryHost.V != "scada1" || sp.Aliases == nil || *sp.Aliases || !sp.InsteadOfJSON || sp.ClientID != "spb-edge-01" ||
			sp.Username != "spb" || sp.Password != "s3cret" || !sp.TLS.InsecureSkipVerify || sp.KeepAlive != 20*time.Second {
			t.Errorf("sparkplug = %+v", sp)
		}
		// Sparkplug only, on its own broker: no JSON on MQTT, nothing for
		// an embedded broker to do.
		if cfg.JSONOverMQTT() || cfg.EmbeddedBroker() || cfg.Broker != nil {
			t.Errorf("JSON %v, embedded broker %v %+v; want neither", cfg.JSONOverMQTT(), cfg.EmbeddedBroker(), cfg.Broker)
		}
	})
	t.Run("instead_of_json without a url", func(t *testing.T) {
		// Sparkplug only, on the embedded broker.
		cfg := parse(t, "  sparkplug: {instead_of_json: true}\n")
		if cfg.JSONOverMQTT() || !cfg.EmbeddedBroker() || cfg.Broker == nil {
			t.Errorf("JSON %v, embedded broker %v %+v", cfg.JSONOverMQTT(), cfg.EmbeddedBroker(), cfg.Broker)
		}
	})
	t.Run("own url, JSON too", func(t *testing.T) {
		// The JSON UNS still needs a broker: the embedded one.
		cfg := parse(t, "  sparkplug: {url: \"mqtt://scada:1883\"}\n")
		if !cfg.JSONOverMQTT() || !cfg.EmbeddedBroker() || cfg.Broker == nil {
			t.Errorf("JSON %v, embedded broker %v %+v", cfg.JSONOverMQTT(), cfg.EmbeddedBroker(), cfg.Broker)
		}
	})
	t.Run("instead_of_json with sinks.mqtt", func(t *testing.T) {
		cfg := parse(t, "  mqtt: {url: \"mqtt://uns:1883\"}\n  sparkplug: {instead_of_json: true}\n")
		if cfg.JSONOverMQTT() || cfg.EmbeddedBroker() || cfg.Broker != nil {
			t.Errorf("JSON %v, embedded broker %v %+v", cfg.JSONOverMQTT(), cfg.EmbeddedBroker(), cfg.Broker)
		}
	})
	t.Run("tls paths", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{"ca.pem", "c.pem", "k.pem"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		text := "id: gw\nmodels: [m]\nsinks:\n  sparkplug: {url: \"mqtts://b\", tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}}\n"
		cfg, err := ParseConfig(filepath.Join(dir, "gw.yaml"), []byte(text), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		if tls := cfg.Sinks.Sparkplug.TLS; tls.CAFile != filepath.Join(dir, "ca.pem") || tls.CertFile != filepath.Join(dir, "c.pem") ||
			tls.KeyFile != filepath.Join(dir, "k.pem") {
			t.Errorf("tls files not resolved against the config's folder: %+v", tls)
		}
	})
}

// The defaults the gateway fills in with the model: the group is the site,
// the broker is sinks.mqtt's or the embedded one, and instead_of_json
// leaves the JSON sink out.
func TestSparkplugGatewayDefaults(t *testing.T) {
	newGateway := func(t *testing.T, extra string) (*Config, *Gateway) {
		t.Helper()
		text := "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:1\"}\n  plc2: {url: \"tcp://127.0.0.1:1\"}\n" + extra
		cfg, g := buildGateway(t, text, spPumpModel, nil)
		t.Cleanup(func() { _ = g.fanout.Close() })
		return cfg, g
	}
	sinks := func(g *Gateway) []string {
		var names []string
		for _, s := range g.fanout.Stats() {
			names = append(names, s.Name)
		}
		return names
	}

	t.Run("embedded broker", func(t *testing.T) {
		cfg, g := newGateway(t, "sinks:\n  sparkplug: {}\n")
		if g.spPrefix != "acme/plant" || defaultGroupID(g.spPrefix, cfg.ID) != "plant" {
			t.Errorf("device prefix %q, group %q; want acme/plant and the site, plant", g.spPrefix, defaultGroupID(g.spPrefix, cfg.ID))
		}
		// Made in Run, once the embedded broker's address is known
		// (TestSparkplugPLCOutageDeathAndBirth runs it).
		if u := g.sparkplugURL(); u != "" || g.sparkplug != nil {
			t.Errorf("url %q, sink %v; want the embedded broker's, later", u, g.sparkplug)
		}
	})
	t.Run("presence", func(t *testing.T) {
		cfg, g := newGateway(t, "presence: acme/munich\nsinks:\n  sparkplug: {}\n")
		if got := defaultGroupID(g.spPrefix, cfg.ID); got != "munich" {
			t.Errorf("group %q, want munich (the last level of presence)", got)
		}
		if got := defaultGroupID("", "gw"); got != "gw" {
			t.Errorf("group without a prefix %q, want the gateway id", got)
		}
	})
	t.Run("sinks.mqtt's broker", func(t *testing.T) {
		_, g := newGateway(t, "sinks:\n  mqtt: {url: \"mqtt://127.0.0.1:1\"}\n  sparkplug: {}\n")
		if u := g.sparkplugURL(); u != "mqtt://127.0.0.1:1" || g.sparkplug == nil {
			t.Errorf("url %q, sink %v; want sinks.mqtt's broker", u, g.sparkplug)
		}
		if got := sinks(g); !slices.Equal(got, []string{"mqtt", "sparkplug"}) {
			t.Errorf("sinks %q, want mqtt and sparkplug", got)
		}
	})
	t.Run("own url", func(t *testing.T) {
		_, g := newGateway(t, "sinks:\n  mqtt: {url: \"mqtt://127.0.0.1:1\"}\n  sparkplug: {url: \"mqtt://127.0.0.1:2\"}\n")
		if u := g.sparkplugURL(); u != "mqtt://127.0.0.1:2" {
			t.Errorf("url %q, want its own", u)
		}
	})
	t.Run("instead_of_json", func(t *testing.T) {
		_, g := newGateway(t, "sinks:\n  mqtt: {url: \"mqtt://127.0.0.1:1\"}\n  sparkplug: {instead_of_json: true}\n")
		if u := g.sparkplugURL(); u != "mqtt://127.0.0.1:1" {
			t.Errorf("url %q, want sinks.mqtt's broker", u)
		}
		if got := sinks(g); !slices.Equal(got, []string{"sparkplug"}) {
			t.Errorf("sinks %q, want sparkplug only (no JSON over MQTT)", got)
		}
	})
}

// A section key without a value turns it on with its defaults; an empty
// primary_host (say from ${SCADA_HOST:-}) means none; a broker section
// that would not run is an error, not ignored.
func TestConfigSparkplugBareKeyEmptyHostAndUnusedBroker(t *testing.T) {
	cfg, err := ParseConfig("gw.yaml", []byte("id: gw\nmodels: [m]\nsinks:\n  sparkplug:\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if sp := cfg.Sinks.Sparkplug; sp == nil || sp.EdgeNodeID.V != "gw" || !cfg.EmbeddedBroker() {
		t.Fatalf("bare sparkplug: got %+v, embedded broker %v; want the sink on with defaults", sp, cfg.EmbeddedBroker())
	}
	cfg, err = ParseConfig("gw.yaml", []byte("id: gw\nmodels: [m]\nsinks:\n  sparkplug: {primary_host: \"${SCADA:-}\"}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sinks.Sparkplug.PrimaryHost.V != "" {
		t.Fatalf("primary_host %q", cfg.Sinks.Sparkplug.PrimaryHost.V)
	}
	_, err = ParseConfig("gw.yaml", []byte("id: gw\nmodels: [m]\nsinks:\n  sparkplug: {url: \"mqtt://scada:1883\", instead_of_json: true}\nbroker:\n  listen: 127.0.0.1:1883\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:6:3: broker: the embedded broker runs only when no sink names an MQTT broker") {
		t.Fatalf("unused broker section: %v", err)
	}
}
