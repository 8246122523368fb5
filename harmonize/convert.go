package harmonize

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/unsgate/unsgate/model"
)

// envType is the Go type a name has inside an expression. All integers are
// int, so that arithmetic mixes freely in expr; unsigned values beyond
// math.MaxInt64 cannot be represented and fail at run time.
type envType uint8

const (
	tAny envType = iota // decided at run time; only expr's VM handles it
	tBool
	tInt
	tFloat
	tString
)

func (t envType) String() string {
	switch t {
	case tBool:
		return "bool"
	case tInt:
		return "int"
	case tFloat:
		return "float64"
	case tString:
		return "string"
	}
	return "any"
}

// zero is the typed zero value expr's type checker sees for a name of type t.
func (t envType) zero() any {
	switch t {
	case tBool:
		return false
	case tInt:
		return 0
	case tFloat:
		return 0.0
	case tString:
		return ""
	}
	return nil
}

// kind is the harmonized value kind an expression result of type t has.
func (t envType) kind() model.Kind {
	switch t {
	case tBool:
		return model.KindBool
	case tInt:
		return model.KindInt
	case tFloat:
		return model.KindFloat
	case tString:
		return model.KindString
	}
	return model.KindNull
}

// envTypeOf is the expression type of a value of kind k.
func envTypeOf(k model.Kind) envType {
	switch k {
	case model.KindBool:
		return tBool
	case model.KindInt, model.KindUint:
		return tInt
	case model.KindFloat:
		return tFloat
	case model.KindString:
		return tString
	}
	return tAny
}

var (
	errNull      = errors.New("value is null")
	errNonFinite = errors.New("result is not a finite number")
)

// toInt converts v to an expression int. Floats convert only when they are
// whole numbers in range, so a wrongly typed reading never truncates quietly.
func toInt(v model.Value) (int, error) {
	switch v.Kind() {
	case model.KindInt:
		return int(v.Int()), nil
	case model.KindUint:
		if v.Uint() > math.MaxInt64 {
			return 0, fmt.Errorf("%d overflows int", v.Uint())
		}
		return int(v.Uint()), nil
	case model.KindFloat:
		f := v.Float()
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return 0, fmt.Errorf("%v is not an integer", f)
		}
		return int(f), nil
	case model.KindNull:
		return 0, errNull
	}
	return 0, fmt.Errorf("cannot use %s value as int", v.Kind())
}

func toFloat(v model.Value) (float64, error) {
	switch v.Kind() {
	case model.KindInt, model.KindUint, model.KindFloat:
		f, _ := v.AsFloat()
		return f, nil
	case model.KindNull:
		return 0, errNull
	}
	return 0, fmt.Errorf("cannot use %s value as float64", v.Kind())
}

// toAny boxes v for expr's VM with the same Go types the typed path uses.
func toAny(v model.Value) (any, error) {
	switch v.Kind() {
	case model.KindInt, model.KindUint:
		return toInt(v)
	case model.KindNull:
		return nil, errNull
	}
	return v.Interface(), nil
}

// convertible reports whether a value of kind from can be converted to kind
// to. KindNull means "not known before run time" and is always accepted.
func convertible(from, to model.Kind) bool {
	if from == model.KindNull || to == model.KindNull || from == to {
		return true
	}
	return isNumeric(from) && isNumeric(to)
}

func isNumeric(k model.Kind) bool {
	return k == model.KindInt || k == model.KindUint || k == model.KindFloat
}

