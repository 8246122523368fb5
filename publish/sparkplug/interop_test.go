package sparkplug

// Interop test against the Eclipse Tahu JavaScript decoder (npm
// sparkplug-payload 1.0.3, its raw protobuf module), an independent
// implementation of the Sparkplug B payload: every message type the edge
// node publishes is decoded by Tahu and must carry the fields and values
// SPARKPLUG.md asks for, and Tahu and Decode must agree on every field both
// read. It runs when UNSGATE_INTEROP=1 (CI sets it after
// .ci/interop-sparkplug.sh installed node and testdata/interop/sparkplug's
// node_modules); then a missing node or node_modules is a failure, not a
// skip. The decoder script is testdata/interop/sparkplug/decode.js.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// tahuDir holds decode.js and its package-lock.json.
const tahuDir = "../../testdata/interop/sparkplug"

// tahuVersion is the sparkplug-payload version package-lock.json pins.
const tahuVersion = "1.0.3"

// tahuValue is a metric value as Tahu's raw module shows it with
// {longs: String, oneofs: true}: the value field's name and its JSON text
// (integers exact, 64-bit ones as decimal strings).
type tahuValue struct {
	field string
	text  string
	// signed, when hasSigned, is what the unsigned wire value means as a
	// signed integer of the field's width (int_value is 32-bit two's
	// complement, long_value 64-bit).
	signed    int64
	hasSigned bool
}

func tahuInt(text string) tahuValue { return tahuValue{field: "intValue", text: text} }
func tahuSignedInt(text string, v int64) tahuValue {
	return tahuValue{field: "intValue", text: text, signed: v, hasSigned: true}
}
func tahuLong(text string) tahuValue { return tahuValue{field: "longValue", text: text} }
func tahuSignedLong(text string, v int64) tahuValue {
	return tahuValue{field: "longValue", text: text, signed: v, hasSigned: true}
}
func tahuFloat(text string) tahuValue  { return tahuValue{field: "floatValue", text: text} }
func tahuDouble(text string) tahuValue { return tahuValue{field: "doubleValue", text: text} }
func tahuBool(b bool) tahuValue        { return tahuValue{field: "booleanValue", text: strconv.FormatBool(b)} }
func tahuString(s string) tahuValue    { return tahuValue{field: "stringValue", text: s} }

// tahuTag is one metric of the test: its tag, the datatype number the
// births must give it, its birth value and its DDATA value, each with what
// Tahu must show. The expected texts are literals on purpose: they are the
// wire values SPARKPLUG.md specifies, not something computed by the code
// under test.
type tahuTag struct {
	asset, name, source string
	kind                model.Kind
	width               uint8
	dt                  DataType
	birth, data         model.Value
	birthWant, dataWant tahuValue
}

const (
	tahuFiller = "acme/munich/bottling/line1/filler"
	tahuCapper = "acme/munich/bottling/line1/capper"
	tahuMixer  = "acme/munich/bottling/line1/mixer"
)

// tahuTable covers every scalar datatype the encoder sends, with negative
// and boundary values. Its first seven tags are testTags().
var tahuTable = []tahuTag{
	{tahuFiller, "speed", "plc1", model.KindFloat, 0, TypeDouble,
		model.FloatValue(120.5), model.FloatValue(121.25), tahuDouble("120.5"), tahuDouble("121.25")},
	{tahuFiller, "counters/good", "plc1", model.KindInt, 16, TypeInt16,
		model.IntValue(-12), model.IntValue(math.MinInt16), tahuSignedInt("4294967284", -12), tahuSignedInt("4294934528", math.MinInt16)},
	{tahuFiller, "state", "plc1", model.KindString, 0, TypeString,
		model.StringValue("running"), model.StringValue("gestört – Störung 42"), tahuString("running"), tahuString("gestört – Störung 42")},
	{tahuFiller, "alarm", "plc1", model.KindBool, 0, TypeBoolean,
		model.BoolValue(true), model.BoolValue(false), tahuBool(true), tahuBool(false)},
	{tahuCapper, "torque", "plc1", model.KindFloat, 32, TypeFloat,
		model.Float32Value(2.5), model.Float32Value(-1.5), tahuFloat("2.5"), tahuFloat("-1.5")},
	{tahuCapper, "total", "plc1", model.KindUint, 32, TypeUInt32,
		model.UintValue(4000000000), model.UintValue(math.MaxUint32), tahuLong("4000000000"), tahuLong("4294967295")},
	{tahuMixer, "level", "plc2", model.KindInt, 8, TypeInt8,
		model.IntValue(-7), model.IntValue(math.MinInt8), tahuSignedInt("4294967289", -7), tahuSignedInt("4294967168", math.MinInt8)},
	{tahuFiller, "counters/reject", "plc1", model.KindInt, 32, TypeInt32,
		model.IntValue(-100000), model.IntValue(math.MinInt32), tahuSignedInt("4294867296", -100000), tahuSignedInt("2147483648", math.MinInt32)},
	{tahuCapper, "energy", "plc1", model.KindInt, 0, TypeInt64,
		model.IntValue(-5), model.IntValue(math.MinInt64), tahuSignedLong("18446744073709551611", -5), tahuSignedLong("9223372036854775808", math.MinInt64)},
	{tahuMixer, "rpm", "plc2", model.KindUint, 16, TypeUInt16,
		model.UintValue(math.MaxUint16), model.UintValue(0), tahuInt("65535"), tahuInt("0")},
	{tahuMixer, "mode", "plc2", model.KindUint, 8, TypeUInt8,
		model.UintValue(math.MaxUint8), model.UintValue(1), tahuInt("255"), tahuInt("1")},
	{tahuMixer, "batch", "plc2", model.KindUint, 0, TypeUInt64,
		model.UintValue(math.MaxUint64), model.UintValue(0), tahuLong("18446744073709551615"), tahuLong("0")},
}

