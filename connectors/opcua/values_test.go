package opcua

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// wire encodes x as an OPC UA variant and decodes it again, so the tests
// see exactly what the client library hands over after the network.
func wire(t testing.TB, x any) *ua.Variant {
	t.Helper()
	b, err := ua.MustVariant(x).Encode()
	if err != nil {
		t.Fatalf("encode %T: %v", x, err)
	}
	v := new(ua.Variant)
	if _, err := v.Decode(b); err != nil {
		t.Fatalf("decode %T: %v", x, err)
	}
	return v
}

func TestValueScalars(t *testing.T) {
	ts := time.Date(2024, 5, 30, 14, 30, 0, 123456700, time.FixedZone("CEST", 2*3600))
	g := ua.NewGUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63")
	cases := []struct {
		name string
		in   any
		want model.Value
	}{
		{"Boolean", true, model.BoolValue(true)},
		{"SByte", int8(-128), model.IntValue(-128)},
		{"Byte", uint8(255), model.UintValue(255)},
		{"Int16", int16(-32768), model.IntValue(-32768)},
		{"UInt16", uint16(65535), model.UintValue(65535)},
		{"Int32", int32(math.MinInt32), model.IntValue(math.MinInt32)},
		{"UInt32", uint32(math.MaxUint32), model.UintValue(math.MaxUint32)},
		{"Int64", int64(math.MinInt64), model.IntValue(math.MinInt64)},
		{"UInt64", uint64(math.MaxUint64), model.UintValue(math.MaxUint64)},
		{"Float", float32(500.1), model.Float32Value(500.1)},
		{"Double", 23.4, model.FloatValue(23.4)},
		{"String", "héllo", model.StringValue("héllo")},
		{"EmptyString", "", model.StringValue("")},
		{"DateTime", ts, model.StringValue("2024-05-30T12:30:00.123Z")},
		{"ByteString", []byte{0, 1, 2, 0xfe, 0xff}, model.StringValue("AAEC/v8=")},
		{"LocalizedText", ua.NewLocalizedTextWithLocale("Füllen", "de"), model.StringValue("Füllen")},
		{"Guid", g, model.StringValue("72962b91-fa75-4ae6-8d28-b404dc7daf63")},
	}
	var c converter
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.value(wire(t, tc.in), model.Null())
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) || got.Is32() != tc.want.Is32() {
				t.Fatalf("got %v (%s), want %v (%s)", got, got.Kind(), tc.want, tc.want.Kind())
			}
		})
	}
}

func TestValueNulls(t *testing.T) {
	var c converter
	for name, v := range map[string]*ua.Variant{
		"nil variant":     nil,
		"empty variant":   new(ua.Variant),
		"zero DateTime":   wire(t, time.Time{}),
		"null ByteString": wire(t, []byte(nil)),
	} {
		got, err := c.value(v, model.Null())
		if err != nil || !got.IsNull() {
			t.Errorf("%s: got %v, %v; want null", name, got, err)
		}
	}
}

func TestValueArrays(t *testing.T) {
	ts := time.Date(2001, 2, 3, 4, 5, 6, 7_000_000, time.UTC)
	s := model.StringValue
	cases := []struct {
		name string
		in   any
		want []model.Value
	}{
		{"Boolean", []bool{true, false}, []model.Value{model.BoolValue(true), model.BoolValue(false)}},
		{"SByte", []int8{-1, 2}, []model.Value{model.IntValue(-1), model.IntValue(2)}},
		{"Byte", ua.ByteArray{7, 255}, []model.Value{model.UintValue(7), model.UintValue(255)}},
		{"Int16", []int16{-3}, []model.Value{model.IntValue(-3)}},
		{"UInt16", []uint16{3}, []model.Value{model.UintValue(3)}},
		{"Int32", []int32{-4, 4}, []model.Value{model.IntValue(-4), model.IntValue(4)}},
		{"UInt32", []uint32{4}, []model.Value{model.UintValue(4)}},
		{"Int64", []int64{-5}, []model.Value{model.IntValue(-5)}},
		{"UInt64", []uint64{math.MaxUint64}, []model.Value{model.UintValue(math.MaxUint64)}},
		{"Float", []float32{1.5, 0.1}, []model.Value{model.Float32Value(1.5), model.Float32Value(0.1)}},
		{"Double", []float64{2.5}, []model.Value{model.FloatValue(2.5)}},
		{"String", []string{"a", ""}, []model.Value{s("a"), s("")}},
		{"DateTime", []time.Time{ts, {}}, []model.Value{s("2001-02-03T04:05:06.007Z"), model.Null()}},
		{"LocalizedText", []*ua.LocalizedText{ua.NewLocalizedText("x")}, []model.Value{s("x")}},
		{"Guid", []*ua.GUID{ua.NewGUID("00000000-0000-0000-0000-0000000000AB")}, []model.Value{s("00000000-0000-0000-0000-0000000000ab")}},
		{"Empty", []int32{}, []model.Value{}},
	}
	var c converter
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.value(wire(t, tc.in), model.Null())
			if err != nil {
				t.Fatal(err)
			}
			want := model.ArrayValue(tc.want)
			if got.Kind() != model.KindArray || !got.Equal(want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			for i, e := range got.Elems() {
				if e.Is32() != tc.want[i].Is32() {
					t.Fatalf("element %d: float32 flag %v, want %v", i, e.Is32(), tc.want[i].Is32())
				}
			}
		})
	}
}

