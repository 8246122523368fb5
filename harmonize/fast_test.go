package harmonize

import (
	"math"
	"slices"
	"testing"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"github.com/unsgate/unsgate/model"
)

// diffNames is the environment of the differential tests, sorted.
var diffNames = []string{"b", "f", "g", "i", "j", "s", "t"}
var diffTypes = []envType{tBool, tFloat, tFloat, tInt, tInt, tString, tString}

// fastExprs must all be handled by the typed evaluator.
var fastExprs = []string{
	"i + j", "i - j", "i * j", "i / j", "i % j", "i ** j", "i ^ j", "-i", "+i", "+f",
	"f + g", "f - i", "i * f", "f / g", "f ** 2", "-f", "i % 7", "i / 0", "f / 0",
	"i < j", "i > f", "f <= g", "i >= j", "i == j", "i != f", "f == g", "f < g", "i <= 3.5",
	"s == t", "s != t", "s < t", "s >= t", "s + t", "s + \"x\"", "b == (i > j)", "b != b",
	"b && i > 0", "b || f < 0", "not b", "!b", "b and (i % 3 == 0)", "b or false",
	"i > j ? i : j", "b ? f : g", "b ? s : t", "b ? b : !b",
	"i + j > 0 ? 100.0 * i / (i + j) : 100.0",
	"abs(i)", "abs(f)", "ceil(f)", "floor(f)", "round(f)", "ceil(i)", "floor(i)", "round(i)",
	"int(f)", "int(i)", "float(i)", "float(f)",
	"max(i, j)", "min(i, j, 3)", "max(f, g)", "min(f, g, 0.5)", "max(i)",
	"bitand(i, j)", "bitor(i, j)", "bitxor(i, j)", "bitnand(i, j)", "bitshl(i, j)", "bitshr(i, j)",
	"bitushr(i, j)", "bitnot(i)", "bitand(i, 0xFF)", "bitshr(i, 8)",
	"i * 0.1", "(i + 1) * (j - 1) % 7", "f * 2 + i / 4 - 1", "1 + 2 * 3", "2 ** 10", "10 / 4",
	"-(i * j)", "i - -j", "f > 0 and f < 100 or i == 0",
}

// slowExprs are left to expr's VM.
var slowExprs = []string{
	"[1, 2, 3][i]", "max(i, f)", "i > 0 ? 1 : 2.5", "string(i)", "len(s)", "s contains t",
	"i in [1, 2]", "upper(s)", "i > 0 ? nil : 1", "let x = i; x + 1", "int(s)",
}

func compileDiff(t testing.TB, text string) *program {
	t.Helper()
	c := &compiler{programs: map[string]*program{}}
	var uses []resolved
	for _, n := range diffNames {
		uses = append(uses, resolved{name: n})
	}
	p := c.program(text, uses, diffTypes)
	if p.err != nil {
		t.Fatalf("%q: %s", text, p.err.msg)
	}
	return p
}

func TestFastCoverage(t *testing.T) {
	for _, text := range fastExprs {
		if p := compileDiff(t, text); !p.isFast {
			t.Errorf("%q: not handled by the typed evaluator", text)
		}
	}
	for _, text := range slowExprs {
		if p := compileDiff(t, text); p.isFast {
			t.Errorf("%q: handled by the typed evaluator, want expr's VM", text)
		}
	}
}

type diffInput struct {
	i, j int64
	f, g float64
	b    bool
	s, t string
}

// runBoth evaluates p on the typed evaluator and on expr's VM.
func runBoth(p *program, in diffInput) (fast, slow model.Value, fastErr, slowErr error) {
	vals := []model.Value{model.BoolValue(in.b), model.FloatValue(in.f), model.FloatValue(in.g),
		model.IntValue(in.i), model.IntValue(in.j), model.StringValue(in.s), model.StringValue(in.t)}
	n := len(vals)
	f := frame{ints: make([]int, n), floats: make([]float64, n), bools: make([]bool, n), strs: make([]string, n)}
	env := map[string]any{}
	for k, v := range vals {
		if err := f.load(k, diffTypes[k], v); err != nil {
			panic(err)
		}
		x, _ := toAny(v)
		env[diffNames[k]] = x
	}
	e := &Engine{frame: f}
	fast, fastErr = e.evalFast(p)
	var m vm.VM
	x, slowErr := m.Run(p.vm, env)
	if slowErr == nil {
		slow, slowErr = fromResult(x)
	}
	return
}

