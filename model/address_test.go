package model

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
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
		{"ns=2;i=x", AddressOptions{}, FieldAddress, `numeric identifier "x" is not a decimal number`},
		{"ns=2;i=4294967296", AddressOptions{}, FieldAddress, "numeric identifier 4294967296 is out of range (0..4294967295)"},
		{"ns=65536;i=1", AddressOptions{}, FieldAddress, "namespace index 65536 is out of range (0..65535)"},
		{"ns=;i=1", AddressOptions{}, FieldAddress, "missing namespace index"},
		{"ns=2", AddressOptions{}, FieldAddress, "missing identifier after the namespace index; write ns=2;s=Name"},
		{"ns=2;x=1", AddressOptions{}, FieldAddress, `unknown identifier type "x"; use i= (numeric), s= (string), g= (GUID) or b= (opaque)`},
		{"ns=2;Speed", AddressOptions{}, FieldAddress, "want an identifier i=, s=, g= or b= after the namespace"},
		{"ns=2;s=", AddressOptions{}, FieldAddress, "empty string identifier after s="},
		{"ns=2;g=1234", AddressOptions{}, FieldAddress, `GUID "1234": want 8-4-4-4-12 hexadecimal digits`},
		{"ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf6z", AddressOptions{}, FieldAddress, "want 8-4-4-4-12 hexadecimal digits"},
		{"ns=2;b=!!", AddressOptions{}, FieldAddress, `opaque identifier "!!" is not non-empty standard base64`},
		{"nsu=urn:x", AddressOptions{}, FieldAddress, "missing identifier after the namespace URI; write nsu=URI;s=Name"},
		{"nsu=;s=a", AddressOptions{}, FieldAddress, "empty namespace URI after nsu="},
		{"/Objects//Speed", AddressOptions{}, FieldAddress, `browse path "/Objects//Speed" has an empty name at segment 2`},
		{"/", AddressOptions{}, FieldAddress, "has an empty name at segment 1"},
		{"/Objects/A\\", AddressOptions{}, FieldAddress, "ends with a lone"},
		{"opc.tcp://host:4840", AddressOptions{}, FieldAddress, "an address names a node, not a server"},
		{"ns=2;s=A", AddressOptions{Type: "float32"}, FieldType, "type only applies to Modbus addresses; an OPC UA node carries its own type"},
		{"ns=2;s=A", AddressOptions{Order: "CDAB"}, FieldOrder, "order only applies to Modbus addresses"},
		{"ns=2;s=A", AddressOptions{Length: 3}, FieldLength, "length only applies to Modbus addresses"},
		{"ns=2;s=A", AddressOptions{Sampling: -1}, FieldSampling, "sampling interval -1ns is negative"},
		{"ns=2;s=A", AddressOptions{QueueSize: -1}, FieldQueueSize, "queue_size -1 is negative"},
		{"ns=2;s=A", AddressOptions{Deadband: -0.5}, FieldDataDeadband, "data_change_deadband -0.5 must be a finite number >= 0"},
		{"holding:1", AddressOptions{Sampling: time.Second}, FieldSampling, "sampling only applies to OPC UA nodes"},
		{"holding:1", AddressOptions{QueueSize: 5}, FieldQueueSize, "queue_size only applies to OPC UA nodes"},
		{"holding:1", AddressOptions{Deadband: 1}, FieldDataDeadband, "data_change_deadband only applies to OPC UA nodes"},
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
	for _, s := range []string{"holding:0", "hr:10.3", "coil:65535", "di:1", "input:65534", "x", "holding:1.", "ns=2;i=4", "nsu=urn:a;s=b", "/Objects/A\\/B", "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", "b=AAE="} {
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
		if a.OPCUA != nil {
			if a.Modbus != nil || a.Protocol != ProtocolOPCUA || a.Key != a.OPCUA.Key() {
				t.Fatalf("inconsistent OPC UA address %+v", a)
			}
			// The key is itself a valid address that means the same node.
			again, err := ParseAddress(a.Key, AddressOptions{})
			if err != nil || again.Key != a.Key {
				t.Fatalf("key %q does not parse back to itself: %v %+v", a.Key, err, again)
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

func TestParseOPCUAAddress(t *testing.T) {
	tests := []struct {
		text string
		want OPCUAAddress
		key  string
	}{
		{"ns=2;s=Line1.Filler.Speed", OPCUAAddress{Namespace: 2, IDType: 's', ID: "Line1.Filler.Speed"}, "ns=2;s=Line1.Filler.Speed"},
		{"ns=3;i=1001", OPCUAAddress{Namespace: 3, IDType: 'i', ID: "1001"}, "ns=3;i=1001"},
		{"i=2258", OPCUAAddress{IDType: 'i', ID: "2258"}, "i=2258"},
		{"ns=0;i=2258", OPCUAAddress{IDType: 'i', ID: "2258"}, "i=2258"},
		{"ns=2;i=007", OPCUAAddress{Namespace: 2, IDType: 'i', ID: "7"}, "ns=2;i=7"},
		{"ns=2;s=a;b=c", OPCUAAddress{Namespace: 2, IDType: 's', ID: "a;b=c"}, "ns=2;s=a;b=c"},
		{"ns=4;g={72962B91-FA75-4AE6-8D28-B404DC7DAF63}", OPCUAAddress{Namespace: 4, IDType: 'g', ID: "72962b91-fa75-4ae6-8d28-b404dc7daf63"}, "ns=4;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"},
		{"ns=5;b=M/RbKBsRVkePCePcx24oRA==", OPCUAAddress{Namespace: 5, IDType: 'b', ID: "M/RbKBsRVkePCePcx24oRA=="}, "ns=5;b=M/RbKBsRVkePCePcx24oRA=="},
		{"nsu=urn:unsgate:sim;s=Line2.Speed", OPCUAAddress{NamespaceURI: "urn:unsgate:sim", IDType: 's', ID: "Line2.Speed"}, "nsu=urn:unsgate:sim;s=Line2.Speed"},
		{"nsu=http://example.com/UA/;i=5", OPCUAAddress{NamespaceURI: "http://example.com/UA/", IDType: 'i', ID: "5"}, "nsu=http://example.com/UA/;i=5"},
		{"/Objects/Line1/Filler/Speed", OPCUAAddress{BrowsePath: []string{"Objects", "Line1", "Filler", "Speed"}}, "/Objects/Line1/Filler/Speed"},
		{`/Objects/2:Line1/a\/b/c\\d`, OPCUAAddress{BrowsePath: []string{"Objects", "2:Line1", "a/b", `c\d`}}, `/Objects/2:Line1/a\/b/c\\d`},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			a, err := ParseAddress(tt.text, AddressOptions{Sampling: 250 * time.Millisecond, QueueSize: 4, Deadband: 0.5})
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.Sampling, want.QueueSize, want.Deadband = 250*time.Millisecond, 4, 0.5
			if a.Protocol != ProtocolOPCUA || a.Modbus != nil || !reflect.DeepEqual(*a.OPCUA, want) {
				t.Fatalf("got %+v %+v, want %+v", a, a.OPCUA, want)
			}
			if a.Key != tt.key || a.Text != tt.text {
				t.Errorf("key %q text %q, want key %q text %q", a.Key, a.Text, tt.key, tt.text)
			}
		})
	}
}

func TestSplitQualified(t *testing.T) {
	for _, tt := range []struct {
		seg  string
		ns   uint16
		name string
		ok   bool
	}{{"2:Line1", 2, "Line1", true}, {"Line1", 0, "Line1", false}, {"x:Line1", 0, "x:Line1", false}, {"70000:A", 0, "70000:A", false}, {"3:", 0, "3:", false}} {
		ns, name, ok := SplitQualified(tt.seg)
		if ns != tt.ns || name != tt.name || ok != tt.ok {
			t.Errorf("SplitQualified(%q) = %d %q %v, want %d %q %v", tt.seg, ns, name, ok, tt.ns, tt.name, tt.ok)
		}
	}
}

func TestExpandParams(t *testing.T) {
	params := map[string]Value{"node": StringValue("Line2.Filler1"), "id": IntValue(7), "nodef": Null()}
	lookup := func(n string) (Value, bool) { v, ok := params[n]; return v, ok }
	for _, tt := range []struct {
		in, out  string
		complete bool
		err      string
	}{
		{"ns=2;s={node}.Speed", "ns=2;s=Line2.Filler1.Speed", true, ""},
		{"ns=2;i={id}", "ns=2;i=7", true, ""},
		{"holding:1", "holding:1", true, ""},
		{"ns=2;s={nodef}.x", "ns=2;s=null.x", false, ""},
		{"ns=2;s={nope}", "", false, `{nope}: the asset type declares no param "nope"`},
		{"ns=2;s={a b}", "", false, "{a b} does not name a param"},
		{"ns=2;s={node", "", false, "unclosed { at column 8"},
	} {
		out, complete, err := expandParams(tt.in, lookup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expandParams(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || out != tt.out || complete != tt.complete {
			t.Errorf("expandParams(%q) = %q %v %v, want %q %v", tt.in, out, complete, err, tt.out, tt.complete)
		}
	}
}