// gopcua v0.9.0 does not encode ByteString arrays correctly (unequal
// lengths are refused as an unbalanced 2-D array, equal ones come out
// undecodable), so this one is built by hand: Part 6, 5.2.2.16 (array of ByteString, one of them null).
func TestValueByteStringArray(t *testing.T) {
	b := []byte{0x8f, 3, 0, 0, 0, // ByteString array, 3 elements
		1, 0, 0, 0, 0xfb, // [0xfb]
		0xff, 0xff, 0xff, 0xff, // null
		3, 0, 0, 0, 'a', 'b', 'c'}
	v := new(ua.Variant)
	if _, err := v.Decode(b); err != nil {
		t.Fatal(err)
	}
	var c converter
	got, err := c.value(v, model.Null())
	want := model.ArrayValue([]model.Value{model.StringValue("+w=="), model.Null(), model.StringValue("YWJj")})
	if err != nil || !got.Equal(want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
}

func TestValueUnsupported(t *testing.T) {
	var c converter
	for name, v := range map[string]*ua.Variant{
		"2-D array":     wire(t, [][]int32{{1, 2}, {3, 4}}),
		"NodeId":        wire(t, ua.NewNumericNodeID(1, 2)),
		"QualifiedName": wire(t, &ua.QualifiedName{NamespaceIndex: 1, Name: "x"}),
		"StatusCode":    wire(t, ua.StatusBad),
	} {
		got, err := c.value(v, model.Null())
		if !errors.Is(err, errUnsupportedType) || !got.IsNull() {
			t.Errorf("%s: got %v, %v; want null and errUnsupportedType", name, got, err)
		}
	}
}

func TestQuality(t *testing.T) {
	cases := []struct {
		code ua.StatusCode
		want model.Quality
	}{
		{ua.StatusGood, model.QualityGood},
		{0x00A00000, model.QualityGood}, // GoodClamped
		{ua.StatusUncertain, model.QualityUncertain},
		{ua.StatusUncertainLastUsableValue, model.QualityUncertain},
		{ua.StatusBad, model.QualityBad},
		{ua.StatusBadNodeIDUnknown, model.QualityBad},
		{0xC0000000, model.QualityBad}, // reserved severity 11
	}
	for _, tc := range cases {
		if got := quality(tc.code); got != tc.want {
			t.Errorf("quality(%#x) = %v, want %v", uint32(tc.code), got, tc.want)
		}
	}
}

func TestFillSample(t *testing.T) {
	src := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := src.Add(time.Second)
	var c converter
	cases := []struct {
		name    string
		dv      *ua.DataValue
		value   model.Value
		quality model.Quality
		status  uint32
		source  time.Time
		wantErr bool
	}{
		{"good with source time", &ua.DataValue{Value: ua.MustVariant(1.5), SourceTimestamp: src, ServerTimestamp: srv},
			model.FloatValue(1.5), model.QualityGood, 0, src, false},
		{"server time only", &ua.DataValue{Value: ua.MustVariant(int32(2)), ServerTimestamp: srv},
			model.IntValue(2), model.QualityGood, 0, srv, false},
		{"no time", &ua.DataValue{Value: ua.MustVariant("x")},
			model.StringValue("x"), model.QualityGood, 0, time.Time{}, false},
		{"uncertain keeps value and code", &ua.DataValue{Value: ua.MustVariant(3.0), Status: ua.StatusUncertainLastUsableValue, SourceTimestamp: src},
			model.FloatValue(3), model.QualityUncertain, uint32(ua.StatusUncertainLastUsableValue), src, false},
		{"bad drops value", &ua.DataValue{Value: ua.MustVariant(4.0), Status: ua.StatusBadNodeIDUnknown, ServerTimestamp: srv},
			model.Null(), model.QualityBad, uint32(ua.StatusBadNodeIDUnknown), srv, false},
		{"unsupported type", &ua.DataValue{Value: ua.MustVariant(ua.NewNumericNodeID(0, 1))},
			model.Null(), model.QualityBad, uint32(ua.StatusBadNotSupported), time.Time{}, true},
		{"missing data value", nil, model.Null(), model.QualityBad, uint32(ua.StatusBadNoData), time.Time{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Start from a dirty sample: the batch slices are reused.
			s := model.Sample{Value: model.IntValue(99), Quality: model.QualityGood, Status: 7, SourceTime: time.Unix(1, 0)}
			err := c.fillSample(&s, tc.dv, model.Null())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !s.Value.Equal(tc.value) || s.Quality != tc.quality || s.Status != tc.status || !s.SourceTime.Equal(tc.source) {
				t.Fatalf("got value %v quality %v status %#x time %v; want %v %v %#x %v",
					s.Value, s.Quality, s.Status, s.SourceTime, tc.value, tc.quality, tc.status, tc.source)
			}
		})
	}
}

// Scalars convert without allocating; DateTime, Guid and ByteString reuse
// the previous text when the value did not change.
func TestValueAllocs(t *testing.T) {
	var c converter
	ts := wire(t, time.Date(2024, 5, 30, 12, 0, 0, 0, time.UTC))
	g := wire(t, ua.NewGUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"))
	bs := wire(t, []byte("some opaque bytes"))
	scalars := []*ua.Variant{wire(t, 1.25), wire(t, float32(2)), wire(t, int32(-3)), wire(t, uint64(4)),
		wire(t, true), wire(t, "text"), wire(t, ua.NewLocalizedText("lt"))}
	for _, v := range append(scalars, ts, g, bs) {
		last, err := c.value(v, model.Null())
		if err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := c.value(v, last); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per conversion, want 0", v.Type(), allocs)
		}
	}
	// A changed DateTime needs its new text: exactly one allocation.
	other := wire(t, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	last, _ := c.value(ts, model.Null())
	if allocs := testing.AllocsPerRun(100, func() { _, _ = c.value(other, last) }); allocs != 1 {
		t.Errorf("changed DateTime: %v allocations, want 1", allocs)
	}
}

// FuzzVariantValue decodes arbitrary bytes as a variant, as the client does
// with a server's data, and converts the result: no panic, and a value of
// a supported type is never an error while an unsupported one is null.
func FuzzVariantValue(f *testing.F) {
	for _, x := range []any{true, int8(-1), uint8(1), int16(2), uint16(3), int32(4), uint32(5), int64(6), uint64(7),
		float32(1.5), 2.5, "s", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), []byte{1, 2},
		ua.NewLocalizedText("t"), ua.NewGUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"),
		[]int32{1, 2}, []string{"a"}, ua.ByteArray{1}, [][]int16{{1}, {2}}, ua.NewNumericNodeID(0, 1)} {
		b, err := ua.MustVariant(x).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x86, 0xff, 0xff, 0xff, 0xff}) // null array of Int32
	f.Add([]byte{0xc6, 0x01, 0, 0, 0, 1, 0, 0, 0, 0x01, 0, 0, 0, 1, 0, 0, 0})
	var c converter
	f.Fuzz(func(t *testing.T, b []byte) {
		v := new(ua.Variant)
		if !decodes(v, b) {
			return
		}
		last := model.StringValue("2020-01-01T00:00:00.000Z")
		got, err := c.value(v, last)
		if err != nil {
			if !errors.Is(err, errUnsupportedType) || !got.IsNull() {
				t.Fatalf("error %v with value %v", err, got)
			}
			return
		}
		if got.Kind() == model.KindArray {
			for _, e := range got.Elems() {
				if e.Kind() == model.KindArray {
					t.Fatalf("nested array from %x", b)
				}
			}
		}
		var s model.Sample
		dv := &ua.DataValue{Value: v, Status: ua.StatusCode(len(b)) << 24}
		if err := c.fillSample(&s, dv, last); err != nil {
			t.Fatalf("fillSample: %v after value succeeded", err)
		}
		if s.Quality == model.QualityBad && !s.Value.IsNull() {
			t.Fatalf("BAD sample with value %v", s.Value)
		}
	})
}

// decodes reports whether the library decodes b. Its decoder may panic on
// hostile input, and gopcua v0.9.0 allocates the array dimensions a
// variant declares before reading them (up to 2^31 int32s): both are
// upstream problems, not the conversion under test, so such input is
// skipped.
func decodes(v *ua.Variant, b []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	if len(b) > 0 && b[0]&ua.VariantArrayDimensions != 0 && !plausibleDims(b) {
		return false
	}
	_, err := v.Decode(b)
	return err == nil
}

// plausibleDims decodes just enough of a multi-dimensional variant to see
// whether its declared number of dimensions fits in the input.
func plausibleDims(b []byte) bool {
	v := new(ua.Variant)
	probe := append([]byte{b[0] &^ ua.VariantArrayDimensions}, b[1:]...)
	n, err := v.Decode(probe)
	if err != nil || len(b) < n+4 {
		return false
	}
	dims := int32(uint32(b[n]) | uint32(b[n+1])<<8 | uint32(b[n+2])<<16 | uint32(b[n+3])<<24)
	return dims >= 0 && int(dims) <= (len(b)-n-4)/4
}
