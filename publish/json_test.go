package publish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/unsgate/unsgate/model"
)

var (
	ts       = time.UnixMilli(1717083000000)
	withUnit = &model.TagMeta{Topic: "acme/munich/line1/filler1/temp", Datatype: model.KindFloat, Unit: "degC"}
	noUnit   = &model.TagMeta{Topic: "acme/munich/line1/filler1/count", Datatype: model.KindInt}
)

type jsonCase struct {
	name string
	p    model.Point
	want string
	// decoded value as encoding/json sees it (UseNumber): json.Number,
	// string, bool or nil
	value any
}

var jsonCases = []jsonCase{
	{"float", model.Point{Meta: withUnit, Value: model.FloatValue(23.4), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":23.4,"quality":"GOOD","unit":"degC"}`, json.Number("23.4")},
	{"negative int", model.Point{Meta: noUnit, Value: model.IntValue(-42), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":-42,"quality":"GOOD"}`, json.Number("-42")},
	{"largest safe int", model.Point{Meta: noUnit, Value: model.IntValue(1<<53 - 1), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":9007199254740991,"quality":"GOOD"}`, json.Number("9007199254740991")},
	{"big negative int as string", model.Point{Meta: noUnit, Value: model.IntValue(-1 << 53), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":"-9007199254740992","quality":"GOOD"}`, "-9007199254740992"},
	{"big uint64 as string", model.Point{Meta: noUnit, Value: model.UintValue(math.MaxUint64), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":"18446744073709551615","quality":"GOOD"}`, "18446744073709551615"},
	{"bool uncertain", model.Point{Meta: noUnit, Value: model.BoolValue(true), Quality: model.QualityUncertain, Time: ts},
		`{"timestamp_ms":1717083000000,"value":true,"quality":"UNCERTAIN"}`, true},
	{"string escapes", model.Point{Meta: noUnit, Value: model.StringValue("say \"hi\"\n\\ µ°C ✓ \u2028\x01"), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":"say \"hi\"\n\\ µ°C ✓ \u2028\u0001","quality":"GOOD"}`, "say \"hi\"\n\\ µ°C ✓ \u2028\x01"},
	{"bad is null", model.Point{Meta: withUnit, Value: model.FloatValue(5), Quality: model.QualityBad, Time: ts},
		`{"timestamp_ms":1717083000000,"value":null,"quality":"BAD","unit":"degC"}`, nil},
	{"stale", model.Point{Meta: withUnit, Value: model.FloatValue(-0.5), Quality: model.QualityUncertain, Stale: true, Time: ts},
		`{"timestamp_ms":1717083000000,"value":-0.5,"quality":"UNCERTAIN","unit":"degC","stale":true}`, json.Number("-0.5")},
	{"status code", model.Point{Meta: noUnit, Quality: model.QualityBad, Status: 0x80340000, Time: ts},
		`{"timestamp_ms":1717083000000,"value":null,"quality":"BAD","status":"0x80340000"}`, nil},
	{"array", model.Point{Meta: noUnit, Value: model.ArrayValue([]model.Value{model.IntValue(1), model.FloatValue(2.5)}), Quality: model.QualityUncertain, Status: 0x40A3000F, Time: ts},
		`{"timestamp_ms":1717083000000,"value":[1,2.5],"quality":"UNCERTAIN","status":"0x40A3000F"}`, []any{json.Number("1"), json.Number("2.5")}},
	{"unit needing escapes", model.Point{Meta: &model.TagMeta{Unit: `m/s² "x"`}, Value: model.FloatValue(1e21), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":1e+21,"quality":"GOOD","unit":"m/s² \"x\""}`, json.Number("1e+21")},
	{"tiny float", model.Point{Meta: noUnit, Value: model.FloatValue(1e-7), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":1e-7,"quality":"GOOD"}`, json.Number("1e-7")},
	{"NaN is null", model.Point{Meta: noUnit, Value: model.FloatValue(math.NaN()), Quality: model.QualityGood, Time: ts},
		`{"timestamp_ms":1717083000000,"value":null,"quality":"GOOD"}`, nil},
	{"null value", model.Point{Meta: noUnit, Quality: model.QualityUncertain, Time: ts},
		`{"timestamp_ms":1717083000000,"value":null,"quality":"UNCERTAIN"}`, nil},
	{"no meta", model.Point{Value: model.UintValue(7), Quality: model.QualityGood, Time: time.UnixMilli(0)},
		`{"timestamp_ms":0,"value":7,"quality":"GOOD"}`, json.Number("7")},
}

func TestAppendJSONGolden(t *testing.T) {
	for _, c := range jsonCases {
		t.Run(c.name, func(t *testing.T) {
			got := AppendJSON(nil, &c.p)
			if string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			// appending keeps what is already there
			pre := AppendJSON([]byte("x"), &c.p)
			if string(pre) != "x"+c.want {
				t.Fatalf("append to non-empty dst: %s", pre)
			}
		})
	}
}

// TestAppendJSONDecodes checks the other direction: encoding/json reads
// back every field with the meaning we intended.
func TestAppendJSONDecodes(t *testing.T) {
	for _, c := range jsonCases {
		t.Run(c.name, func(t *testing.T) {
			m := decodeObject(t, AppendJSON(nil, &c.p))
			if got, want := m["timestamp_ms"], json.Number(strconv.FormatInt(c.p.Time.UnixMilli(), 10)); got != want {
				t.Errorf("timestamp_ms = %v, want %v", got, want)
			}
			if got := m["value"]; !reflect.DeepEqual(got, c.value) {
				t.Errorf("value = %#v, want %#v", got, c.value)
			}
			if got := m["quality"]; got != c.p.Quality.String() {
				t.Errorf("quality = %v, want %v", got, c.p.Quality)
			}
			unit, hasUnit := m["unit"]
			if wantUnit := c.p.Meta != nil && c.p.Meta.Unit != ""; hasUnit != wantUnit || hasUnit && unit != c.p.Meta.Unit {
				t.Errorf("unit = %v (present %v), meta %+v", unit, hasUnit, c.p.Meta)
			}
			stale, hasStale := m["stale"]
			if hasStale != c.p.Stale || hasStale && stale != true {
				t.Errorf("stale = %v (present %v), want %v", stale, hasStale, c.p.Stale)
			}
			status, hasStatus := m["status"]
			if hasStatus != (c.p.Status != 0) || hasStatus && status != fmt.Sprintf("0x%08X", c.p.Status) {
				t.Errorf("status = %v (present %v), want %#x", status, hasStatus, c.p.Status)
			}
			if len(m) != 3+btoi(hasUnit)+btoi(hasStale)+btoi(hasStatus) {
				t.Errorf("unexpected keys: %v", m)
			}
		})
	}
}

func decodeObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if d.More() {
		t.Fatalf("trailing data after %s", b)
	}
	return m
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAppendJSONAllocs(t *testing.T) {
	buf := make([]byte, 0, 512)
	for _, c := range jsonCases {
		if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], &c.p) }); n != 0 {
			t.Errorf("%s: %v allocs per point, want 0", c.name, n)
		}
	}
}

func TestAppendMetaJSON(t *testing.T) {
	cases := []struct {
		m    model.TagMeta
		want string
	}{
		{model.TagMeta{Datatype: model.KindFloat, Unit: "degC", Description: `Tank "A" temperature`, Source: "plc1", Address: "holding:100:float32"},
			`{"datatype":"float64","unit":"degC","description":"Tank \"A\" temperature","source":"plc1","address":"holding:100:float32"}`},
		{model.TagMeta{Datatype: model.KindString, Description: "derived"},
			`{"datatype":"string","description":"derived"}`},
		{model.TagMeta{Datatype: model.KindUint},
			`{"datatype":"uint64"}`},
		{model.TagMeta{Datatype: model.KindInt, Width: 16, Source: "plc1", Address: "holding:7"},
			`{"datatype":"int16","source":"plc1","address":"holding:7"}`},
		{model.TagMeta{Datatype: model.KindFloat, Width: 32},
			`{"datatype":"float32"}`},
		{model.TagMeta{Source: "ua1", Address: "nsu=urn:x;s=Speed"},
			`{"datatype":"any","source":"ua1","address":"nsu=urn:x;s=Speed"}`},
	}
	for _, c := range cases {
		got := AppendMetaJSON(nil, &c.m)
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		m := decodeObject(t, got)
		wantType := c.m.TypeName()
		if c.m.Datatype == model.KindNull {
			wantType = "any"
		}
		if m["datatype"] != wantType || str(m["unit"]) != c.m.Unit || str(m["description"]) != c.m.Description ||
			str(m["source"]) != c.m.Source || str(m["address"]) != c.m.Address {
			t.Errorf("decoded %v, from %+v", m, c.m)
		}
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// FuzzAppendJSON: any point encodes to valid JSON that decodes back to the
// same fields.
func FuzzAppendJSON(f *testing.F) {
	f.Add(uint8(4), int64(-42), 23.4, "degC", "", uint8(2), false, int64(1717083000000))
	f.Add(uint8(3), int64(math.MinInt64), math.Inf(1), "", "x", uint8(1), true, int64(-1))
	f.Add(uint8(5), int64(0), 0.0, "\xff\x00\"", "a\u2029\xc3(", uint8(0), true, int64(0))
	f.Add(uint8(2), int64(1<<53), -1e-300, "m/s²", "", uint8(2), false, int64(math.MaxInt64/1000))
	f.Fuzz(func(t *testing.T, kind uint8, n int64, fl float64, unit, s string, q uint8, stale bool, ms int64) {
		var v model.Value
		switch kind % 6 {
		case 1:
			v = model.BoolValue(n&1 == 1)
		case 2:
			v = model.IntValue(n)
		case 3:
			v = model.UintValue(uint64(n))
		case 4:
			v = model.FloatValue(fl)
		case 5:
			v = model.StringValue(s)
		}
		p := model.Point{Meta: &model.TagMeta{Unit: unit}, Value: v, Quality: model.Quality(q % 3), Stale: stale, Time: time.UnixMilli(ms)}
		out := AppendJSON(nil, &p)
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("invalid JSON: %q", out)
		}
		m := decodeObject(t, out)
		if m["timestamp_ms"] != json.Number(strconv.FormatInt(ms, 10)) || m["quality"] != p.Quality.String() {
			t.Fatalf("header fields wrong: %s", out)
		}
		if _, ok := m["stale"]; ok != stale {
			t.Fatalf("stale: %s", out)
		}
		if got, ok := m["unit"]; (unit != "") != ok || utf8.ValidString(unit) && ok && got != unit {
			t.Fatalf("unit %q: %s", unit, out)
		}
		checkValue(t, &p, m["value"], out)
	})
}

func checkValue(t *testing.T, p *model.Point, got any, out []byte) {
	t.Helper()
	if p.Quality == model.QualityBad {
		if got != nil {
			t.Fatalf("BAD must carry null: %s", out)
		}
		return
	}
	v := p.Value
	switch v.Kind() {
	case model.KindNull:
		if got != nil {
			t.Fatalf("null: %s", out)
		}
	case model.KindBool:
		if got != v.Bool() {
			t.Fatalf("bool: %s", out)
		}
	case model.KindInt:
		want := strconv.FormatInt(v.Int(), 10)
		if i := v.Int(); i > 1<<53-1 || i < -(1<<53-1) {
			if got != want {
				t.Fatalf("big int must be a string: %s", out)
			}
		} else if got != json.Number(want) {
			t.Fatalf("int: %s", out)
		}
	case model.KindUint:
		want := strconv.FormatUint(v.Uint(), 10)
		if v.Uint() > 1<<53-1 {
			if got != want {
				t.Fatalf("big uint must be a string: %s", out)
			}
		} else if got != json.Number(want) {
			t.Fatalf("uint: %s", out)
		}
	case model.KindFloat:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			if got != nil {
				t.Fatalf("non-finite float must be null: %s", out)
			}
			return
		}
		num, ok := got.(json.Number)
		if !ok {
			t.Fatalf("float: %s", out)
		}
		back, err := num.Float64()
		if err != nil || back != f {
			t.Fatalf("float %v round-trips to %v: %s", f, back, out)
		}
	case model.KindString:
		if utf8.ValidString(v.Str()) && got != v.Str() {
			t.Fatalf("string %q decoded as %q", v.Str(), got)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	p := model.Point{Meta: withUnit, Value: model.FloatValue(23.456), Quality: model.QualityGood, Time: ts}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &p)
	}
}

func BenchmarkAppendJSONInt(b *testing.B) {
	p := model.Point{Meta: noUnit, Value: model.IntValue(123456), Quality: model.QualityGood, Time: ts}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &p)
	}
}
