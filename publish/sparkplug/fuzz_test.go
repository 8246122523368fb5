package sparkplug

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/unsgate/unsgate/model"
)

// FuzzDecode feeds Decode hostile payloads. The seeds are payloads the
// package's own encoder makes (NBIRTH, DBIRTH and DDATA with aliases and
// with names, every datatype, negative integers, null and BAD values,
// historical metrics, the Quality property, NDEATH, DDEATH, NCMD), cut
// short and broken. Whatever the input:
//
//   - Decode does not panic, and every error it returns is ErrMalformed;
//   - decoding is deterministic and the result does not share memory with
//     the input;
//   - an accepted payload followed by itself is accepted too, with the
//     metrics twice (protobuf's merge of repeated fields);
//   - the Reader (unsgate sub) turns the payload into one line of valid
//     UTF-8 JSON on every kind of topic: births that teach it aliases, data
//     that uses them, topics too short to name an edge node; an accepted
//     payload's JSON lists its metrics, a rejected one's is the error.
//
// The seeds run with plain go test; fuzz with
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./publish/sparkplug
func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		p, err := Decode(in)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %q does not wrap ErrMalformed", err)
		}

		// Deterministic, and nothing decoded points into the input.
		for i := range in {
			in[i] ^= 0xff
		}
		p2, err2 := Decode(data)
		if errText(err) != errText(err2) {
			t.Fatalf("decoding twice: errors %q and %q", errText(err), errText(err2))
		}
		if d := diffPayloads(p, p2); d != "" {
			t.Fatalf("decoding twice (input overwritten after the first): %s", d)
		}
		checkMetrics(t, p)

		if err == nil {
			twice, err := Decode(append(bytes.Clone(data), data...))
			if err != nil {
				t.Fatalf("payload accepted alone, rejected twice in a row: %v", err)
			}
			want := p
			want.Metrics = append(append([]Metric(nil), p.Metrics...), p.Metrics...)
			if d := diffPayloads(want, twice); d != "" {
				t.Fatalf("payload twice in a row: %s", d)
			}
		}

		// One Reader sees the payload as each message of an edge node in
		// turn, so DATA is read with what the births taught it; fresh
		// Readers see topics with nothing to learn from.
		r := NewReader()
		for _, topic := range []string{
			"spBv1.0/munich/NBIRTH/gw1",
			"spBv1.0/munich/DBIRTH/gw1/bottling.line1.filler",
			"spBv1.0/munich/DDATA/gw1/bottling.line1.filler",
			"spBv1.0/munich/NDATA/gw1",
			"spBv1.0/munich/DDATA/gw1/other",
			"spBv1.0/munich/NCMD/gw1",
		} {
			checkText(t, r, topic, data, p, err)
		}
		for _, topic := range []string{"spBv1.0/munich/DDATA/gw1/bottling.line1.filler", "spBv1.0/munich/NDATA", "spBv1.0", "", "uns/a/b"} {
			checkText(t, NewReader(), topic, data, p, err)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// checkMetrics checks what holds for every decoded metric.
func checkMetrics(t *testing.T, p Payload) {
	t.Helper()
	for i, m := range p.Metrics {
		if m.Value != 0 && (m.Value < metricIntValue || m.Value > metricBytesValue) {
			t.Fatalf("metric %d: Value %d is not a value field", i, m.Value)
		}
		if !m.HasName && m.Name != "" || !m.HasAlias && m.Alias != 0 || !m.HasTimestamp && m.Timestamp != 0 ||
			!m.HasDatatype && m.Datatype != TypeUnknown {
			t.Fatalf("metric %d: a field without its Has flag: %+v", i, m)
		}
	}
}

// checkText checks the Reader's rendering of a payload Decode gave p and
// err for.
func checkText(t *testing.T, r *Reader, topic string, data []byte, p Payload, err error) {
	t.Helper()
	out := r.Text(topic, data)
	if !utf8.ValidString(out) || !json.Valid([]byte(out)) || strings.ContainsAny(out, "\n\r") {
		t.Fatalf("Text on %q is not one line of valid UTF-8 JSON: %q", topic, out)
	}
	var got struct {
		Error   *string           `json:"error"`
		Seq     *uint64           `json:"seq"`
		Metrics []json.RawMessage `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("Text on %q: %v: %s", topic, err, out)
	}
	if err != nil {
		if got.Error == nil || *got.Error != err.Error() {
			t.Fatalf("Text on %q of a payload Decode rejects (%v): %s", topic, err, out)
		}
		return
	}
	if got.Error != nil || len(got.Metrics) != len(p.Metrics) || (got.Seq != nil) != p.HasSeq ||
		p.HasSeq && *got.Seq != p.Seq {
		t.Fatalf("Text on %q: %s, want %d metrics and seq %v/%d", topic, out, len(p.Metrics), p.HasSeq, p.Seq)
	}
}

// diffPayloads describes how two decoded payloads differ ("" when they do
// not); floats are compared by their bits, so NaN equals itself.
func diffPayloads(a, b Payload) string {
	if a.Timestamp != b.Timestamp || a.HasTimestamp != b.HasTimestamp || a.Seq != b.Seq || a.HasSeq != b.HasSeq {
		return "payload header differs"
	}
	if len(a.Metrics) != len(b.Metrics) {
		return "metric count differs"
	}
	for i := range a.Metrics {
		x, y := a.Metrics[i], b.Metrics[i]
		same := x.Name == y.Name && x.HasName == y.HasName && x.Alias == y.Alias && x.HasAlias == y.HasAlias &&
			x.Timestamp == y.Timestamp && x.HasTimestamp == y.HasTimestamp && x.Datatype == y.Datatype &&
			x.HasDatatype == y.HasDatatype && x.IsHistorical == y.IsHistorical && x.IsTransient == y.IsTransient &&
			x.IsNull == y.IsNull && x.Value == y.Value && x.Int == y.Int && x.Long == y.Long &&
			math.Float32bits(x.Float) == math.Float32bits(y.Float) &&
			math.Float64bits(x.Double) == math.Float64bits(y.Double) && x.Bool == y.Bool && x.String == y.String &&
			bytes.Equal(x.Bytes, y.Bytes) && (x.Bytes == nil) == (y.Bytes == nil) &&
			len(x.Unknown) == len(y.Unknown) && len(x.Properties) == len(y.Properties) &&
			(x.Properties == nil) == (y.Properties == nil)
		for j := 0; same && j < len(x.Unknown); j++ {
			same = x.Unknown[j] == y.Unknown[j]
		}
		for k, v := range x.Properties {
			if w, ok := y.Properties[k]; !ok || v != w {
				same = false
			}
		}
		if !same {
			return "metric " + itoa(uint64(i)) + " differs"
		}
	}
	return ""
}

// fuzzTags are testTags and tags of the other datatypes, and untyped tags
// (typed by their values: arrays, null) on a device of their own.
func fuzzTags() []*model.TagMeta {
	tags := testTags()
	mk := func(name string, k model.Kind, width uint8) *model.TagMeta {
		asset := "acme/munich/bottling/line1/lab"
		return &model.TagMeta{Topic: asset + "/" + name, Asset: asset, Name: name, Source: "plc2", Datatype: k, Width: width, Type: "T"}
	}
	tags = append(tags,
		mk("i32", model.KindInt, 32), mk("i64", model.KindInt, 0), mk("u8", model.KindUint, 8),
		mk("u16", model.KindUint, 16), mk("u64", model.KindUint, 0),
		mk("any/bools", model.KindNull, 0), mk("any/ints", model.KindNull, 0), mk("any/uints", model.KindNull, 0),
		mk("any/floats32", model.KindNull, 0), mk("any/floats", model.KindNull, 0), mk("any/strings", model.KindNull, 0),
		mk("any/empty", model.KindNull, 0), mk("any/scalar", model.KindNull, 0), mk("any/null", model.KindNull, 0))
	for i, t := range tags {
		t.Index = i
	}
	return tags
}

// fuzzSeeds makes the seed payloads.
func fuzzSeeds() [][]byte {
	tags := fuzzTags()
	a, _ := loadAliases("")
	ts := buildTagset(tags, "acme/munich", "munich", "gw1", a)
	at := time.UnixMilli(1795455787390)
	byName := map[string]*model.TagMeta{}
	for _, t := range tags {
		byName[t.Name] = t
	}
	pt := func(name string, v model.Value, q model.Quality) model.Point {
		return model.Point{Meta: byName[name], Value: v, Quality: q, Time: at}
	}
	good := model.QualityGood
	points := []model.Point{
		pt("speed", model.FloatValue(120.5), good),
		pt("speed", model.FloatValue(math.NaN()), good),
		pt("speed", model.FloatValue(math.Inf(-1)), model.QualityUncertain),
		pt("counters/good", model.IntValue(-12), good),
		pt("counters/good", model.IntValue(math.MinInt16), good),
		pt("counters/good", model.IntValue(40000), good), // does not fit: null, BAD
		pt("state", model.StringValue("running"), good),
		pt("state", model.StringValue("\"quoted\"\n\tünïcödé \u2028 \x00\xff"), good),
		pt("alarm", model.BoolValue(true), good),
		pt("alarm", model.Null(), model.QualityBad),
		pt("torque", model.Float32Value(2.5), good),
		pt("total", model.UintValue(4000000000), good),
		pt("level", model.IntValue(-7), good),
		pt("level", model.IntValue(math.MinInt8), good),
		pt("i32", model.IntValue(math.MinInt32), good),
		pt("i64", model.IntValue(math.MinInt64), good),
		pt("u8", model.UintValue(math.MaxUint8), good),
		pt("u16", model.UintValue(math.MaxUint16), good),
		pt("u64", model.UintValue(math.MaxUint64), good),
		pt("any/bools", model.ArrayValue([]model.Value{model.BoolValue(true), model.BoolValue(false), model.BoolValue(true),
			model.BoolValue(true), model.BoolValue(false), model.BoolValue(false), model.BoolValue(false), model.BoolValue(true),
			model.BoolValue(true)}), good),
		pt("any/ints", model.ArrayValue([]model.Value{model.IntValue(-1), model.IntValue(math.MinInt64), model.IntValue(7)}), good),
		pt("any/uints", model.ArrayValue([]model.Value{model.UintValue(0), model.UintValue(math.MaxUint64)}), good),
		pt("any/floats32", model.ArrayValue([]model.Value{model.Float32Value(-1.5), model.Float32Value(float32(math.Inf(1)))}), good),
		pt("any/floats", model.ArrayValue([]model.Value{model.FloatValue(-0.0), model.FloatValue(1e300)}), good),
		pt("any/strings", model.ArrayValue([]model.Value{model.StringValue("a"), model.StringValue(""), model.StringValue("ü")}), good),
		pt("any/empty", model.ArrayValue(nil), good),
		pt("any/scalar", model.IntValue(-1), good),
		pt("any/scalar", model.StringValue("x"), model.QualityUncertain),
		pt("any/null", model.Null(), good),
	}
	points[2].Stale = true

	var seeds [][]byte
	withName := &Sink{cfg: &settings{Config: Config{NoAliases: true}}}
	withAlias := &Sink{cfg: &settings{Config: Config{}}}

	// NBIRTH, as birthAll makes it, and NDEATH.
	b := appendVarint(nil, payloadTimestamp, uint64(at.UnixMilli()))
	var m []byte
	m = appendString(m, metricName, MetricBdSeq)
	m = appendVarint(m, metricTimestamp, uint64(at.UnixMilli()))
	m = appendVarint(m, metricDatatype, uint64(TypeInt64))
	m = appendVarint(m, metricLongValue, 3)
	b = appendBytes(b, payloadMetrics, m)
	m = appendString(m[:0], metricName, MetricRebirth)
	m = appendVarint(m, metricTimestamp, uint64(at.UnixMilli()))
	m = appendVarint(m, metricDatatype, uint64(TypeBoolean))
	m = appendBool(m, metricBooleanValue, false)
	b = appendBytes(b, payloadMetrics, m)
	seeds = append(seeds, appendVarint(b, payloadSeq, 0), withAlias.deathPayload(3))

	// The encoded points, as the Fanout queues them.
	bodies := map[*metric][][]byte{}
	var order []*metric
	for i := range points {
		mt := ts.lookup(points[i].Meta, points[i].Meta.Topic)
		if bodies[mt] == nil {
			order = append(order, mt)
		}
		bodies[mt] = append(bodies[mt], Encoder.AppendPoint(nil, &points[i]))
	}

	// DBIRTH of every device, as birthDevice makes it: with aliases and
	// with names only, with the newest values and with none known yet.
	var firstBirth []byte
	for _, d := range ts.devices {
		for _, s := range []*Sink{withAlias, withName} {
			for _, known := range []bool{true, false} {
				b := appendVarint(nil, payloadTimestamp, uint64(at.UnixMilli()))
				for _, mt := range d.metrics {
					vals := bodies[mt]
					m = appendString(m[:0], metricName, mt.name)
					if !s.cfg.NoAliases {
						m = appendVarint(m, metricAlias, mt.alias)
					}
					if known && len(vals) > 0 {
						cur := vals[len(vals)-1]
						dt := DataType(cur[0])
						if dt == TypeUnknown {
							dt = TypeString
						}
						m = appendVarint(m, metricDatatype, uint64(dt))
						m = append(m, cur[1:]...)
					} else {
						dt := mt.declared
						if dt == TypeUnknown {
							dt = TypeString
						}
						m = appendVarint(m, metricDatatype, uint64(dt))
						m = appendVarint(m, metricTimestamp, uint64(at.UnixMilli()))
						m = appendBool(m, metricIsNull, true)
						m = appendQuality(m, QualityBad)
					}
					b = appendBytes(b, payloadMetrics, m)
				}
				seeds = append(seeds, appendVarint(b, payloadSeq, 1))
				if firstBirth == nil {
					firstBirth = seeds[len(seeds)-1]
				}
			}
		}
	}

	// DDATA of every device, as process makes it: live and historical,
	// with aliases and with names; and every point in one payload.
	all := appendVarint(nil, payloadTimestamp, uint64(at.UnixMilli()))
	for _, d := range ts.devices {
		for _, s := range []*Sink{withAlias, withName} {
			for _, hist := range []bool{false, true} {
				b := appendVarint(nil, payloadTimestamp, uint64(at.UnixMilli()))
				for _, mt := range d.metrics {
					for _, body := range bodies[mt] {
						b = s.appendDataMetric(b, mt, body[1:], hist)
					}
				}
				seeds = append(seeds, appendVarint(b, payloadSeq, 255))
			}
		}
	}
	for _, mt := range order {
		for _, body := range bodies[mt] {
			all = withAlias.appendDataMetric(all, mt, body[1:], false)
		}
	}
	all = appendVarint(all, payloadSeq, 7)
	seeds = append(seeds, all)

	// DDEATH and NCMD.
	seeds = append(seeds, appendVarint(appendVarint(nil, payloadTimestamp, uint64(at.UnixMilli())), payloadSeq, 9),
		ncmd(MetricRebirth, true), ncmd("Other", false),
		ncmd("a \"name\" \\ with\ttabs\n\x01 \xff\u2028 ü", true)) // escaped in JSON

	// Cut short: prefixes of a DBIRTH and of the DDATA of everything.
	for _, full := range [][]byte{firstBirth, all} {
		for n := 0; n < len(full); n += 1 + n/4 {
			seeds = append(seeds, bytes.Clone(full[:n]))
		}
	}

	// Broken by hand.
	metricOf := func(fields []byte) []byte { return appendBytes(nil, payloadMetrics, fields) }
	big := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	seeds = append(seeds,
		nil,
		tahuMalformed,
		[]byte{0x00},                       // field 0
		[]byte{0x0f},                       // wire type 7
		[]byte{0x0b, 0x0c},                 // groups (wire types 3 and 4)
		[]byte{0x08},                       // varint missing
		[]byte{0x08, 0x80},                 // varint cut short
		append([]byte{0x08}, big...),       // varint of ten bytes
		append([]byte{0x08, 0xff}, big...), // varint too long
		[]byte{0x09, 1, 2, 3},              // short fixed64
		[]byte{0x0d, 1, 2},                 // short fixed32
		append([]byte{0x12}, big...),       // length beyond the payload
		[]byte{0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00},       // field 2^29-1
		[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}, // field above MaxInt32
		// A property set with two keys and one value.
		metricOf(appendBytes(nil, metricProperties, appendBytes(appendString(appendString(nil,
			propertySetKeys, "a"), propertySetKeys, "b"), propertySetValues, appendVarint(nil, propertyIntValue, 1)))),
		// A property value that is not a message.
		metricOf(appendBytes(nil, metricProperties, appendBytes(appendString(nil, propertySetKeys, QualityKey),
			propertySetValues, []byte{0xff}))),
		// Every field with the wrong wire type, every value field, an
		// unknown datatype and fields the decoder does not read.
		metricOf(appendFixed32(appendVarint(appendVarint(appendVarint(appendVarint(appendVarint(nil,
			metricName, 5), metricStringValue, 1), metricBytesValue, 2), metricProperties, 3), metricFloatValue, 1<<31),
			metricDoubleValue, 7)),
		metricOf(appendBytes(appendBytes(appendVarint(appendVarint(appendFixed64(appendFixed32(appendVarint(appendVarint(
			appendVarint(appendVarint(nil, metricDatatype, math.MaxUint32), metricIntValue, math.MaxUint64),
			metricLongValue, math.MaxUint64), metricBooleanValue, 2), metricFloatValue, 0x7fc00001),
			metricDoubleValue, 0xfff0000000000001), metricIsHistorical, 1), metricIsTransient, 1),
			17, []byte("dataset")), 19, []byte("template"))),
		metricOf(appendVarint(nil, metricDatatype, math.MaxUint64)),
		// A datatype beyond the enum, sent as Int: the Reader names it.
		metricOf(appendVarint(appendVarint(appendVarint(nil, metricAlias, 1), metricDatatype, 1<<31|3), metricIntValue, 1<<31)),
	)
	return seeds
}
