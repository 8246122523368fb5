package harmonize

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// BenchmarkApply measures one sample per Apply call; every sample carries a
// new value, so nothing short-circuits.
func BenchmarkApply(b *testing.B) {
	p := compileYAML(b, allocModel)
	for _, c := range allocCases() {
		b.Run(c.name, func(b *testing.B) {
			e := NewEngine(p, Options{})
			feed(e, "plc1", "u0:holding:6:uint32:ABCD", model.UintValue(500), model.QualityGood, 1000)
			out := make([]model.Point, 0, 16)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				out = e.Apply(c.samples[i&1], out[:0])
			}
		})
	}
}

// BenchmarkApplyBatch applies batches of 500 samples spread over 100
// assets (pass-through, scaled, enum, two counters and a derived tag over
// them; the VM tag is left out), the shape a Modbus poll cycle produces.
// Reported per sample.
func BenchmarkApplyBatch(b *testing.B) {
	var y strings.Builder
	y.WriteString(strings.Replace(allocModel, "assets:\n  line1/filler1: {type: Filler, source: plc1}\n", "assets:\n", 1))
	for a := range 100 {
		fmt.Fprintf(&y, "  line1/filler%d: {type: Filler, source: plc1, offset: %d}\n", a, a*10)
	}
	p := compileYAML(b, y.String())
	var batches [2][]model.Sample
	for k := range batches {
		for _, bd := range p.Bindings() {
			if bd.Address.Modbus.Register%10 == 8 {
				continue // the tag on expr's VM
			}
			var v model.Value
			switch bd.Address.Modbus.Register % 10 {
			case 2:
				v = model.UintValue(uint64(k))
			default:
				v = model.UintValue(uint64(1000*k) + uint64(bd.Address.Modbus.Register))
			}
			batches[k] = append(batches[k], model.Sample{Source: bd.Source, Address: bd.Key, Value: v,
				Quality: model.QualityGood, ReceiveTime: time.UnixMilli(int64(k))})
		}
	}
	e := NewEngine(p, Options{})
	out := make([]model.Point, 0, 2000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = e.Apply(batches[i&1], out[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batches[0])), "ns/sample")
}

// BenchmarkCompile compiles 10,000 tags: 1,000 instances of one type (the
// usual case: expressions compile once per type), and 10,000 distinct
// expressions (the worst case: every expression compiles).
func BenchmarkCompile(b *testing.B) {
	shared := func() string {
		var y strings.Builder
		y.WriteString("base: acme/munich/bottling\ntypes:\n  Filler:\n    params: {scale: 0.1}\n    tags:\n")
		for t := range 9 {
			fmt.Fprintf(&y, "      t%d: {address: \"holding:%d\", expr: \"raw * scale + %d\"}\n", t, t, t)
		}
		y.WriteString("      sum: {expr: \"t0 + t1 > 0 ? 100.0 * t0 / (t0 + t1) : 0.0\"}\nassets:\n")
		for a := range 1000 {
			fmt.Fprintf(&y, "  line%d/filler%d: {type: Filler, source: plc1, offset: %d}\n", a/100, a, a*10)
		}
		return y.String()
	}
	distinct := func() string {
		var y strings.Builder
		y.WriteString("base: acme/munich/bottling\ntypes:\n")
		for a := range 1000 {
			fmt.Fprintf(&y, "  T%d:\n    tags:\n", a)
			for t := range 10 {
				fmt.Fprintf(&y, "      t%d: {address: \"holding:%d\", expr: \"raw * %d.5 + %d\"}\n", t, t, a, t)
			}
		}
		y.WriteString("assets:\n")
		for a := range 1000 {
			fmt.Fprintf(&y, "  line%d/filler%d: {type: T%d, source: plc1, offset: %d}\n", a/100, a, a, a*10)
		}
		return y.String()
	}
	for _, c := range []struct {
		name string
		yaml string
	}{{"10k-tags-shared-type", shared()}, {"10k-tags-distinct-exprs", distinct()}} {
		b.Run(c.name, func(b *testing.B) {
			m, err := model.LoadFiles([]model.File{{Name: "big.yaml", Data: []byte(c.yaml)}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(m)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Tags()) != 10000 {
					b.Fatalf("%d tags", len(p.Tags()))
				}
			}
		})
	}
}