// convert changes v to kind to, narrowed to width bits when width is not 0
// (see model.TagMeta.Width). Floats convert to integers by truncation
// toward zero, as Go and expr's int() do; values out of the range of the
// kind, or of its width, are errors, also when v already has kind to. A
// float32 result is rounded to float32 and carried as a Float32Value;
// NaN and infinities pass, for the caller's finiteness check.
func convert(v model.Value, to model.Kind, width uint8) (model.Value, error) {
	from := v.Kind()
	if from == to && width == 0 || to == model.KindNull {
		return v, nil
	}
	if from == model.KindNull {
		return v, errNull
	}
	switch to {
	case model.KindInt:
		var i int64
		switch from {
		case model.KindInt:
			i = v.Int()
		case model.KindUint:
			if v.Uint() > math.MaxInt64 {
				return model.Null(), overflow(v, to, width)
			}
			i = int64(v.Uint())
		case model.KindFloat:
			f := math.Trunc(v.Float())
			if !(f >= math.MinInt64 && f < math.MaxInt64) {
				return model.Null(), overflow(v, to, width)
			}
			i = int64(f)
		default:
			return model.Null(), fmt.Errorf("cannot convert %s to %s", from, typeName(to, width))
		}
		if width != 0 && (i < -1<<(width-1) || i >= 1<<(width-1)) {
			return model.Null(), overflow(v, to, width)
		}
		if from == to {
			return v, nil
		}
		return model.IntValue(i), nil
	case model.KindUint:
		var u uint64
		switch from {
		case model.KindUint:
			u = v.Uint()
		case model.KindInt:
			if v.Int() < 0 {
				return model.Null(), overflow(v, to, width)
			}
			u = uint64(v.Int())
		case model.KindFloat:
			f := math.Trunc(v.Float())
			if !(f >= 0 && f < math.MaxUint64) {
				return model.Null(), overflow(v, to, width)
			}
			u = uint64(f)
		default:
			return model.Null(), fmt.Errorf("cannot convert %s to %s", from, typeName(to, width))
		}
		if width != 0 && u >= 1<<width {
			return model.Null(), overflow(v, to, width)
		}
		if from == to {
			return v, nil
		}
		return model.UintValue(u), nil
	case model.KindFloat:
		f, ok := v.AsFloat()
		if !ok || from == model.KindBool {
			break
		}
		if width == 0 {
			if from == to {
				return v, nil // keeps a float32 source's precision mark
			}
			return model.FloatValue(f), nil
		}
		// A finite value beyond float32's range would round to an
		// infinity (and Go leaves that conversion to the platform).
		if math.Abs(f) > math.MaxFloat32 && !math.IsInf(f, 0) {
			return model.Null(), overflow(v, to, width)
		}
		return model.Float32Value(float32(f)), nil
	}
	return model.Null(), fmt.Errorf("cannot convert %s to %s", from, typeName(to, width))
}

// overflow is the error for a value v out of the range of kind to at width.
func overflow(v model.Value, to model.Kind, width uint8) error {
	return fmt.Errorf("%s overflows %s", v, typeName(to, width))
}

// typeName names kind k at width bits the way a model's datatype does.
func typeName(k model.Kind, width uint8) string {
	m := model.TagMeta{Datatype: k, Width: width}
	return m.TypeName()
}

// enumInput reports whether values of kind k can index an enum.
func enumInput(k model.Kind) bool {
	return k == model.KindInt || k == model.KindUint || k == model.KindBool || k == model.KindNull
}

// applyEnum maps an integer (or bool, as 0/1) to its enum text; integers the
// enum does not name become their decimal text.
func applyEnum(enum map[int64]string, v model.Value) (model.Value, error) {
	var n int64
	switch v.Kind() {
	case model.KindInt:
		n = v.Int()
	case model.KindUint:
		if v.Uint() > math.MaxInt64 {
			return model.StringValue(strconv.FormatUint(v.Uint(), 10)), nil
		}
		n = int64(v.Uint())
	case model.KindBool:
		if v.Bool() {
			n = 1
		}
	case model.KindFloat:
		f := v.Float()
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return model.Null(), fmt.Errorf("enum needs an integer, got %v", f)
		}
		n = int64(f)
	case model.KindNull:
		return model.Null(), errNull
	default:
		return model.Null(), fmt.Errorf("enum needs an integer, got %s", v.Kind())
	}
	if s, ok := enum[n]; ok {
		return model.StringValue(s), nil
	}
	return model.StringValue(strconv.FormatInt(n, 10)), nil
}

// fromResult converts a result of expr's VM to a Value.
func fromResult(x any) (model.Value, error) {
	if x == nil {
		return model.Null(), errors.New("expression yielded nil")
	}
	v, err := model.FromInterface(x)
	if err != nil {
		return model.Null(), fmt.Errorf("expression yielded %T, want a bool, number or string", x)
	}
	return v, nil
}
