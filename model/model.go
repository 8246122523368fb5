package model

import (
	"strconv"
	"strings"
	"time"
)

// Model is the validated content of a set of model files, with every asset
// instance expanded: each Asset carries its own resolved Tags. Produced by
// Load; consumed by harmonize.Compile. Treat it as read-only.
type Model struct {
	Files  []string // files loaded, in load order
	Levels []string // names of the hierarchy levels, e.g. enterprise, site, area, line, cell
	Assets []*Asset // sorted by Path
}

// Asset is one instance of an asset type, placed in the hierarchy.
type Asset struct {
	Path      string // UNS path of the asset: one segment per level, joined with '/'
	Type      string // asset type name
	Source    string // gateway source id the asset's addressed tags are read from; "" if none
	SourcePos Pos    // where the source was named, for "unknown source" errors
	// UnitID is the Modbus unit id for this asset's tags; 0 means the
	// source's default.
	UnitID int
	// Poll is the poll interval for this asset's tags; 0 means the source's
	// default.
	Poll   time.Duration
	Params map[string]Value // type defaults merged with the instance's values
	Tags   []*Tag           // in the order the type declares them
	Pos    Pos              // the instance's key in its file
}

// Tag is one tag of one asset instance.
type Tag struct {
	Name  string // path inside the asset: one or more levels, e.g. speed or counters/good
	Topic string // Asset.Path + "/" + Name
	// Address is where the raw value comes from; nil for a derived tag,
	// which has only an expression over other tags.
	Address *Address
	// Expr is the expression text; "" means the raw value passes through.
	Expr    string
	ExprPos Pos // position of the expression's first character
	// Enum maps an integer result (of the expression, or the raw value when
	// there is none) to a string, e.g. 0: idle, 1: running. Nil = no mapping.
	// An integer missing from the map yields the decimal text, e.g. "7".
	Enum map[int64]string
	// Datatype is the declared harmonized type; KindNull means "infer from
	// the expression or the raw type".
	Datatype Kind
	// Width is the declared datatype's width in bits when it is narrower
	// than its kind's 64 bits: 8, 16 or 32 for int8..int32, uint8..uint32
	// and float32. 0 for the full-width datatypes (int64, float64, ...) and
	// when no datatype is declared.
	Width       uint8
	Unit        string
	Description string
	Deadband    Deadband
	// OnChange is report-by-exception: publish only when the value or the
	// quality changes (beyond the deadband). Default true.
	OnChange bool
	// Heartbeat republishes an unchanged value after this long; 0 = never.
	Heartbeat time.Duration
	// Poll overrides the asset's poll interval for this tag; 0 = inherit.
	Poll time.Duration
	Pos  Pos // the tag's key in the asset type
}

// TypeName names the declared datatype as a model file writes it, e.g.
// "int16" or "float64"; "null" when none is declared.
func (t *Tag) TypeName() string { return typeName(t.Datatype, t.Width) }

// datatypes are the names a model's datatype key accepts: every Kind but
// null and array at its full width, and the narrower integer and float
// types, which keep their Kind and add a width in bits.
var datatypes = [...]struct {
	name  string
	kind  Kind
	width uint8
}{
	{"bool", KindBool, 0},
	{"int8", KindInt, 8}, {"int16", KindInt, 16}, {"int32", KindInt, 32}, {"int64", KindInt, 0},
	{"uint8", KindUint, 8}, {"uint16", KindUint, 16}, {"uint32", KindUint, 32}, {"uint64", KindUint, 0},
	{"float32", KindFloat, 32}, {"float64", KindFloat, 0},
	{"string", KindString, 0},
}

// parseDatatype maps a datatype name from a model file to its kind and
// width.
func parseDatatype(s string) (k Kind, width uint8, ok bool) {
	for _, d := range datatypes {
		if d.name == s {
			return d.kind, d.width, true
		}
	}
	return KindNull, 0, false
}

// typeName names kind k narrowed to width bits (0 = the kind's own width),
// e.g. "uint16". A width no datatype has is written out, e.g. "int64(width 12)".
func typeName(k Kind, width uint8) string {
	if width == 0 {
		return k.String()
	}
	for _, d := range datatypes {
		if d.kind == k && d.width == width {
			return d.name
		}
	}
	return k.String() + "(width " + strconv.Itoa(int(width)) + ")"
}

// Deadband suppresses changes smaller than Value (absolute, in the tag's
// unit) or, when Percent, smaller than Value percent of the last published
// value. Zero means every change is reported.
type Deadband struct {
	Value   float64
	Percent bool
}

// Protocol names the kind of source an address belongs to.
type Protocol uint8

const (
	ProtocolModbus Protocol = iota + 1
	ProtocolOPCUA
)

func (p Protocol) String() string {
	switch p {
	case ProtocolModbus:
		return "modbus"
	case ProtocolOPCUA:
		return "opcua"
	}
	return "unknown"
}

// Address is a tag's binding to a source.
type Address struct {
	Protocol Protocol
	Text     string         // as written in the model file
	Modbus   *ModbusAddress // set when Protocol is ProtocolModbus
	OPCUA    *OPCUAAddress  // set when Protocol is ProtocolOPCUA
	// Key identifies the binding between the engine and the source: the
	// source is given the key and echoes it in Sample.Address. Equal keys
	// mean the same raw value, so a source reads it once.
	Key string
}

// Area is a Modbus data model table.
type Area uint8

const (
	AreaCoil Area = iota + 1
	AreaDiscreteInput
	AreaInputRegister
	AreaHoldingRegister
)

