package sparkplug

import (
	"encoding/hex"
	"math"
	"strconv"
	"strings"

	"github.com/unsgate/unsgate/model"
)

// Reader turns Sparkplug B messages into one line of JSON each, for people
// watching a broker (unsgate sub). It learns names and datatypes from the
// births it sees, so DATA metrics sent by alias are shown by name and with
// their value read as the right type.
type Reader struct {
	known map[string]map[uint64]metricInfo // edge node topic key -> alias -> info
	types map[string]DataType              // edge node key + "/" + name -> datatype
}

type metricInfo struct {
	name string
	dt   DataType
}

// NewReader returns a Reader that knows no births yet.
func NewReader() *Reader {
	return &Reader{known: map[string]map[uint64]metricInfo{}, types: map[string]DataType{}}
}

// IsSparkplug reports whether a topic is in the Sparkplug B namespace.
func IsSparkplug(topic string) bool { return strings.HasPrefix(topic, Namespace+"/") }

// Text decodes payload, published on topic, to JSON; a payload that is not
// Sparkplug B gives {"error": ...}. STATE messages are JSON already and come
// back unchanged.
func (r *Reader) Text(topic string, payload []byte) string {
	parts := strings.Split(topic, "/")
	if len(parts) >= 2 && parts[1] == "STATE" {
		return string(payload)
	}
	p, err := Decode(payload)
	if err != nil {
		return `{"error":` + strconv.Quote(err.Error()) + `}`
	}
	key := ""
	kind := ""
	if len(parts) >= 4 {
		key, kind = parts[1]+"/"+parts[3], parts[2]
	}
	if kind == "NBIRTH" {
		r.known[key] = map[uint64]metricInfo{}
	}
	dev := ""
	if len(parts) >= 5 {
		dev = parts[4] + "/"
	}
	b := []byte("{")
	if p.HasTimestamp {
		b = append(b, `"timestamp":`...)
		b = strconv.AppendUint(b, p.Timestamp, 10)
	}
	if p.HasSeq {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, p.Seq, 10)
	}
	b = append(b, `,"metrics":[`...)
	for i, m := range p.Metrics {
		if i > 0 {
			b = append(b, ',')
		}
		info := metricInfo{name: m.Name, dt: m.Datatype}
		if kind == "NBIRTH" || kind == "DBIRTH" {
			if r.known[key] == nil {
				r.known[key] = map[uint64]metricInfo{}
			}
			if m.HasAlias {
				r.known[key][m.Alias] = info
			}
			r.types[key+"/"+dev+m.Name] = m.Datatype
		} else {
			if !m.HasName && m.HasAlias {
				if k, ok := r.known[key][m.Alias]; ok {
					info.name = k.name
					if !m.HasDatatype {
						info.dt = k.dt
					}
				}
			} else if !m.HasDatatype {
				info.dt = r.types[key+"/"+dev+m.Name]
			}
		}
		b = append(b, '{')
		if info.name != "" {
			b = append(b, `"name":`...)
			b = model.AppendJSONString(b, info.name)
			b = append(b, ',')
		}
		if m.HasAlias {
			b = append(b, `"alias":`...)
			b = strconv.AppendUint(b, m.Alias, 10)
			b = append(b, ',')
		}
		if m.HasTimestamp {
			b = append(b, `"timestamp":`...)
			b = strconv.AppendUint(b, m.Timestamp, 10)
			b = append(b, ',')
		}
		if info.dt != TypeUnknown {
			b = append(b, `"datatype":"`...)
			b = append(b, info.dt.String()...)
			b = append(b, `",`...)
		}
		b = append(b, `"value":`...)
		b = appendValueText(b, m, info.dt)
		if m.IsHistorical {
			b = append(b, `,"historical":true`...)
		}
		if q, ok := m.Properties[QualityKey]; ok {
			b = append(b, `,"quality":`...)
			b = strconv.AppendInt(b, int64(int32(q.Int)), 10)
		}
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	if b[1] == ',' {
		b = append(b[:1], b[2:]...)
	}
	return string(b)
}

func appendValueText(b []byte, m Metric, dt DataType) []byte {
	if m.IsNull {
		return append(b, "null"...)
	}
	switch m.Value {
	case metricIntValue:
		switch dt {
		case TypeInt8, TypeInt16, TypeInt32:
			return strconv.AppendInt(b, int64(int32(m.Int)), 10)
		}
		return strconv.AppendUint(b, uint64(m.Int), 10)
	case metricLongValue:
		if dt == TypeInt64 {
			return strconv.AppendInt(b, int64(m.Long), 10)
		}
		return strconv.AppendUint(b, m.Long, 10)
	case metricFloatValue:
		return appendFloat(b, float64(m.Float), 32)
	case metricDoubleValue:
		return appendFloat(b, m.Double, 64)
	case metricBooleanValue:
		return strconv.AppendBool(b, m.Bool)
	case metricStringValue:
		return model.AppendJSONString(b, m.String)
	case metricBytesValue:
		return model.AppendJSONString(b, hex.EncodeToString(m.Bytes))
	}
	return append(b, "null"...)
}

func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendQuote(b, strconv.FormatFloat(f, 'g', -1, bits))
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}
