package sparkplug

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// DataType is a Sparkplug B datatype (the specification's DataType enum).
type DataType uint32

// The datatypes of Sparkplug B 3.0.
const (
	TypeUnknown         DataType = 0
	TypeInt8            DataType = 1
	TypeInt16           DataType = 2
	TypeInt32           DataType = 3
	TypeInt64           DataType = 4
	TypeUInt8           DataType = 5
	TypeUInt16          DataType = 6
	TypeUInt32          DataType = 7
	TypeUInt64          DataType = 8
	TypeFloat           DataType = 9
	TypeDouble          DataType = 10
	TypeBoolean         DataType = 11
	TypeString          DataType = 12
	TypeDateTime        DataType = 13
	TypeText            DataType = 14
	TypeUUID            DataType = 15
	TypeDataSet         DataType = 16
	TypeBytes           DataType = 17
	TypeFile            DataType = 18
	TypeTemplate        DataType = 19
	TypePropertySet     DataType = 20
	TypePropertySetList DataType = 21
	TypeInt8Array       DataType = 22
	TypeInt16Array      DataType = 23
	TypeInt32Array      DataType = 24
	TypeInt64Array      DataType = 25
	TypeUInt8Array      DataType = 26
	TypeUInt16Array     DataType = 27
	TypeUInt32Array     DataType = 28
	TypeUInt64Array     DataType = 29
	TypeFloatArray      DataType = 30
	TypeDoubleArray     DataType = 31
	TypeBooleanArray    DataType = 32
	TypeStringArray     DataType = 33
	TypeDateTimeArray   DataType = 34
)

var typeNames = [...]string{"Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32",
	"UInt64", "Float", "Double", "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes", "File",
	"Template", "PropertySet", "PropertySetList", "Int8Array", "Int16Array", "Int32Array", "Int64Array",
	"UInt8Array", "UInt16Array", "UInt32Array", "UInt64Array", "FloatArray", "DoubleArray", "BooleanArray",
	"StringArray", "DateTimeArray"}

func (t DataType) String() string {
	if t < DataType(len(typeNames)) {
		return typeNames[t]
	}
	return fmt.Sprintf("DataType(%d)", uint32(t))
}

// Field numbers of the Sparkplug B protobuf messages.
const (
	payloadTimestamp = 1
	payloadMetrics   = 2
	payloadSeq       = 3

	metricName         = 1
	metricAlias        = 2
	metricTimestamp    = 3
	metricDatatype     = 4
	metricIsHistorical = 5
	metricIsTransient  = 6
	metricIsNull       = 7
	metricProperties   = 9
	metricIntValue     = 10
	metricLongValue    = 11
	metricFloatValue   = 12
	metricDoubleValue  = 13
	metricBooleanValue = 14
	metricStringValue  = 15
	metricBytesValue   = 16

	propertySetKeys   = 1
	propertySetValues = 2

	propertyType      = 1
	propertyIsNull    = 2
	propertyIntValue  = 3
	propertyLongValue = 4
)

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

