package sim

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

var line2Start = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// line2Types are the OPC UA data types of line 2's variables, by the last
// path segment.
var line2Types = map[string]uint32{
	"Speed": id.Double, "Temperature": id.Float, "State": id.Int16, "Running": id.Boolean,
	"GoodCount": id.UInt32, "BadCount": id.Int32, "FillLevel": id.Float, "DoorOpen": id.Boolean,
	"HeadWeights": id.Double, "Recipe": id.String, "LastChangeover": id.DateTime,
	"Torque": id.Float, "CapsApplied": id.UInt32, "Jam": id.Boolean, "Runtime": id.UInt64,
}

// storedValues reads the values of paths from the server's store.
func storedValues(s *OPCUAServer, paths []string) map[string]any {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[string]any, len(paths))
	for _, p := range paths {
		m[p] = s.byPath[p].value.Value()
	}
	return m
}

func stoppedServer(t *testing.T) *OPCUAServer {
	t.Helper()
	s, err := newOPCUAServer(OPCUAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUALinePaths(t *testing.T) {
	l := newBottlingLine2(stoppedServer(t), 1, line2Start)
	paths := l.Paths()
	if len(paths) != 2*11+6 {
		t.Fatalf("%d paths: %v", len(paths), paths)
	}
	for _, p := range paths {
		seg := p[strings.LastIndex(p, "/")+1:]
		if _, ok := line2Types[seg]; !ok || !strings.HasPrefix(p, "Line2/") {
			t.Errorf("unexpected path %s", p)
		}
		if got, want := l.s.NodeID(p), "ns=1;s="+strings.ReplaceAll(p, "/", "."); got != want {
			t.Errorf("%s: node id %s, want %s", p, got, want)
		}
	}
}

// TestUALineSetsChanges checks that a step sets only the values that
// changed: a real server's sampling reports changes only.
func TestUALineSetsChanges(t *testing.T) {
	s := stoppedServer(t)
	l := newBottlingLine2(s, 3, line2Start)
	stamps := func() map[string]time.Time {
		s.mu.RLock()
		defer s.mu.RUnlock()
		m := map[string]time.Time{}
		for _, p := range l.Paths() {
			m[p] = s.byPath[p].srvTime
		}
		return m
	}
	before, vals := stamps(), storedValues(s, l.Paths())
	l.Step(time.Second)
	after, now := stamps(), storedValues(s, l.Paths())
	changed := 0
	for _, p := range l.Paths() {
		same := reflect.DeepEqual(vals[p], now[p])
		if same != after[p].Equal(before[p]) {
			t.Errorf("%s: value same %v, timestamp same %v", p, same, after[p].Equal(before[p]))
		}
		if !same {
			changed++
		}
	}
	if changed == 0 || changed == len(l.Paths()) {
		t.Errorf("%d of %d values changed in a step", changed, len(l.Paths()))
	}
}

func TestUALineDeterministic(t *testing.T) {
	run := func(seed int64) []map[string]any {
		s := stoppedServer(t)
		l := newBottlingLine2(s, seed, line2Start)
		var out []map[string]any
		for range 300 {
			l.Step(time.Second)
			out = append(out, storedValues(s, l.Paths()))
		}
		return out
	}
	a, b := run(7), run(7)
	if !reflect.DeepEqual(a, b) {
		for i := range a {
			if !reflect.DeepEqual(a[i], b[i]) {
				t.Fatalf("same seed, step %d differs:\n%v\n%v", i, a[i], b[i])
			}
		}
	}
	if reflect.DeepEqual(a, run(8)) {
		t.Fatal("seeds 7 and 8 give the same line")
	}
}

// TestUALinePlausible runs two simulated hours and checks every step
// against what a real line can do.
func TestUALinePlausible(t *testing.T) {
	s := stoppedServer(t)
	l := newBottlingLine2(s, 1, line2Start)
	paths := l.Paths()
	prev := storedValues(s, paths)
	now := line2Start
	states := map[int16]int{}
	changeovers, jams, steps := 0, 0, 3600
	const dt = 2 * time.Second
	for step := range steps {
		l.Step(dt)
		now = now.Add(dt)
		v := storedValues(s, paths)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("step %d: "+format, append([]any{step}, args...)...)
		}
		for _, f := range []string{"Line2/Filler1/", "Line2/Filler2/"} {
			state, running := v[f+"State"].(int16), v[f+"Running"].(bool)
			states[state]++
			if state < 0 || state > 3 || running != (state == int16(MachineRunning)) {
				fail("%s state %d running %v", f, state, running)
			}
			speed := v[f+"Speed"].(float64)
			if speed < 0 || speed > 610 || (!running && speed != 0) {
				fail("%s speed %v running %v", f, speed, running)
			}
			if temp := v[f+"Temperature"].(float32); temp < 4 || temp > 8 {
				fail("%s temperature %v", f, temp)
			}
			good, bad := v[f+"GoodCount"].(uint32), v[f+"BadCount"].(int32)
			dGood, dBad := good-prev[f+"GoodCount"].(uint32), bad-prev[f+"BadCount"].(int32)
			if dGood > 21 || dBad < 0 || dBad > 2 || (!running && prev[f+"Running"] == false && dGood+uint32(dBad) > 0) {
				fail("%s counts %d %d after %d %d", f, good, bad, prev[f+"GoodCount"], prev[f+"BadCount"])
			}
			if fill := v[f+"FillLevel"].(float32); fill < 996 || fill > 1004 {
				fail("%s fill level %v", f, fill)
			}
			heads := v[f+"HeadWeights"].([]float64)
			if len(heads) != Line2Heads {
				fail("%s %d heads", f, len(heads))
			}
			for _, w := range heads {
				if w < 988 || w > 1051 {
					fail("%s head weights %v", f, heads)
				}
			}
			if v[f+"DoorOpen"].(bool) && running {
				fail("%s door open while running", f)
			}
			recipe, co := v[f+"Recipe"].(string), v[f+"LastChangeover"].(time.Time)
			if !slices.Contains(Line2Recipes, recipe) || co.After(now) || co.Before(line2Start.Add(-2*time.Hour)) {
				fail("%s recipe %q changed over %v", f, recipe, co)
			}
			if (recipe != prev[f+"Recipe"]) != !co.Equal(prev[f+"LastChangeover"].(time.Time)) {
				fail("%s recipe %q→%q but changeover %v→%v", f, prev[f+"Recipe"], recipe, prev[f+"LastChangeover"], co)
			}
			if recipe != prev[f+"Recipe"] {
				if state != int16(MachineCleaning) {
					fail("%s changed over to %s without cleaning (state %d)", f, recipe, state)
				}
				if f == "Line2/Filler1/" {
					changeovers++
				}
			}
		}
		c := "Line2/Capper1/"
		state, running, jam := v[c+"State"].(int16), v[c+"Running"].(bool), v[c+"Jam"].(bool)
		if running != (state == int16(MachineRunning)) || (jam && state != int16(MachineFault)) {
			fail("capper state %d running %v jam %v", state, running, jam)
		}
		if jam && !prev[c+"Jam"].(bool) {
			jams++
		}
		torque := v[c+"Torque"].(float32)
		if running && (torque < 120 || torque > 160) || !running && torque != 0 {
			fail("capper torque %v running %v", torque, running)
		}
		made := 0
		for _, f := range []string{"Line2/Filler1/", "Line2/Filler2/"} {
			made += int(v[f+"GoodCount"].(uint32)-prev[f+"GoodCount"].(uint32)) + int(v[f+"BadCount"].(int32)-prev[f+"BadCount"].(int32))
		}
		caps := int(v[c+"CapsApplied"].(uint32) - prev[c+"CapsApplied"].(uint32))
		if caps < 0 || caps > made || (running && caps != made) {
			fail("capper applied %d caps, fillers made %d bottles (running %v)", caps, made, running)
		}
		rt := v[c+"Runtime"].(uint64) - prev[c+"Runtime"].(uint64)
		if rt > 3 || (!running && !prev[c+"Running"].(bool) && rt != 0) {
			fail("capper runtime +%d running %v", rt, running)
		}
		prev = v
	}
	t.Logf("filler states over %v: %v; %d changeovers, %d capper jams", time.Duration(steps)*dt, states, changeovers, jams)
	if states[int16(MachineRunning)] < steps || states[int16(MachineCleaning)] == 0 || states[int16(MachineIdle)]+states[int16(MachineFault)] == 0 {
		t.Errorf("states seen %v: the line should run most of the time and stop now and then", states)
	}
	if changeovers == 0 || jams == 0 {
		t.Errorf("%d changeovers, %d jams in two hours", changeovers, jams)
	}
}

// TestUALineServed reads line 2 with a real client: every variable by node
// id with its data type, a browse path, and changes by subscription while
// the line runs.
func TestUALineServed(t *testing.T) {
	s := startUA(t, OPCUAOptions{})
	l := NewBottlingLine2(s, 42)
	paths := l.Paths()
	c := dialUA(t, s.Endpoint())
	nids := make([]string, len(paths))
	for i, p := range paths {
		nids[i] = fmt.Sprintf("ns=%d;s=%s", s.NamespaceIndex(), strings.ReplaceAll(p, "/", "."))
	}
	values := readValues(t, c, nids...)
	types := readAttr(t, c, ua.AttributeIDDataType, nids...)
	stored := storedValues(s, paths)
	for i, p := range paths {
		if values[i].Status != ua.StatusOK || !sameValue(stored[p], values[i].Value.Value()) {
			t.Errorf("%s: read %v %v, stored %v", p, values[i].Status, values[i].Value.Value(), stored[p])
		}
		want := line2Types[p[strings.LastIndex(p, "/")+1:]]
		if got, ok := types[i].Value.Value().(*ua.NodeID); !ok || got.IntID() != want {
			t.Errorf("%s: data type %v, want i=%d", p, types[i].Value.Value(), want)
		}
	}
	if got, err := browsePath(t, c, "Line2", "Filler1", "Speed"); err != nil || got.String() != nids[0] {
		t.Errorf("browse Line2/Filler1/Speed: %v %v", got, err)
	}

	ch := make(chan *opcua.PublishNotificationData, 256)
	runtime := fmt.Sprintf("ns=%d;s=Line2.Capper1.Runtime", s.NamespaceIndex())
	subscribe(t, c, ch, 1, runtime)
	first := waitNotification(t, ch, 1, func(*ua.DataValue) bool { return true }).Value.Value().(uint64)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Long simulated steps at a fast tick: the runtime counter moves
		// within a few ticks unless the capper happens to be stopped.
		for ctx.Err() == nil {
			l.Step(5 * time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	waitNotification(t, ch, 1, func(dv *ua.DataValue) bool { return dv.Value.Value().(uint64) > first })

	// Run drives the same line until its context ends.
	runCtx, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer stop()
	l.Run(runCtx, 5*time.Millisecond)
}
