package model

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	type want struct {
		area     Area
		register uint16
		bit      int
		typ      RawType
		length   int
		order    ByteOrder
		key      string
	}
	tests := []struct {
		text string
		opt  AddressOptions
		want want
	}{
		// Areas, their aliases, and the default types.
		{"holding:0", AddressOptions{}, want{AreaHoldingRegister, 0, -1, RawUint16, 0, OrderABCD, "u0:holding:0:uint16"}},
		{"hr:7", AddressOptions{}, want{AreaHoldingRegister, 7, -1, RawUint16, 0, OrderABCD, "u0:holding:7:uint16"}},
		{"input:65535", AddressOptions{}, want{AreaInputRegister, 65535, -1, RawUint16, 0, OrderABCD, "u0:input:65535:uint16"}},
		{"ir:3", AddressOptions{Type: "int16"}, want{AreaInputRegister, 3, -1, RawInt16, 0, OrderABCD, "u0:input:3:int16"}},
		{"coil:12", AddressOptions{}, want{AreaCoil, 12, -1, RawBool, 0, OrderABCD, "u0:coil:12:bool"}},
		{"co:12", AddressOptions{Type: "bool"}, want{AreaCoil, 12, -1, RawBool, 0, OrderABCD, "u0:coil:12:bool"}},
		{"discrete:65535", AddressOptions{}, want{AreaDiscreteInput, 65535, -1, RawBool, 0, OrderABCD, "u0:discrete:65535:bool"}},
		{"di:1", AddressOptions{}, want{AreaDiscreteInput, 1, -1, RawBool, 0, OrderABCD, "u0:discrete:1:bool"}},
		{"HOLDING:1", AddressOptions{}, want{AreaHoldingRegister, 1, -1, RawUint16, 0, OrderABCD, "u0:holding:1:uint16"}},
		{" holding:1 ", AddressOptions{}, want{AreaHoldingRegister, 1, -1, RawUint16, 0, OrderABCD, "u0:holding:1:uint16"}},
		// Register bits.
		{"holding:10.0", AddressOptions{}, want{AreaHoldingRegister, 10, 0, RawBool, 0, OrderABCD, "u0:holding:10.0:bool"}},
		{"input:10.15", AddressOptions{Type: "bool"}, want{AreaInputRegister, 10, 15, RawBool, 0, OrderABCD, "u0:input:10.15:bool"}},
		// Types and sizes.
		{"holding:1", AddressOptions{Type: "int32"}, want{AreaHoldingRegister, 1, -1, RawInt32, 0, OrderABCD, "u0:holding:1:int32:ABCD"}},
		{"holding:1", AddressOptions{Type: "uint32"}, want{AreaHoldingRegister, 1, -1, RawUint32, 0, OrderABCD, "u0:holding:1:uint32:ABCD"}},
		{"holding:1", AddressOptions{Type: "Float32"}, want{AreaHoldingRegister, 1, -1, RawFloat32, 0, OrderABCD, "u0:holding:1:float32:ABCD"}},
		{"holding:1", AddressOptions{Type: "int64"}, want{AreaHoldingRegister, 1, -1, RawInt64, 0, OrderABCD, "u0:holding:1:int64:ABCD"}},
		{"holding:1", AddressOptions{Type: "uint64"}, want{AreaHoldingRegister, 1, -1, RawUint64, 0, OrderABCD, "u0:holding:1:uint64:ABCD"}},
		{"holding:65532", AddressOptions{Type: "float64"}, want{AreaHoldingRegister, 65532, -1, RawFloat64, 0, OrderABCD, "u0:holding:65532:float64:ABCD"}},
		{"holding:65534", AddressOptions{Type: "float32"}, want{AreaHoldingRegister, 65534, -1, RawFloat32, 0, OrderABCD, "u0:holding:65534:float32:ABCD"}},
		{"holding:12", AddressOptions{Type: "string", Length: 8}, want{AreaHoldingRegister, 12, -1, RawString, 8, OrderABCD, "u0:holding:12:string:8"}},
		{"input:0", AddressOptions{Type: "string", Length: 125}, want{AreaInputRegister, 0, -1, RawString, 125, OrderABCD, "u0:input:0:string:125"}},
		{"holding:65535", AddressOptions{Type: "string", Length: 1}, want{AreaHoldingRegister, 65535, -1, RawString, 1, OrderABCD, "u0:holding:65535:string:1"}},
		// Byte orders.
		{"holding:1", AddressOptions{Type: "float32", Order: "CDAB"}, want{AreaHoldingRegister, 1, -1, RawFloat32, 0, OrderCDAB, "u0:holding:1:float32:CDAB"}},
		{"holding:1", AddressOptions{Type: "int32", Order: "badc"}, want{AreaHoldingRegister, 1, -1, RawInt32, 0, OrderBADC, "u0:holding:1:int32:BADC"}},
		{"holding:1", AddressOptions{Type: "uint32", Order: "DCBA"}, want{AreaHoldingRegister, 1, -1, RawUint32, 0, OrderDCBA, "u0:holding:1:uint32:DCBA"}},
		{"holding:1", AddressOptions{Type: "uint32", Order: "ABCD"}, want{AreaHoldingRegister, 1, -1, RawUint32, 0, OrderABCD, "u0:holding:1:uint32:ABCD"}},
		{"holding:1", AddressOptions{Type: "float64", Order: "GHEFCDAB"}, want{AreaHoldingRegister, 1, -1, RawFloat64, 0, OrderCDAB, "u0:holding:1:float64:CDAB"}},
		{"holding:1", AddressOptions{Type: "int64", Order: "HGFEDCBA"}, want{AreaHoldingRegister, 1, -1, RawInt64, 0, OrderDCBA, "u0:holding:1:int64:DCBA"}},
		{"holding:1", AddressOptions{Type: "uint64", Order: "BADCFEHG"}, want{AreaHoldingRegister, 1, -1, RawUint64, 0, OrderBADC, "u0:holding:1:uint64:BADC"}},
		{"holding:1", AddressOptions{Type: "uint64", Order: "ABCDEFGH"}, want{AreaHoldingRegister, 1, -1, RawUint64, 0, OrderABCD, "u0:holding:1:uint64:ABCD"}},
		{"holding:1", AddressOptions{Type: "uint64", Order: "CDAB"}, want{AreaHoldingRegister, 1, -1, RawUint64, 0, OrderCDAB, "u0:holding:1:uint64:CDAB"}},
		{"holding:1", AddressOptions{Type: "string", Length: 4, Order: "BADC"}, want{AreaHoldingRegister, 1, -1, RawString, 4, OrderBADC, "u0:holding:1:string:4:BADC"}},
		{"holding:1", AddressOptions{Type: "string", Length: 4, Order: "ABCD"}, want{AreaHoldingRegister, 1, -1, RawString, 4, OrderABCD, "u0:holding:1:string:4"}},
		// Offset and unit id.
		{"holding:0", AddressOptions{Offset: 100, UnitID: 1}, want{AreaHoldingRegister, 100, -1, RawUint16, 0, OrderABCD, "u1:holding:100:uint16"}},
		{"holding:10.3", AddressOptions{Offset: 100, UnitID: 255}, want{AreaHoldingRegister, 110, 3, RawBool, 0, OrderABCD, "u255:holding:110.3:bool"}},
		{"coil:0", AddressOptions{Offset: 65535}, want{AreaCoil, 65535, -1, RawBool, 0, OrderABCD, "u0:coil:65535:bool"}},
		{"holding:8", AddressOptions{Type: "float32", Order: "CDAB", Offset: 100, UnitID: 1}, want{AreaHoldingRegister, 108, -1, RawFloat32, 0, OrderCDAB, "u1:holding:108:float32:CDAB"}},
		{"holding:65531", AddressOptions{Type: "float64", Offset: 1}, want{AreaHoldingRegister, 65532, -1, RawFloat64, 0, OrderABCD, "u0:holding:65532:float64:ABCD"}},
	}
	for _, tt := range tests {
		t.Run(tt.text+"/"+tt.opt.Type+"/"+tt.opt.Order, func(t *testing.T) {
			a, err := ParseAddress(tt.text, tt.opt)
			if err != nil {
				t.Fatalf("ParseAddress(%q, %+v): %v", tt.text, tt.opt, err)
			}
			if a.Protocol != ProtocolModbus || a.Text != tt.text || a.Modbus == nil {
				t.Fatalf("got %+v, want a Modbus address with Text %q", a, tt.text)
			}
			m := a.Modbus
			got := want{m.Area, m.Register, m.Bit, m.Type, m.Length, m.Order, a.Key}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if m.UnitID != tt.opt.UnitID {
				t.Errorf("UnitID = %d, want %d", m.UnitID, tt.opt.UnitID)
			}
			if a.Key != m.Key() {
				t.Errorf("Key %q != Modbus.Key() %q", a.Key, m.Key())
			}
		})
	}
}

