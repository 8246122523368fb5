package harmonize

import (
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/unsgate/unsgate/model"
)

// Options configure an Engine.
type Options struct {
	Logger *slog.Logger     // nil = discard
	Now    func() time.Time // clock for heartbeat bookkeeping and log rate limits (the clock Tick is given); nil = time.Now
}

// Stats are the engine's counters. Each is monotonic.
type Stats struct {
	Samples        uint64 // samples handed to Apply
	Points         uint64 // points produced (Apply and Tick)
	Suppressed     uint64 // evaluations not published (deadband / report by exception)
	ExprErrors     uint64 // harmonization failures: expression errors, conversions, non-finite results
	UnknownSamples uint64 // samples whose (source, address) no tag is bound to
}

// logEvery limits repeated warnings about the same tag (and about unknown
// samples), so a broken expression on a fast poll cannot flood the log.
const logEvery = time.Minute

// Engine applies samples to one Plan. Apply, Tick and Snapshot must be
// called from one goroutine at a time (the hot path takes no locks); Stats
// may be called from any goroutine.
type Engine struct {
	plan  *Plan
	log   *slog.Logger
	now   func() time.Time
	state []tagState

	assetDirty  []bool
	dirtyAssets []int32

	frame frame
	vm    vm.VM
	envs  []map[string]any // per tag, only for expressions on expr's VM

	unknownLog    int64
	unknownSkip   uint64
	unknownLogged bool

	samples, points, suppressed, exprErrors, unknown atomic.Uint64
}

// tagState is one tag's mutable state. cur* is the latest harmonized
// reading, raw* the latest sample of an addressed tag, pub* what was last
// published.
type tagState struct {
	cur      model.Value
	raw      model.Value
	pub      model.Value
	t        time.Time
	rawT     time.Time
	pubWall  int64 // unix ns of the last publication, by the engine's clock
	logWall  int64 // unix ns of the last error logged for this tag
	logSkip  uint32
	logged   bool
	status   uint32 // protocol status of the reading behind cur (addressed tags)
	rawSt    uint32
	pubSt    uint32
	q        model.Quality
	rawQ     model.Quality
	pubQ     model.Quality
	stale    bool
	rawStale bool
	pubStale bool
	seen     bool
	rawSeen  bool
	pubSeen  bool
	dirty    bool
}

