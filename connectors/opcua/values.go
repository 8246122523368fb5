package opcua

import (
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// errUnsupportedType is wrapped by converter.value for values the gateway
// does not carry (structures, node ids, multi-dimensional arrays...). The
// tag is then BAD with ua.StatusBadNotSupported.
var errUnsupportedType = errors.New("unsupported OPC UA value type")

// dateTimeLayout renders OPC UA DateTime values. RFC 3339 in UTC with a
// fixed three-digit millisecond fraction: the UNS carries every timestamp
// in milliseconds (timestamp_ms), fixed width keeps the text sortable, and
// every consumer (JavaScript Date, Java Instant, Python, SQL) parses it.
// Sub-millisecond digits of the 100 ns OPC UA resolution are dropped.
const dateTimeLayout = "2006-01-02T15:04:05.000Z"

// converter turns OPC UA variants into model values. It is used by one
// goroutine at a time; its scratch buffer lets a DateTime, Guid or
// ByteString that equals the previous value of the same tag reuse that
// value's text instead of allocating it again (poll mode re-reads
// unchanged values every cycle).
type converter struct {
	scratch []byte
}

// value converts v. last is the tag's previous value (or null). A nil or
// empty variant, an empty LocalizedText or Guid, a null ByteString and a
// DateTime of 0 ("not specified" in OPC UA) are null.
func (c *converter) value(v *ua.Variant, last model.Value) (model.Value, error) {
	if v == nil {
		return model.Null(), nil
	}
	if len(v.ArrayDimensions()) > 1 {
		return model.Null(), fmt.Errorf("%w: %d-dimensional array of %s", errUnsupportedType, len(v.ArrayDimensions()), v.Type())
	}
	switch x := v.Value().(type) {
	case nil:
		return model.Null(), nil
	case bool:
		return model.BoolValue(x), nil
	case int8:
		return model.IntValue(int64(x)), nil
	case int16:
		return model.IntValue(int64(x)), nil
	case int32:
		return model.IntValue(int64(x)), nil
	case int64:
		return model.IntValue(x), nil
	case uint8:
		return model.UintValue(uint64(x)), nil
	case uint16:
		return model.UintValue(uint64(x)), nil
	case uint32:
		return model.UintValue(uint64(x)), nil
	case uint64:
		return model.UintValue(x), nil
	case float32:
		return model.Float32Value(x), nil
	case float64:
		return model.FloatValue(x), nil
	case string:
		return model.StringValue(x), nil
	case time.Time:
		return c.dateTime(x, last), nil
	case []byte:
		return c.byteString(x, last), nil
	case *ua.LocalizedText:
		if x == nil {
			return model.Null(), nil
		}
		return model.StringValue(x.Text), nil
	case *ua.GUID:
		return c.guid(x, last), nil

	// One-dimensional arrays. A null array (length -1) decodes to a nil
	// slice and is null; an empty array is an array without elements.
	case []bool:
		return arrayOf(x, model.BoolValue), nil
	case []int8:
		return arrayOf(x, func(e int8) model.Value { return model.IntValue(int64(e)) }), nil
	case []int16:
		return arrayOf(x, func(e int16) model.Value { return model.IntValue(int64(e)) }), nil
	case []int32:
		return arrayOf(x, func(e int32) model.Value { return model.IntValue(int64(e)) }), nil
	case []int64:
		return arrayOf(x, model.IntValue), nil
	case ua.ByteArray: // an array of Byte, not a ByteString
		return arrayOf(x, func(e byte) model.Value { return model.UintValue(uint64(e)) }), nil
	case []uint16:
		return arrayOf(x, func(e uint16) model.Value { return model.UintValue(uint64(e)) }), nil
	case []uint32:
		return arrayOf(x, func(e uint32) model.Value { return model.UintValue(uint64(e)) }), nil
	case []uint64:
		return arrayOf(x, model.UintValue), nil
	case []float32:
		return arrayOf(x, model.Float32Value), nil
	case []float64:
		return arrayOf(x, model.FloatValue), nil
	case []string:
		return arrayOf(x, model.StringValue), nil
	case []time.Time:
		return arrayOf(x, func(e time.Time) model.Value { return c.dateTime(e, model.Null()) }), nil
	case [][]byte:
		return arrayOf(x, func(e []byte) model.Value { return c.byteString(e, model.Null()) }), nil
	case []*ua.LocalizedText:
		return arrayOf(x, func(e *ua.LocalizedText) model.Value {
			if e == nil {
				return model.Null()
			}
			return model.StringValue(e.Text)
		}), nil
	case []*ua.GUID:
		return arrayOf(x, func(e *ua.GUID) model.Value { return c.guid(e, model.Null()) }), nil
	}
	return model.Null(), fmt.Errorf("%w: %s (Go %T)", errUnsupportedType, v.Type(), v.Value())
}

func arrayOf[T any](xs []T, conv func(T) model.Value) model.Value {
	if xs == nil {
		return model.Null()
	}
	elems := make([]model.Value, len(xs))
	for i, x := range xs {
		elems[i] = conv(x)
	}
	return model.ArrayValue(elems)
}

// reuse returns last when it is the string held in c.scratch, so an
// unchanged value costs no allocation.
func (c *converter) reuse(last model.Value) model.Value {
	if last.Kind() == model.KindString && last.Str() == string(c.scratch) {
		return last
	}
	return model.StringValue(string(c.scratch))
}

func (c *converter) dateTime(t time.Time, last model.Value) model.Value {
	if t.IsZero() {
		return model.Null()
	}
	c.scratch = t.UTC().AppendFormat(c.scratch[:0], dateTimeLayout)
	return c.reuse(last)
}

func (c *converter) byteString(b []byte, last model.Value) model.Value {
	if b == nil {
		return model.Null()
	}
	n := base64.StdEncoding.EncodedLen(len(b))
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	c.scratch = c.scratch[:n]
	base64.StdEncoding.Encode(c.scratch, b)
	return c.reuse(last)
}

const hexDigits = "0123456789abcdef"

// guid renders g in the canonical lower-case 8-4-4-4-12 form, the same as
// model.OPCUAAddress uses for g= node ids.
func (c *converter) guid(g *ua.GUID, last model.Value) model.Value {
	if g == nil {
		return model.Null()
	}
	var raw [16]byte
	raw[0], raw[1], raw[2], raw[3] = byte(g.Data1>>24), byte(g.Data1>>16), byte(g.Data1>>8), byte(g.Data1)
	raw[4], raw[5] = byte(g.Data2>>8), byte(g.Data2)
	raw[6], raw[7] = byte(g.Data3>>8), byte(g.Data3)
	copy(raw[8:], g.Data4) // a short Data4 (never from the decoder) leaves zeros
	b := c.scratch[:0]
	for i, x := range raw {
		switch i {
		case 4, 6, 8, 10:
			b = append(b, '-')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xf])
	}
	c.scratch = b
	return c.reuse(last)
}

