package harmonize

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

const reloadModel = `
base: acme/munich/bottling
types:
  Filler:
    params: {div: 1}
    tags:
      speed:  {address: "holding:0", expr: "raw * 0.1"}
      level:  {address: "holding:1", deadband: 5}
      good:   {address: "holding:2"}
      bad:    {address: "holding:3"}
      yield:  {expr: "good + bad > 0 ? 100.0 * good / (good + bad) : 100.0"}
      double: {expr: "speed * 2"}
      ratio:  {address: "holding:4", expr: "raw / div"}
assets:
  line1/filler1: {type: Filler, source: plc1, params: {div: 4}}
`

const (
	hr0 = "u0:holding:0:uint16"
	hr1 = "u0:holding:1:uint16"
	hr2 = "u0:holding:2:uint16"
	hr3 = "u0:holding:3:uint16"
	hr4 = "u0:holding:4:uint16"
)

func sample(addr string, v uint64, ms int64) model.Sample {
	return model.Sample{Source: "plc1", Address: addr, Value: model.UintValue(v), Quality: model.QualityGood, ReceiveTime: time.UnixMilli(ms)}
}

// warm returns an engine for text that has seen one sample of each of
// the reload model's addresses.
func warm(t *testing.T, text string) *Engine {
	t.Helper()
	e := NewEngine(compileYAML(t, text), Options{})
	e.Apply([]model.Sample{sample(hr0, 100, 1000), sample(hr1, 50, 1000), sample(hr2, 90, 1000),
		sample(hr3, 10, 1000), sample(hr4, 8, 1000)}, nil)
	return e
}

// pointsText lists points as name=value QUALITY, sorted.
func pointsText(pts []model.Point) []string {
	var out []string
	for _, p := range pts {
		out = append(out, p.Meta.Name+"="+p.Value.String()+" "+p.Quality.String())
	}
	slices.Sort(out)
	return out
}

// The same model again: nothing is published, and every tag carries on
// where it was: report by exception, the deadband and derived tags that
// combine a carried input with a new one.
func TestSuccessorUnchangedKeepsState(t *testing.T) {
	e := warm(t, reloadModel)
	before := e.Stats()
	n, pts := e.Successor(compileYAML(t, reloadModel), nil)
	if len(pts) != 0 {
		t.Fatalf("an unchanged model published %v", pointsText(pts))
	}
	if n.Stats() != before {
		t.Errorf("stats %+v, want the old engine's %+v", n.Stats(), before)
	}
	if got := pointsText(n.Apply([]model.Sample{sample(hr0, 100, 2000)}, nil)); len(got) != 0 {
		t.Errorf("the same speed again published %v", got)
	}
	if got := pointsText(n.Apply([]model.Sample{sample(hr1, 54, 2000)}, nil)); len(got) != 0 {
		t.Errorf("a level change within the deadband (50 -> 54) published %v", got)
	}
	got := pointsText(n.Apply([]model.Sample{sample(hr3, 30, 2000)}, nil))
	want := []string{"bad=30 GOOD", "yield=75 GOOD"} // good=90 carried over
	if !slices.Equal(got, want) {
		t.Errorf("bad changed: %v, want %v", got, want)
	}
	if s := n.Stats(); s.Samples != before.Samples+3 {
		t.Errorf("samples %d, want %d", s.Samples, before.Samples+3)
	}
}

// A changed expression takes effect at once from the latest sample, and
// the derived tag reading it follows; the others stay quiet.
func TestSuccessorChangedExpression(t *testing.T) {
	e := warm(t, reloadModel)
	changed := strings.Replace(reloadModel, `expr: "raw * 0.1"`, `expr: "raw * 0.2"`, 1)
	n, pts := e.Successor(compileYAML(t, changed), nil)
	got, want := pointsText(pts), []string{"double=40 GOOD", "speed=20 GOOD"}
	if !slices.Equal(got, want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	got = pointsText(n.Apply([]model.Sample{sample(hr0, 50, 2000)}, nil))
	if want := []string{"double=20 GOOD", "speed=10 GOOD"}; !slices.Equal(got, want) {
		t.Errorf("next sample: %v, want %v", got, want)
	}
}

// Fixing an expression that failed (a parameter that divided by zero)
// makes the tag GOOD without a new sample.
func TestSuccessorFixedParam(t *testing.T) {
	broken := strings.Replace(reloadModel, "params: {div: 4}", "params: {div: 0}", 1)
	e := warm(t, broken)
	snap := pointsText(e.Snapshot(nil))
	if !slices.Contains(snap, "ratio=null BAD") {
		t.Fatalf("ratio with div 0: %v", snap)
	}
	_, pts := e.Successor(compileYAML(t, reloadModel), nil)
	if got, want := pointsText(pts), []string{"ratio=2 GOOD"}; !slices.Equal(got, want) {
		t.Fatalf("points %v, want %v", got, want)
	}
}

// New tags are evaluated at once when they can be: one that shares a
// binding with an existing tag (the source already reads it, and an OPC UA
// subscription would not send it again) and a derived one. A tag whose
// address changed waits for its first sample; removed tags are gone.
func TestSuccessorNewChangedAndRemovedTags(t *testing.T) {
	e := warm(t, reloadModel)
	next := strings.NewReplacer(
		`      ratio:  {address: "holding:4", expr: "raw / div"}`,
		`      alias:  {address: "holding:0"}
      sum:    {expr: "good + bad"}`,
		`level:  {address: "holding:1", deadband: 5}`, `level:  {address: "holding:5", deadband: 5}`,
	).Replace(reloadModel)
	n, pts := e.Successor(compileYAML(t, next), nil)
	got, want := pointsText(pts), []string{"alias=100 GOOD", "sum=100 GOOD"}
	if !slices.Equal(got, want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	for _, p := range n.Snapshot(nil) {
		if p.Meta.Name == "level" || p.Meta.Name == "ratio" {
			t.Errorf("snapshot has %s = %v", p.Meta.Name, p.Value)
		}
	}
	got = pointsText(n.Apply([]model.Sample{sample("u0:holding:5:uint16", 7, 2000), sample(hr4, 8, 2000)}, nil))
	if want := []string{"level=7 GOOD"}; !slices.Equal(got, want) {
		t.Errorf("after the new address's first sample: %v, want %v", got, want)
	}
	if s := n.Stats(); s.UnknownSamples != 1 {
		t.Errorf("unknown samples %d, want 1 (the removed ratio's address)", s.UnknownSamples)
	}
}

// A change of metadata only (the unit) republishes the tag, so that the
// retained value message carries the new unit.
func TestSuccessorChangedUnit(t *testing.T) {
	e := warm(t, reloadModel)
	next := strings.Replace(reloadModel, `good:   {address: "holding:2"}`, `good:   {address: "holding:2", unit: bottles}`, 1)
	_, pts := e.Successor(compileYAML(t, next), nil)
	if len(pts) != 1 || pts[0].Meta.Name != "good" || pts[0].Meta.Unit != "bottles" || pts[0].Value.String() != "90" {
		t.Fatalf("points %v", pts)
	}
}