func sameValue(a, b model.Value) bool {
	if a.Kind() == model.KindFloat && b.Kind() == model.KindFloat && math.IsNaN(a.Float()) && math.IsNaN(b.Float()) {
		return true
	}
	return a.Equal(b)
}

var diffSeeds = []diffInput{
	{i: 7, j: 3, f: 2.5, g: -0.5, b: true, s: "a", t: "b"},
	{i: 0, j: 0, f: 0, g: 0, s: "", t: ""},
	{i: -9, j: 2, f: math.Inf(1), g: math.NaN(), b: true, s: "x", t: "x"},
	{i: math.MinInt64, j: -1, f: -1e300, g: 1e-300, s: "zz", t: "z"},
	{i: math.MaxInt64, j: 64, f: 0.5, g: -2.5, b: false},
	{i: 1200, j: -3, f: 1.5, g: 2.5},
	{i: 255, j: 256, f: math.Copysign(0, -1), g: 3},
}

func TestFastMatchesVM(t *testing.T) {
	for _, text := range fastExprs {
		p := compileDiff(t, text)
		for _, in := range diffSeeds {
			checkSame(t, p, in)
		}
	}
}

func checkSame(t *testing.T, p *program, in diffInput) {
	t.Helper()
	fast, slow, fastErr, slowErr := runBoth(p, in)
	if (fastErr != nil) != (slowErr != nil) {
		t.Fatalf("%q with %+v: typed evaluator err=%v, VM err=%v", p.text, in, fastErr, slowErr)
	}
	if fastErr == nil && !sameValue(fast, slow) {
		t.Fatalf("%q with %+v: typed evaluator %v (%s), VM %v (%s)", p.text, in, fast, fast.Kind(), slow, slow.Kind())
	}
}

// FuzzFastMatchesVM checks that the typed evaluator and expr's VM agree on
// every expression the typed evaluator accepts.
func FuzzFastMatchesVM(f *testing.F) {
	for k, in := range diffSeeds {
		f.Add(uint8(k), in.i, in.j, in.f, in.g, in.b, in.s, in.t)
	}
	progs := make([]*program, len(fastExprs))
	for k, text := range fastExprs {
		progs[k] = compileDiff(f, text)
	}
	f.Fuzz(func(t *testing.T, which uint8, i, j int64, fv, gv float64, b bool, s, tv string) {
		in := diffInput{i: i, j: j, f: fv, g: gv, b: b, s: s, t: tv}
		// Every seed runs every expression; new inputs pick one.
		if slices.Contains(diffSeeds, in) {
			for _, p := range progs {
				checkSame(t, p, in)
			}
			return
		}
		checkSame(t, progs[int(which)%len(progs)], in)
	})
}

func TestExprTypesMatchEnvTypes(t *testing.T) {
	// The environment declared to the checker and the values the engine
	// hands the VM must agree, or typed programs would fail at run time.
	for _, typ := range []envType{tBool, tInt, tFloat, tString} {
		p, err := expr.Compile("x", expr.Env(types.Map{"x": exprType(typ)}))
		if err != nil {
			t.Fatal(err)
		}
		if got := staticType(p.Node()); got != typ {
			t.Errorf("%v: checker type %v", typ, got)
		}
		x, err := vm.Run(p, map[string]any{"x": typ.zero()})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := fromResult(x); err != nil || envTypeOf(v.Kind()) != typ {
			t.Errorf("%v: zero value comes back as %v, %v", typ, v.Kind(), err)
		}
	}
}