// Indices into tahuTable of the tags the BAD, stale and history steps use.
const (
	tahuSpeed  = 0
	tahuGood   = 1
	tahuTorque = 4
	tahuLevel  = 6
	tahuReject = 7
)

func tahuTags() []*model.TagMeta {
	tags := make([]*model.TagMeta, len(tahuTable))
	for i, tt := range tahuTable {
		tags[i] = &model.TagMeta{Topic: tt.asset + "/" + tt.name, Asset: tt.asset, Name: tt.name, Source: tt.source,
			Datatype: tt.kind, Width: tt.width, Type: "T", Index: i}
	}
	return tags
}

// tahuDevice is the Sparkplug device id of an asset of the table.
func tahuDevice(asset string) string {
	return map[string]string{tahuFiller: devFiller, tahuCapper: devCapper, tahuMixer: devMixer}[asset]
}

// newTahuRig is newRig with tahuTable's tags and a state folder (bdSeq
// and aliases) that outlives the rig.
func newTahuRig(t *testing.T, b peer, opts publish.Options, stateDir string) *rig {
	t.Helper()
	return newRigWith(t, b, opts, tahuTags(), func(c *Config) { c.StateDir = stateDir })
}

// publishValues publishes one GOOD value (value(i)) of every tag whose
// source is in sources, all at time at, in one call.
func (r *rig) publishValues(at time.Time, value func(i int) model.Value, sources ...string) {
	var pts []model.Point
	for i, tag := range r.tags {
		if slices.Contains(sources, tag.Source) {
			pts = append(pts, model.Point{Meta: tag, Value: value(i), Quality: model.QualityGood, Time: at})
		}
	}
	r.f.Publish(pts)
}

func isTopic(topic string) func(rx) bool { return func(m rx) bool { return m.Topic == topic } }

// dataAt matches a DDATA of dev with a metric timestamped at.
func dataAt(dev string, at time.Time) func(rx) bool {
	ms := uint64(at.UnixMilli())
	return func(m rx) bool {
		if m.Topic != dtopic("DDATA", dev) {
			return false
		}
		for _, mt := range m.Payload.Metrics {
			if mt.HasTimestamp && mt.Timestamp == ms {
				return true
			}
		}
		return false
	}
}

// deathWith matches an NDEATH with bdSeq bd.
func deathWith(bd uint64) func(rx) bool {
	return func(m rx) bool {
		if m.Topic != topicNDEATH {
			return false
		}
		mt, ok := metricByName(m.Payload, MetricBdSeq)
		return ok && mt.Value == metricLongValue && mt.Long == bd
	}
}

