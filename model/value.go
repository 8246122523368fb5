package model

import (
	"fmt"
	"math"
	"strconv"
)

// Kind is the dynamic type held by a Value.
type Kind uint8

const (
	KindNull Kind = iota
	KindBool
	KindInt    // int64
	KindUint   // uint64
	KindFloat  // float64
	KindString // UTF-8 text
	KindArray  // one-dimensional array of scalars (OPC UA arrays)
)

var kindNames = [...]string{"null", "bool", "int64", "uint64", "float64", "string", "array"}

// String returns the datatype name used in _meta messages and diagnostics.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a typed scalar without heap allocation for the numeric kinds. The
// zero Value is null. Values are compared and copied by value.
type Value struct {
	kind Kind
	// f32 marks a float that came from a 32-bit source value: it is printed
	// with float32 precision (500.1, not 500.1000061035156).
	f32 bool
	n   uint64 // bool (0/1), int64, uint64 or float64 bits
	s   string
	// arr holds the elements of an array; a pointer keeps Value small and
	// comparable. The elements are never modified after creation.
	arr *[]Value
}

func Null() Value { return Value{} }
func BoolValue(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.n = 1
	}
	return v
}
func IntValue(i int64) Value     { return Value{kind: KindInt, n: uint64(i)} }
func UintValue(u uint64) Value   { return Value{kind: KindUint, n: u} }
func FloatValue(f float64) Value { return Value{kind: KindFloat, n: math.Float64bits(f)} }
func StringValue(s string) Value { return Value{kind: KindString, s: s} }

// ArrayValue holds a one-dimensional array; it keeps elems, which the
// caller must not modify afterwards.
func ArrayValue(elems []Value) Value { return Value{kind: KindArray, arr: &elems} }

// Float32Value holds a 32-bit float. Its float64 value is the exact
// widening; it is formatted with the shortest text that identifies the
// float32, which is what the device meant.
func Float32Value(f float32) Value {
	return Value{kind: KindFloat, f32: true, n: math.Float64bits(float64(f))}
}

func (v Value) Kind() Kind     { return v.kind }
func (v Value) IsNull() bool   { return v.kind == KindNull }
func (v Value) Bool() bool     { return v.n != 0 }
func (v Value) Int() int64     { return int64(v.n) }
func (v Value) Uint() uint64   { return v.n }
func (v Value) Float() float64 { return math.Float64frombits(v.n) }
func (v Value) Str() string    { return v.s }

// Elems returns the elements of an array (nil for other kinds); do not
// modify them.
func (v Value) Elems() []Value {
	if v.arr == nil {
		return nil
	}
	return *v.arr
}

// AsFloat converts a numeric or boolean value to float64. ok is false for
// null and string values.
func (v Value) AsFloat() (f float64, ok bool) {
	switch v.kind {
	case KindBool:
		return float64(v.n), true
	case KindInt:
		return float64(int64(v.n)), true
	case KindUint:
		return float64(v.n), true
	case KindFloat:
		return v.Float(), true
	}
	return 0, false
}

// Equal reports whether v and o have the same kind and the same value.
// NaN equals NaN here, so an unchanged NaN is not reported as a change.
func (v Value) Equal(o Value) bool {
	if v.kind == KindArray && o.kind == KindArray {
		a, b := v.Elems(), o.Elems()
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !a[i].Equal(b[i]) {
				return false
			}
		}
		return true
	}
	return v.kind == o.kind && v.n == o.n && v.s == o.s
}

// Is32 reports whether a float value came from a 32-bit source.
func (v Value) Is32() bool { return v.f32 }

// Interface returns the value as bool, int64, uint64, float64, string or nil.
func (v Value) Interface() any {
	switch v.kind {
	case KindBool:
		return v.n != 0
	case KindInt:
		return int64(v.n)
	case KindUint:
		return v.n
	case KindFloat:
		return v.Float()
	case KindString:
		return v.s
	case KindArray:
		out := make([]any, len(v.Elems()))
		for i, e := range v.Elems() {
			out[i] = e.Interface()
		}
		return out
	}
	return nil
}

