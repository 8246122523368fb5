package harmonize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

func compileYAML(t testing.TB, text string) *Plan {
	t.Helper()
	m, err := model.LoadFiles([]model.File{{Name: "test.yaml", Data: []byte(text)}})
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	p, err := Compile(m)
	if err != nil {
		t.Fatalf("compile:\n%v", err)
	}
	return p
}

const apiModel = `
base: acme/munich/bottling
types:
  Filler:
    tags:
      speed: {address: "holding:0", expr: "raw * 0.1", unit: bottles/min, description: Filling speed, poll: 2s}
      state: {address: "holding:2", enum: {0: idle}}
      yield: {expr: "speed * 2", unit: "%"}
      alias: {address: "holding:0"}
assets:
  line1/filler2: {type: Filler, source: plc2, poll: 500ms}
  line1/filler1: {type: Filler, source: plc1}
  line0/filler1: {type: Filler, source: plc1, poll: 1s}
`

func TestPlanAPI(t *testing.T) {
	p := compileYAML(t, apiModel)

	tags := p.Tags()
	if len(tags) != 12 {
		t.Fatalf("%d tags, want 12", len(tags))
	}
	for i, m := range tags {
		if m.Index != i {
			t.Errorf("%s: Index %d at position %d", m.Topic, m.Index, i)
		}
		if i > 0 && tags[i-1].Topic >= m.Topic {
			t.Errorf("tags not sorted: %s before %s", tags[i-1].Topic, m.Topic)
		}
	}
	speed := tags[slices.IndexFunc(tags, func(m *model.TagMeta) bool {
		return m.Topic == "acme/munich/bottling/line1/filler1/speed"
	})]
	want := model.TagMeta{Topic: "acme/munich/bottling/line1/filler1/speed", Asset: "acme/munich/bottling/line1/filler1", Type: "Filler",
		Name: "speed", Datatype: model.KindFloat, Unit: "bottles/min", Description: "Filling speed",
		Source: "plc1", Address: "holding:0", Index: speed.Index}
	if *speed != want {
		t.Errorf("speed meta\n got %+v\nwant %+v", *speed, want)
	}
	kinds := map[string]model.Kind{}
	for _, m := range tags {
		kinds[m.Name] = m.Datatype
		if m.Name == "yield" && (m.Source != "" || m.Address != "") {
			t.Errorf("derived tag has source %q address %q", m.Source, m.Address)
		}
	}
	if kinds["state"] != model.KindString || kinds["yield"] != model.KindFloat || kinds["alias"] != model.KindUint {
		t.Errorf("datatypes %v", kinds)
	}

	var got []string
	for _, b := range p.Bindings() {
		got = append(got, b.Source+" "+b.Key+" "+b.Poll.String()+" "+b.Address.Text)
	}
	wantB := []string{
		// line0/filler1 polls at 1s, line1/filler1 at the default; speed
		// asks for 2s: the smallest non-zero interval wins.
		"plc1 u0:holding:0:uint16 1s holding:0",
		"plc1 u0:holding:2:uint16 1s holding:2",
		"plc2 u0:holding:0:uint16 500ms holding:0",
		"plc2 u0:holding:2:uint16 500ms holding:2",
	}
	if !slices.Equal(got, wantB) {
		t.Errorf("bindings\n got %q\nwant %q", got, wantB)
	}
	if s := p.Sources(); !slices.Equal(s, []string{"plc1", "plc2"}) {
		t.Errorf("sources %q", s)
	}
	refs := p.SourceRefs()
	if pos := refs["plc1"]; pos.File != "test.yaml" || pos.Line != 12 {
		t.Errorf("plc1 first named at %v, want test.yaml:12 (line0/filler1)", pos)
	}

	// Accessors hand out copies: changing them does not change the plan.
	p.Tags()[0] = nil
	p.Bindings()[0].Key = "x"
	p.Sources()[0] = "x"
	refs["plc1"] = model.Pos{}
	if p.Tags()[0] == nil || p.Bindings()[0].Key == "x" || p.Sources()[0] == "x" || p.SourceRefs()["plc1"].Line != 12 {
		t.Error("plan changed through an accessor's result")
	}
}

