package modbus

import (
	"bytes"
	"errors"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"

	"github.com/unsgate/unsgate/model"
)

// Errors returned by Decode and DecodeBits. New rejects addresses that
// would produce ErrUndecodable, so Run only meets them on a bad plan.
var (
	ErrShortBlock  = errors.New("block too short for the value")
	ErrUndecodable = errors.New("address cannot be decoded (unknown type, order or bit)")
)

// Decode decodes the value a describes from regs, which begins at the
// value's first register. Signed integers become IntValue, unsigned ones
// UintValue, float64 FloatValue, float32 Float32Value (widened exactly, printed at 32-bit precision), bool is bit a.Bit
// of the register (or register != 0 when a.Bit is -1), and strings are
// decoded by DecodeString. Byte orders apply to 32- and 64-bit types (see
// model.ByteOrder); 16-bit types ignore them. Numeric types do not
// allocate.
func Decode(regs []uint16, a *model.ModbusAddress) (model.Value, error) {
	n := a.Type.Registers(a.Length)
	if n <= 0 || n > MaxRegisters || a.Order > model.OrderDCBA {
		return model.Value{}, ErrUndecodable
	}
	if len(regs) < n {
		return model.Value{}, ErrShortBlock
	}
	switch a.Type {
	case model.RawBool:
		switch {
		case a.Bit == -1:
			return model.BoolValue(regs[0] != 0), nil
		case a.Bit >= 0 && a.Bit <= 15:
			return model.BoolValue(regs[0]>>uint(a.Bit)&1 == 1), nil
		}
		return model.Value{}, ErrUndecodable
	case model.RawInt16:
		return model.IntValue(int64(int16(regs[0]))), nil
	case model.RawUint16:
		return model.UintValue(uint64(regs[0])), nil
	case model.RawInt32:
		return model.IntValue(int64(int32(word32(regs, a.Order)))), nil
	case model.RawUint32:
		return model.UintValue(uint64(word32(regs, a.Order))), nil
	case model.RawFloat32:
		return model.Float32Value(math.Float32frombits(word32(regs, a.Order))), nil
	case model.RawInt64:
		return model.IntValue(int64(word64(regs, a.Order))), nil
	case model.RawUint64:
		return model.UintValue(word64(regs, a.Order)), nil
	case model.RawFloat64:
		return model.FloatValue(math.Float64frombits(word64(regs, a.Order))), nil
	case model.RawString:
		return model.StringValue(DecodeString(regs[:n], a.Order)), nil
	}
	return model.Value{}, ErrUndecodable
}

// DecodeBits decodes a bool from a block of coils or discrete inputs that
// begins at the value's bit.
func DecodeBits(block []bool, a *model.ModbusAddress) (model.Value, error) {
	if a.Type != model.RawBool {
		return model.Value{}, ErrUndecodable
	}
	if len(block) == 0 {
		return model.Value{}, ErrShortBlock
	}
	return model.BoolValue(block[0]), nil
}

// wordsReversed and bytesSwapped split a byte order into its two
// independent parts: register order and byte order inside a register.
func wordsReversed(o model.ByteOrder) bool { return o == model.OrderCDAB || o == model.OrderDCBA }
func bytesSwapped(o model.ByteOrder) bool  { return o == model.OrderBADC || o == model.OrderDCBA }

// word32 assembles two registers (big-endian bytes A..D for ABCD).
func word32(r []uint16, o model.ByteOrder) uint32 {
	hi, lo := r[0], r[1]
	if wordsReversed(o) {
		hi, lo = lo, hi
	}
	if bytesSwapped(o) {
		hi, lo = bits.ReverseBytes16(hi), bits.ReverseBytes16(lo)
	}
	return uint32(hi)<<16 | uint32(lo)
}

// word64 assembles four registers: ABCD = ABCDEFGH, CDAB = GHEFCDAB,
// BADC = BADCFEHG, DCBA = HGFEDCBA.
func word64(r []uint16, o model.ByteOrder) uint64 {
	w0, w1, w2, w3 := r[0], r[1], r[2], r[3]
	if wordsReversed(o) {
		w0, w1, w2, w3 = w3, w2, w1, w0
	}
	if bytesSwapped(o) {
		w0, w1, w2, w3 = bits.ReverseBytes16(w0), bits.ReverseBytes16(w1), bits.ReverseBytes16(w2), bits.ReverseBytes16(w3)
	}
	return uint64(w0)<<48 | uint64(w1)<<32 | uint64(w2)<<16 | uint64(w3)
}

// DecodeString decodes ASCII text stored two characters per register, the
// high byte first (ABCD) or the low byte first (BADC; DCBA is taken the
// same way, CDAB like ABCD). The text ends at the first NUL, as in the C
// strings most PLCs store, and trailing spaces are trimmed. Bytes above
// 0x7F are not ASCII and become U+FFFD, so the result is always valid UTF-8.
func DecodeString(regs []uint16, order model.ByteOrder) string {
	var buf [2 * MaxRegisters]byte
	b := buf[:0]
	swap := bytesSwapped(order)
	for _, r := range regs {
		hi, lo := byte(r>>8), byte(r)
		if swap {
			hi, lo = lo, hi
		}
		b = append(b, hi, lo)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimRight(b, " ")
	nonASCII := 0
	for _, c := range b {
		if c >= utf8.RuneSelf {
			nonASCII++
		}
	}
	if nonASCII == 0 {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + nonASCII*(utf8.RuneLen(utf8.RuneError)-1))
	for _, c := range b {
		if c >= utf8.RuneSelf {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
