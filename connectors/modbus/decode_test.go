package modbus

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"unicode/utf8"

	"github.com/unsgate/unsgate/model"
)

func reg(t model.RawType, o model.ByteOrder) *model.ModbusAddress {
	return &model.ModbusAddress{Area: model.AreaHoldingRegister, Type: t, Order: o, Bit: -1}
}

// Every case spells the registers out by hand from the value's big-endian
// bytes A.. and the order's letters.
func TestDecodeKnownLayouts(t *testing.T) {
	f32 := float32(123.456) // 0x42F6E979
	f64 := 123.456          // 0x405EDD2F1A9FBE77
	cases := []struct {
		name string
		typ  model.RawType
		ord  model.ByteOrder
		regs []uint16
		want model.Value
	}{
		{"int16 -1", model.RawInt16, model.OrderABCD, []uint16{0xFFFF}, model.IntValue(-1)},
		{"int16 min", model.RawInt16, model.OrderABCD, []uint16{0x8000}, model.IntValue(math.MinInt16)},
		{"int16 ignores order", model.RawInt16, model.OrderDCBA, []uint16{0x0102}, model.IntValue(0x0102)},
		{"uint16 max", model.RawUint16, model.OrderABCD, []uint16{0xFFFF}, model.UintValue(65535)},
		{"uint16 ignores order", model.RawUint16, model.OrderBADC, []uint16{0x0102}, model.UintValue(0x0102)},

		{"float32 ABCD", model.RawFloat32, model.OrderABCD, []uint16{0x42F6, 0xE979}, model.Float32Value(f32)},
		{"float32 BADC", model.RawFloat32, model.OrderBADC, []uint16{0xF642, 0x79E9}, model.Float32Value(f32)},
		{"float32 CDAB", model.RawFloat32, model.OrderCDAB, []uint16{0xE979, 0x42F6}, model.Float32Value(f32)},
		{"float32 DCBA", model.RawFloat32, model.OrderDCBA, []uint16{0x79E9, 0xF642}, model.Float32Value(f32)},

		{"int32 min ABCD", model.RawInt32, model.OrderABCD, []uint16{0x8000, 0x0000}, model.IntValue(math.MinInt32)},
		{"int32 min BADC", model.RawInt32, model.OrderBADC, []uint16{0x0080, 0x0000}, model.IntValue(math.MinInt32)},
		{"int32 min CDAB", model.RawInt32, model.OrderCDAB, []uint16{0x0000, 0x8000}, model.IntValue(math.MinInt32)},
		{"int32 min DCBA", model.RawInt32, model.OrderDCBA, []uint16{0x0000, 0x0080}, model.IntValue(math.MinInt32)},
		{"int32 -2 CDAB", model.RawInt32, model.OrderCDAB, []uint16{0xFFFE, 0xFFFF}, model.IntValue(-2)},

		{"uint32 ABCD", model.RawUint32, model.OrderABCD, []uint16{0x0102, 0x0304}, model.UintValue(0x01020304)},
		{"uint32 BADC", model.RawUint32, model.OrderBADC, []uint16{0x0201, 0x0403}, model.UintValue(0x01020304)},
		{"uint32 CDAB", model.RawUint32, model.OrderCDAB, []uint16{0x0304, 0x0102}, model.UintValue(0x01020304)},
		{"uint32 DCBA", model.RawUint32, model.OrderDCBA, []uint16{0x0403, 0x0201}, model.UintValue(0x01020304)},
		{"uint32 max", model.RawUint32, model.OrderABCD, []uint16{0xFFFF, 0xFFFF}, model.UintValue(math.MaxUint32)},

		{"int64 -2 ABCDEFGH", model.RawInt64, model.OrderABCD, []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE}, model.IntValue(-2)},
		{"int64 -2 BADCFEHG", model.RawInt64, model.OrderBADC, []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF}, model.IntValue(-2)},
		{"int64 -2 GHEFCDAB", model.RawInt64, model.OrderCDAB, []uint16{0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF}, model.IntValue(-2)},
		{"int64 -2 HGFEDCBA", model.RawInt64, model.OrderDCBA, []uint16{0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF}, model.IntValue(-2)},
		{"int64 min", model.RawInt64, model.OrderABCD, []uint16{0x8000, 0, 0, 0}, model.IntValue(math.MinInt64)},

		{"uint64 ABCDEFGH", model.RawUint64, model.OrderABCD, []uint16{0x0102, 0x0304, 0x0506, 0x0708}, model.UintValue(0x0102030405060708)},
		{"uint64 BADCFEHG", model.RawUint64, model.OrderBADC, []uint16{0x0201, 0x0403, 0x0605, 0x0807}, model.UintValue(0x0102030405060708)},
		{"uint64 GHEFCDAB", model.RawUint64, model.OrderCDAB, []uint16{0x0708, 0x0506, 0x0304, 0x0102}, model.UintValue(0x0102030405060708)},
		{"uint64 HGFEDCBA", model.RawUint64, model.OrderDCBA, []uint16{0x0807, 0x0605, 0x0403, 0x0201}, model.UintValue(0x0102030405060708)},
		{"uint64 max", model.RawUint64, model.OrderCDAB, []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, model.UintValue(math.MaxUint64)},

		{"float64 ABCDEFGH", model.RawFloat64, model.OrderABCD, []uint16{0x405E, 0xDD2F, 0x1A9F, 0xBE77}, model.FloatValue(f64)},
		{"float64 BADCFEHG", model.RawFloat64, model.OrderBADC, []uint16{0x5E40, 0x2FDD, 0x9F1A, 0x77BE}, model.FloatValue(f64)},
		{"float64 GHEFCDAB", model.RawFloat64, model.OrderCDAB, []uint16{0xBE77, 0x1A9F, 0xDD2F, 0x405E}, model.FloatValue(f64)},
		{"float64 HGFEDCBA", model.RawFloat64, model.OrderDCBA, []uint16{0x77BE, 0x9F1A, 0x2FDD, 0x5E40}, model.FloatValue(f64)},

		{"bool register zero", model.RawBool, model.OrderABCD, []uint16{0}, model.BoolValue(false)},
		{"bool register nonzero", model.RawBool, model.OrderABCD, []uint16{0x0100}, model.BoolValue(true)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// trailing registers must be ignored
			regs := append(append([]uint16(nil), c.regs...), 0xDEAD, 0xBEEF)
			got, err := Decode(regs, reg(c.typ, c.ord))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(c.want) {
				t.Fatalf("got %v (%v), want %v (%v)", got, got.Kind(), c.want, c.want.Kind())
			}
			if got.Kind() != c.typ.ValueKind() {
				t.Fatalf("kind %v, want %v", got.Kind(), c.typ.ValueKind())
			}
		})
	}
}

