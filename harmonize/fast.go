package harmonize

import (
	"errors"
	"fmt"
	"math"
	"reflect"

	"github.com/expr-lang/expr/ast"
	"github.com/unsgate/unsgate/model"
)

// The typed evaluator. expr's VM boxes every intermediate result in an
// interface, which costs a heap allocation per arithmetic step on floats
// and on integers above 255. For the expressions gateways mostly see
// (scaling, offsets, ratios, comparisons, bit masks) we instead build a tree
// of typed closures from expr's checked and optimized syntax tree once, and
// evaluate it without allocating. Anything outside this subset, or any node
// whose static type is not exactly int, float64, bool or string, makes
// buildFast give up and the tag uses expr's VM. The rules below mirror expr's
// runtime helpers (vm/runtime, builtin) for those types; the differential
// fuzz test keeps them honest.

// frame carries one evaluation's inputs, one slot per name, and the first
// run-time error.
type frame struct {
	ints   []int
	floats []float64
	bools  []bool
	strs   []string
	err    error
}

func (f *frame) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

type (
	intFn   func(*frame) int
	floatFn func(*frame) float64
	boolFn  func(*frame) bool
	strFn   func(*frame) string
)

// typedFn is a compiled node: exactly one function is set, matching typ.
type typedFn struct {
	typ envType
	i   intFn
	f   floatFn
	b   boolFn
	s   strFn
}

// eval runs the tree and returns the result as a Value.
func (t typedFn) eval(f *frame) (v model.Value) {
	switch t.typ {
	case tInt:
		v = model.IntValue(int64(t.i(f)))
	case tFloat:
		v = model.FloatValue(t.f(f))
	case tBool:
		v = model.BoolValue(t.b(f))
	case tString:
		v = model.StringValue(t.s(f))
	}
	return v
}

var (
	errModZero     = errors.New("integer divide by zero")
	errNegShift    = errors.New("negative shift count")
	errUnsupported = errors.New("not supported by the typed evaluator")
)

// fastBuilder resolves identifiers to frame slots.
type fastBuilder struct {
	slot func(name string) (int, envType, bool)
}

// buildFast compiles node, or reports that it cannot.
func buildFast(node ast.Node, slot func(name string) (int, envType, bool)) (typedFn, bool) {
	b := fastBuilder{slot: slot}
	t, err := b.build(node)
	return t, err == nil
}

// staticType is the envType of a node's checked type; tAny for anything but
// the four exact types.
func staticType(node ast.Node) envType {
	t := node.Type()
	if t == nil {
		return tAny
	}
	switch t {
	case reflect.TypeFor[int]():
		return tInt
	case reflect.TypeFor[float64]():
		return tFloat
	case reflect.TypeFor[bool]():
		return tBool
	case reflect.TypeFor[string]():
		return tString
	}
	return tAny
}

func constFn(x any) (typedFn, error) {
	switch c := x.(type) {
	case int:
		return typedFn{typ: tInt, i: func(*frame) int { return c }}, nil
	case float64:
		return typedFn{typ: tFloat, f: func(*frame) float64 { return c }}, nil
	case bool:
		return typedFn{typ: tBool, b: func(*frame) bool { return c }}, nil
	case string:
		return typedFn{typ: tString, s: func(*frame) string { return c }}, nil
	}
	return typedFn{}, errUnsupported
}

func (b fastBuilder) build(node ast.Node) (typedFn, error) {
	t, err := b.node(node)
	if err != nil {
		return t, err
	}
	// The checker's type is the contract; if our reading of the operation
	// disagrees with it, leave the expression to the VM.
	if st := staticType(node); st != t.typ {
		return typedFn{}, fmt.Errorf("%w: %T typed %v, built %v", errUnsupported, node, st, t.typ)
	}
	return t, nil
}

