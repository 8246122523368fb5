package sim

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Register layout of the simulated bottling line, all on unit LineUnit.
//
// Filler (base Filler1Base or Filler2Base, holding registers):
//
//	B+0      speed, uint16 bottles/min (0 unless running)
//	B+1      temperature, int16 tenths of °C (40..80)
//	B+2      state, uint16 (MachineIdle, MachineRunning, MachineFault, MachineCleaning)
//	B+4..5   counters/good, uint32 ABCD
//	B+6..7   counters/bad, uint32 ABCD
//	B+8..9   fill_level, float32 CDAB (low word first), ml around 500
//	B+10     bit 0: door_open (only ever set while not running)
//	B+12..19 recipe, 16 ASCII characters, high byte first, NUL padded
//	coil B+0 motor_on (true while running)
//
// Capper (base CapperBase):
//
//	200..201 torque, float32 ABCD, Ncm 120..160 while running, else 0
//	202..203 caps_applied, uint32 ABCD
//	204      state, uint16 (as the filler's)
//	206..209 runtime, uint64 ABCD, whole seconds spent running
//	210..217 recipe, as the filler's
//	discrete input 200: jam (the capper is in fault while jammed)
const (
	LineUnit    uint8  = 1
	Filler1Base uint16 = 0
	Filler2Base uint16 = 100
	CapperBase  uint16 = 200
)

// Machine states as the line's state registers encode them.
const (
	MachineIdle     uint16 = 0
	MachineRunning  uint16 = 1
	MachineFault    uint16 = 2
	MachineCleaning uint16 = 3
)

// Recipe is the product the line fills; it matches the 500 ml fill level.
const Recipe = "COLA-0.5L"

// Rates of the random events, per second of simulated time, and episode
// lengths in seconds. Chosen so a demo shows a fault or a stop every few
// minutes while the line runs most of the time.
const (
	fillerFaultRate    = 1.0 / 300
	fillerIdleRate     = 1.0 / 240
	fillerCleaningRate = 1.0 / 3600
	capperJamRate      = 1.0 / 400
	setpointChangeRate = 1.0 / 120
	rampUp             = 100.0 // bottles/min per second
)

// BottlingLine animates two fillers and a capper in a Server's unit
// LineUnit (layout above). Given the same seed and the same sequence of
// steps it writes the same values.
type BottlingLine struct {
	s *Server

	mu      sync.Mutex
	rng     *rand.Rand
	fillers [2]filler
	capper  capper
	regs    [20]uint16 // scratch for one block write
}

type filler struct {
	base     uint16
	state    uint16
	left     float64 // seconds left in a non-running episode
	setpoint float64 // bottles/min
	speed    float64
	shown    float64 // speed as the register shows it: with sensor noise
	temp     float64 // °C
	fill     float64 // ml
	door     bool
	good     uint32
	bad      uint32
	produced float64 // bottles made but not yet counted (fraction)
	badDue   float64 // bad bottles due but not yet counted (fraction)
	made     int     // whole bottles made in the current step
}

type capper struct {
	state   uint16
	jam     float64 // seconds left jammed; > 0 means jammed
	torque  float64 // Ncm
	caps    uint32
	runtime float64 // seconds
}

// NewBottlingLine writes a plausible running state into s at once, so
// readers see sensible values before the first step.
func NewBottlingLine(s *Server, seed int64) *BottlingLine {
	l := &BottlingLine{s: s, rng: rand.New(rand.NewPCG(uint64(seed), 0x626f74746c696e67))}
	for i, base := range [2]uint16{Filler1Base, Filler2Base} {
		f := &l.fillers[i]
		f.base = base
		f.state = MachineRunning
		f.setpoint = l.newSetpoint()
		f.speed, f.shown = f.setpoint, f.setpoint
		f.temp = 5 + 2*l.rng.Float64()
		f.fill = 500
		f.good = 100_000 + l.rng.Uint32N(1_000_000)
		f.bad = f.good / 100
	}
	l.capper.state = MachineRunning
	l.capper.torque = 140
	l.capper.caps = l.fillers[0].good + l.fillers[0].bad + l.fillers[1].good + l.fillers[1].bad
	l.capper.runtime = float64(100_000 + l.rng.IntN(1_000_000))
	l.write()
	return l
}

// Run steps the line every step (default 100ms) until ctx is done.
func (l *BottlingLine) Run(ctx context.Context, step time.Duration) { runEvery(ctx, step, l.Step) }

// runEvery calls stepFn(step) every step (default 100ms) until ctx is done:
// the simulated time advances with the wall clock.
func runEvery(ctx context.Context, step time.Duration, stepFn func(time.Duration)) {
	if step <= 0 {
		step = 100 * time.Millisecond
	}
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			stepFn(step)
		}
	}
}

// Step advances the simulation by dt of simulated time and writes the
// registers. Steps much longer than the episodes (about 5 s) skip events.
func (l *BottlingLine) Step(dt time.Duration) {
	sec := dt.Seconds()
	if sec <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	made, anyRunning, anyCleaning := 0, false, false
	for i := range l.fillers {
		f := &l.fillers[i]
		l.stepFiller(f, sec)
		made += f.made
		anyRunning = anyRunning || f.state == MachineRunning
		anyCleaning = anyCleaning || f.state == MachineCleaning
	}
	l.stepCapper(sec, made, anyRunning, anyCleaning)
	l.write()
}

// chance is the probability that an event of rate per second happens
// within sec seconds.
func chance(rate, sec float64) float64 { return 1 - math.Exp(-rate*sec) }

