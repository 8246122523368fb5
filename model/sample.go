package model

import "time"

// Quality is the harmonized quality of a reading. The zero value is BAD, so a
// reading nobody vouched for is never taken as good.
type Quality uint8

const (
	QualityBad Quality = iota
	QualityUncertain
	QualityGood
)

func (q Quality) String() string {
	switch q {
	case QualityGood:
		return "GOOD"
	case QualityUncertain:
		return "UNCERTAIN"
	}
	return "BAD"
}

// Worse returns the worse of two qualities.
func (q Quality) Worse(o Quality) Quality {
	if o < q {
		return o
	}
	return q
}

// Sample is one raw reading from a source. Address is the binding key the
// source was given for the tag (see Address.Key); the engine maps it back to
// the tags bound to it. Connectors reuse Sample slices between batches, so a
// consumer must not keep a slice it was handed.
type Sample struct {
	Source  string
	Address string
	Value   Value
	Quality Quality
	// Stale is set when the tag missed too many consecutive polls; the value
	// is the last one read and Quality is UNCERTAIN.
	Stale bool
	// Status is the protocol's status code for a non-GOOD reading (Modbus
	// exception code, OPC UA status code); 0 otherwise.
	Status uint32
	// SourceTime is the device's or server's timestamp, zero when the
	// protocol has none (Modbus); the engine then uses ReceiveTime.
	SourceTime  time.Time
	ReceiveTime time.Time
}

// Time returns the timestamp a point derived from s carries: the source
// timestamp when the protocol has one, else the receive time.
func (s *Sample) Time() time.Time {
	if !s.SourceTime.IsZero() {
		return s.SourceTime
	}
	return s.ReceiveTime
}

// TagMeta is the immutable description of one harmonized tag, built once per
// plan and shared by every point of that tag. Topic is precomputed.
type TagMeta struct {
	Topic    string // full UNS path, e.g. acme/munich/bottling/line1/filler1/speed
	Asset    string // UNS path of the asset
	Type     string // the asset's type in the model
	Name     string // tag path inside the asset, e.g. speed or counters/good
	Datatype Kind   // harmonized value type
	// Width is the width in bits of an integer or float tag's type when
	// it is narrower than Datatype's 64 bits: 8, 16 or 32. It comes from
	// the declared datatype (int8, uint16, float32, ...) or, for a Modbus
	// value passed through without datatype, enum or expression, from the
	// raw type (int16 16, uint32 32, float32 32). 0 means Datatype's full
	// width; every other tag has 0, OPC UA values passed through included
	// (their type is only known at run time). Values keep their Kind: an
	// int16 tag carries KindInt values, a float32 tag KindFloat ones. The
	// engine guarantees that a non-BAD value of a tag with a Width fits in
	// it, and that a float32 tag's values are Float32Values. Sinks with
	// sized wire types (Sparkplug B metric datatypes) need it; TypeName
	// names Datatype and Width together.
	Width       uint8
	Unit        string
	Description string
	Source      string // gateway source id, "" for derived tags
	Address     string // source address as written in the model, "" for derived tags
	// Index is the tag's position in its plan; sinks may use it for
	// per-tag state without a map lookup. Stable only within one plan.
	Index int
}

// TypeName names the tag's harmonized type with its width, as a model
// file's datatype key writes it: "int16", "uint32", "float32", ...; when
// Width is 0, Datatype.String() ("int64", "float64", "string", "null"
// when the type is only known at run time).
func (m *TagMeta) TypeName() string { return typeName(m.Datatype, m.Width) }

// Point is one harmonized value, ready to publish.
type Point struct {
	Meta    *TagMeta
	Value   Value // null when Quality is BAD
	Raw     Value // the raw source value before the expression, null for derived tags
	Quality Quality
	Stale   bool
	// Status is the protocol status code of the reading when it was not
	// GOOD (an OPC UA status code, a Modbus exception code); 0 otherwise.
	Status uint32
	Time   time.Time
	// Replay marks a point delivered late from a store-and-forward queue.
	Replay bool
}