func (b fastBuilder) node(node ast.Node) (typedFn, error) {
	switch n := node.(type) {
	case *ast.IdentifierNode:
		slot, typ, ok := b.slot(n.Value)
		if !ok {
			return typedFn{}, errUnsupported
		}
		switch typ {
		case tInt:
			return typedFn{typ: tInt, i: func(f *frame) int { return f.ints[slot] }}, nil
		case tFloat:
			return typedFn{typ: tFloat, f: func(f *frame) float64 { return f.floats[slot] }}, nil
		case tBool:
			return typedFn{typ: tBool, b: func(f *frame) bool { return f.bools[slot] }}, nil
		case tString:
			return typedFn{typ: tString, s: func(f *frame) string { return f.strs[slot] }}, nil
		}
		return typedFn{}, errUnsupported
	case *ast.IntegerNode:
		// The checker may type an integer literal as float64 (the compiler
		// then pushes float64(value)).
		if staticType(n) == tFloat {
			return constFn(float64(n.Value))
		}
		return constFn(n.Value)
	case *ast.FloatNode:
		return constFn(n.Value)
	case *ast.BoolNode:
		return constFn(n.Value)
	case *ast.StringNode:
		return constFn(n.Value)
	case *ast.ConstantNode:
		return constFn(n.Value)
	case *ast.UnaryNode:
		return b.unary(n)
	case *ast.BinaryNode:
		return b.binary(n)
	case *ast.ConditionalNode:
		return b.conditional(n)
	case *ast.BuiltinNode:
		return b.builtin(n)
	}
	return typedFn{}, errUnsupported
}

func (b fastBuilder) unary(n *ast.UnaryNode) (typedFn, error) {
	x, err := b.build(n.Node)
	if err != nil {
		return x, err
	}
	switch {
	case n.Operator == "+" && (x.typ == tInt || x.typ == tFloat):
		return x, nil
	case n.Operator == "-" && x.typ == tInt:
		return typedFn{typ: tInt, i: func(f *frame) int { return -x.i(f) }}, nil
	case n.Operator == "-" && x.typ == tFloat:
		return typedFn{typ: tFloat, f: func(f *frame) float64 { return -x.f(f) }}, nil
	case (n.Operator == "!" || n.Operator == "not") && x.typ == tBool:
		return typedFn{typ: tBool, b: func(f *frame) bool { return !x.b(f) }}, nil
	}
	return typedFn{}, errUnsupported
}

func isNum(t envType) bool { return t == tInt || t == tFloat }

// asFloat widens an int node to float64, as expr does for mixed operands.
func asFloat(x typedFn) floatFn {
	if x.typ == tFloat {
		return x.f
	}
	i := x.i
	return func(f *frame) float64 { return float64(i(f)) }
}

func (b fastBuilder) binary(n *ast.BinaryNode) (typedFn, error) {
	l, err := b.build(n.Left)
	if err != nil {
		return l, err
	}
	r, err := b.build(n.Right)
	if err != nil {
		return r, err
	}
	bothInt := l.typ == tInt && r.typ == tInt
	bothNum := isNum(l.typ) && isNum(r.typ)
	bothStr := l.typ == tString && r.typ == tString
	bothBool := l.typ == tBool && r.typ == tBool
	li, ri, lb, rb, ls, rs := l.i, r.i, l.b, r.b, l.s, r.s

	switch n.Operator {
	case "+", "-", "*":
		switch {
		case bothInt:
			switch n.Operator {
			case "+":
				return intOp(func(f *frame) int { return li(f) + ri(f) }), nil
			case "-":
				return intOp(func(f *frame) int { return li(f) - ri(f) }), nil
			}
			return intOp(func(f *frame) int { return li(f) * ri(f) }), nil
		case bothNum:
			lf, rf := asFloat(l), asFloat(r)
			switch n.Operator {
			case "+":
				return floatOp(func(f *frame) float64 { return lf(f) + rf(f) }), nil
			case "-":
				return floatOp(func(f *frame) float64 { return lf(f) - rf(f) }), nil
			}
			return floatOp(func(f *frame) float64 { return lf(f) * rf(f) }), nil
		case bothStr && n.Operator == "+":
			return typedFn{typ: tString, s: func(f *frame) string { return ls(f) + rs(f) }}, nil
		}
	case "/":
		if bothNum {
			lf, rf := asFloat(l), asFloat(r)
			return floatOp(func(f *frame) float64 { return lf(f) / rf(f) }), nil
		}
	case "%":
		if bothInt {
			return intOp(func(f *frame) int {
				a, d := li(f), ri(f)
				if d == 0 {
					f.fail(errModZero)
					return 0
				}
				return a % d
			}), nil
		}
	case "**", "^":
		if bothNum {
			lf, rf := asFloat(l), asFloat(r)
			return floatOp(func(f *frame) float64 { return math.Pow(lf(f), rf(f)) }), nil
		}
	case "<", ">", "<=", ">=":
		return compare(n.Operator, l, r)
	case "==", "!=":
		var eq boolFn
		switch {
		case bothInt:
			eq = func(f *frame) bool { return li(f) == ri(f) }
		case bothNum:
			lf, rf := asFloat(l), asFloat(r)
			eq = func(f *frame) bool { return lf(f) == rf(f) }
		case bothStr:
			eq = func(f *frame) bool { return ls(f) == rs(f) }
		case bothBool:
			eq = func(f *frame) bool { return lb(f) == rb(f) }
		default:
			return typedFn{}, errUnsupported
		}
		if n.Operator == "!=" {
			return boolOp(func(f *frame) bool { return !eq(f) }), nil
		}
		return boolOp(eq), nil
	case "and", "&&":
		if bothBool {
			return boolOp(func(f *frame) bool { return lb(f) && rb(f) }), nil
		}
	case "or", "||":
		if bothBool {
			return boolOp(func(f *frame) bool { return lb(f) || rb(f) }), nil
		}
	}
	return typedFn{}, errUnsupported
}