// A model built in Go can contain what the loader rejects; Compile still
// reports it instead of guessing.
func TestAmbiguousNames(t *testing.T) {
	pos := func(line int) model.Pos { return model.Pos{File: "go.yaml", Line: line, Col: 10} }
	addr := &model.Address{Protocol: model.ProtocolModbus, Text: "holding:0", Key: "u0:holding:0:uint16",
		Modbus: &model.ModbusAddress{Area: model.AreaHoldingRegister, Type: model.RawUint16, Bit: -1}}
	tag := func(name, expr string, line int, a *model.Address) *model.Tag {
		return &model.Tag{Name: name, Topic: "a/b/c/d/e/" + name, Address: a, Expr: expr, ExprPos: pos(line), Pos: pos(line), OnChange: true}
	}
	m := &model.Model{Assets: []*model.Asset{{
		Path: "a/b/c/d/e", Source: "plc1", Params: map[string]model.Value{"speed": model.FloatValue(1)},
		Tags: []*model.Tag{
			tag("speed", "", 1, addr),
			tag("x-y", "", 2, addr),
			tag("x_y", "", 3, addr),
			tag("uses_speed", "speed * 2", 4, nil),
			tag("uses_xy", "x_y + 1", 5, nil),
			tag("nothing", "", 6, nil),
		},
	}}}
	_, err := Compile(m)
	var ds model.Diagnostics
	if !errors.As(err, &ds) {
		t.Fatalf("error %T %v, want model.Diagnostics", err, err)
	}
	want := `go.yaml:4:10: expression: name "speed" is ambiguous: both parameter "speed" and tag "speed"
go.yaml:5:10: expression: name "x_y" is ambiguous: both tag "x-y" and tag "x_y"
go.yaml:6:10: derived tag nothing needs an expression (expr)`
	if err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

// feed applies one sample and returns the points.
func feed(e *Engine, src, addr string, v model.Value, q model.Quality, ms int64) []model.Point {
	return e.Apply([]model.Sample{{Source: src, Address: addr, Value: v, Quality: q, ReceiveTime: time.UnixMilli(ms)}}, nil)
}

const allocModel = `
base: acme/munich/bottling
types:
  Filler:
    tags:
      pass: {address: "holding:0", on_change: false}
      scaled: {address: "holding:1", expr: "raw * 0.1", on_change: false}
      state: {address: "holding:2", enum: {0: idle, 1: running, 2: fault}, on_change: false}
      counters/good: {address: "holding:4", type: uint32}
      counters/bad: {address: "holding:6", type: uint32}
      yield:
        expr: "counters_good + counters_bad > 0 ? 100.0 * counters_good / (counters_good + counters_bad) : 100.0"
        on_change: false
      slow: {address: "holding:8", expr: "[raw, 2][0] * 0.1", on_change: false}
assets:
  line1/filler1: {type: Filler, source: plc1}
`

// allocCase is one hot-path scenario: the samples alternate so every
// evaluation sees a new value, as on a busy line.
type allocCase struct {
	name    string
	samples [2][]model.Sample
	points  int // points per Apply
}

func allocCases() []allocCase {
	s := func(addr string, v uint64) model.Sample {
		return model.Sample{Source: "plc1", Address: addr, Value: model.UintValue(v), Quality: model.QualityGood,
			ReceiveTime: time.UnixMilli(1000)}
	}
	return []allocCase{
		{"pass-through", [2][]model.Sample{{s("u0:holding:0:uint16", 1234)}, {s("u0:holding:0:uint16", 4321)}}, 1},
		{"scaled", [2][]model.Sample{{s("u0:holding:1:uint16", 1234)}, {s("u0:holding:1:uint16", 4321)}}, 1},
		{"enum", [2][]model.Sample{{s("u0:holding:2:uint16", 1)}, {s("u0:holding:2:uint16", 7)}}, 1},
		{"derived", [2][]model.Sample{{s("u0:holding:4:uint32:ABCD", 90000)}, {s("u0:holding:4:uint32:ABCD", 95000)}}, 2},
		{"vm", [2][]model.Sample{{s("u0:holding:8:uint16", 1234)}, {s("u0:holding:8:uint16", 4321)}}, 1},
	}
}

func TestHotPathAllocs(t *testing.T) {
	p := compileYAML(t, allocModel)
	want := map[string]float64{"pass-through": 0, "scaled": 0, "enum": 0, "derived": 0}
	for _, c := range allocCases() {
		e := NewEngine(p, Options{})
		out := make([]model.Point, 0, 16)
		feed(e, "plc1", "u0:holding:6:uint32:ABCD", model.UintValue(500), model.QualityGood, 1000)
		k := 0
		got := testing.AllocsPerRun(1000, func() {
			k++
			out = e.Apply(c.samples[k%2], out[:0])
			if len(out) != c.points {
				t.Fatalf("%s: %d points, want %d", c.name, len(out), c.points)
			}
		})
		if w, ok := want[c.name]; ok && got > w {
			t.Errorf("%s: %.1f allocs per sample, want %.0f", c.name, got, w)
		}
		t.Logf("%s: %.1f allocs per sample", c.name, got)
	}
}

func TestEnumMissingValue(t *testing.T) {
	// Only values missing from the enum need a new string; a mapped value
	// reuses the model's.
	p := compileYAML(t, allocModel)
	e := NewEngine(p, Options{})
	pts := feed(e, "plc1", "u0:holding:2:uint16", model.UintValue(2), model.QualityGood, 1)
	if len(pts) != 1 || pts[0].Value.Str() != "fault" {
		t.Fatalf("points %v", pts)
	}
	pts = feed(e, "plc1", "u0:holding:2:uint16", model.UintValue(42), model.QualityGood, 2)
	if len(pts) != 1 || pts[0].Value.Str() != "42" {
		t.Fatalf("points %v", pts)
	}
}

// Stats is read from other goroutines while Apply runs; with -race this
// checks that the counters are the only shared state.
func TestStatsConcurrent(t *testing.T) {
	p := compileYAML(t, allocModel)
	e := NewEngine(p, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last uint64
		for ctx.Err() == nil {
			s := e.Stats()
			if s.Samples < last {
				t.Errorf("Samples went back from %d to %d", last, s.Samples)
			}
			last = s.Samples
		}
	}()
	cases := allocCases()
	const n = 2000
	for i := range n {
		e.Apply(cases[i%len(cases)].samples[i%2], nil)
	}
	e.Apply([]model.Sample{{Source: "nope", Address: "x"}}, nil)
	cancel()
	wg.Wait()
	s := e.Stats()
	if s.Samples != n+1 || s.UnknownSamples != 1 || s.Points+s.Suppressed < n {
		t.Errorf("stats %+v", s)
	}
}

// Several engines may run one plan at the same time.
func TestPlanSharedBetweenEngines(t *testing.T) {
	p := compileYAML(t, allocModel)
	cases := allocCases()
	run := func() []model.Point {
		e := NewEngine(p, Options{})
		var out []model.Point
		for i := range 500 {
			out = e.Apply(cases[i%len(cases)].samples[i%2], out)
		}
		return out
	}
	want := run()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := run(); !slices.EqualFunc(got, want, func(a, b model.Point) bool {
				return a.Meta == b.Meta && a.Value.Equal(b.Value) && a.Quality == b.Quality && a.Time.Equal(b.Time)
			}) {
				t.Error("engines sharing a plan disagree")
			}
		}()
	}
	wg.Wait()
}

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		var b strings.Builder
		b.WriteString(rec.Message)
		rec.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.Key + "=" + a.Value.String())
			return true
		})
		out = append(out, b.String())
	}
	return out
}