func TestTahuDecodesEveryMessageType(t *testing.T) {
	if os.Getenv("UNSGATE_INTEROP") != "1" {
		t.Skip("interop test against the Eclipse Tahu decoder: set UNSGATE_INTEROP=1 (after .ci/interop-sparkplug.sh installed node and ran npm ci in testdata/interop/sparkplug)")
	}
	node := tahuNode(t)
	b := startBroker(t)
	h := newHost(t, b.Addr())
	stateDir := t.TempDir() // shared: the second rig is a restart, bdSeq goes on
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	birthValue := func(i int) model.Value { return tahuTable[i].birth }
	dataValue := func(i int) model.Value { return tahuTable[i].data }
	devices := []string{devFiller, devCapper, devMixer}

	// The bdSeq of the newest session that published its NBIRTH. The steps
	// below take bdSeq values from the NBIRTHs rather than assume one
	// connect per step: a connect that fails before its NBIRTH still uses
	// up a bdSeq, and bdSeq bookkeeping is the conformance tests' subject,
	// not this one's.
	newestBdSeq := func() uint64 {
		msgs := h.all()
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgType(msgs[i].Topic) == "NBIRTH" {
				if m, ok := metricByName(msgs[i].Payload, MetricBdSeq); ok {
					return m.Long
				}
			}
		}
		t.Fatal("no NBIRTH with a bdSeq")
		return 0
	}

	// First rig, memory queue: births, DDATA of every datatype, BAD,
	// stale, DDEATH, the Will, a reconnect, a clean stop.
	r := newTahuRig(t, b, publish.Options{}, stateDir)
	nb0 := h.waitFor(0, "NBIRTH", isType("NBIRTH"))
	r.up("plc1")
	r.up("plc2")
	r.publishValues(at(0), birthValue, "plc1", "plc2")
	birth := map[string]int{}
	for _, dev := range devices {
		birth[dev] = h.waitFor(nb0, "DBIRTH of "+dev, isTopic(dtopic("DBIRTH", dev)))
	}
	r.publishValues(at(1), dataValue, "plc1", "plc2")
	for _, dev := range devices {
		h.waitFor(nb0, "DDATA of "+dev+" with the new values", dataAt(dev, at(1)))
	}
	bad := func(i int, when time.Time) model.Point {
		return model.Point{Meta: r.tags[i], Value: model.Null(), Quality: model.QualityBad, Time: when}
	}
	stale := func(i int, v model.Value, when time.Time) model.Point {
		return model.Point{Meta: r.tags[i], Value: v, Quality: model.QualityGood, Stale: true, Time: when}
	}
	r.f.Publish([]model.Point{bad(tahuSpeed, at(2)), bad(tahuLevel, at(2))})
	h.waitFor(nb0, "DDATA of filler with BAD speed", dataAt(devFiller, at(2)))
	h.waitFor(nb0, "DDATA of mixer with BAD level", dataAt(devMixer, at(2)))
	r.f.Publish([]model.Point{stale(tahuTorque, model.Float32Value(3), at(3)), stale(tahuReject, model.IntValue(-1), at(3))})
	h.waitFor(nb0, "DDATA of capper with stale torque", dataAt(devCapper, at(3)))
	h.waitFor(nb0, "DDATA of filler with stale reject count", dataAt(devFiller, at(3)))

	mark := len(h.all())
	r.down("plc1")
	ddeath := map[string]int{}
	for _, dev := range []string{devFiller, devCapper} {
		ddeath[dev] = h.waitFor(mark, "DDEATH of "+dev, isTopic(dtopic("DDEATH", dev)))
	}
	bd := newestBdSeq()
	r.relay.setDown(true) // no DISCONNECT: the broker publishes the Will
	will0 := h.waitFor(mark, "NDEATH (the Will) with bdSeq "+itoa(bd), deathWith(bd))
	r.relay.setDown(false)
	nb1 := h.waitFor(will0, "NBIRTH after the reconnect", isType("NBIRTH"))
	rebornMixer := h.waitFor(nb1, "DBIRTH of mixer after the reconnect", isTopic(dtopic("DBIRTH", devMixer)))
	r.stop()
	bd = newestBdSeq()
	end1 := h.waitFor(rebornMixer, "NDEATH of the clean stop with bdSeq "+itoa(bd), deathWith(bd))

	// Second rig (a restart on the same state folder), durable queue:
	// values queued during a broker outage are sent after the new births,
	// with is_historical.
	r2 := newTahuRig(t, b, publish.Options{StoreDir: t.TempDir()}, stateDir)
	nb2 := h.waitFor(end1, "NBIRTH of the restarted node", isType("NBIRTH"))
	r2.up("plc1")
	r2.publishValues(at(0), birthValue, "plc1")
	h.waitFor(nb2, "DBIRTH of filler", isTopic(dtopic("DBIRTH", devFiller)))
	h.waitFor(nb2, "DBIRTH of capper", isTopic(dtopic("DBIRTH", devCapper)))
	bd = newestBdSeq()
	r2.relay.setDown(true)
	h.waitFor(nb2, "NDEATH (the Will) with bdSeq "+itoa(bd), deathWith(bd))
	speed, good := r2.tags[tahuSpeed], r2.tags[tahuGood]
	r2.f.Publish([]model.Point{
		{Meta: speed, Value: model.FloatValue(121), Quality: model.QualityGood, Time: at(11)},
		{Meta: good, Value: model.IntValue(-5), Quality: model.QualityGood, Time: at(11)},
		{Meta: speed, Value: model.FloatValue(122), Quality: model.QualityGood, Time: at(12)},
		{Meta: good, Value: model.IntValue(-6), Quality: model.QualityGood, Time: at(12)},
		{Meta: speed, Value: model.FloatValue(123), Quality: model.QualityGood, Time: at(13)},
	})
	r2.relay.setDown(false)
	nb3 := h.waitFor(nb2, "NBIRTH after the outage", func(m rx) bool {
		mt, ok := metricByName(m.Payload, MetricBdSeq)
		return msgType(m.Topic) == "NBIRTH" && ok && mt.Long > bd
	})
	reborn := h.waitFor(nb3, "DBIRTH of filler after the outage", isTopic(dtopic("DBIRTH", devFiller)))
	h.waitFor(reborn, "historical DDATA of filler (t+11s)", dataAt(devFiller, at(11)))
	h.waitFor(reborn, "historical DDATA of filler (t+12s)", dataAt(devFiller, at(12)))
	bd = newestBdSeq()
	r2.stop()
	h.waitFor(nb3, "NDEATH of the clean stop with bdSeq "+itoa(bd), deathWith(bd))

	msgs := h.all()
	tahu, malformed := decodeWithTahu(t, node, msgs)

	t.Run("decoders-agree", func(t *testing.T) {
		for i, m := range msgs {
			if m.Err != nil {
				t.Errorf("message %d %s: Decode: %v", i, m.Topic, m.Err)
				continue
			}
			for _, d := range diffPayload(m.Payload, tahu[i].Decoded) {
				t.Errorf("message %d %s: Tahu and Decode disagree: %s", i, m.Topic, d)
			}
		}
	})

	t.Run("seq-and-timestamps", func(t *testing.T) {
		// One seq counter per session: NBIRTH 0, then +1 for every DBIRTH,
		// DDATA, DDEATH; NDEATH carries none.
		seq := -1
		now := time.Now().UnixMilli()
		for i, m := range tahu {
			kind := msgType(m.Topic)
			s, hasSeq := m.Decoded["seq"].(string)
			ts, hasTs := m.Decoded["timestamp"].(string)
			if kind == "NDEATH" {
				if _, ok := m.Decoded["seq"]; ok {
					t.Errorf("message %d NDEATH has seq %v (tck-id-payloads-ndeath-seq: none)", i, m.Decoded["seq"])
				}
				continue
			}
			want := strconv.Itoa((seq + 1) % 256)
			if kind == "NBIRTH" {
				want = "0"
			}
			if !hasSeq || s != want {
				t.Errorf("message %d %s: Tahu seq %v, want %q", i, m.Topic, m.Decoded["seq"], want)
			}
			seq, _ = strconv.Atoi(s)
			if n, err := strconv.ParseInt(ts, 10, 64); !hasTs || err != nil || n < t0.UnixMilli() || n > now {
				t.Errorf("message %d %s: Tahu payload timestamp %v, want the publish time (UTC ms)", i, m.Topic, m.Decoded["timestamp"])
			}
		}
	})

	t.Run("NBIRTH", func(t *testing.T) {
		var bdSeqs []uint64
		for i, m := range tahu {
			if msgType(m.Topic) != "NBIRTH" {
				continue
			}
			if m.Topic != topicNBIRTH {
				t.Errorf("message %d: NBIRTH on %s", i, m.Topic)
			}
			ms := tahuMetrics(m.Decoded)
			bd, ok := tahuMetricNamed(ms, MetricBdSeq)
			if !ok || fmt.Sprint(bd["datatype"]) != "4" || bd["value"] != "longValue" || bd["timestamp"] == nil {
				t.Errorf("message %d NBIRTH bdSeq metric %v, want Int64 (4) in longValue with a timestamp", i, bd)
			}
			n, err := strconv.ParseUint(fmt.Sprint(bd["longValue"]), 10, 64)
			if err != nil {
				t.Errorf("message %d NBIRTH bdSeq %v is not a number", i, bd["longValue"])
			}
			bdSeqs = append(bdSeqs, n)
			rb, ok := tahuMetricNamed(ms, MetricRebirth)
			if !ok || fmt.Sprint(rb["datatype"]) != "11" || rb["value"] != "booleanValue" || rb["booleanValue"] != false || rb["alias"] != nil || rb["timestamp"] == nil {
				t.Errorf("message %d NBIRTH rebirth metric %v, want Boolean (11) false with a timestamp and no alias", i, rb)
			}
		}
		// +1 per connect, persisted across the restart.
		rising := len(bdSeqs) >= 4
		for i := 1; i < len(bdSeqs); i++ {
			rising = rising && bdSeqs[i] > bdSeqs[i-1]
		}
		if !rising {
			t.Errorf("NBIRTH bdSeq values %v, want at least 4 (one per connect), rising", bdSeqs)
		}
	})

	t.Run("NDEATH", func(t *testing.T) {
		// Every session that was born ends with an NDEATH (the Will or the
		// clean stop's, and after a clean stop the Will too) carrying the
		// bdSeq of its NBIRTH (tck-id-payloads-ndeath-bdseq).
		born := map[string]int{} // bdSeq -> index of its NBIRTH
		died := map[string]int{} // bdSeq -> index of its last NDEATH
		for i, m := range tahu {
			switch msgType(m.Topic) {
			case "NBIRTH":
				bd, _ := tahuMetricNamed(tahuMetrics(m.Decoded), MetricBdSeq)
				born[fmt.Sprint(bd["longValue"])] = i
			case "NDEATH":
				ms := tahuMetrics(m.Decoded)
				if m.Topic != topicNDEATH || len(ms) != 1 {
					t.Errorf("message %d NDEATH on %s with %d metrics, want %s with only bdSeq", i, m.Topic, len(ms), topicNDEATH)
					continue
				}
				bd := ms[0]
				if bd["name"] != MetricBdSeq || fmt.Sprint(bd["datatype"]) != "4" || bd["value"] != "longValue" || bd["alias"] != nil {
					t.Errorf("message %d NDEATH metric %v, want bdSeq, Int64 (4), in longValue, no alias", i, bd)
				}
				died[fmt.Sprint(bd["longValue"])] = i
			}
		}
		for bd, bi := range born {
			if di, ok := died[bd]; !ok || di < bi {
				t.Errorf("NBIRTH %d with bdSeq %s: no NDEATH with that bdSeq after it", bi, bd)
			}
		}
	})

	// Aliases by device and metric name, from the first births.
	alias := map[string]map[string]string{}
	for _, dev := range devices {
		alias[dev] = map[string]string{}
		for _, mt := range tahuMetrics(tahu[birth[dev]].Decoded) {
			alias[dev][fmt.Sprint(mt["name"])] = fmt.Sprint(mt["alias"])
		}
	}

	t.Run("DBIRTH", func(t *testing.T) {
		seen := map[string]string{} // alias -> device/name, across the node
		for i, m := range tahu {
			if msgType(m.Topic) != "DBIRTH" {
				continue
			}
			dev := m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]
			for _, mt := range tahuMetrics(m.Decoded) {
				name, _ := mt["name"].(string)
				tt, ok := tahuTagNamed(dev, name)
				if !ok {
					t.Errorf("message %d %s: metric %v is not in the model", i, m.Topic, mt)
					continue
				}
				a, hasAlias := mt["alias"].(string)
				if !hasAlias || mt["timestamp"] == nil || fmt.Sprint(mt["datatype"]) != strconv.Itoa(int(tt.dt)) {
					t.Errorf("message %d %s metric %s: %v, want alias, timestamp and datatype %d (%s)", i, m.Topic, name, mt, tt.dt, tt.dt)
				}
				if mt["value"] == nil && mt["isNull"] != true {
					t.Errorf("message %d %s metric %s has neither a value nor isNull", i, m.Topic, name)
				}
				if _, ok := mt["isHistorical"]; ok {
					t.Errorf("message %d %s metric %s: isHistorical in a birth", i, m.Topic, name)
				}
				if prev, ok := seen[a]; ok && prev != dev+"/"+name {
					t.Errorf("alias %s for %s and %s (aliases must be unique across the node)", a, prev, dev+"/"+name)
				}
				seen[a] = dev + "/" + name
				if a != alias[dev][name] {
					t.Errorf("message %d %s metric %s: alias %s, the first birth gave %s", i, m.Topic, name, a, alias[dev][name])
				}
			}
		}
		// The first births carry every birth value.
		for _, tt := range tahuTable {
			dev := tahuDevice(tt.asset)
			mt, ok := tahuMetricNamed(tahuMetrics(tahu[birth[dev]].Decoded), tt.name)
			if !ok {
				t.Errorf("DBIRTH of %s lacks %s", dev, tt.name)
				continue
			}
			checkTahuValue(t, "DBIRTH "+dev+" "+tt.name, mt, tt.birthWant)
		}
		// After the reconnect, mixer is born with its newest values; level
		// was BAD last.
		ms := tahuMetrics(tahu[rebornMixer].Decoded)
		level, _ := tahuMetricNamed(ms, "level")
		checkTahuQuality(t, "DBIRTH after reconnect mixer level (BAD)", level, true, "0")
		rpm, _ := tahuMetricNamed(ms, "rpm")
		checkTahuValue(t, "DBIRTH after reconnect mixer rpm", rpm, tahuInt("0"))
	})

	t.Run("DDATA", func(t *testing.T) {
		for i, m := range tahu {
			if msgType(m.Topic) != "DDATA" {
				continue
			}
			for _, mt := range tahuMetrics(m.Decoded) {
				if _, ok := mt["alias"].(string); !ok || mt["name"] != nil || mt["timestamp"] == nil {
					t.Errorf("message %d %s metric %v: want alias only (no name) and a timestamp", i, m.Topic, mt)
				}
			}
		}
		for _, tt := range tahuTable {
			dev := tahuDevice(tt.asset)
			what := "DDATA " + dev + " " + tt.name
			mt := findTahuData(t, tahu[:end1], dev, alias[dev][tt.name], at(1))
			if mt == nil {
				continue
			}
			checkTahuValue(t, what, mt, tt.dataWant)
			for _, k := range []string{"isNull", "isHistorical", "properties"} {
				if _, ok := mt[k]; ok {
					t.Errorf("%s: %s = %v on a GOOD live value", what, k, mt[k])
				}
			}
		}
	})

	t.Run("DDATA-BAD", func(t *testing.T) {
		for _, i := range []int{tahuSpeed, tahuLevel} {
			tt := tahuTable[i]
			dev := tahuDevice(tt.asset)
			if mt := findTahuData(t, tahu[:end1], dev, alias[dev][tt.name], at(2)); mt != nil {
				checkTahuQuality(t, "BAD "+tt.name, mt, true, "0")
			}
		}
	})

	t.Run("DDATA-stale", func(t *testing.T) {
		torque := tahuTable[tahuTorque]
		if mt := findTahuData(t, tahu[:end1], devCapper, alias[devCapper][torque.name], at(3)); mt != nil {
			checkTahuValue(t, "stale torque", mt, tahuFloat("3"))
			checkTahuQuality(t, "stale torque", mt, false, "500")
		}
		reject := tahuTable[tahuReject]
		if mt := findTahuData(t, tahu[:end1], devFiller, alias[devFiller][reject.name], at(3)); mt != nil {
			checkTahuValue(t, "stale reject", mt, tahuSignedInt("4294967295", -1))
			checkTahuQuality(t, "stale reject", mt, false, "500")
		}
	})

	t.Run("DDATA-historical", func(t *testing.T) {
		// The birth after the outage carries the newest values, the older
		// ones follow as history.
		ms := tahuMetrics(tahu[reborn].Decoded)
		sp, _ := tahuMetricNamed(ms, "speed")
		checkTahuValue(t, "DBIRTH after the outage speed", sp, tahuDouble("123"))
		gd, _ := tahuMetricNamed(ms, "counters/good")
		checkTahuValue(t, "DBIRTH after the outage counters/good", gd, tahuSignedInt("4294967290", -6))
		after := tahu[reborn:]
		for _, c := range []struct {
			name string
			at   time.Time
			want tahuValue
		}{
			{"speed", at(11), tahuDouble("121")},
			{"speed", at(12), tahuDouble("122")},
			{"counters/good", at(11), tahuSignedInt("4294967291", -5)},
		} {
			mt := findTahuData(t, after, devFiller, alias[devFiller][c.name], c.at)
			if mt == nil {
				continue
			}
			checkTahuValue(t, "historical "+c.name, mt, c.want)
			if mt["isHistorical"] != true {
				t.Errorf("historical %s at %v: isHistorical %v, want true (tck-id-operational-behavior-edge-node-historical)", c.name, c.at, mt["isHistorical"])
			}
		}
	})

	t.Run("DDEATH", func(t *testing.T) {
		for dev, i := range ddeath {
			m := tahu[i].Decoded
			if _, ok := m["seq"].(string); !ok || m["timestamp"] == nil || len(tahuMetrics(m)) != 0 {
				t.Errorf("DDEATH of %s: %v, want seq and timestamp, no metrics", dev, m)
			}
		}
	})

	t.Run("malformed-payload-reported", func(t *testing.T) {
		// decode.js reports what it cannot decode instead of skipping it.
		if malformed.Topic != tahuMalformedTopic || malformed.Error == nil || malformed.Decoded != nil {
			t.Fatalf("malformed payload: Tahu said %+v, want an error", malformed)
		}
		if _, err := Decode(tahuMalformed); err == nil {
			t.Fatalf("Decode accepted the payload Tahu rejects (%s)", *malformed.Error)
		}
	})
}