// quality maps the severity bits 31:30 of an OPC UA status code: 00 good,
// 01 uncertain, 10 and 11 bad.
func quality(code ua.StatusCode) model.Quality {
	switch uint32(code) >> 30 {
	case 0:
		return model.QualityGood
	case 1:
		return model.QualityUncertain
	}
	return model.QualityBad
}

// fillSample sets s from a data value: value, quality, status code (kept
// when not good) and time (SourceTimestamp, else ServerTimestamp, else
// none: the engine then uses ReceiveTime). A BAD reading has a null value.
// It returns the conversion error for a value of an unsupported type; s is
// then BAD with ua.StatusBadNotSupported.
func (c *converter) fillSample(s *model.Sample, dv *ua.DataValue, last model.Value) error {
	if dv == nil {
		s.Value, s.Quality, s.Status, s.SourceTime = model.Null(), model.QualityBad, uint32(ua.StatusBadNoData), time.Time{}
		return nil
	}
	s.SourceTime = dv.SourceTimestamp
	if s.SourceTime.IsZero() {
		s.SourceTime = dv.ServerTimestamp
	}
	s.Quality = quality(dv.Status)
	s.Status = 0
	if s.Quality != model.QualityGood {
		s.Status = uint32(dv.Status)
	}
	if s.Quality == model.QualityBad {
		s.Value = model.Null()
		return nil
	}
	v, err := c.value(dv.Value, last)
	if err != nil {
		s.Value, s.Quality, s.Status = model.Null(), model.QualityBad, uint32(ua.StatusBadNotSupported)
		return err
	}
	s.Value = v
	return nil
}