func TestErrorsLoggedAtLimitedRate(t *testing.T) {
	p := compileYAML(t, `
base: acme/munich/bottling
types:
  Filler:
    params: {zero: 0}
    tags:
      broken: {address: "holding:0", expr: "raw % zero"}
assets:
  line1/filler1: {type: Filler, source: plc1}
`)
	rec := &recorder{}
	clock := time.Unix(1000, 0)
	e := NewEngine(p, Options{Logger: slog.New(rec), Now: func() time.Time { return clock }})
	for i := range 100 {
		pts := feed(e, "plc1", "u0:holding:0:uint16", model.UintValue(uint64(i)), model.QualityGood, int64(i))
		if i == 0 && (len(pts) != 1 || pts[0].Quality != model.QualityBad || !pts[0].Value.IsNull()) {
			t.Fatalf("points %+v, want one BAD null", pts)
		}
		clock = clock.Add(100 * time.Millisecond)
	}
	for range 3 {
		feed(e, "plc1", "u0:holding:9:uint16", model.UintValue(1), model.QualityGood, 1)
	}
	clock = clock.Add(time.Minute)
	feed(e, "plc1", "u0:holding:0:uint16", model.UintValue(1), model.QualityGood, 1)
	feed(e, "plc1", "u0:holding:9:uint16", model.UintValue(1), model.QualityGood, 1)
	got := rec.messages()
	want := []string{
		"harmonize: tag failed, publishing BAD topic=acme/munich/bottling/line1/filler1/broken err=integer divide by zero suppressed=0",
		"harmonize: sample for no tag source=plc1 address=u0:holding:9:uint16 suppressed=0",
		"harmonize: tag failed, publishing BAD topic=acme/munich/bottling/line1/filler1/broken err=integer divide by zero suppressed=99",
		"harmonize: sample for no tag source=plc1 address=u0:holding:9:uint16 suppressed=2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("log\n got %q\nwant %q", got, want)
	}
	if s := e.Stats(); s.ExprErrors != 101 || s.UnknownSamples != 4 {
		t.Errorf("stats %+v", s)
	}
}

func TestSnapshot(t *testing.T) {
	p := compileYAML(t, allocModel)
	e := NewEngine(p, Options{})
	if got := e.Snapshot(nil); len(got) != 0 {
		t.Fatalf("snapshot of a new engine: %v", got)
	}
	feed(e, "plc1", "u0:holding:4:uint32:ABCD", model.UintValue(3), model.QualityGood, 1000)
	feed(e, "plc1", "u0:holding:6:uint32:ABCD", model.UintValue(1), model.QualityUncertain, 2000)
	var got []string
	for _, pt := range e.Snapshot(nil) {
		got = append(got, pt.Meta.Name+"="+pt.Value.String()+" "+pt.Quality.String()+" "+pt.Raw.String())
	}
	want := []string{"counters/bad=1 UNCERTAIN 1", "counters/good=3 GOOD 3", "yield=75 UNCERTAIN null"}
	if !slices.Equal(got, want) {
		t.Errorf("snapshot %q, want %q", got, want)
	}
}

