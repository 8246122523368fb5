package sim

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"time"
)

// Line2Heads is the number of fill heads per filler: the length of
// HeadWeights.
const Line2Heads = 8

// Line2Recipes are the products line 2 changes between.
var Line2Recipes = []string{"WATER-1.0L", "LEMON-1.0L", "COLA-1.0L"}

// line2Density is each recipe's density, g/ml, for the head weights.
var line2Density = []float64{0.998, 1.032, 1.041}

// Rates of line 2's own events, per second of simulated time.
const (
	changeoverRate    = 1.0 / 900 // a product change every quarter hour or so
	headDriftRate     = 1.0 / 600 // a fill head drifts off its setpoint
	changeoverSeconds = 60.0      // cleaning between products, at least
)

// UALine animates line 2 of the demo plant, two fillers and a capper, in an
// OPCUAServer. It uses BottlingLine's machine physics, on its own random
// stream: given the same seed, start time and steps it sets the same values.
// Only values that change are set, so subscriptions see changes only, as
// from a real server's sampling.
//
// Its variables are in the server's namespace (node ids
// ns=IDX;s=<path with '.'>, IDX = OPCUAServer.NamespaceIndex(), 1 with no
// extra namespaces; namespace URI urn:unsgate:sim by default). Browse paths
// start at the Objects folder: /Objects/Line2/Filler1/Speed.
//
// For F in Filler1, Filler2 (node id prefix s=Line2.Filler1. / s=Line2.Filler2.):
//
//	Line2/F/Speed           Double     bottles/min (400..600 set), noisy, 0 unless running
//	Line2/F/Temperature     Float      product temperature, °C (4..8)
//	Line2/F/State           Int16      MachineIdle, MachineRunning, MachineFault, MachineCleaning
//	Line2/F/Running         Boolean    State == MachineRunning
//	Line2/F/GoodCount       UInt32     bottles filled within tolerance
//	Line2/F/BadCount        Int32      bottles rejected
//	Line2/F/FillLevel       Float      last measured fill volume, ml (~1000)
//	Line2/F/DoorOpen        Boolean    guard door open (only while not running)
//	Line2/F/HeadWeights     Double[8]  last net fill weight of each fill head, g
//	Line2/F/Recipe          String     product, one of Line2Recipes
//	Line2/F/LastChangeover  DateTime   when the line last changed product
//
// Capper (node id prefix s=Line2.Capper1.):
//
//	Line2/Capper1/Torque       Float    closing torque, Ncm (120..160 running, else 0)
//	Line2/Capper1/CapsApplied  UInt32   caps applied
//	Line2/Capper1/State        Int16    as the fillers'
//	Line2/Capper1/Running      Boolean  State == MachineRunning
//	Line2/Capper1/Jam          Boolean  cap chute jammed (State is MachineFault)
//	Line2/Capper1/Runtime      UInt64   whole seconds spent running
//
// Paths lists them all, in this order.
type UALine struct {
	s *OPCUAServer

	mu     sync.Mutex
	eng    *BottlingLine // physics only: it has no Modbus server
	now    time.Time     // simulated time
	recipe int
	lastCO time.Time
	fill   [2]float64             // ml, last measured fill volume
	bias   [2][Line2Heads]float64 // g, each head's offset from the mean
	heads  [2][Line2Heads]float64 // g, last measured weights
	paths  []string
	last   map[string]any // value last set, by path
}

var line2Fillers = [2]string{"Line2/Filler1", "Line2/Filler2"}

// NewBottlingLine2 creates line 2's variables in s and sets a plausible
// running state at once, so readers see sensible values before the first
// step. It panics if s already has them.
func NewBottlingLine2(s *OPCUAServer, seed int64) *UALine {
	return newBottlingLine2(s, seed, time.Now())
}

func newBottlingLine2(s *OPCUAServer, seed int64, start time.Time) *UALine {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6c696e6532)) // "line2"
	l := &UALine{s: s, eng: &BottlingLine{rng: rng}, now: start, last: make(map[string]any)}
	e := l.eng
	for i := range e.fillers {
		f := &e.fillers[i]
		f.state = MachineRunning
		f.setpoint = e.newSetpoint()
		f.speed, f.shown = f.setpoint, f.setpoint
		f.temp = 5 + 2*rng.Float64()
		l.fill[i] = 1000
		f.good = 50_000 + rng.Uint32N(500_000)
		f.bad = f.good / 120
		for h := range l.bias[i] {
			l.bias[i][h] = clamp(0.8*rng.NormFloat64(), -2, 2)
		}
	}
	e.capper.state = MachineRunning
	e.capper.torque = 140
	e.capper.caps = e.fillers[0].good + e.fillers[0].bad + e.fillers[1].good + e.fillers[1].bad
	e.capper.runtime = float64(50_000 + rng.IntN(500_000))
	l.recipe = rng.IntN(len(Line2Recipes))
	l.lastCO = start.Add(-time.Duration(10+rng.IntN(110)) * time.Minute).Truncate(time.Second)
	for i := range l.heads {
		l.measureHeads(i)
	}
	l.write(true)
	return l
}

