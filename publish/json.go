package publish

import (
	"strconv"

	"github.com/unsgate/unsgate/model"
)

// ContentType is the MIME type of the messages AppendJSON and AppendMetaJSON
// produce, for protocols that carry one (MQTT 5, Kafka headers).
const ContentType = "application/json"

// MetaSuffix is appended to a tag's topic to form the topic of its
// retained metadata message.
const MetaSuffix = "/_meta"

// AppendJSON appends the UNS JSON value message of p to dst and returns the
// extended slice. Keys always come in the same order:
//
//	{"timestamp_ms":1717083000000,"value":23.4,"quality":"GOOD","unit":"degC","stale":true,"status":"0x408F0000"}
//
// value is null when the quality is BAD, whatever p.Value holds; integers
// beyond ±(2^53-1) are decimal strings (see model.Value.AppendJSON). unit is
// present only when the tag has one, stale only when p.Stale, status (the
// protocol's status code in hexadecimal, as OPC UA tools print it) only
// when p.Status is not 0. p.Raw and
// p.Replay are not encoded. It does not allocate when dst has room.
func AppendJSON(dst []byte, p *model.Point) []byte {
	dst = append(dst, `{"timestamp_ms":`...)
	dst = strconv.AppendInt(dst, p.Time.UnixMilli(), 10)
	dst = append(dst, `,"value":`...)
	if p.Quality == model.QualityBad {
		dst = append(dst, "null"...)
	} else {
		dst = p.Value.AppendJSON(dst)
	}
	dst = append(dst, `,"quality":"`...)
	dst = append(dst, p.Quality.String()...)
	dst = append(dst, '"')
	if p.Meta != nil && p.Meta.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = model.AppendJSONString(dst, p.Meta.Unit)
	}
	if p.Stale {
		dst = append(dst, `,"stale":true`...)
	}
	if p.Status != 0 {
		dst = append(dst, `,"status":"0x`...)
		const hex = "0123456789ABCDEF"
		for shift := 28; shift >= 0; shift -= 4 {
			dst = append(dst, hex[p.Status>>uint(shift)&0xF])
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// AppendMetaJSON appends the retained metadata message of a tag, published
// on Topic+MetaSuffix:
//
//	{"datatype":"float64","unit":"degC","description":"Line speed","source":"plc1","address":"holding:100:float32"}
//
// datatype is always present, with its width as the model declares it
// ("int16", "float32"), or "any" when the type is only known at run time
// (an OPC UA node without a declared datatype). The other keys are
// present only when not empty (a derived tag has no source or address).
func AppendMetaJSON(dst []byte, m *model.TagMeta) []byte {
	dst = append(dst, `{"datatype":`...)
	if m.Datatype == model.KindNull {
		dst = append(dst, `"any"`...)
	} else {
		dst = model.AppendJSONString(dst, m.TypeName())
	}
	dst = appendOptionalString(dst, `,"unit":`, m.Unit)
	dst = appendOptionalString(dst, `,"description":`, m.Description)
	dst = appendOptionalString(dst, `,"source":`, m.Source)
	dst = appendOptionalString(dst, `,"address":`, m.Address)
	return append(dst, '}')
}

func appendOptionalString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, key...)
	return model.AppendJSONString(dst, s)
}
