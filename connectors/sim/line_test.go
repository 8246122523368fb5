package sim

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/simonvetter/modbus"
)

// fillerView and capperView are the line's values as a Modbus client reads
// them, decoded by the client library's own converters.
type fillerView struct {
	speed      uint16
	temp       int16
	state      uint16
	extra      uint16 // B+10 bits other than door_open
	door       bool
	good, bad  uint32
	fill       float32
	motor      bool
	recipe     string
	unusedRegs []uint16 // B+3 and B+11
}

type capperView struct {
	torque  float32
	caps    uint32
	state   uint16
	runtime uint64
	recipe  string
	jam     bool
}

// check fails the test on a client error, keeping the readers below short.
func check[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func readFiller(t *testing.T, c *modbus.ModbusClient, base uint16) fillerView {
	t.Helper()
	regs := check[[]uint16](t)(c.ReadRegisters(base, 20, modbus.HOLDING_REGISTER))
	counters := check[[]uint32](t)(c.ReadUint32s(base+4, 2, modbus.HOLDING_REGISTER))
	// fill_level is CDAB: the low word comes first.
	if err := c.SetEncoding(modbus.BIG_ENDIAN, modbus.LOW_WORD_FIRST); err != nil {
		t.Fatal(err)
	}
	fill := check[float32](t)(c.ReadFloat32(base+8, modbus.HOLDING_REGISTER))
	if err := c.SetEncoding(modbus.BIG_ENDIAN, modbus.HIGH_WORD_FIRST); err != nil {
		t.Fatal(err)
	}
	recipe := check[[]byte](t)(c.ReadBytes(base+12, 16, modbus.HOLDING_REGISTER))
	return fillerView{
		speed:      regs[0],
		temp:       int16(regs[1]),
		state:      regs[2],
		door:       regs[10]&1 == 1,
		extra:      regs[10] &^ 1,
		good:       counters[0],
		bad:        counters[1],
		fill:       fill,
		motor:      check[bool](t)(c.ReadCoil(base)),
		recipe:     string(recipe),
		unusedRegs: []uint16{regs[3], regs[11]},
	}
}

func readCapper(t *testing.T, c *modbus.ModbusClient) capperView {
	t.Helper()
	return capperView{
		torque:  check[float32](t)(c.ReadFloat32(CapperBase, modbus.HOLDING_REGISTER)),
		caps:    check[uint32](t)(c.ReadUint32(CapperBase+2, modbus.HOLDING_REGISTER)),
		state:   check[uint16](t)(c.ReadRegister(CapperBase+4, modbus.HOLDING_REGISTER)),
		runtime: check[uint64](t)(c.ReadUint64(CapperBase+6, modbus.HOLDING_REGISTER)),
		recipe:  string(check[[]byte](t)(c.ReadBytes(CapperBase+10, 16, modbus.HOLDING_REGISTER))),
		jam:     check[bool](t)(c.ReadDiscreteInput(CapperBase)),
	}
}

const wantRecipe = "COLA-0.5L\x00\x00\x00\x00\x00\x00\x00"

// TestBottlingLinePlausibleOverModbus simulates an hour in one-second steps
// and reads the whole layout over Modbus every five simulated seconds.
func TestBottlingLinePlausibleOverModbus(t *testing.T) {
	s := listen(t)
	l := NewBottlingLine(s, 1)
	c := dial(t, s, LineUnit, 2*time.Second)
	if err := c.SetEncoding(modbus.BIG_ENDIAN, modbus.HIGH_WORD_FIRST); err != nil {
		t.Fatal(err)
	}

	var (
		prevF     [2]fillerView
		prevC     capperView
		seen      = map[uint16]int{} // filler states over all samples
		capSeen   = map[uint16]int{}
		jams      int
		doorsOpen int // counted every step, not only on samples
		madeTotal uint64
		badTotal  uint64
		capsTotal uint64
		runDelta  uint64
	)
	for i, base := range []uint16{Filler1Base, Filler2Base} {
		prevF[i] = readFiller(t, c, base)
	}
	prevC = readCapper(t, c)

	const steps, every = 3600, 5
	for step := 1; step <= steps; step++ {
		l.Step(time.Second)
		for _, base := range []uint16{Filler1Base, Filler2Base} {
			if s.Holding(LineUnit, base+10, 1)[0]&1 == 1 {
				doorsOpen++
			}
		}
		if step%every != 0 {
			continue
		}
		var made uint64
		for i, base := range []uint16{Filler1Base, Filler2Base} {
			f := readFiller(t, c, base)
			seen[f.state]++
			if f.state > MachineCleaning {
				t.Fatalf("step %d filler %d: state %d", step, i, f.state)
			}
			running := f.state == MachineRunning
			if running != f.motor {
				t.Fatalf("step %d filler %d: state %d but motor_on %v", step, i, f.state, f.motor)
			}
			if !running && f.speed != 0 || f.speed > 604 {
				t.Fatalf("step %d filler %d: state %d speed %d", step, i, f.state, f.speed)
			}
			if f.door && running {
				t.Fatalf("step %d filler %d: door open while running", step, i)
			}
			if f.temp < 40 || f.temp > 80 {
				t.Fatalf("step %d filler %d: temperature %d", step, i, f.temp)
			}
			if f.fill < 498 || f.fill > 502 {
				t.Fatalf("step %d filler %d: fill level %v", step, i, f.fill)
			}
			if f.good < prevF[i].good || f.bad < prevF[i].bad {
				t.Fatalf("step %d filler %d: counters went back: %d/%d after %d/%d",
					step, i, f.good, f.bad, prevF[i].good, prevF[i].bad)
			}
			if f.recipe != wantRecipe || f.extra != 0 || !slices.Equal(f.unusedRegs, []uint16{0, 0}) {
				t.Fatalf("step %d filler %d: recipe %q, B+10 %#x, unused %v", step, i, f.recipe, f.extra, f.unusedRegs)
			}
			d := uint64(f.good-prevF[i].good) + uint64(f.bad-prevF[i].bad)
			if d > every*605/60+1 {
				t.Fatalf("step %d filler %d: %d bottles in %d s", step, i, d, every)
			}
			made += d
			badTotal += uint64(f.bad - prevF[i].bad)
			prevF[i] = f
		}
		madeTotal += made

		cp := readCapper(t, c)
		capSeen[cp.state]++
		if cp.jam != (cp.state == MachineFault) {
			t.Fatalf("step %d capper: jam %v in state %d", step, cp.jam, cp.state)
		}
		if cp.state == MachineRunning && (cp.torque < 120 || cp.torque > 160) ||
			cp.state != MachineRunning && cp.torque != 0 {
			t.Fatalf("step %d capper: torque %v in state %d", step, cp.torque, cp.state)
		}
		if cp.caps < prevC.caps || uint64(cp.caps-prevC.caps) > made {
			t.Fatalf("step %d capper: caps %d after %d with %d bottles made", step, cp.caps, prevC.caps, made)
		}
		if cp.runtime < prevC.runtime || cp.runtime-prevC.runtime > every+1 {
			t.Fatalf("step %d capper: runtime %d after %d", step, cp.runtime, prevC.runtime)
		}
		if cp.recipe != wantRecipe {
			t.Fatalf("step %d capper: recipe %q", step, cp.recipe)
		}
		if cp.jam {
			jams++
		}
		capsTotal += uint64(cp.caps - prevC.caps)
		runDelta += cp.runtime - prevC.runtime
		prevC = cp
	}

	t.Logf("states %v capper %v jams %d doors %d made %d bad %d caps %d run %d", seen, capSeen, jams, doorsOpen, madeTotal, badTotal, capsTotal, runDelta)
	samples := 2 * steps / every
	if seen[MachineRunning] < samples*7/10 {
		t.Errorf("fillers running in %d of %d samples, want most", seen[MachineRunning], samples)
	}
	if seen[MachineFault] == 0 || seen[MachineIdle] == 0 || jams == 0 || doorsOpen == 0 {
		t.Errorf("an hour without variety: states %v, capper %v, jams %d, door-open steps %d", seen, capSeen, jams, doorsOpen)
	}
	if ratio := float64(badTotal) / float64(madeTotal); ratio < 0.005 || ratio > 0.015 {
		t.Errorf("bad ratio %.4f over %d bottles, want about 1%%", ratio, madeTotal)
	}
	// Two fillers at 400..600 bottles/min for most of an hour.
	if madeTotal < 2*400*60*7/10 {
		t.Errorf("%d bottles in an hour", madeTotal)
	}
	if capsTotal < madeTotal*8/10 {
		t.Errorf("capper capped %d of %d bottles", capsTotal, madeTotal)
	}
	if runDelta < steps*7/10 || runDelta > steps {
		t.Errorf("capper runtime grew %d s in %d s", runDelta, steps)
	}
}

func TestBottlingLineValuesMoveEachStep(t *testing.T) {
	s := listen(t)
	l := NewBottlingLine(s, 7)
	c := dial(t, s, LineUnit, 2*time.Second)
	prev := readFiller(t, c, Filler1Base)
	if prev.state != MachineRunning || prev.speed < 396 || prev.speed > 604 {
		t.Fatalf("initial filler: state %d speed %d", prev.state, prev.speed)
	}
	for range 5 {
		l.Step(time.Second)
		f := readFiller(t, c, Filler1Base)
		if f.state == MachineRunning && (f.good == prev.good || f.fill == prev.fill) {
			t.Fatalf("running filler did not move: %+v after %+v", f, prev)
		}
		prev = f
	}
}

func TestBottlingLineDeterministic(t *testing.T) {
	snapshot := func(s *Server) []uint16 {
		regs := s.Holding(LineUnit, 0, int(CapperBase)+18)
		for _, b := range s.Coil(LineUnit, 0, int(Filler2Base)+1) {
			regs = append(regs, boolReg(b))
		}
		return append(regs, boolReg(s.Discrete(LineUnit, CapperBase, 1)[0]))
	}
	a, b, other := listen(t), listen(t), listen(t)
	la, lb, lo := NewBottlingLine(a, 99), NewBottlingLine(b, 99), NewBottlingLine(other, 100)
	differs := false
	for i := range 2000 {
		la.Step(250 * time.Millisecond)
		lb.Step(250 * time.Millisecond)
		lo.Step(250 * time.Millisecond)
		if i%50 == 0 {
			if sa, sb := snapshot(a), snapshot(b); !slices.Equal(sa, sb) {
				t.Fatalf("step %d: same seed, different registers", i)
			}
			differs = differs || !slices.Equal(snapshot(a), snapshot(other))
		}
	}
	if !differs {
		t.Fatal("seeds 99 and 100 gave the same registers")
	}
}

func boolReg(b bool) uint16 {
	if b {
		return 1
	}
	return 0
}

func TestBottlingLineRunUntilCancelled(t *testing.T) {
	s := listen(t)
	l := NewBottlingLine(s, 3)
	start := s.Holding(LineUnit, CapperBase+2, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx, 5*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for slices.Equal(s.Holding(LineUnit, CapperBase+2, 2), start) {
		if time.Now().After(deadline) {
			t.Fatal("caps_applied did not move while running")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func BenchmarkBottlingLineStep(b *testing.B) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := NewBottlingLine(s, 1)
	b.ReportAllocs()
	for b.Loop() {
		l.Step(100 * time.Millisecond)
	}
}