// Paths lists the line's variable paths (see the package doc of UALine).
func (l *UALine) Paths() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.paths)
}

// Run steps the line every step (default 100ms) until ctx is done.
func (l *UALine) Run(ctx context.Context, step time.Duration) { runEvery(ctx, step, l.Step) }

// Step advances the simulation by dt of simulated time and sets the values
// that changed. Steps much longer than the episodes (about 5 s) skip events.
func (l *UALine) Step(dt time.Duration) {
	sec := dt.Seconds()
	if sec <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, rng := l.eng, l.eng.rng
	l.now = l.now.Add(dt)

	// A product change stops both fillers for cleaning; they restart by
	// themselves when their episode ends.
	if rng.Float64() < chance(changeoverRate, sec) {
		l.recipe = (l.recipe + 1 + rng.IntN(len(Line2Recipes)-1)) % len(Line2Recipes)
		l.lastCO = l.now.Truncate(time.Second)
		for i := range e.fillers {
			f := &e.fillers[i]
			f.state, f.left, f.door = MachineCleaning, changeoverSeconds+e.between(0, 60), false
		}
	}

	made, anyRunning, anyCleaning := 0, false, false
	for i := range e.fillers {
		f := &e.fillers[i]
		e.stepFiller(f, sec)
		if f.state == MachineRunning {
			// The engine measures line 1's 500 ml bottles; scale its noise.
			l.fill[i] = 1000 + (f.fill-500)*1.6
		}
		made += f.made
		anyRunning = anyRunning || f.state == MachineRunning
		anyCleaning = anyCleaning || f.state == MachineCleaning
		if f.state == MachineRunning {
			if rng.Float64() < chance(headDriftRate, sec) {
				h := rng.IntN(Line2Heads)
				l.bias[i][h] = clamp(l.bias[i][h]+rng.NormFloat64(), -4, 4)
			}
			l.measureHeads(i)
		}
	}
	e.stepCapper(sec, made, anyRunning, anyCleaning)
	l.write(false)
}

// measureHeads sets filler i's head weights: fill volume times the
// product's density, each head's bias and scale noise, to 0.1 g.
func (l *UALine) measureHeads(i int) {
	rng := l.eng.rng
	for h := range l.heads[i] {
		w := l.fill[i]*line2Density[l.recipe] + l.bias[i][h] + clamp(0.5*rng.NormFloat64(), -1.5, 1.5)
		l.heads[i][h] = math.Round(w*10) / 10
	}
}

// write sets every value that differs from the one last set; create makes
// the variables first.
func (l *UALine) write(create bool) {
	e := l.eng
	set := func(path string, v any) {
		if create {
			l.s.AddVariable(path, v)
			l.paths = append(l.paths, path)
			l.last[path] = v
			return
		}
		if reflect.DeepEqual(l.last[path], v) {
			return
		}
		l.s.Set(path, v)
		l.last[path] = v
	}
	for i, name := range line2Fillers {
		f := &e.fillers[i]
		speed := 0.0
		if f.state == MachineRunning {
			// The engine's shown speed is whole bottles/min; a Double
			// channel carries a tenth.
			speed = math.Max(0, math.Round((f.shown+e.between(-0.5, 0.5))*10)/10)
		}
		set(name+"/Speed", speed)
		set(name+"/Temperature", float32(math.Round(f.temp*100)/100))
		set(name+"/State", int16(f.state))
		set(name+"/Running", f.state == MachineRunning)
		set(name+"/GoodCount", f.good)
		set(name+"/BadCount", int32(f.bad))
		set(name+"/FillLevel", float32(math.Round(l.fill[i]*10)/10))
		set(name+"/DoorOpen", f.door)
		set(name+"/HeadWeights", slices.Clone(l.heads[i][:]))
		set(name+"/Recipe", Line2Recipes[l.recipe])
		set(name+"/LastChangeover", l.lastCO)
	}
	c := &e.capper
	set("Line2/Capper1/Torque", float32(math.Round(c.torque*10)/10))
	set("Line2/Capper1/CapsApplied", c.caps)
	set("Line2/Capper1/State", int16(c.state))
	set("Line2/Capper1/Running", c.state == MachineRunning)
	set("Line2/Capper1/Jam", c.jam > 0)
	set("Line2/Capper1/Runtime", uint64(c.runtime))
}