// NewEngine returns an engine with no values seen yet.
func NewEngine(p *Plan, opts Options) *Engine {
	e := &Engine{
		plan:       p,
		log:        opts.Logger,
		now:        opts.Now,
		state:      make([]tagState, len(p.specs)),
		assetDirty: make([]bool, len(p.assets)),
		envs:       make([]map[string]any, len(p.specs)),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	n := p.maxSlots
	e.frame = frame{ints: make([]int, n), floats: make([]float64, n), bools: make([]bool, n), strs: make([]string, n)}
	return e
}

// Plan returns the plan the engine runs.
func (e *Engine) Plan() *Plan { return e.plan }

// Stats returns the counters; safe from any goroutine.
func (e *Engine) Stats() Stats {
	return Stats{
		Samples:        e.samples.Load(),
		Points:         e.points.Load(),
		Suppressed:     e.suppressed.Load(),
		ExprErrors:     e.exprErrors.Load(),
		UnknownSamples: e.unknown.Load(),
	}
}

// batchState accumulates one call's counters so the atomics are touched once
// per batch, not once per sample. It also reads the engine's clock at most
// once per call, and only when needed (heartbeat bookkeeping, log rate
// limits): reading the clock can cost more than harmonizing a sample.
type batchState struct {
	points, suppressed, exprErrors, unknown uint64

	now      func() time.Time
	wall     int64
	haveWall bool
}

func (c *batchState) wallNow() int64 {
	if !c.haveWall {
		c.wall, c.haveWall = c.now().UnixNano(), true
	}
	return c.wall
}

func (e *Engine) flushCounts(c *batchState) {
	if c.points > 0 {
		e.points.Add(c.points)
	}
	if c.suppressed > 0 {
		e.suppressed.Add(c.suppressed)
	}
	if c.exprErrors > 0 {
		e.exprErrors.Add(c.exprErrors)
	}
	if c.unknown > 0 {
		e.unknown.Add(c.unknown)
	}
}

// Apply harmonizes a batch of samples and appends the points to publish to
// out. Computed tags whose inputs changed are recomputed once, after the
// whole batch, in dependency order. The batch is not retained.
func (e *Engine) Apply(batch []model.Sample, out []model.Point) []model.Point {
	if len(batch) == 0 {
		return out
	}
	p := e.plan
	c := batchState{now: e.now}
	// A batch comes from one source, as a rule: look its keys up once.
	var src string
	var keys map[string]int32
	for i := range batch {
		s := &batch[i]
		if keys == nil || s.Source != src {
			src, keys = s.Source, p.bySource[s.Source]
		}
		g, ok := keys[s.Address]
		if !ok {
			c.unknown++
			e.logUnknown(s, c.wallNow())
			continue
		}
		t := s.Time()
		for _, ti := range p.group(g) {
			spec := &p.specs[ti]
			st := &e.state[ti]
			// Every addressed tag keeps its latest sample, so that a
			// successor engine can evaluate a changed tag at once.
			st.raw, st.rawQ, st.rawStale, st.rawT, st.rawSeen, st.rawSt = s.Value, s.Quality, s.Stale, t, true, s.Status
			if spec.computed {
				// Evaluated with its tag inputs in the dependency pass.
				e.markDirty(ti, spec)
				continue
			}
			v, q := e.harmonize(ti, spec, s.Value, s.Quality, &c)
			out = e.update(ti, spec, v, q, s.Stale, s.Status, t, s.Value, out, &c)
		}
	}
	out = e.recompute(out, &c)
	e.samples.Add(uint64(len(batch)))
	e.flushCounts(&c)
	return out
}

func (e *Engine) markDirty(ti int32, spec *tagSpec) {
	e.state[ti].dirty = true
	if !e.assetDirty[spec.asset] {
		e.assetDirty[spec.asset] = true
		e.dirtyAssets = append(e.dirtyAssets, spec.asset)
	}
}

// recompute evaluates the dirty computed tags of every dirty asset.
// References stay inside an asset, and an asset's order lists every tag
// after the tags it reads, so one pass per asset is enough.
func (e *Engine) recompute(out []model.Point, c *batchState) []model.Point {
	p := e.plan
	for _, a := range e.dirtyAssets {
		for _, ti := range p.assets[a].order {
			st := &e.state[ti]
			if !st.dirty {
				continue
			}
			st.dirty = false
			out = e.evalComputed(ti, out, c)
		}
		e.assetDirty[a] = false
	}
	e.dirtyAssets = e.dirtyAssets[:0]
	return out
}

// evalComputed evaluates a tag that reads other tags. Its quality is the
// worst of its inputs, its stale flag set if any input is stale, its time the
// newest input time. Until every input has been seen it produces nothing.
func (e *Engine) evalComputed(ti int32, out []model.Point, c *batchState) []model.Point {
	spec := &e.plan.specs[ti]
	st := &e.state[ti]
	q := model.QualityGood
	stale := false
	var status uint32
	var t time.Time
	if spec.addressed {
		if !st.rawSeen {
			return out
		}
		q, stale, t, status = st.rawQ, st.rawStale, st.rawT, st.rawSt
	}
	for _, r := range spec.refs {
		in := &e.state[r]
		if !in.seen {
			return out
		}
		q = q.Worse(in.q)
		stale = stale || in.stale
		if in.t.After(t) {
			t = in.t
		}
	}
	v, q := e.harmonize(ti, spec, st.raw, q, c)
	return e.update(ti, spec, v, q, stale, status, t, st.raw, out, c)
}

// harmonize computes a tag's value from its raw value (and, through the
// frame, its other inputs). A BAD input yields null without evaluating; any
// failure makes the tag BAD.
func (e *Engine) harmonize(ti int32, spec *tagSpec, raw model.Value, q model.Quality, c *batchState) (model.Value, model.Quality) {
	if q == model.QualityBad {
		return model.Null(), q
	}
	v := raw
	var err error
	if spec.prog != nil {
		v, err = e.eval(ti, spec, raw)
	}
	if err == nil {
		if spec.enum != nil {
			v, err = applyEnum(spec.enum, v)
		} else {
			v, err = convert(v, spec.out, spec.width)
		}
	}
	if err == nil {
		switch v.Kind() {
		case model.KindNull:
			err = errNull // only BAD readings may carry no value
		case model.KindFloat:
			if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				err = errNonFinite
			}
		}
	}
	if err != nil {
		c.exprErrors++
		e.logExprError(ti, err, c.wallNow())
		return model.Null(), model.QualityBad
	}
	return v, q
}