// tahuNode finds node and checks the pinned Tahu package is installed.
func tahuNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (UNSGATE_INTEROP=1 needs it; run .ci/interop-sparkplug.sh): %v", err)
	}
	data, err := os.ReadFile(filepath.Join(tahuDir, "node_modules", "sparkplug-payload", "package.json"))
	if err != nil {
		t.Fatalf("sparkplug-payload is not installed in %s (run .ci/interop-sparkplug.sh): %v", tahuDir, err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(data, &pkg); err != nil || pkg.Version != tahuVersion {
		t.Fatalf("sparkplug-payload in %s is %q, want %s (run npm ci there): %v", tahuDir, pkg.Version, tahuVersion, err)
	}
	return node
}

// tahuMalformed is a payload cut short inside a metric; decode.js must
// report it.
var tahuMalformed = []byte{0x12, 0x05, 0x0a, 0x03}

const tahuMalformedTopic = "test/malformed"

// tahuResult is one element of decode.js's output.
type tahuResult struct {
	Topic   string         `json:"topic"`
	Decoded map[string]any `json:"decoded"`
	Error   *string        `json:"error"`
}

// decodeWithTahu decodes the payloads of msgs, and tahuMalformed, with
// decode.js. Numbers stay json.Number, so nothing is rounded. Every
// payload of msgs must decode.
func decodeWithTahu(t *testing.T, node string, msgs []rx) (decoded []tahuResult, malformed tahuResult) {
	t.Helper()
	type item struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload_b64"`
	}
	items := make([]item, 0, len(msgs)+1)
	for _, m := range msgs {
		items = append(items, item{m.Topic, base64.StdEncoding.EncodeToString(m.Raw)})
	}
	items = append(items, item{tahuMalformedTopic, base64.StdEncoding.EncodeToString(tahuMalformed)})
	input, err := json.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "decode.js")
	cmd.Dir = tahuDir
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node decode.js: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(&stdout)
	dec.UseNumber()
	var out []tahuResult
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("decode.js output: %v\n%s", err, stdout.String())
	}
	if len(out) != len(items) {
		t.Fatalf("decode.js answered %d payloads of %d", len(out), len(items))
	}
	for i, r := range out[:len(msgs)] {
		if r.Topic != msgs[i].Topic {
			t.Fatalf("decode.js answer %d is for %s, want %s", i, r.Topic, msgs[i].Topic)
		}
		if r.Error != nil || r.Decoded == nil {
			msg := "no payload"
			if r.Error != nil {
				msg = *r.Error
			}
			t.Fatalf("Tahu cannot decode message %d on %s: %s", i, r.Topic, msg)
		}
	}
	t.Logf("Tahu (sparkplug-payload %s) decoded %d messages: %s", tahuVersion, len(msgs), summary(msgs))
	return out[:len(msgs)], out[len(msgs)]
}

