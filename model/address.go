package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AddressOptions are the tag keys that qualify an address in a model file,
// plus what the asset instance adds to it.
type AddressOptions struct {
	Type   string // raw datatype name (bool, int16, ..., string); "" = the default for the address
	Length int    // string length in registers (1..125); 0 = not given
	Order  string // byte order name (ABCD, CDAB, ...); "" = ABCD
	Offset int    // added to the register or bit number (the instance's offset)
	UnitID int    // Modbus unit id 0..255; 0 = the source's default

	// OPC UA monitoring options (zero = the source's default).
	Sampling  time.Duration
	QueueSize int
	Deadband  float64
}

// Fields an AddressError can blame, named like the model file keys.
const (
	FieldAddress = "address"
	FieldType    = "type"
	FieldLength  = "length"
	FieldOrder   = "order"
	FieldOffset  = "offset"
	FieldUnitID  = "unit_id"

	FieldSampling     = "sampling"
	FieldQueueSize    = "queue_size"
	FieldDataDeadband = "data_change_deadband"
)

// AddressError is a problem with an address definition. Field names the
// model file key at fault (one of the Field constants) so the loader can
// point at the right line.
type AddressError struct {
	Field string
	Msg   string
}

func (e *AddressError) Error() string { return e.Msg }

func addrErr(field, format string, args ...any) *AddressError {
	return &AddressError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Modbus limits: a PDU carries at most 125 registers, so a string longer
// than that could never be read in one request.
const (
	maxRegister     = 65535
	maxStringLength = 125
)

var areaNames = map[string]Area{
	"holding": AreaHoldingRegister, "hr": AreaHoldingRegister,
	"input": AreaInputRegister, "ir": AreaInputRegister,
	"coil": AreaCoil, "co": AreaCoil,
	"discrete": AreaDiscreteInput, "di": AreaDiscreteInput,
}

var areaList = []string{"holding", "input", "coil", "discrete", "hr", "ir", "co", "di"}

// ParseAddress parses the address text of a tag (as written in the model
// file) together with its qualifying keys, and returns the resolved binding
// with Key set. Every protocol's address form is recognized here, so adding
// one means adding a case to this function.
//
// Modbus forms are AREA:NUMBER and AREA:NUMBER.BIT, with AREA one of holding
// (hr), input (ir), coil (co), discrete (di), NUMBER the 0-based protocol
// address 0..65535 and BIT 0..15 (registers only). opt.Offset is added to
// NUMBER, and the value must still fit below 65536. Errors are
// *AddressError values saying what is wrong and which key is at fault.
func ParseAddress(text string, opt AddressOptions) (*Address, error) {
	s := strings.TrimSpace(text)
	switch {
	case s == "":
		return nil, addrErr(FieldAddress, "address is empty; write AREA:NUMBER for Modbus (holding:10) or a node id for OPC UA (ns=2;s=Name)")
	case strings.HasPrefix(s, "opc.tcp:"):
		return nil, addrErr(FieldAddress, "an address names a node, not a server; put the endpoint URL in the gateway config's source and write the node id here, e.g. ns=2;s=Name")
	case isOPCUAText(s):
		ua, err := parseOPCUA(s, opt)
		if err != nil {
			return nil, err
		}
		return &Address{Protocol: ProtocolOPCUA, Text: text, OPCUA: ua, Key: ua.Key()}, nil
	}
	switch {
	case opt.Sampling != 0:
		return nil, addrErr(FieldSampling, "sampling only applies to OPC UA nodes; a Modbus tag's read interval is poll")
	case opt.QueueSize != 0:
		return nil, addrErr(FieldQueueSize, "queue_size only applies to OPC UA nodes")
	case opt.Deadband != 0:
		return nil, addrErr(FieldDataDeadband, "data_change_deadband only applies to OPC UA nodes; use deadband for Modbus tags")
	}
	ma, err := parseModbus(s, opt)
	if err != nil {
		return nil, err
	}
	return &Address{Protocol: ProtocolModbus, Text: text, Modbus: ma, Key: ma.Key()}, nil
}

func parseModbus(s string, opt AddressOptions) (*ModbusAddress, error) {
	areaText, rest, ok := strings.Cut(s, ":")
	if !ok {
		if area, known := areaNames[strings.ToLower(s)]; known {
			return nil, addrErr(FieldAddress, "missing register number; write %s:NUMBER, e.g. %s:10", s, area)
		}
		if _, err := strconv.Atoi(s); err == nil {
			return nil, addrErr(FieldAddress, "missing area; write AREA:NUMBER, e.g. holding:%s", s)
		}
		return nil, addrErr(FieldAddress, "want AREA:NUMBER, e.g. holding:10")
	}
	area, ok := areaNames[strings.ToLower(strings.TrimSpace(areaText))]
	if !ok {
		return nil, addrErr(FieldAddress, "unknown area %q%s; use holding (hr), input (ir), coil (co) or discrete (di)",
			areaText, didYouMean(strings.ToLower(areaText), areaList))
	}
	numText, bitText, hasBit := strings.Cut(strings.TrimSpace(rest), ".")
	number, err := parseDecimal(numText, "register number", maxRegister)
	if err != nil {
		return nil, err
	}
	ma := &ModbusAddress{UnitID: opt.UnitID, Area: area, Bit: -1}
	if hasBit {
		if area.IsBit() {
			return nil, addrErr(FieldAddress, "%s addresses are single bits already; remove %q", area, "."+bitText)
		}
		bit, err := parseDecimal(bitText, "bit number", 15)
		if err != nil {
			return nil, err
		}
		ma.Bit = bit
	}

	// Type: defaults depend on the address form.
	switch typeName := strings.ToLower(strings.TrimSpace(opt.Type)); {
	case typeName == "" && (area.IsBit() || hasBit):
		ma.Type = RawBool
	case typeName == "":
		ma.Type = RawUint16
	default:
		t, ok := ParseRawType(typeName)
		if !ok {
			return nil, addrErr(FieldType, "unknown type %q%s; use bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string",
				opt.Type, didYouMean(typeName, rawTypeNames[1:]))
		}
		ma.Type = t
	}
	switch {
	case area.IsBit() && ma.Type != RawBool:
		return nil, addrErr(FieldType, "%s addresses hold single bits: type must be bool, not %s", area, ma.Type)
	case hasBit && ma.Type != RawBool:
		return nil, addrErr(FieldType, "a register bit (%s) is a bool, not %s", s, ma.Type)
	case !area.IsBit() && !hasBit && ma.Type == RawBool:
		return nil, addrErr(FieldType, "type bool on a register needs a bit number, e.g. %s.0", s)
	}

	// Length: strings only.
	switch {
	case ma.Type == RawString && opt.Length == 0:
		return nil, addrErr(FieldType, "type string needs length (number of registers, 1..%d)", maxStringLength)
	case ma.Type == RawString && (opt.Length < 1 || opt.Length > maxStringLength):
		return nil, addrErr(FieldLength, "length %d is out of range (1..%d registers)", opt.Length, maxStringLength)
	case ma.Type != RawString && opt.Length != 0:
		return nil, addrErr(FieldLength, "length is only for type string, not %s", ma.Type)
	}
	if ma.Type == RawString {
		ma.Length = opt.Length
	}

	if err := applyOrder(ma, opt.Order); err != nil {
		return nil, err
	}

	if opt.UnitID < 0 || opt.UnitID > 255 {
		return nil, addrErr(FieldUnitID, "unit_id %d is out of range (0..255)", opt.UnitID)
	}

	// Offset and size: the whole value must fit in the 16-bit address space.
	if opt.Offset < 0 {
		return nil, addrErr(FieldOffset, "offset %d is negative", opt.Offset)
	}
	first := number + opt.Offset
	if first > maxRegister {
		return nil, addrErr(FieldOffset, "offset %d moves %s to %d, past %d", opt.Offset, s, first, maxRegister)
	}
	size := 1
	if !area.IsBit() {
		size = ma.Type.Registers(ma.Length)
	}
	if last := first + size - 1; last > maxRegister {
		field := FieldAddress
		if number+size-1 <= maxRegister {
			field = FieldOffset
		}
		return nil, addrErr(field, "%s at register %d needs %d registers and runs past %d", typeDesc(ma), first, size, maxRegister)
	}
	ma.Register = uint16(first)
	return ma, nil
}

func typeDesc(ma *ModbusAddress) string {
	if ma.Type == RawString {
		return fmt.Sprintf("string of length %d", ma.Length)
	}
	return ma.Type.String()
}

// applyOrder checks the byte order against the type: it only means something
// for multi-register values, 8-letter names only for 64-bit ones, and text
// can only be byte-swapped.
func applyOrder(ma *ModbusAddress, orderText string) error {
	name := strings.ToUpper(strings.TrimSpace(orderText))
	if name == "" {
		ma.Order = OrderABCD
		return nil
	}
	o, ok := ParseByteOrder(name)
	if !ok {
		return addrErr(FieldOrder, "unknown byte order %q%s; use ABCD, BADC, CDAB or DCBA (ABCDEFGH, BADCFEHG, GHEFCDAB, HGFEDCBA for 64-bit types)",
			orderText, didYouMean(name, []string{"ABCD", "BADC", "CDAB", "DCBA", "ABCDEFGH", "BADCFEHG", "GHEFCDAB", "HGFEDCBA"}))
	}
	regs := ma.Type.Registers(ma.Length)
	switch {
	case ma.Type == RawString:
		if o != OrderABCD && o != OrderBADC || len(name) == 8 {
			return addrErr(FieldOrder, "order %s does not apply to strings; use ABCD, or BADC for byte-swapped text", orderText)
		}
	case regs < 2:
		return addrErr(FieldOrder, "order does not apply to %s, which fits in one register; remove it", ma.Type)
	case len(name) == 8 && regs != 4:
		return addrErr(FieldOrder, "8-letter order %s is for 64-bit types; for %s write %s", orderText, ma.Type, o)
	}
	ma.Order = o
	return nil
}

// parseDecimal parses a non-negative decimal number no larger than max.
func parseDecimal(s, what string, max int) (int, error) {
	if s == "" {
		return 0, addrErr(FieldAddress, "missing %s", what)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, addrErr(FieldAddress, "%s %q is not a decimal number", what, s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, addrErr(FieldAddress, "%s %s is out of range (0..%d)", what, s, max)
	}
	return n, nil
}