func TestDecodeBit(t *testing.T) {
	for bit := range 16 {
		a := &model.ModbusAddress{Area: model.AreaInputRegister, Type: model.RawBool, Bit: bit}
		for _, r := range []uint16{0, 0xFFFF, 1 << bit, ^uint16(1 << bit), 0xA5A5} {
			got, err := Decode([]uint16{r}, a)
			if err != nil {
				t.Fatal(err)
			}
			if want := r&(1<<bit) != 0; got.Bool() != want || got.Kind() != model.KindBool {
				t.Fatalf("bit %d of %#04x = %v, want %v", bit, r, got, want)
			}
		}
	}
	coil := &model.ModbusAddress{Area: model.AreaCoil, Type: model.RawBool, Bit: -1}
	for _, b := range []bool{false, true} {
		got, err := DecodeBits([]bool{b, !b}, coil)
		if err != nil || got.Kind() != model.KindBool || got.Bool() != b {
			t.Fatalf("DecodeBits(%v) = %v, %v", b, got, err)
		}
	}
	if _, err := DecodeBits(nil, coil); !errors.Is(err, ErrShortBlock) {
		t.Fatalf("empty block: %v", err)
	}
	if _, err := DecodeBits([]bool{true}, reg(model.RawUint16, 0)); !errors.Is(err, ErrUndecodable) {
		t.Fatalf("uint16 from a bit: %v", err)
	}
}