func (l *BottlingLine) newSetpoint() float64 { return float64(400 + 10*l.rng.IntN(21)) }

// between returns a uniform value in [lo, hi).
func (l *BottlingLine) between(lo, hi float64) float64 { return lo + (hi-lo)*l.rng.Float64() }

func (l *BottlingLine) stepFiller(f *filler, sec float64) {
	r := l.rng
	if f.state != MachineRunning {
		f.left -= sec
		if f.left <= 0 {
			f.state, f.door = MachineRunning, false
		}
	} else {
		total := fillerFaultRate + fillerIdleRate + fillerCleaningRate
		if r.Float64() < chance(total, sec) {
			switch u := r.Float64() * total; {
			case u < fillerFaultRate:
				f.state, f.left = MachineFault, l.between(5, 20)
				f.door = false
			case u < fillerFaultRate+fillerIdleRate:
				f.state, f.left = MachineIdle, l.between(5, 30)
				f.door = r.Float64() < 0.3
			default:
				f.state, f.left = MachineCleaning, l.between(30, 120)
				f.door = r.Float64() < 0.8
			}
		}
	}
	if r.Float64() < chance(setpointChangeRate, sec) {
		f.setpoint = l.newSetpoint()
	}

	// A filler that stops is stopped at once (the motor is off), so speed is
	// 0 whenever it is not running; starting ramps up.
	if f.state == MachineRunning {
		f.speed = approach(f.speed, f.setpoint, rampUp*sec)
		f.shown = math.Max(0, math.Round(f.speed+clamp(1.5*r.NormFloat64(), -4, 4)))
		f.fill = 500 + clamp(0.6*r.NormFloat64(), -2, 2)
	} else {
		f.speed, f.shown = 0, 0
	}

	// Product temperature: mean-reverting noise, warmer when stopped.
	mean := 5.5
	if f.state != MachineRunning {
		mean = 7
	}
	f.temp += 0.05*(mean-f.temp)*math.Min(sec, 10) + 0.08*math.Sqrt(sec)*r.NormFloat64()
	f.temp = clamp(f.temp, 4, 8)

	f.produced += f.speed / 60 * sec
	made := math.Floor(f.produced)
	f.produced -= made
	f.badDue += made * 0.01 * (0.5 + r.Float64())
	bad := math.Floor(f.badDue)
	f.badDue -= bad
	f.made = int(made)
	f.good += uint32(made - bad)
	f.bad += uint32(bad)
}

func (l *BottlingLine) stepCapper(sec float64, made int, anyRunning, anyCleaning bool) {
	c, r := &l.capper, l.rng
	if c.jam > 0 {
		c.jam -= sec
		if c.jam < 0 {
			c.jam = 0
		}
	} else if c.state == MachineRunning && r.Float64() < chance(capperJamRate, sec) {
		c.jam = l.between(5, 25)
	}
	switch {
	case c.jam > 0:
		c.state = MachineFault
	case anyRunning:
		c.state = MachineRunning
	case anyCleaning:
		c.state = MachineCleaning
	default:
		c.state = MachineIdle
	}
	if c.state != MachineRunning {
		c.torque = 0
		return
	}
	if c.torque == 0 {
		c.torque = 140
	}
	c.torque += 0.2*(140-c.torque)*math.Min(sec, 5) + 2*math.Sqrt(sec)*r.NormFloat64()
	c.torque = clamp(c.torque, 120, 160)
	c.caps += uint32(made)
	c.runtime += sec
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// approach moves v toward target by at most step.
func approach(v, target, step float64) float64 {
	if v < target {
		return math.Min(v+step, target)
	}
	return math.Max(v-step, target)
}

// write stores the current state, one block write per machine so a client
// never reads half of a multi-register value.
func (l *BottlingLine) write() {
	for i := range l.fillers {
		f := &l.fillers[i]
		r := l.regs[:20]
		clear(r)
		r[0] = uint16(f.shown)
		r[1] = uint16(int16(math.Round(f.temp * 10)))
		r[2] = f.state
		r[4], r[5] = uint16(f.good>>16), uint16(f.good)
		r[6], r[7] = uint16(f.bad>>16), uint16(f.bad)
		bits := math.Float32bits(float32(f.fill))
		r[8], r[9] = uint16(bits), uint16(bits>>16) // CDAB: low word first
		if f.door {
			r[10] = 1
		}
		putString(r[12:20], Recipe)
		l.s.SetHolding(LineUnit, f.base, r...)
		l.s.SetCoil(LineUnit, f.base, f.state == MachineRunning)
	}
	c := &l.capper
	r := l.regs[:18]
	clear(r)
	bits := math.Float32bits(float32(c.torque))
	r[0], r[1] = uint16(bits>>16), uint16(bits)
	r[2], r[3] = uint16(c.caps>>16), uint16(c.caps)
	r[4] = c.state
	rt := uint64(c.runtime)
	r[6], r[7], r[8], r[9] = uint16(rt>>48), uint16(rt>>32), uint16(rt>>16), uint16(rt)
	putString(r[10:18], Recipe)
	l.s.SetHolding(LineUnit, CapperBase, r...)
	l.s.SetDiscrete(LineUnit, CapperBase, c.jam > 0)
}

// putString writes s as ASCII, two characters per register, high byte
// first, padding with NUL.
func putString(regs []uint16, s string) {
	for i := range regs {
		var hi, lo byte
		if 2*i < len(s) {
			hi = s[2*i]
		}
		if 2*i+1 < len(s) {
			lo = s[2*i+1]
		}
		regs[i] = uint16(hi)<<8 | uint16(lo)
	}
}