func tahuMetrics(o map[string]any) []map[string]any {
	list, _ := o["metrics"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, m := range list {
		if mo, ok := m.(map[string]any); ok {
			out = append(out, mo)
		}
	}
	return out
}

func tahuMetricNamed(ms []map[string]any, name string) (map[string]any, bool) {
	for _, m := range ms {
		if m["name"] == name {
			return m, true
		}
	}
	return nil, false
}

func tahuTagNamed(dev, name string) (tahuTag, bool) {
	for _, tt := range tahuTable {
		if tahuDevice(tt.asset) == dev && tt.name == name {
			return tt, true
		}
	}
	return tahuTag{}, false
}

// findTahuData returns the one DDATA metric of dev with the alias and
// timestamp among msgs; a value sent twice or never fails the test.
func findTahuData(t *testing.T, msgs []tahuResult, dev, alias string, at time.Time) map[string]any {
	t.Helper()
	ts := strconv.FormatInt(at.UnixMilli(), 10)
	var found []map[string]any
	for _, m := range msgs {
		if m.Topic != dtopic("DDATA", dev) {
			continue
		}
		for _, mt := range tahuMetrics(m.Decoded) {
			if mt["alias"] == alias && mt["timestamp"] == ts {
				found = append(found, mt)
			}
		}
	}
	if len(found) != 1 {
		t.Errorf("DDATA of %s: %d metrics with alias %s at %s, want 1", dev, len(found), alias, ts)
		return nil
	}
	return found[0]
}

// checkTahuValue checks a metric's value field and value as Tahu decoded
// them; for signed types also what the unsigned wire value means.
func checkTahuValue(t *testing.T, what string, mt map[string]any, want tahuValue) {
	t.Helper()
	if mt == nil {
		t.Errorf("%s: no such metric", what)
		return
	}
	if f, _ := mt["value"].(string); f != want.field {
		t.Errorf("%s: Tahu decoded the value in %q, want %q (metric %v)", what, f, want.field, mt)
		return
	}
	got := fmt.Sprint(mt[want.field])
	switch want.field {
	case "floatValue", "doubleValue":
		g, err1 := strconv.ParseFloat(got, 64)
		w, err2 := strconv.ParseFloat(want.text, 64)
		if err1 != nil || err2 != nil || g != w {
			t.Errorf("%s: Tahu %s %s, want %s", what, want.field, got, want.text)
		}
	default:
		if got != want.text {
			t.Errorf("%s: Tahu %s %s, want %s", what, want.field, got, want.text)
		}
	}
	if want.hasSigned {
		u, err := strconv.ParseUint(got, 10, 64)
		signed := int64(u)
		if want.field == "intValue" {
			signed = int64(int32(uint32(u)))
		}
		if err != nil || signed != want.signed {
			t.Errorf("%s: Tahu %s %s means %d as a signed integer, want %d", what, want.field, got, signed, want.signed)
		}
	}
}

// checkTahuQuality checks the Quality property (Int32) and is_null.
func checkTahuQuality(t *testing.T, what string, mt map[string]any, isNull bool, quality string) {
	t.Helper()
	if mt == nil {
		t.Errorf("%s: no such metric", what)
		return
	}
	if got, _ := mt["isNull"].(bool); got != isNull {
		t.Errorf("%s: isNull %v, want %v", what, mt["isNull"], isNull)
	}
	if isNull && mt["value"] != nil {
		t.Errorf("%s: a null metric with %s %v", what, mt["value"], mt[fmt.Sprint(mt["value"])])
	}
	props, _ := mt["properties"].(map[string]any)
	keys, _ := props["keys"].([]any)
	vals, _ := props["values"].([]any)
	if len(keys) != 1 || keys[0] != QualityKey || len(vals) != 1 {
		t.Errorf("%s: properties %v, want keys [Quality] and one value", what, mt["properties"])
		return
	}
	v, _ := vals[0].(map[string]any)
	if fmt.Sprint(v["type"]) != "3" || v["value"] != "intValue" || fmt.Sprint(v["intValue"]) != quality {
		t.Errorf("%s: Quality property %v, want Int32 (3) intValue %s", what, v, quality)
	}
}

// Tahu's names of Metric's value fields, by field number.
var tahuValueField = map[int]string{metricIntValue: "intValue", metricLongValue: "longValue",
	metricFloatValue: "floatValue", metricDoubleValue: "doubleValue", metricBooleanValue: "booleanValue",
	metricStringValue: "stringValue", metricBytesValue: "bytesValue"}

// diffPayload lists every field where Tahu's object o and Decode's p
// differ, and every field one of them decoded that the other did not.
func diffPayload(p Payload, o map[string]any) []string {
	var d []string
	for k := range o {
		if k != "timestamp" && k != "metrics" && k != "seq" {
			d = append(d, fmt.Sprintf("Tahu decoded payload field %s=%v, which Decode does not read", k, o[k]))
		}
	}
	d = append(d, diffLong("timestamp", p.HasTimestamp, p.Timestamp, o)...)
	d = append(d, diffLong("seq", p.HasSeq, p.Seq, o)...)
	ms := tahuMetrics(o)
	if raw, _ := o["metrics"].([]any); len(raw) != len(ms) {
		d = append(d, fmt.Sprintf("Tahu metrics %v are not all objects", o["metrics"]))
	}
	if len(ms) != len(p.Metrics) {
		return append(d, fmt.Sprintf("metrics: Tahu %d, Decode %d", len(ms), len(p.Metrics)))
	}
	for i, m := range p.Metrics {
		for _, x := range diffMetric(m, ms[i]) {
			d = append(d, fmt.Sprintf("metric %d (%s): %s", i+1, m.Name, x))
		}
	}
	return d
}

func diffMetric(m Metric, o map[string]any) []string {
	var d []string
	known := []string{"name", "alias", "timestamp", "datatype", "isHistorical", "isTransient", "isNull", "properties", "value"}
	for k := range o {
		if !slices.Contains(known, k) && !slices.Contains(slices.Collect(maps.Values(tahuValueField)), k) {
			d = append(d, fmt.Sprintf("Tahu decoded %s=%v, which Decode does not read", k, o[k]))
		}
	}
	if len(m.Unknown) > 0 {
		d = append(d, fmt.Sprintf("Decode saw fields %v it does not understand", m.Unknown))
	}
	if name, ok := o["name"].(string); ok != m.HasName || name != m.Name {
		d = append(d, fmt.Sprintf("name: Tahu %v, Decode %q (present %v)", o["name"], m.Name, m.HasName))
	}
	d = append(d, diffLong("alias", m.HasAlias, m.Alias, o)...)
	d = append(d, diffLong("timestamp", m.HasTimestamp, m.Timestamp, o)...)
	if dt, ok := o["datatype"].(json.Number); ok != m.HasDatatype || (ok && dt.String() != strconv.FormatUint(uint64(m.Datatype), 10)) {
		d = append(d, fmt.Sprintf("datatype: Tahu %v, Decode %d (present %v)", o["datatype"], m.Datatype, m.HasDatatype))
	}
	for _, f := range []struct {
		key string
		v   bool
	}{{"isHistorical", m.IsHistorical}, {"isTransient", m.IsTransient}, {"isNull", m.IsNull}} {
		got, ok := o[f.key].(bool)
		if _, present := o[f.key]; present && !ok || got != f.v {
			d = append(d, fmt.Sprintf("%s: Tahu %v, Decode %v", f.key, o[f.key], f.v))
		}
	}
	d = append(d, diffProperties(m.Properties, o["properties"])...)

	field, _ := o["value"].(string)
	if want := tahuValueField[m.Value]; field != want {
		return append(d, fmt.Sprintf("value field: Tahu %q, Decode %q", field, want))
	}
	got := o[field]
	var same bool
	switch m.Value {
	case 0:
		same = got == nil
	case metricIntValue:
		same = fmt.Sprint(got) == strconv.FormatUint(uint64(m.Int), 10)
	case metricLongValue:
		same = got == strconv.FormatUint(m.Long, 10)
	case metricFloatValue:
		f, err := strconv.ParseFloat(fmt.Sprint(got), 64)
		same = err == nil && f == float64(m.Float)
	case metricDoubleValue:
		f, err := strconv.ParseFloat(fmt.Sprint(got), 64)
		same = err == nil && f == m.Double
	case metricBooleanValue:
		same = got == m.Bool
	case metricStringValue:
		same = got == m.String
	case metricBytesValue:
		// Without a bytes option Tahu's Buffer becomes {"type":"Buffer","data":[...]}.
		buf, _ := got.(map[string]any)
		data, _ := buf["data"].([]any)
		b := make([]byte, 0, len(data))
		for _, x := range data {
			n, _ := strconv.Atoi(fmt.Sprint(x))
			b = append(b, byte(n))
		}
		same = len(data) == len(m.Bytes) && bytes.Equal(b, m.Bytes)
	}
	if !same {
		d = append(d, fmt.Sprintf("%s: Tahu %v, Decode %+v", field, got, m))
	}
	return d
}

// diffLong compares a 64-bit field, a decimal string in Tahu's object.
func diffLong(key string, has bool, v uint64, o map[string]any) []string {
	raw, present := o[key]
	s, isString := raw.(string)
	if present != has || (present && (!isString || s != strconv.FormatUint(v, 10))) {
		return []string{fmt.Sprintf("%s: Tahu %v (present %v), Decode %d (present %v)", key, raw, present, v, has)}
	}
	return nil
}

func diffProperties(props map[string]Property, raw any) []string {
	o, present := raw.(map[string]any)
	if present != (props != nil) {
		return []string{fmt.Sprintf("properties: Tahu %v, Decode %v", raw, props)}
	}
	if !present {
		return nil
	}
	keys, _ := o["keys"].([]any)
	vals, _ := o["values"].([]any)
	if len(keys) != len(vals) || len(keys) != len(props) {
		return []string{fmt.Sprintf("properties: Tahu %v, Decode %v", raw, props)}
	}
	var d []string
	for i, k := range keys {
		ks, _ := k.(string)
		p, ok := props[ks]
		v, _ := vals[i].(map[string]any)
		if !ok || v == nil {
			d = append(d, fmt.Sprintf("property %v: Tahu %v, Decode none", k, vals[i]))
			continue
		}
		isNull, _ := v["isNull"].(bool)
		same := fmt.Sprint(v["type"]) == strconv.FormatUint(uint64(p.Type), 10) && isNull == p.IsNull
		switch v["value"] {
		case nil:
			same = same && p.Int == 0 && p.Long == 0
		case "intValue":
			same = same && fmt.Sprint(v["intValue"]) == strconv.FormatUint(uint64(p.Int), 10)
		case "longValue":
			same = same && v["longValue"] == strconv.FormatUint(p.Long, 10)
		default:
			d = append(d, fmt.Sprintf("property %s: Tahu decoded %v, which Decode does not read", ks, v))
			continue
		}
		if !same {
			d = append(d, fmt.Sprintf("property %s: Tahu %v, Decode %+v", ks, v, p))
		}
	}
	return d
}
