package model

import (
	"encoding/json"
	"math"
	"testing"
)

func TestValueAppendJSON(t *testing.T) {
	for _, c := range []struct {
		v    Value
		want string
	}{
		{Null(), `null`},
		{BoolValue(true), `true`},
		{IntValue(-42), `-42`},
		{IntValue(1<<53 - 1), `9007199254740991`},
		{IntValue(1 << 53), `"9007199254740992"`},
		{IntValue(math.MinInt64), `"-9223372036854775808"`},
		{UintValue(math.MaxUint64), `"18446744073709551615"`},
		{FloatValue(23.4), `23.4`},
		{FloatValue(1e-7), `1e-7`},
		{FloatValue(1e21), `1e+21`},
		{FloatValue(math.NaN()), `null`},
		{FloatValue(math.Inf(-1)), `null`},
		{Float32Value(500.1), `500.1`},
		{Float32Value(123.456), `123.456`},
		{StringValue("a\"b\\c\n\u2028\x01é"), `"a\"b\\c\n\u2028\u0001é"`},
		{StringValue("\xff"), `"\ufffd"`},
	} {
		got := string(c.v.AppendJSON(nil))
		if got != c.want {
			t.Errorf("%v: got %s, want %s", c.v, got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%v: invalid JSON %s", c.v, got)
		}
	}
	// A float32 keeps its exact float64 widening for arithmetic.
	if f := Float32Value(500.1).Float(); f != float64(float32(500.1)) {
		t.Errorf("Float32Value widening = %v", f)
	}
}

func TestValueAppendJSONAllocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	v := FloatValue(123.25)
	if n := testing.AllocsPerRun(100, func() { buf = v.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times", n)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"", "\x00\x1f", "\xff\xfe", "日本", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendJSONString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON for %q: %s", s, out)
		}
	})
}

func TestArrayValue(t *testing.T) {
	a := ArrayValue([]Value{IntValue(-1), Float32Value(0.1), StringValue(`q"`), BoolValue(true), UintValue(1 << 60)})
	if got := string(a.AppendJSON(nil)); got != `[-1,0.1,"q\"",true,"1152921504606846976"]` {
		t.Errorf("JSON %s", got)
	}
	if got := a.String(); got != `[-1, 0.1, q", true, 1152921504606846976]` {
		t.Errorf("String %s", got)
	}
	b := ArrayValue([]Value{IntValue(-1), Float32Value(0.1), StringValue(`q"`), BoolValue(true), UintValue(1 << 60)})
	if !a.Equal(b) || a.Equal(ArrayValue(nil)) || a.Equal(IntValue(1)) {
		t.Error("array equality is wrong")
	}
	if _, ok := a.AsFloat(); ok {
		t.Error("array converted to float")
	}
	back, err := FromInterface(a.Interface())
	if err != nil || len(back.Elems()) != 5 || back.Elems()[0].Int() != -1 || back.Elems()[2].Str() != `q"` {
		t.Errorf("round trip: %v %v", back, err)
	}
	if _, err := FromInterface([]any{[]any{1}}); err == nil {
		t.Error("nested array accepted")
	}
	if got := string(ArrayValue(nil).AppendJSON(nil)); got != "[]" {
		t.Errorf("empty array JSON %s", got)
	}
}