func intOp(fn intFn) typedFn     { return typedFn{typ: tInt, i: fn} }
func floatOp(fn floatFn) typedFn { return typedFn{typ: tFloat, f: fn} }
func boolOp(fn boolFn) typedFn   { return typedFn{typ: tBool, b: fn} }

func compare(op string, l, r typedFn) (typedFn, error) {
	switch {
	case l.typ == tInt && r.typ == tInt:
		li, ri := l.i, r.i
		switch op {
		case "<":
			return boolOp(func(f *frame) bool { return li(f) < ri(f) }), nil
		case ">":
			return boolOp(func(f *frame) bool { return li(f) > ri(f) }), nil
		case "<=":
			return boolOp(func(f *frame) bool { return li(f) <= ri(f) }), nil
		}
		return boolOp(func(f *frame) bool { return li(f) >= ri(f) }), nil
	case isNum(l.typ) && isNum(r.typ):
		lf, rf := asFloat(l), asFloat(r)
		switch op {
		case "<":
			return boolOp(func(f *frame) bool { return lf(f) < rf(f) }), nil
		case ">":
			return boolOp(func(f *frame) bool { return lf(f) > rf(f) }), nil
		case "<=":
			return boolOp(func(f *frame) bool { return lf(f) <= rf(f) }), nil
		}
		return boolOp(func(f *frame) bool { return lf(f) >= rf(f) }), nil
	case l.typ == tString && r.typ == tString:
		ls, rs := l.s, r.s
		switch op {
		case "<":
			return boolOp(func(f *frame) bool { return ls(f) < rs(f) }), nil
		case ">":
			return boolOp(func(f *frame) bool { return ls(f) > rs(f) }), nil
		case "<=":
			return boolOp(func(f *frame) bool { return ls(f) <= rs(f) }), nil
		}
		return boolOp(func(f *frame) bool { return ls(f) >= rs(f) }), nil
	}
	return typedFn{}, errUnsupported
}

func (b fastBuilder) conditional(n *ast.ConditionalNode) (typedFn, error) {
	c, err := b.build(n.Cond)
	if err != nil {
		return c, err
	}
	x, err := b.build(n.Exp1)
	if err != nil {
		return x, err
	}
	y, err := b.build(n.Exp2)
	if err != nil {
		return y, err
	}
	if c.typ != tBool || x.typ != y.typ {
		return typedFn{}, errUnsupported
	}
	cb := c.b
	switch x.typ {
	case tInt:
		return intOp(func(f *frame) int {
			if cb(f) {
				return x.i(f)
			}
			return y.i(f)
		}), nil
	case tFloat:
		return floatOp(func(f *frame) float64 {
			if cb(f) {
				return x.f(f)
			}
			return y.f(f)
		}), nil
	case tBool:
		return boolOp(func(f *frame) bool {
			if cb(f) {
				return x.b(f)
			}
			return y.b(f)
		}), nil
	case tString:
		return typedFn{typ: tString, s: func(f *frame) string {
			if cb(f) {
				return x.s(f)
			}
			return y.s(f)
		}}, nil
	}
	return typedFn{}, errUnsupported
}