// eval loads the expression's inputs into the frame and runs it.
func (e *Engine) eval(ti int32, spec *tagSpec, raw model.Value) (v model.Value, err error) {
	f := &e.frame
	f.err = nil
	for k := range spec.slots {
		s := &spec.slots[k]
		var in model.Value
		switch s.kind {
		case slotRaw:
			in = raw
		case slotParam:
			in = s.param
		default:
			in = e.state[s.tag].cur
		}
		if err := f.load(k, s.typ, in); err != nil {
			return model.Null(), fmt.Errorf("input %s: %w", spec.prog.names[k], err)
		}
	}
	prog := spec.prog
	if prog.isFast {
		return e.evalFast(prog)
	}
	env := e.envs[ti]
	if env == nil {
		env = make(map[string]any, len(spec.slots))
		e.envs[ti] = env
	}
	for k, name := range prog.names {
		env[name] = f.boxed(k, prog.types[k], spec, e.state, raw)
	}
	x, err := e.vm.Run(prog.vm, env)
	if err != nil {
		return model.Null(), err
	}
	return fromResult(x)
}

func (e *Engine) evalFast(prog *program) (v model.Value, err error) {
	f := &e.frame
	defer func() {
		// The typed evaluator records the errors it knows about; a panic
		// would be a bug in it, and must still not take the gateway down.
		if r := recover(); r != nil {
			v, err = model.Null(), fmt.Errorf("expression panicked: %v", r)
		}
	}()
	v = prog.fast.eval(f)
	if f.err != nil {
		return model.Null(), f.err
	}
	return v, nil
}

// load converts input v into slot k with type typ.
func (f *frame) load(k int, typ envType, v model.Value) error {
	var err error
	switch typ {
	case tInt:
		f.ints[k], err = toInt(v)
	case tFloat:
		f.floats[k], err = toFloat(v)
	case tBool:
		if v.Kind() != model.KindBool {
			return fmt.Errorf("cannot use %s value as bool", v.Kind())
		}
		f.bools[k] = v.Bool()
	case tString:
		if v.Kind() != model.KindString {
			return fmt.Errorf("cannot use %s value as string", v.Kind())
		}
		f.strs[k] = v.Str()
	default:
		if v.IsNull() {
			return errNull
		}
	}
	return err
}

// boxed returns slot k's value as the VM expects it.
func (f *frame) boxed(k int, typ envType, spec *tagSpec, state []tagState, raw model.Value) any {
	switch typ {
	case tInt:
		return f.ints[k]
	case tFloat:
		return f.floats[k]
	case tBool:
		return f.bools[k]
	case tString:
		return f.strs[k]
	}
	// Untyped inputs were only checked for null by load; box them now.
	s := &spec.slots[k]
	in := raw // slotRaw: an OPC UA value, typed only at run time
	switch s.kind {
	case slotParam:
		in = s.param
	case slotTag:
		in = state[s.tag].cur
	}
	x, err := toAny(in)
	if err != nil {
		return nil
	}
	return x
}