func TestParseAddressErrors(t *testing.T) {
	tests := []struct {
		text  string
		opt   AddressOptions
		field string
		msg   string // substring of the message
	}{
		{"", AddressOptions{}, FieldAddress, "address is empty"},
		{"   ", AddressOptions{}, FieldAddress, "address is empty"},
		{"holding", AddressOptions{}, FieldAddress, "missing register number; write holding:NUMBER"},
		{"40001", AddressOptions{}, FieldAddress, "missing area; write AREA:NUMBER, e.g. holding:40001"},
		{"what?", AddressOptions{}, FieldAddress, "want AREA:NUMBER"},
		{"holdng:1", AddressOptions{}, FieldAddress, `unknown area "holdng" (did you mean "holding"?)`},
		{"register:1", AddressOptions{}, FieldAddress, `unknown area "register"; use holding (hr), input (ir), coil (co) or discrete (di)`},
		{"holding:", AddressOptions{}, FieldAddress, "missing register number"},
		{"holding:x", AddressOptions{}, FieldAddress, `register number "x" is not a decimal number`},
		{"holding:0x10", AddressOptions{}, FieldAddress, `register number "0x10" is not a decimal number`},
		{"holding:-1", AddressOptions{}, FieldAddress, `register number "-1" is not a decimal number`},
		{"holding:65536", AddressOptions{}, FieldAddress, "register number 65536 is out of range (0..65535)"},
		{"holding:99999999999999999999", AddressOptions{}, FieldAddress, "out of range (0..65535)"},
		{"holding:1.", AddressOptions{}, FieldAddress, "missing bit number"},
		{"holding:1.16", AddressOptions{}, FieldAddress, "bit number 16 is out of range (0..15)"},
		{"holding:1.a", AddressOptions{}, FieldAddress, `bit number "a" is not a decimal number`},
		{"coil:1.1", AddressOptions{}, FieldAddress, `coil addresses are single bits already; remove ".1"`},
		{"discrete:1.0", AddressOptions{}, FieldAddress, `discrete addresses are single bits already`},
		{"ns=2;s=Line1/Speed", AddressOptions{}, FieldAddress, "OPC UA node ids are not supported yet"},
		{"nsu=urn:x;i=5", AddressOptions{}, FieldAddress, "OPC UA node ids are not supported yet"},
		{"/Objects/Line1", AddressOptions{}, FieldAddress, "OPC UA node ids are not supported yet"},
		{"holding:1", AddressOptions{Type: "unit16"}, FieldType, `unknown type "unit16" (did you mean "uint16"?)`},
		{"holding:1", AddressOptions{Type: "double"}, FieldType, `unknown type "double"; use bool`},
		{"coil:1", AddressOptions{Type: "uint16"}, FieldType, "coil addresses hold single bits: type must be bool, not uint16"},
		{"discrete:1", AddressOptions{Type: "float32"}, FieldType, "type must be bool, not float32"},
		{"holding:1.2", AddressOptions{Type: "int16"}, FieldType, "a register bit (holding:1.2) is a bool, not int16"},
		{"holding:1", AddressOptions{Type: "bool"}, FieldType, "type bool on a register needs a bit number, e.g. holding:1.0"},
		{"holding:1", AddressOptions{Type: "string"}, FieldType, "type string needs length"},
		{"holding:1", AddressOptions{Type: "string", Length: 126}, FieldLength, "length 126 is out of range (1..125 registers)"},
		{"holding:1", AddressOptions{Type: "string", Length: -1}, FieldLength, "length -1 is out of range"},
		{"holding:1", AddressOptions{Length: 2}, FieldLength, "length is only for type string, not uint16"},
		{"coil:1", AddressOptions{Length: 2}, FieldLength, "length is only for type string, not bool"},
		{"holding:1", AddressOptions{Order: "CDAB"}, FieldOrder, "order does not apply to uint16, which fits in one register"},
		{"holding:1", AddressOptions{Type: "int16", Order: "ABCD"}, FieldOrder, "order does not apply to int16"},
		{"coil:1", AddressOptions{Order: "ABCD"}, FieldOrder, "order does not apply to bool"},
		{"holding:1", AddressOptions{Type: "float32", Order: "ACBD"}, FieldOrder, `unknown byte order "ACBD"`},
		{"holding:1", AddressOptions{Type: "float32", Order: "ABDC"}, FieldOrder, `(did you mean "ABCD"?)`},
		{"holding:1", AddressOptions{Type: "float32", Order: "HGFEDCBA"}, FieldOrder, "8-letter order HGFEDCBA is for 64-bit types; for float32 write DCBA"},
		{"holding:1", AddressOptions{Type: "string", Length: 2, Order: "CDAB"}, FieldOrder, "order CDAB does not apply to strings"},
		{"holding:1", AddressOptions{Type: "string", Length: 2, Order: "ABCDEFGH"}, FieldOrder, "does not apply to strings"},
		{"holding:65535", AddressOptions{Type: "float32"}, FieldAddress, "float32 at register 65535 needs 2 registers and runs past 65535"},
		{"holding:65533", AddressOptions{Type: "uint64"}, FieldAddress, "uint64 at register 65533 needs 4 registers"},
		{"holding:65530", AddressOptions{Type: "string", Length: 7}, FieldAddress, "string of length 7 at register 65530 needs 7 registers"},
		{"holding:65500", AddressOptions{Offset: 100}, FieldOffset, "offset 100 moves holding:65500 to 65600, past 65535"},
		{"coil:1", AddressOptions{Offset: 65535}, FieldOffset, "offset 65535 moves coil:1 to 65536"},
		{"holding:65530", AddressOptions{Type: "float64", Offset: 3}, FieldOffset, "float64 at register 65533 needs 4 registers"},
		{"holding:1", AddressOptions{Offset: -1}, FieldOffset, "offset -1 is negative"},
		{"holding:1", AddressOptions{UnitID: 256}, FieldUnitID, "unit_id 256 is out of range (0..255)"},
		{"holding:1", AddressOptions{UnitID: -1}, FieldUnitID, "unit_id -1 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.text+"/"+tt.msg, func(t *testing.T) {
			a, err := ParseAddress(tt.text, tt.opt)
			if err == nil {
				t.Fatalf("ParseAddress(%q, %+v) = %+v, want an error", tt.text, tt.opt, a)
			}
			if a != nil {
				t.Errorf("address %+v returned with error", a)
			}
			var ae *AddressError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T %v is not an *AddressError", err, err)
			}
			if ae.Field != tt.field {
				t.Errorf("Field = %q, want %q (%v)", ae.Field, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"holding:0", "hr:10.3", "coil:65535", "di:1", "input:65534", "x", "holding:1.", "ns=2;i=4"} {
		f.Add(s, "", 0, "", 0)
	}
	f.Add("holding:1", "string", 8, "BADC", 100)
	f.Add("holding:1", "float64", 0, "GHEFCDAB", 65530)
	f.Fuzz(func(t *testing.T, text, typ string, length int, order string, offset int) {
		a, err := ParseAddress(text, AddressOptions{Type: typ, Length: length, Order: order, Offset: offset})
		if err != nil {
			if a != nil {
				t.Fatal("address returned with error")
			}
			return
		}
		m := a.Modbus
		end := int(m.Register) + 1
		if !m.Area.IsBit() {
			end = int(m.Register) + m.Type.Registers(m.Length)
		}
		if end > 65536 || m.Type.Registers(m.Length) < 1 {
			t.Fatalf("%q %+v does not fit: %+v", text, AddressOptions{Type: typ, Length: length, Order: order, Offset: offset}, m)
		}
		if (m.Bit >= 0 || m.Area.IsBit()) != (m.Type == RawBool) {
			t.Fatalf("bool/bit mismatch: %+v", m)
		}
		if a.Key != m.Key() {
			t.Fatalf("key %q != %q", a.Key, m.Key())
		}
	})
}