// FromInterface converts the result of an expression or a decoded scalar into
// a Value. Integer types keep their signedness; other types are an error.
func FromInterface(x any) (Value, error) {
	switch t := x.(type) {
	case nil:
		return Null(), nil
	case bool:
		return BoolValue(t), nil
	case int:
		return IntValue(int64(t)), nil
	case int8:
		return IntValue(int64(t)), nil
	case int16:
		return IntValue(int64(t)), nil
	case int32:
		return IntValue(int64(t)), nil
	case int64:
		return IntValue(t), nil
	case uint:
		return UintValue(uint64(t)), nil
	case uint8:
		return UintValue(uint64(t)), nil
	case uint16:
		return UintValue(uint64(t)), nil
	case uint32:
		return UintValue(uint64(t)), nil
	case uint64:
		return UintValue(t), nil
	case float32:
		return FloatValue(float64(t)), nil
	case float64:
		return FloatValue(t), nil
	case string:
		return StringValue(t), nil
	case []any:
		elems := make([]Value, len(t))
		for i, e := range t {
			v, err := FromInterface(e)
			if err != nil {
				return Null(), fmt.Errorf("element %d: %w", i, err)
			}
			if v.kind == KindArray {
				return Null(), fmt.Errorf("element %d: nested arrays are not supported", i)
			}
			elems[i] = v
		}
		return ArrayValue(elems), nil
	}
	return Null(), fmt.Errorf("unsupported value type %T", x)
}

// String formats the value for people (status page, logs).
func (v Value) String() string {
	switch v.kind {
	case KindBool:
		return strconv.FormatBool(v.n != 0)
	case KindInt:
		return strconv.FormatInt(int64(v.n), 10)
	case KindUint:
		return strconv.FormatUint(v.n, 10)
	case KindFloat:
		return strconv.FormatFloat(v.Float(), 'g', -1, v.bits())
	case KindString:
		return v.s
	case KindArray:
		b := []byte{'['}
		for i, e := range v.Elems() {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, e.String()...)
		}
		return string(append(b, ']'))
	}
	return "null"
}

func (v Value) bits() int {
	if v.f32 {
		return 32
	}
	return 64
}

// maxSafeInt is the largest integer a JSON consumer using IEEE doubles
// (JavaScript, many dashboards) represents exactly.
const maxSafeInt = 1<<53 - 1

// AppendJSON appends the value as a JSON value. Integers beyond ±(2^53-1)
// are written as decimal strings so that no consumer silently rounds them;
// NaN and infinities, which JSON cannot carry, are written as null.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.kind {
	case KindBool:
		if v.n != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case KindInt:
		i := int64(v.n)
		if i > maxSafeInt || i < -maxSafeInt {
			dst = append(dst, '"')
			dst = strconv.AppendInt(dst, i, 10)
			return append(dst, '"')
		}
		return strconv.AppendInt(dst, i, 10)
	case KindUint:
		if v.n > maxSafeInt {
			dst = append(dst, '"')
			dst = strconv.AppendUint(dst, v.n, 10)
			return append(dst, '"')
		}
		return strconv.AppendUint(dst, v.n, 10)
	case KindFloat:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(dst, "null"...)
		}
		return appendFloat(dst, f, v.bits())
	case KindString:
		return AppendJSONString(dst, v.s)
	case KindArray:
		dst = append(dst, '[')
		for i, e := range v.Elems() {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.AppendJSON(dst)
		}
		return append(dst, ']')
	}
	return append(dst, "null"...)
}

// appendFloat writes f the way encoding/json does: shortest representation,
// exponent form only for very large or very small magnitudes.
func appendFloat(dst []byte, f float64, bits int) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Each byte of invalid
// UTF-8 becomes U+FFFD, as encoding/json does, so the output is always valid
// JSON.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			i++
			continue
		}
		if c < 0x80 {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s[i:])
		if r == runeError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