// The VM path handles names of a type only known at run time: a derived
// tag whose expression yields int or float depending on its input.
func TestRunTimeTypedInputs(t *testing.T) {
	p := compileYAML(t, `
base: acme/munich/bottling
types:
  Filler:
    tags:
      level: {address: "holding:0"}
      mixed: {expr: "level > 10 ? level : 0.5"}
      twice: {expr: "mixed * 2"}
assets:
  line1/filler1: {type: Filler, source: plc1}
`)
	kinds := map[string]model.Kind{}
	for _, m := range p.Tags() {
		kinds[m.Name] = m.Datatype
	}
	if kinds["mixed"] != model.KindNull || kinds["twice"] != model.KindNull {
		t.Fatalf("datatypes %v, want null (run time) for mixed and twice", kinds)
	}
	e := NewEngine(p, Options{})
	check := func(raw uint64, want ...string) {
		t.Helper()
		var got []string
		for _, pt := range feed(e, "plc1", "u0:holding:0:uint16", model.UintValue(raw), model.QualityGood, 1) {
			got = append(got, pt.Meta.Name+"="+pt.Value.String()+":"+pt.Value.Kind().String())
		}
		if !slices.Equal(got, want) {
			t.Errorf("raw %d: got %q, want %q", raw, got, want)
		}
	}
	check(20, "level=20:uint64", "mixed=20:int64", "twice=40:int64")
	check(1, "level=1:uint64", "mixed=0.5:float64", "twice=1:float64")
}

// FuzzApply feeds arbitrary values of arbitrary kinds to every kind of tag:
// the engine must never panic, and every point must keep the invariants
// sinks rely on.
func FuzzApply(f *testing.F) {
	p := compileYAML(f, `
base: acme/munich/bottling
types:
  Filler:
    params: {scale: 0.5, zero: 0}
    tags:
      b: {address: "coil:0"}
      i16: {address: "holding:0", type: int16, expr: "raw * scale"}
      u16: {address: "holding:1", enum: {0: idle, 1: run}}
      i32: {address: "holding:2", type: int32, expr: "raw % zero"}
      u32: {address: "holding:4", type: uint32, datatype: int64}
      i64: {address: "holding:6", type: int64, expr: "raw / 3"}
      u64: {address: "holding:10", type: uint64, expr: "raw + 1"}
      f32: {address: "holding:14", type: float32, expr: "int(raw)"}
      f64: {address: "holding:16", type: float64, datatype: uint64}
      s: {address: "holding:20", type: string, length: 4, expr: "raw + \"!\""}
      vm: {address: "holding:30", expr: "[1, 2, 3][raw]"}
      d: {expr: "i16 + u32 > 0 ? i16 / u32 : f64"}
      dd: {expr: "d > 1 ? \"hi\" : s"}
      raw16: {address: "holding:0", type: int16}
      rawf32: {address: "holding:14", type: float32}
      n8: {address: "holding:16", type: float64, datatype: int8}
      nu16: {address: "holding:6", type: int64, datatype: uint16}
      nf32: {address: "holding:10", type: uint64, datatype: float32}
      nd: {expr: "i16 * 3", datatype: int16}
assets:
  line1/filler1: {type: Filler, source: plc1}
`)
	addrs := []string{"u0:coil:0:bool", "u0:holding:0:int16", "u0:holding:1:uint16", "u0:holding:2:int32:ABCD",
		"u0:holding:4:uint32:ABCD", "u0:holding:6:int64:ABCD", "u0:holding:10:uint64:ABCD",
		"u0:holding:14:float32:ABCD", "u0:holding:16:float64:ABCD", "u0:holding:20:string:4", "u0:holding:30:uint16", "nope"}
	for _, b := range p.Bindings() {
		if !slices.Contains(addrs, b.Key) {
			f.Fatalf("binding %s missing from the fuzz addresses", b.Key)
		}
	}
	f.Add(uint8(1), uint8(2), uint64(1234), "", uint8(2), false)
	f.Add(uint8(7), uint8(4), math.Float64bits(math.NaN()), "", uint8(2), true)
	f.Add(uint8(9), uint8(5), uint64(0), "abc", uint8(1), false)
	f.Add(uint8(6), uint8(3), uint64(math.MaxUint64), "", uint8(0), false)
	f.Add(uint8(10), uint8(2), uint64(9), "", uint8(2), false)
	f.Add(uint8(0), uint8(0), uint64(0), "", uint8(2), false)
	e := NewEngine(p, Options{})
	f.Fuzz(func(t *testing.T, addr, kind uint8, bits uint64, str string, q uint8, stale bool) {
		var v model.Value
		switch kind % 6 {
		case 1:
			v = model.BoolValue(bits&1 == 1)
		case 2:
			v = model.IntValue(int64(bits))
		case 3:
			v = model.UintValue(bits)
		case 4:
			v = model.FloatValue(math.Float64frombits(bits))
		case 5:
			v = model.StringValue(str)
		}
		s := model.Sample{Source: "plc1", Address: addrs[int(addr)%len(addrs)], Value: v,
			Quality: model.Quality(q % 4), Stale: stale, ReceiveTime: time.UnixMilli(int64(bits % 1e12))}
		for _, pt := range e.Apply([]model.Sample{s}, nil) {
			checkPoint(t, pt)
		}
		for _, pt := range e.Tick(time.Now(), nil) {
			checkPoint(t, pt)
		}
	})
}