func (b fastBuilder) builtin(n *ast.BuiltinNode) (typedFn, error) {
	args := make([]typedFn, len(n.Arguments))
	for i, a := range n.Arguments {
		t, err := b.build(a)
		if err != nil {
			return t, err
		}
		args[i] = t
	}
	one := len(args) == 1
	two := len(args) == 2
	switch n.Name {
	case "abs":
		if one && args[0].typ == tInt {
			x := args[0].i
			return intOp(func(f *frame) int {
				if v := x(f); v < 0 {
					return -v
				} else {
					return v
				}
			}), nil
		}
		if one && args[0].typ == tFloat {
			x := args[0].f
			return floatOp(func(f *frame) float64 {
				if v := x(f); v < 0 {
					return -v
				} else {
					return v
				}
			}), nil
		}
	case "ceil", "floor", "round":
		if one && isNum(args[0].typ) {
			if args[0].typ == tInt {
				return floatOp(asFloat(args[0])), nil
			}
			x := args[0].f
			var op func(float64) float64
			switch n.Name {
			case "ceil":
				op = math.Ceil
			case "floor":
				op = math.Floor
			default:
				op = math.Round
			}
			return floatOp(func(f *frame) float64 { return op(x(f)) }), nil
		}
	case "int":
		if one && args[0].typ == tInt {
			return args[0], nil
		}
		if one && args[0].typ == tFloat {
			x := args[0].f
			return intOp(func(f *frame) int { return int(x(f)) }), nil
		}
	case "float":
		if one && isNum(args[0].typ) {
			return floatOp(asFloat(args[0])), nil
		}
	case "min", "max":
		return minMax(n.Name == "max", args)
	case "bitand", "bitor", "bitxor", "bitnand", "bitshl", "bitshr", "bitushr":
		if two && args[0].typ == tInt && args[1].typ == tInt {
			return bitOp(n.Name, args[0].i, args[1].i), nil
		}
	case "bitnot":
		if one && args[0].typ == tInt {
			x := args[0].i
			return intOp(func(f *frame) int { return ^x(f) }), nil
		}
	}
	return typedFn{}, errUnsupported
}

// minMax follows expr's builtin: start with the first argument and replace
// it only when a later one is strictly greater (max) or smaller (min), so NaN
// in front wins and NaN later is ignored. Mixed int and float arguments are
// left to the VM, whose static type for them is not the run-time type.
func minMax(isMax bool, args []typedFn) (typedFn, error) {
	if len(args) == 0 {
		return typedFn{}, errUnsupported
	}
	typ := args[0].typ
	for _, a := range args {
		if a.typ != typ {
			return typedFn{}, errUnsupported
		}
	}
	switch typ {
	case tInt:
		fns := make([]intFn, len(args))
		for i, a := range args {
			fns[i] = a.i
		}
		return intOp(func(f *frame) int {
			m := fns[0](f)
			for _, fn := range fns[1:] {
				if v := fn(f); isMax && m < v || !isMax && m > v {
					m = v
				}
			}
			return m
		}), nil
	case tFloat:
		fns := make([]floatFn, len(args))
		for i, a := range args {
			fns[i] = a.f
		}
		return floatOp(func(f *frame) float64 {
			m := fns[0](f)
			for _, fn := range fns[1:] {
				if v := fn(f); isMax && m < v || !isMax && m > v {
					m = v
				}
			}
			return m
		}), nil
	}
	return typedFn{}, errUnsupported
}

func bitOp(name string, x, y intFn) typedFn {
	switch name {
	case "bitand":
		return intOp(func(f *frame) int { return x(f) & y(f) })
	case "bitor":
		return intOp(func(f *frame) int { return x(f) | y(f) })
	case "bitxor":
		return intOp(func(f *frame) int { return x(f) ^ y(f) })
	case "bitnand":
		return intOp(func(f *frame) int { return x(f) &^ y(f) })
	}
	shift := func(f *frame) (int, int, bool) {
		a, s := x(f), y(f)
		if s < 0 {
			f.fail(errNegShift)
			return 0, 0, false
		}
		return a, s, true
	}
	switch name {
	case "bitshl":
		return intOp(func(f *frame) int {
			if a, s, ok := shift(f); ok {
				return a << s
			}
			return 0
		})
	case "bitshr":
		return intOp(func(f *frame) int {
			if a, s, ok := shift(f); ok {
				return a >> s
			}
			return 0
		})
	}
	return intOp(func(f *frame) int {
		if a, s, ok := shift(f); ok {
			return int(uint(a) >> s)
		}
		return 0
	})
}