func TestDecodeString(t *testing.T) {
	cases := []struct {
		name string
		regs []uint16
		ord  model.ByteOrder
		want string
	}{
		{"ABCD NUL padded", []uint16{0x4845, 0x4C4C, 0x4F00}, model.OrderABCD, "HELLO"},
		{"BADC NUL padded", []uint16{0x4548, 0x4C4C, 0x004F}, model.OrderBADC, "HELLO"},
		{"space padded", []uint16{0x4142, 0x2020, 0x2020}, model.OrderABCD, "AB"},
		{"spaces then NULs", []uint16{0x4120, 0x2000, 0x0000}, model.OrderABCD, "A"},
		{"inner space kept", []uint16{0x4120, 0x4200}, model.OrderABCD, "A B"},
		{"leading space kept", []uint16{0x2041}, model.OrderABCD, " A"},
		{"ends at first NUL", []uint16{0x4100, 0x4243}, model.OrderABCD, "A"},
		{"all NUL", []uint16{0, 0}, model.OrderABCD, ""},
		{"full length", []uint16{0x3132, 0x3334}, model.OrderABCD, "1234"},
		{"non-ASCII replaced", []uint16{0x41FF, 0xC3A9}, model.OrderABCD, "A\uFFFD\uFFFD\uFFFD"},
		{"control kept", []uint16{0x0941}, model.OrderABCD, "\tA"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := reg(model.RawString, c.ord)
			a.Length = len(c.regs)
			got, err := Decode(append(c.regs, 0x5858), a) // 'XX' past the end is not part of it
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind() != model.KindString || got.Str() != c.want {
				t.Fatalf("got %q, want %q", got.Str(), c.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name string
		regs []uint16
		a    model.ModbusAddress
		want error
	}{
		{"short float64", []uint16{1, 2, 3}, *reg(model.RawFloat64, 0), ErrShortBlock},
		{"empty", nil, *reg(model.RawUint16, 0), ErrShortBlock},
		{"unknown type", []uint16{1}, *reg(0, 0), ErrUndecodable},
		{"type past string", []uint16{1}, *reg(model.RawString+1, 0), ErrUndecodable},
		{"bad order", []uint16{1, 2}, *reg(model.RawUint32, 9), ErrUndecodable},
		{"bit 16", []uint16{1}, model.ModbusAddress{Type: model.RawBool, Bit: 16}, ErrUndecodable},
		{"bit -2", []uint16{1}, model.ModbusAddress{Type: model.RawBool, Bit: -2}, ErrUndecodable},
		{"string length 0", []uint16{1}, model.ModbusAddress{Type: model.RawString}, ErrUndecodable},
		{"string too long", make([]uint16, 200), model.ModbusAddress{Type: model.RawString, Length: 126}, ErrUndecodable},
		{"string short block", []uint16{1}, model.ModbusAddress{Type: model.RawString, Length: 2}, ErrShortBlock},
	}
	for _, c := range cases {
		if _, err := Decode(c.regs, &c.a); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

// Round trip against the letter-based encoder in server_test.go for many
// values: an independent check of every order.
func TestDecodeRoundTrip(t *testing.T) {
	vals := []uint64{0, 1, math.MaxUint64, 0x0102030405060708, 0x8000000000000000, 0xDEADBEEFCAFEF00D}
	for _, u := range vals {
		for o := model.OrderABCD; o <= model.OrderDCBA; o++ {
			be := binary.BigEndian.AppendUint64(nil, u)
			regs := encodeBytes(be, letters(o, 8))
			check := func(typ model.RawType, want model.Value) {
				t.Helper()
				got, err := Decode(regs, reg(typ, o))
				if err != nil || !got.Equal(want) {
					t.Errorf("%v %v of %#x: got %v, %v; want %v", typ, o, u, got, err, want)
				}
			}
			check(model.RawUint64, model.UintValue(u))
			check(model.RawInt64, model.IntValue(int64(u)))
			check(model.RawFloat64, model.FloatValue(math.Float64frombits(u)))

			u32 := uint32(u)
			regs = encodeBytes(binary.BigEndian.AppendUint32(nil, u32), letters(o, 4))
			check(model.RawUint32, model.UintValue(uint64(u32)))
			check(model.RawInt32, model.IntValue(int64(int32(u32))))
			check(model.RawFloat32, model.FloatValue(float64(math.Float32frombits(u32))))
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	regs := []uint16{0x405E, 0xDD2F, 0x1A9F, 0xBE77}
	for typ := model.RawBool; typ < model.RawString; typ++ {
		for o := model.OrderABCD; o <= model.OrderDCBA; o++ {
			a := reg(typ, o)
			if n := testing.AllocsPerRun(100, func() { Decode(regs, a) }); n != 0 {
				t.Errorf("%v %v: %v allocs", typ, o, n)
			}
		}
	}
	bits := []bool{true}
	coil := &model.ModbusAddress{Area: model.AreaCoil, Type: model.RawBool, Bit: -1}
	if n := testing.AllocsPerRun(100, func() { DecodeBits(bits, coil) }); n != 0 {
		t.Errorf("DecodeBits: %v allocs", n)
	}
	// an ASCII string costs exactly the string
	s := reg(model.RawString, 0)
	s.Length = 4
	text := []uint16{0x4142, 0x4344, 0x4546, 0x4748}
	if n := testing.AllocsPerRun(100, func() { Decode(text, s) }); n != 1 {
		t.Errorf("string: %v allocs, want 1", n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x42, 0xF6, 0xE9, 0x79}, uint8(model.RawFloat32), uint8(model.OrderCDAB), int8(-1), uint8(0))
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 0}, uint8(model.RawInt64), uint8(model.OrderDCBA), int8(-1), uint8(0))
	f.Add([]byte("HELLO\x00\xff\x80 "), uint8(model.RawString), uint8(model.OrderBADC), int8(-1), uint8(5))
	f.Add([]byte{0x80, 0x01}, uint8(model.RawBool), uint8(0), int8(15), uint8(0))
	f.Add([]byte{}, uint8(model.RawUint16), uint8(0), int8(-1), uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(200), uint8(7), int8(40), uint8(255))
	f.Fuzz(func(t *testing.T, data []byte, typ, order uint8, bit int8, length uint8) {
		regs := make([]uint16, len(data)/2)
		for i := range regs {
			regs[i] = binary.BigEndian.Uint16(data[2*i:])
		}
		a := &model.ModbusAddress{Area: model.AreaHoldingRegister, Type: model.RawType(typ),
			Order: model.ByteOrder(order), Bit: int(bit), Length: int(length)}
		v, err := Decode(regs, a)
		if err != nil {
			if !v.IsNull() {
				t.Fatalf("error %v with value %v", err, v)
			}
			return
		}
		if v.Kind() != a.Type.ValueKind() {
			t.Fatalf("kind %v for %v", v.Kind(), a.Type)
		}
		if v.Kind() == model.KindString {
			if !utf8.ValidString(v.Str()) {
				t.Fatalf("invalid UTF-8 %q", v.Str())
			}
			if len(v.Str()) > 3*2*a.Length {
				t.Fatalf("string of %d bytes from %d registers", len(v.Str()), a.Length)
			}
		}
		bits := make([]bool, len(data))
		for i, c := range data {
			bits[i] = c&1 == 1
		}
		if v, err := DecodeBits(bits, a); err == nil && (v.Kind() != model.KindBool || v.Bool() != bits[0]) {
			t.Fatalf("DecodeBits = %v", v)
		}
	})
}