// update stores a tag's new reading, marks the tags that read it, and
// publishes it unless report by exception suppresses it.
func (e *Engine) update(ti int32, spec *tagSpec, v model.Value, q model.Quality, stale bool, status uint32, t time.Time, raw model.Value, out []model.Point, c *batchState) []model.Point {
	st := &e.state[ti]
	changed := !st.seen || q != st.q || stale != st.stale || !v.Equal(st.cur)
	st.cur, st.q, st.stale, st.t, st.seen, st.status = v, q, stale, t, true, status
	if spec.addressed {
		st.raw = raw
	}
	if changed {
		for _, d := range spec.dependents {
			e.markDirty(d, &e.plan.specs[d])
		}
	}
	if st.pubSeen && spec.onChange && q == st.pubQ && stale == st.pubStale && status == st.pubSt && !exceeds(spec.deadband, st.pub, v) {
		c.suppressed++
		return out
	}
	c.points++
	var wall int64
	if spec.heartbeat > 0 {
		wall = c.wallNow()
	}
	return e.publish(ti, st, wall, out)
}

func (e *Engine) publish(ti int32, st *tagState, wall int64, out []model.Point) []model.Point {
	st.pub, st.pubQ, st.pubStale, st.pubSeen, st.pubWall, st.pubSt = st.cur, st.q, st.stale, true, wall, st.status
	var raw model.Value
	if e.plan.specs[ti].addressed {
		raw = st.raw
	}
	return append(out, model.Point{
		Meta:    e.plan.tags[ti],
		Value:   st.cur,
		Raw:     raw,
		Quality: st.q,
		Stale:   st.stale,
		Status:  st.status,
		Time:    st.t,
	})
}

// exceeds reports whether v differs from the last published value enough to
// publish: any change of kind, any change of a bool or string, and for
// numbers a change larger than the deadband.
func exceeds(db model.Deadband, last, v model.Value) bool {
	if last.Kind() != v.Kind() {
		return true
	}
	if last.Equal(v) {
		return false
	}
	if db.Value == 0 || !isNumeric(v.Kind()) {
		return true
	}
	a, _ := last.AsFloat()
	b, _ := v.AsFloat()
	limit := db.Value
	if db.Percent {
		limit = db.Value / 100 * math.Abs(a)
	}
	return math.Abs(b-a) > limit
}

// Tick appends a heartbeat for every tag with a heartbeat interval that has
// published before and has not published for at least that interval. A
// heartbeat carries the tag's latest reading (value, quality, stale flag and
// the timestamp of that reading), so it never claims a fresher reading than
// the gateway has.
func (e *Engine) Tick(now time.Time, out []model.Point) []model.Point {
	wall := now.UnixNano()
	var n uint64
	for _, ti := range e.plan.heartbeats {
		st := &e.state[ti]
		if !st.pubSeen || wall-st.pubWall < int64(e.plan.specs[ti].heartbeat) {
			continue
		}
		out = e.publish(ti, st, wall, out)
		n++
	}
	if n > 0 {
		e.points.Add(n)
	}
	return out
}

// Snapshot appends the latest reading of every tag seen so far, in topic
// order. Call it from the goroutine that calls Apply.
func (e *Engine) Snapshot(out []model.Point) []model.Point {
	for ti := range e.state {
		st := &e.state[ti]
		if !st.seen {
			continue
		}
		var raw model.Value
		if e.plan.specs[ti].addressed {
			raw = st.raw
		}
		out = append(out, model.Point{Meta: e.plan.tags[ti], Value: st.cur, Raw: raw, Quality: st.q, Stale: st.stale, Status: st.status, Time: st.t})
	}
	return out
}

func (e *Engine) logExprError(ti int32, err error, wall int64) {
	st := &e.state[ti]
	if st.logged && wall-st.logWall < int64(logEvery) {
		st.logSkip++
		return
	}
	e.log.Warn("harmonize: tag failed, publishing BAD", "topic", e.plan.tags[ti].Topic, "err", err, "suppressed", st.logSkip)
	st.logWall, st.logSkip, st.logged = wall, 0, true
}

func (e *Engine) logUnknown(s *model.Sample, wall int64) {
	if e.unknownLogged && wall-e.unknownLog < int64(logEvery) {
		e.unknownSkip++
		return
	}
	e.log.Warn("harmonize: sample for no tag", "source", s.Source, "address", s.Address, "suppressed", e.unknownSkip)
	e.unknownLog, e.unknownSkip, e.unknownLogged = wall, 0, true
}