func appendKey(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func appendVarint(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(appendKey(b, field, wireVarint), v)
}

func appendBool(b []byte, field int, v bool) []byte {
	if v {
		return appendVarint(b, field, 1)
	}
	return appendVarint(b, field, 0)
}

func appendBytes(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(appendKey(b, field, wireBytes), uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, field int, v string) []byte {
	b = binary.AppendUvarint(appendKey(b, field, wireBytes), uint64(len(v)))
	return append(b, v...)
}

func appendFixed32(b []byte, field int, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(appendKey(b, field, wireFixed32), v)
}

func appendFixed64(b []byte, field int, v uint64) []byte {
	return binary.LittleEndian.AppendUint64(appendKey(b, field, wireFixed64), v)
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Payload is a decoded Sparkplug B payload. Decode fills it; the gateway
// uses it for commands and tests use it to check what was published.
type Payload struct {
	Timestamp    uint64
	HasTimestamp bool
	Seq          uint64
	HasSeq       bool
	Metrics      []Metric
}

// Metric is a decoded metric. Value holds which value field was present.
type Metric struct {
	Name         string
	HasName      bool
	Alias        uint64
	HasAlias     bool
	Timestamp    uint64
	HasTimestamp bool
	Datatype     DataType
	HasDatatype  bool
	IsHistorical bool
	IsTransient  bool
	IsNull       bool
	// Properties maps a property's key to its value, for the scalar
	// property kinds (int_value, long_value); others are skipped.
	Properties map[string]Property
	// Value is the value field that was present: one of the metric*Value
	// field numbers (10..16), 0 for none.
	Value   int
	Int     uint32 // int_value
	Long    uint64 // long_value
	Float   float32
	Double  float64
	Bool    bool
	String  string
	Bytes   []byte
	Unknown []int // field numbers decoded but not understood (dataset, template, ...)
}

// Property is one scalar property value.
type Property struct {
	Type   DataType
	IsNull bool
	Int    uint32
	Long   uint64
}

// ErrMalformed marks payloads that are not valid Sparkplug B protobuf.
var ErrMalformed = errors.New("malformed Sparkplug B payload")

// Decode parses a Sparkplug B payload. It accepts any field order and
// skips unknown fields; it never panics on hostile input.
func Decode(b []byte) (Payload, error) {
	var p Payload
	err := walk(b, func(field, wire int, v uint64, data []byte) error {
		switch {
		case field == payloadTimestamp && wire == wireVarint:
			p.Timestamp, p.HasTimestamp = v, true
		case field == payloadSeq && wire == wireVarint:
			p.Seq, p.HasSeq = v, true
		case field == payloadMetrics && wire == wireBytes:
			m, err := decodeMetric(data)
			if err != nil {
				return fmt.Errorf("metric %d: %w", len(p.Metrics)+1, err)
			}
			p.Metrics = append(p.Metrics, m)
		}
		return nil
	})
	return p, err
}

func decodeMetric(b []byte) (Metric, error) {
	var m Metric
	err := walk(b, func(field, wire int, v uint64, data []byte) error {
		switch field {
		case metricName:
			m.Name, m.HasName = string(data), true
		case metricAlias:
			m.Alias, m.HasAlias = v, true
		case metricTimestamp:
			m.Timestamp, m.HasTimestamp = v, true
		case metricDatatype:
			m.Datatype, m.HasDatatype = DataType(v), true
		case metricIsHistorical:
			m.IsHistorical = v != 0
		case metricIsTransient:
			m.IsTransient = v != 0
		case metricIsNull:
			m.IsNull = v != 0
		case metricProperties:
			props, err := decodePropertySet(data)
			if err != nil {
				return fmt.Errorf("properties: %w", err)
			}
			m.Properties = props
		case metricIntValue:
			m.Value, m.Int = field, uint32(v)
		case metricLongValue:
			m.Value, m.Long = field, v
		case metricFloatValue:
			m.Value, m.Float = field, math.Float32frombits(uint32(v))
		case metricDoubleValue:
			m.Value, m.Double = field, math.Float64frombits(v)
		case metricBooleanValue:
			m.Value, m.Bool = field, v != 0
		case metricStringValue:
			m.Value, m.String = field, string(data)
		case metricBytesValue:
			m.Value, m.Bytes = field, append([]byte(nil), data...)
		default:
			m.Unknown = append(m.Unknown, field)
		}
		return nil
	})
	return m, err
}

func decodePropertySet(b []byte) (map[string]Property, error) {
	var keys []string
	var vals []Property
	err := walk(b, func(field, wire int, v uint64, data []byte) error {
		switch {
		case field == propertySetKeys && wire == wireBytes:
			keys = append(keys, string(data))
		case field == propertySetValues && wire == wireBytes:
			var pv Property
			err := walk(data, func(field, wire int, v uint64, _ []byte) error {
				switch field {
				case propertyType:
					pv.Type = DataType(v)
				case propertyIsNull:
					pv.IsNull = v != 0
				case propertyIntValue:
					pv.Int = uint32(v)
				case propertyLongValue:
					pv.Long = v
				}
				return nil
			})
			if err != nil {
				return err
			}
			vals = append(vals, pv)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(keys) != len(vals) {
		return nil, fmt.Errorf("%w: %d property keys but %d values", ErrMalformed, len(keys), len(vals))
	}
	out := make(map[string]Property, len(keys))
	for i, k := range keys {
		out[k] = vals[i]
	}
	return out, nil
}

// walk calls fn for each field of a protobuf message: v is the value of
// varint and fixed fields, data the contents of length-delimited ones.
func walk(b []byte, fn func(field, wire int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: bad field key", ErrMalformed)
		}
		b = b[n:]
		field, wire := key>>3, int(key&7)
		if field == 0 || field > math.MaxInt32 {
			return fmt.Errorf("%w: field number %d", ErrMalformed, field)
		}
		var v uint64
		var data []byte
		switch wire {
		case wireVarint:
			if v, n = binary.Uvarint(b); n <= 0 {
				return fmt.Errorf("%w: bad varint in field %d", ErrMalformed, field)
			}
			b = b[n:]
		case wireFixed64:
			if len(b) < 8 {
				return fmt.Errorf("%w: short fixed64 in field %d", ErrMalformed, field)
			}
			v, b = binary.LittleEndian.Uint64(b), b[8:]
		case wireFixed32:
			if len(b) < 4 {
				return fmt.Errorf("%w: short fixed32 in field %d", ErrMalformed, field)
			}
			v, b = uint64(binary.LittleEndian.Uint32(b)), b[4:]
		case wireBytes:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return fmt.Errorf("%w: bad length in field %d", ErrMalformed, field)
			}
			data, b = b[n:n+int(l)], b[n+int(l):]
		default:
			return fmt.Errorf("%w: wire type %d in field %d", ErrMalformed, wire, field)
		}
		if err := fn(int(field), wire, v, data); err != nil {
			return err
		}
	}
	return nil
}