func checkPoint(t *testing.T, pt model.Point) {
	t.Helper()
	switch {
	case pt.Meta == nil:
		t.Fatal("point without meta")
	case pt.Quality == model.QualityBad && !pt.Value.IsNull():
		t.Fatalf("%s: BAD with value %v", pt.Meta.Topic, pt.Value)
	case pt.Quality != model.QualityBad && pt.Value.IsNull():
		t.Fatalf("%s: %s without a value", pt.Meta.Topic, pt.Quality)
	case pt.Quality != model.QualityBad && pt.Meta.Datatype != model.KindNull && pt.Value.Kind() != pt.Meta.Datatype:
		t.Fatalf("%s: value kind %s, datatype %s", pt.Meta.Topic, pt.Value.Kind(), pt.Meta.Datatype)
	case pt.Value.Kind() == model.KindFloat && (math.IsNaN(pt.Value.Float()) || math.IsInf(pt.Value.Float(), 0)):
		t.Fatalf("%s: non-finite value", pt.Meta.Topic)
	case pt.Quality != model.QualityBad && !fitsWidth(pt.Value, pt.Meta.Width):
		t.Fatalf("%s: value %v does not fit %s", pt.Meta.Topic, pt.Value, pt.Meta.TypeName())
	}
}

// fitsWidth reports whether v is a value a tag of that width may carry.
func fitsWidth(v model.Value, width uint8) bool {
	if width == 0 {
		return true
	}
	switch v.Kind() {
	case model.KindInt:
		return v.Int() >= -1<<(width-1) && v.Int() < 1<<(width-1)
	case model.KindUint:
		return v.Uint() < 1<<width
	case model.KindFloat:
		return width == 32 && v.Is32() && float64(float32(v.Float())) == v.Float()
	}
	return false
}

func TestEmptyPlan(t *testing.T) {
	for _, m := range []*model.Model{nil, {}} {
		p, err := Compile(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Tags()) != 0 || len(p.Bindings()) != 0 || len(p.Sources()) != 0 || len(p.SourceRefs()) != 0 {
			t.Fatalf("empty model gives a non-empty plan")
		}
		e := NewEngine(p, Options{})
		if pts := feed(e, "plc1", "x", model.IntValue(1), model.QualityGood, 1); len(pts) != 0 {
			t.Fatalf("points %v", pts)
		}
		if pts := e.Tick(time.Now(), nil); len(pts) != 0 {
			t.Fatalf("heartbeats %v", pts)
		}
		if s := e.Stats(); s != (Stats{Samples: 1, UnknownSamples: 1}) {
			t.Fatalf("stats %+v", s)
		}
	}
}

// OPC UA tags carry their value's type at run time and a status code that
// reaches the point; a change of status alone is published.
func TestOPCUAStatusAndDynamicType(t *testing.T) {
	p := compileYAML(t, `
levels: [a, b]
types:
  T:
    tags:
      speed: {address: "ns=2;s=Speed", expr: "raw * 2"}
      flags: {address: "nsu=urn:x;s=Flags"}
      celsius: {expr: "speed + 1", datatype: float64}
assets:
  x/y: {type: T, source: ua}
`)
	e := NewEngine(p, Options{})
	apply := func(key string, v model.Value, q model.Quality, status uint32) []string {
		var got []string
		for _, pt := range e.Apply([]model.Sample{{Source: "ua", Address: key, Value: v, Quality: q, Status: status, ReceiveTime: time.UnixMilli(1)}}, nil) {
			got = append(got, fmt.Sprintf("%s=%s %s %#x", pt.Meta.Name, pt.Value, pt.Quality, pt.Status))
		}
		return got
	}
	if got := apply("ns=2;s=Speed", model.FloatValue(1.5), model.QualityGood, 0); !slices.Equal(got, []string{"speed=3 GOOD 0x0", "celsius=4 GOOD 0x0"}) {
		t.Errorf("good float: %q", got)
	}
	if got := apply("ns=2;s=Speed", model.FloatValue(1.5), model.QualityUncertain, 0x408F0000); !slices.Equal(got, []string{"speed=3 UNCERTAIN 0x408f0000", "celsius=4 UNCERTAIN 0x0"}) {
		t.Errorf("uncertain: %q", got)
	}
	if got := apply("ns=2;s=Speed", model.Null(), model.QualityBad, 0x80340000); !slices.Equal(got, []string{"speed=null BAD 0x80340000", "celsius=null BAD 0x0"}) {
		t.Errorf("bad: %q", got)
	}
	if got := apply("ns=2;s=Speed", model.Null(), model.QualityBad, 0x80AB0000); !slices.Equal(got, []string{"speed=null BAD 0x80ab0000"}) {
		t.Errorf("status change alone: %q", got)
	}
	if got := apply("ns=2;s=Speed", model.IntValue(4), model.QualityGood, 0); !slices.Equal(got, []string{"speed=8 GOOD 0x0", "celsius=9 GOOD 0x0"}) {
		t.Errorf("int after float: %q", got)
	}
	arr := model.ArrayValue([]model.Value{model.BoolValue(true), model.BoolValue(false)})
	if got := apply("nsu=urn:x;s=Flags", arr, model.QualityGood, 0); !slices.Equal(got, []string{"flags=[true, false] GOOD 0x0"}) {
		t.Errorf("array: %q", got)
	}
}