func (a Area) String() string {
	switch a {
	case AreaCoil:
		return "coil"
	case AreaDiscreteInput:
		return "discrete"
	case AreaInputRegister:
		return "input"
	case AreaHoldingRegister:
		return "holding"
	}
	return "area(" + strconv.Itoa(int(a)) + ")"
}

// IsBit reports whether the area holds single bits (coils, discrete inputs).
func (a Area) IsBit() bool { return a == AreaCoil || a == AreaDiscreteInput }

// RawType is the encoding of a raw value in Modbus registers or bits.
type RawType uint8

const (
	RawBool RawType = iota + 1
	RawInt16
	RawUint16
	RawInt32
	RawUint32
	RawInt64
	RawUint64
	RawFloat32
	RawFloat64
	RawString // ASCII over Length registers, two characters per register
)

var rawTypeNames = [...]string{"", "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}

func (t RawType) String() string {
	if int(t) < len(rawTypeNames) && t != 0 {
		return rawTypeNames[t]
	}
	return "rawtype(" + strconv.Itoa(int(t)) + ")"
}

// ParseRawType maps a datatype name from a model file to a RawType.
func ParseRawType(s string) (RawType, bool) {
	for i, n := range rawTypeNames {
		if i > 0 && n == s {
			return RawType(i), true
		}
	}
	return 0, false
}

// Registers is the number of 16-bit registers a value of this type occupies
// (length is the string length in registers). Bool occupies one register
// when read as a register bit.
func (t RawType) Registers(length int) int {
	switch t {
	case RawBool, RawInt16, RawUint16:
		return 1
	case RawInt32, RawUint32, RawFloat32:
		return 2
	case RawInt64, RawUint64, RawFloat64:
		return 4
	case RawString:
		return length
	}
	return 0
}

// ValueKind is the Value kind a decoded raw value has.
func (t RawType) ValueKind() Kind {
	switch t {
	case RawBool:
		return KindBool
	case RawInt16, RawInt32, RawInt64:
		return KindInt
	case RawUint16, RawUint32, RawUint64:
		return KindUint
	case RawFloat32, RawFloat64:
		return KindFloat
	case RawString:
		return KindString
	}
	return KindNull
}

// Width is the width in bits of a decoded value of this type when it is
// narrower than its ValueKind's 64 bits: 16 for int16 and uint16, 32 for
// int32, uint32 and float32; 0 for every other type.
func (t RawType) Width() uint8 {
	switch t {
	case RawInt16, RawUint16:
		return 16
	case RawInt32, RawUint32, RawFloat32:
		return 32
	}
	return 0
}

// ByteOrder is the order of bytes in a multi-register value, named by the
// position of the value's big-endian bytes A (most significant) to D. ABCD
// is Modbus's own big-endian order; CDAB swaps words; BADC swaps bytes in
// each word; DCBA is fully little-endian. For 64-bit values the same names
// apply to the 8 bytes (ABCD = ABCDEFGH, CDAB = GHEFCDAB, BADC = BADCFEHG,
// DCBA = HGFEDCBA), and those 8-letter names are accepted too.
type ByteOrder uint8

const (
	OrderABCD ByteOrder = iota // big-endian bytes, big-endian words (default)
	OrderBADC                  // bytes swapped within each word
	OrderCDAB                  // words swapped (little-endian word order)
	OrderDCBA                  // little-endian
)

func (o ByteOrder) String() string {
	switch o {
	case OrderBADC:
		return "BADC"
	case OrderCDAB:
		return "CDAB"
	case OrderDCBA:
		return "DCBA"
	}
	return "ABCD"
}

// ParseByteOrder accepts ABCD, BADC, CDAB, DCBA and the 64-bit spellings
// ABCDEFGH, BADCFEHG, GHEFCDAB, HGFEDCBA (case-insensitive).
func ParseByteOrder(s string) (ByteOrder, bool) {
	switch strings.ToUpper(s) {
	case "ABCD", "ABCDEFGH", "BIG":
		return OrderABCD, true
	case "BADC", "BADCFEHG":
		return OrderBADC, true
	case "CDAB", "GHEFCDAB":
		return OrderCDAB, true
	case "DCBA", "HGFEDCBA", "LITTLE":
		return OrderDCBA, true
	}
	return 0, false
}

// ModbusAddress is a resolved Modbus binding: the instance's offset is
// already added to Register.
//
// The small fields are together, so that the struct packs into 32 bytes:
// every Modbus binding has several copies (plan, source config, poll plan).
type ModbusAddress struct {
	UnitID   int    // 0 = the source's default unit id
	Bit      int    // bit 0..15 of the register for a bool read from a register; -1 otherwise
	Length   int    // registers, for RawString; 0 otherwise
	Register uint16 // 0-based protocol address of the first register or bit
	Area     Area
	Type     RawType
	Order    ByteOrder
}

// Key returns the canonical binding key, e.g. "u1:holding:100:float32:CDAB"
// or "u0:holding:7.3:bool".
func (a *ModbusAddress) Key() string {
	var b []byte
	b = append(b, 'u')
	b = strconv.AppendInt(b, int64(a.UnitID), 10)
	b = append(b, ':')
	b = append(b, a.Area.String()...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(a.Register), 10)
	if a.Bit >= 0 {
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(a.Bit), 10)
	}
	b = append(b, ':')
	b = append(b, a.Type.String()...)
	if a.Type == RawString {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(a.Length), 10)
	}
	if a.Type.Registers(a.Length) > 1 && a.Type != RawString || (a.Type == RawString && a.Order != OrderABCD) {
		b = append(b, ':')
		b = append(b, a.Order.String()...)
	}
	return string(b)
}
