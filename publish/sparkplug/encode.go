package sparkplug

import (
	"encoding/binary"
	"math"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

// Quality property values (the Quality property of a metric, Int32). GOOD
// is the default and not sent.
const (
	QualityBad       = 0
	QualityUncertain = 64
	QualityGood      = 192
	QualityStale     = 500
)

// QualityKey is the property that carries a metric's quality.
const QualityKey = "Quality"

// encoder is the Fanout's publish.Encoder for Sparkplug sinks. A queued
// message's payload is one byte, the metric's DataType as the value was
// encoded (0 when the value is null and the tag untyped), followed by the
// Metric fields that do not depend on the session: timestamp, the value or
// is_null, and the Quality property when not GOOD. The sink adds the
// name or alias (and is_historical) when it sends the metric; protobuf
// fields may come in any order.
type encoder struct{}

// AppendPoint implements publish.Encoder.
func (encoder) AppendPoint(dst []byte, p *model.Point) []byte {
	dt := typeOf(p.Meta, p.Value)
	dst = append(dst, byte(dt))
	dst = appendVarint(dst, metricTimestamp, uint64(p.Time.UnixMilli()))
	q := qualityOf(p.Quality, p.Stale)
	ok := false
	if p.Quality != model.QualityBad && !p.Value.IsNull() {
		dst, ok = appendValue(dst, dt, p.Value)
	}
	if !ok {
		if p.Quality != model.QualityBad && !p.Value.IsNull() {
			q = QualityBad // a value this datatype cannot carry: say so rather than send it wrong
		}
		dst = appendBool(dst, metricIsNull, true)
	}
	if q != QualityGood {
		dst = appendQuality(dst, q)
	}
	return dst
}

// Encoder is the publish.Encoder every Sparkplug sink uses.
var Encoder publish.Encoder = encoder{}

func qualityOf(q model.Quality, stale bool) int32 {
	switch {
	case q == model.QualityBad:
		return QualityBad
	case stale:
		return QualityStale
	case q == model.QualityUncertain:
		return QualityUncertain
	}
	return QualityGood
}

// appendQuality appends the properties field with the Quality property.
func appendQuality(dst []byte, q int32) []byte {
	var pv [16]byte
	v := appendVarint(pv[:0], propertyType, uint64(TypeInt32))
	v = appendVarint(v, propertyIntValue, uint64(uint32(q)))
	// PropertySet{keys: ["Quality"], values: [v]}
	setLen := 1 + 1 + len(QualityKey) + 1 + varintLen(uint64(len(v))) + len(v)
	dst = binary.AppendUvarint(appendKey(dst, metricProperties, wireBytes), uint64(setLen))
	dst = appendString(dst, propertySetKeys, QualityKey)
	return appendBytes(dst, propertySetValues, v)
}

// typeOf is the Sparkplug datatype of a tag: its declared type when it has
// one, else the type of v (TypeUnknown for null).
func typeOf(meta *model.TagMeta, v model.Value) DataType {
	if meta != nil {
		if dt := declaredType(meta); dt != TypeUnknown {
			return dt
		}
	}
	return valueType(v)
}

// declaredType maps a tag's harmonized datatype (and width) to Sparkplug;
// TypeUnknown when the tag's type is only known from its values.
func declaredType(meta *model.TagMeta) DataType {
	switch meta.Datatype {
	case model.KindBool:
		return TypeBoolean
	case model.KindString:
		return TypeString
	case model.KindInt:
		switch meta.Width {
		case 8:
			return TypeInt8
		case 16:
			return TypeInt16
		case 32:
			return TypeInt32
		}
		return TypeInt64
	case model.KindUint:
		switch meta.Width {
		case 8:
			return TypeUInt8
		case 16:
			return TypeUInt16
		case 32:
			return TypeUInt32
		}
		return TypeUInt64
	case model.KindFloat:
		if meta.Width == 32 {
			return TypeFloat
		}
		return TypeDouble
	}
	return TypeUnknown
}

// valueType is the datatype a value of an untyped tag is sent as.
func valueType(v model.Value) DataType {
	switch v.Kind() {
	case model.KindBool:
		return TypeBoolean
	case model.KindInt:
		return TypeInt64
	case model.KindUint:
		return TypeUInt64
	case model.KindFloat:
		if v.Is32() {
			return TypeFloat
		}
		return TypeDouble
	case model.KindString:
		return TypeString
	case model.KindArray:
		elems := v.Elems()
		if len(elems) == 0 {
			return TypeUnknown
		}
		switch elems[0].Kind() {
		case model.KindBool:
			return TypeBooleanArray
		case model.KindInt:
			return TypeInt64Array
		case model.KindUint:
			return TypeUInt64Array
		case model.KindFloat:
			if elems[0].Is32() {
				return TypeFloatArray
			}
			return TypeDoubleArray
		case model.KindString:
			return TypeStringArray
		}
	}
	return TypeUnknown
}

// appendValue appends v in the value field datatype dt uses. ok is false
// when v does not fit dt (nothing is appended then).
func appendValue(dst []byte, dt DataType, v model.Value) ([]byte, bool) {
	switch dt {
	case TypeInt8, TypeInt16, TypeInt32:
		i, ok := asInt(v)
		lo, hi := intRange(dt)
		if !ok || i < lo || i > hi {
			return dst, false
		}
		// int_value is a uint32: signed types travel as 32-bit two's
		// complement, so -1 is 0xFFFFFFFF whatever the width.
		return appendVarint(dst, metricIntValue, uint64(uint32(int32(i)))), true
	case TypeUInt8, TypeUInt16:
		u, ok := asUint(v)
		if !ok || u > uintMax(dt) {
			return dst, false
		}
		return appendVarint(dst, metricIntValue, u), true
	case TypeUInt32, TypeUInt64:
		u, ok := asUint(v)
		if !ok || u > uintMax(dt) {
			return dst, false
		}
		return appendVarint(dst, metricLongValue, u), true
	case TypeInt64:
		i, ok := asInt(v)
		if !ok {
			return dst, false
		}
		return appendVarint(dst, metricLongValue, uint64(i)), true
	case TypeFloat, TypeDouble:
		if v.Kind() != model.KindFloat && v.Kind() != model.KindInt && v.Kind() != model.KindUint {
			return dst, false
		}
		f, _ := v.AsFloat()
		if dt == TypeFloat {
			return appendFixed32(dst, metricFloatValue, math.Float32bits(float32(f))), true
		}
		return appendFixed64(dst, metricDoubleValue, math.Float64bits(f)), true
	case TypeBoolean:
		if v.Kind() != model.KindBool {
			return dst, false
		}
		return appendBool(dst, metricBooleanValue, v.Bool()), true
	case TypeString:
		if v.Kind() != model.KindString {
			return dst, false
		}
		return appendString(dst, metricStringValue, v.Str()), true
	case TypeBooleanArray, TypeInt64Array, TypeUInt64Array, TypeFloatArray, TypeDoubleArray, TypeStringArray:
		return appendArray(dst, dt, v)
	}
	return dst, false
}

// appendArray packs an array into bytes_value: fixed-width little-endian
// elements; BooleanArray as a 4-byte little-endian count and the bits,
// most significant first; StringArray as NUL-terminated strings.
func appendArray(dst []byte, dt DataType, v model.Value) ([]byte, bool) {
	elems := v.Elems()
	var body []byte
	switch dt {
	case TypeBooleanArray:
		body = binary.LittleEndian.AppendUint32(make([]byte, 0, 4+(len(elems)+7)/8), uint32(len(elems)))
		body = append(body, make([]byte, (len(elems)+7)/8)...)
		for i, e := range elems {
			if e.Kind() != model.KindBool {
				return dst, false
			}
			if e.Bool() {
				body[4+i/8] |= 0x80 >> (i % 8)
			}
		}
	case TypeInt64Array:
		for _, e := range elems {
			i, ok := asInt(e)
			if !ok {
				return dst, false
			}
			body = binary.LittleEndian.AppendUint64(body, uint64(i))
		}
	case TypeUInt64Array:
		for _, e := range elems {
			u, ok := asUint(e)
			if !ok {
				return dst, false
			}
			body = binary.LittleEndian.AppendUint64(body, u)
		}
	case TypeFloatArray, TypeDoubleArray:
		for _, e := range elems {
			if e.Kind() != model.KindFloat {
				return dst, false
			}
			if dt == TypeFloatArray {
				body = binary.LittleEndian.AppendUint32(body, math.Float32bits(float32(e.Float())))
			} else {
				body = binary.LittleEndian.AppendUint64(body, math.Float64bits(e.Float()))
			}
		}
	case TypeStringArray:
		for _, e := range elems {
			if e.Kind() != model.KindString {
				return dst, false
			}
			body = append(append(body, e.Str()...), 0)
		}
	}
	return appendBytes(dst, metricBytesValue, body), true
}

func asInt(v model.Value) (int64, bool) {
	switch v.Kind() {
	case model.KindInt:
		return v.Int(), true
	case model.KindUint:
		return int64(v.Uint()), v.Uint() <= math.MaxInt64
	}
	return 0, false
}

func asUint(v model.Value) (uint64, bool) {
	switch v.Kind() {
	case model.KindUint:
		return v.Uint(), true
	case model.KindInt:
		return uint64(v.Int()), v.Int() >= 0
	}
	return 0, false
}

func intRange(dt DataType) (lo, hi int64) {
	switch dt {
	case TypeInt8:
		return math.MinInt8, math.MaxInt8
	case TypeInt16:
		return math.MinInt16, math.MaxInt16
	}
	return math.MinInt32, math.MaxInt32
}

func uintMax(dt DataType) uint64 {
	switch dt {
	case TypeUInt8:
		return math.MaxUint8
	case TypeUInt16:
		return math.MaxUint16
	case TypeUInt32:
		return math.MaxUint32
	}
	return math.MaxUint64
}