// A tag's Width comes from its declared datatype, or, for a Modbus value
// passed through as it is, from the register type.
func TestWidth(t *testing.T) {
	p := compileYAML(t, `
levels: [a, b]
types:
  T:
    tags:
      raw_int16: {address: "holding:0", type: int16}
      raw_uint16: {address: "holding:1"}
      raw_int32: {address: "holding:2", type: int32}
      raw_uint32: {address: "holding:4", type: uint32}
      raw_float32: {address: "holding:6", type: float32}
      raw_int64: {address: "holding:8", type: int64}
      raw_uint64: {address: "holding:12", type: uint64}
      raw_float64: {address: "holding:16", type: float64}
      raw_bool: {address: "coil:0"}
      raw_bit: {address: "holding:20.3"}
      raw_string: {address: "holding:21", type: string, length: 2}
      expr_int16: {address: "holding:0", type: int16, expr: "raw * 2"}
      expr_int16_declared: {address: "holding:0", type: int16, expr: "raw * 2", datatype: int16}
      enum_int16: {address: "holding:0", type: int16, enum: {0: off}}
      decl_int8: {address: "holding:1", datatype: int8}
      decl_int32: {address: "holding:1", datatype: int32}
      decl_uint8: {address: "holding:0", type: int16, datatype: uint8}
      decl_uint16: {address: "holding:2", type: int32, datatype: uint16}
      decl_uint32: {address: "holding:0", type: int16, datatype: uint32}
      decl_float32: {address: "holding:1", expr: "raw * 0.1", datatype: float32}
      wide_int64: {address: "holding:0", type: int16, datatype: int64}
      wide_float64: {address: "holding:6", type: float32, datatype: float64}
      derived_uint8: {expr: "raw_uint16 % 256", datatype: uint8}
      derived: {expr: "raw_int16 + 1"}
      ua_raw: {address: "ns=2;s=Speed"}
      ua_int16: {address: "ns=2;s=Speed", datatype: int16}
assets:
  x/y: {type: T, source: plc1}
`)
	want := map[string]string{
		"raw_int16": "int16", "raw_uint16": "uint16", "raw_int32": "int32", "raw_uint32": "uint32",
		"raw_float32": "float32", "raw_int64": "int64", "raw_uint64": "uint64", "raw_float64": "float64",
		"raw_bool": "bool", "raw_bit": "bool", "raw_string": "string",
		"expr_int16": "int64", "expr_int16_declared": "int16", "enum_int16": "string",
		"decl_int8": "int8", "decl_int32": "int32", "decl_uint8": "uint8", "decl_uint16": "uint16",
		"decl_uint32": "uint32", "decl_float32": "float32", "wide_int64": "int64", "wide_float64": "float64",
		"derived_uint8": "uint8", "derived": "int64", "ua_raw": "null", "ua_int16": "int16",
	}
	widths := map[string]uint8{"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "float32": 32}
	kinds := map[string]model.Kind{"int": model.KindInt, "uint": model.KindUint, "float": model.KindFloat, "bool": model.KindBool,
		"string": model.KindString, "null": model.KindNull}
	tags := p.Tags()
	if len(tags) != len(want) {
		t.Fatalf("%d tags, want %d", len(tags), len(want))
	}
	for _, m := range tags {
		w, ok := want[m.Name]
		if !ok {
			t.Errorf("%s: not in the table", m.Name)
			continue
		}
		kind := kinds[strings.TrimRight(w, "0123456789")]
		if got := m.TypeName(); got != w || m.Width != widths[w] || m.Datatype != kind {
			t.Errorf("%s: %s (datatype %s, width %d), want %s (datatype %s, width %d)",
				m.Name, got, m.Datatype, m.Width, w, kind, widths[w])
		}
	}
}

// A narrow datatype follows the conversion rules of its kind, and the
// diagnostics name it as written.
func TestWidthDiagnostics(t *testing.T) {
	m, err := model.LoadFiles([]model.File{{Name: "test.yaml", Data: []byte(`
levels: [a, b]
types:
  T:
    tags:
      name: {address: "holding:0", type: string, length: 2, datatype: float32}
      flag: {address: "coil:0", datatype: uint8}
      state: {address: "holding:2", enum: {0: off}, datatype: int16}
      text: {address: "holding:3", expr: "string(raw)", datatype: int32}
      ok: {address: "holding:4", type: float64, expr: "raw > 1.5", datatype: bool}
      num: {address: "holding:5", type: float64, datatype: uint16}
assets:
  x/y: {type: T, source: plc1}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(m)
	want := `test.yaml:6:7: the raw value yields string, which cannot be converted to datatype float32
test.yaml:7:7: the raw value yields bool, which cannot be converted to datatype uint8
test.yaml:8:7: enum yields strings, but datatype is int16
test.yaml:9:43: the expression yields string, which cannot be converted to datatype int32`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}

	// A model built in Go can hold a width no datatype has.
	addr := &model.Address{Protocol: model.ProtocolModbus, Text: "holding:0", Key: "u0:holding:0:uint16",
		Modbus: &model.ModbusAddress{Area: model.AreaHoldingRegister, Type: model.RawUint16, Bit: -1}}
	pos := model.Pos{File: "go.yaml", Line: 1, Col: 1}
	for _, c := range []struct {
		kind  model.Kind
		width uint8
		want  string
	}{
		{model.KindInt, 12, "go.yaml:1:1: datatype int64 has no 12-bit variant"},
		{model.KindFloat, 16, "go.yaml:1:1: datatype float64 has no 16-bit variant"},
		{model.KindString, 8, "go.yaml:1:1: datatype string has no 8-bit variant"},
		{model.KindNull, 32, "go.yaml:1:1: datatype null has no 32-bit variant"},
	} {
		m := &model.Model{Assets: []*model.Asset{{Path: "a/b", Source: "plc1", Tags: []*model.Tag{
			{Name: "v", Topic: "a/b/v", Address: addr, Datatype: c.kind, Width: c.width, Pos: pos, OnChange: true},
		}}}}
		if _, err := Compile(m); err == nil || err.Error() != c.want {
			t.Errorf("%s width %d: got %v, want %s", c.kind, c.width, err, c.want)
		}
	}
}

// Values converted to a narrow datatype must fit it; those that do not make
// the tag BAD like any other conversion error. The check also applies when
// the value already has the datatype's kind.
func TestNarrowConversion(t *testing.T) {
	p := compileYAML(t, `
levels: [a, b]
types:
  T:
    tags:
      i8: {address: "ns=1;s=i8", datatype: int8}
      i16: {address: "ns=1;s=i16", datatype: int16}
      i32: {address: "ns=1;s=i32", datatype: int32}
      u8: {address: "ns=1;s=u8", datatype: uint8}
      u16: {address: "ns=1;s=u16", datatype: uint16}
      u32: {address: "ns=1;s=u32", datatype: uint32}
      f32: {address: "ns=1;s=f32", datatype: float32}
      doubled: {address: "holding:0", expr: "raw * 2", datatype: int16}
      scaled: {address: "holding:1", expr: "raw * 0.1", datatype: float32}
      register: {address: "holding:2", type: int16}
      register_f32: {address: "holding:3", type: float32}
assets:
  x/y: {type: T, source: src, poll: 1s}
`)
	registers := map[string]string{"doubled": "u0:holding:0:uint16", "scaled": "u0:holding:1:uint16",
		"register": "u0:holding:2:int16", "register_f32": "u0:holding:3:float32:ABCD"}
	i, u, f := model.IntValue, model.UintValue, model.FloatValue
	for _, c := range []struct {
		tag  string
		in   model.Value
		want string // value:kind, float32 marks a Float32Value; BAD for a failed conversion
	}{
		{"i8", f(3.9), "3:int64"},
		{"i8", f(-3.9), "-3:int64"},
		{"i8", i(127), "127:int64"},
		{"i8", i(-128), "-128:int64"},
		{"i8", i(128), "BAD"},
		{"i8", i(-129), "BAD"},
		{"i8", f(127.99), "127:int64"},
		{"i8", f(128), "BAD"},
		{"i16", i(-32768), "-32768:int64"},
		{"i16", i(32767), "32767:int64"},
		{"i16", i(32768), "BAD"},
		{"i16", i(-32769), "BAD"},
		{"i16", u(32767), "32767:int64"},
		{"i16", u(32768), "BAD"},
		{"i16", u(math.MaxUint64), "BAD"},
		{"i16", f(-32768.9), "-32768:int64"},
		{"i16", f(1e300), "BAD"},
		{"i16", f(math.NaN()), "BAD"},
		{"i16", model.BoolValue(true), "BAD"},
		{"i16", model.StringValue("1"), "BAD"},
		{"i32", i(math.MaxInt32), "2147483647:int64"},
		{"i32", i(math.MinInt32), "-2147483648:int64"},
		{"i32", i(math.MaxInt32 + 1), "BAD"},
		{"i32", i(math.MinInt32 - 1), "BAD"},
		{"u8", u(255), "255:uint64"},
		{"u8", i(255), "255:uint64"},
		{"u8", f(255.9), "255:uint64"},
		{"u8", u(256), "BAD"},
		{"u8", i(-1), "BAD"},
		{"u8", f(-0.5), "0:uint64"},
		{"u16", u(65535), "65535:uint64"},
		{"u16", u(65536), "BAD"},
		{"u32", u(4294967295), "4294967295:uint64"},
		{"u32", i(4294967295), "4294967295:uint64"},
		{"u32", u(4294967296), "BAD"},
		{"u32", i(-1), "BAD"},
		{"u32", f(-1), "BAD"},
		{"f32", f(0.1), "0.1:float32"},
		{"f32", f(1.0 / 3), "0.33333334:float32"},
		{"f32", i(16777217), "1.6777216e+07:float32"},
		{"f32", u(3), "3:float32"},
		{"f32", model.Float32Value(500.1), "500.1:float32"},
		{"f32", f(math.MaxFloat32), "3.4028235e+38:float32"},
		{"f32", f(-math.MaxFloat32), "-3.4028235e+38:float32"},
		{"f32", f(1e39), "BAD"},
		{"f32", f(-1e39), "BAD"},
		{"f32", f(1e-50), "0:float32"},
		{"f32", f(math.NaN()), "BAD"},
		{"f32", f(math.Inf(1)), "BAD"},
		{"f32", model.BoolValue(true), "BAD"},
		// The expression's result is checked, though it is an int already.
		{"doubled", u(16383), "32766:int64"},
		{"doubled", u(20000), "BAD"},
		{"scaled", u(1), "0.1:float32"},
		// A register's width is guaranteed for values passed through.
		{"register", i(-32768), "-32768:int64"},
		{"register", i(40000), "BAD"},
		{"register_f32", f(0.1), "0.1:float32"},
		{"register_f32", model.Float32Value(23.4), "23.4:float32"},
	} {
		e := NewEngine(p, Options{})
		key, ok := registers[c.tag]
		if !ok {
			key = "ns=1;s=" + c.tag
		}
		pts := feed(e, "src", key, c.in, model.QualityGood, 1)
		if len(pts) != 1 || pts[0].Meta.Name != c.tag {
			t.Fatalf("%s %v: points %v", c.tag, c.in, pts)
		}
		pt := pts[0]
		checkPoint(t, pt)
		got := "BAD"
		if pt.Quality != model.QualityBad {
			kind := pt.Value.Kind().String()
			if pt.Value.Is32() {
				kind = "float32"
			}
			got = pt.Value.String() + ":" + kind
		}
		if got != c.want {
			t.Errorf("%s <- %s %s: got %s, want %s", c.tag, c.in.Kind(), c.in, got, c.want)
		}
		if s := e.Stats(); (got == "BAD") != (s.ExprErrors == 1) {
			t.Errorf("%s <- %s %s: %d errors counted", c.tag, c.in.Kind(), c.in, s.ExprErrors)
		}
	}
}

// Out-of-range values are logged like other conversion errors, naming the
// datatype.
func TestNarrowConversionLogged(t *testing.T) {
	p := compileYAML(t, `
levels: [a, b]
types:
  T:
    tags:
      level: {address: "holding:0", expr: "raw * 2", datatype: int16}
      flow: {address: "holding:2", type: float64, datatype: float32}
      count: {address: "holding:6", type: int32, datatype: uint8}
assets:
  x/y: {type: T, source: plc1}
`)
	rec := &recorder{}
	e := NewEngine(p, Options{Logger: slog.New(rec)})
	feed(e, "plc1", "u0:holding:0:uint16", model.UintValue(20000), model.QualityGood, 1)
	feed(e, "plc1", "u0:holding:2:float64:ABCD", model.FloatValue(1e39), model.QualityGood, 1)
	feed(e, "plc1", "u0:holding:6:int32:ABCD", model.IntValue(-7), model.QualityGood, 1)
	want := []string{
		"harmonize: tag failed, publishing BAD topic=x/y/level err=40000 overflows int16 suppressed=0",
		"harmonize: tag failed, publishing BAD topic=x/y/flow err=1e+39 overflows float32 suppressed=0",
		"harmonize: tag failed, publishing BAD topic=x/y/count err=-7 overflows uint8 suppressed=0",
	}
	if got := rec.messages(); !slices.Equal(got, want) {
		t.Errorf("log\n got %q\nwant %q", got, want)
	}
	if s := e.Stats(); s.ExprErrors != 3 || s.Points != 3 {
		t.Errorf("stats %+v", s)
	}
}

// Narrowing stays off the heap: a float32 or int16 conversion costs no
// allocation.
func TestNarrowConversionAllocs(t *testing.T) {
	p := compileYAML(t, `
levels: [a, b]
types:
  T:
    tags:
      level: {address: "holding:0", expr: "raw * 2", datatype: int16, on_change: false}
      flow: {address: "holding:1", expr: "raw * 0.1", datatype: float32, on_change: false}
      raw16: {address: "holding:2", type: int16, on_change: false}
assets:
  x/y: {type: T, source: plc1}
`)
	e := NewEngine(p, Options{})
	batch := []model.Sample{
		{Source: "plc1", Address: "u0:holding:0:uint16", Value: model.UintValue(1000), Quality: model.QualityGood},
		{Source: "plc1", Address: "u0:holding:1:uint16", Value: model.UintValue(1234), Quality: model.QualityGood},
		{Source: "plc1", Address: "u0:holding:2:int16", Value: model.IntValue(-5), Quality: model.QualityGood},
	}
	out := make([]model.Point, 0, 8)
	if got := testing.AllocsPerRun(1000, func() {
		out = e.Apply(batch, out[:0])
		if len(out) != 3 || out[0].Quality != model.QualityGood || !out[1].Value.Is32() {
			t.Fatalf("points %v", out)
		}
	}); got != 0 {
		t.Errorf("%.1f allocs per batch, want 0", got)
	}
}
