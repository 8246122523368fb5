package modbus

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// mixedBlockTags fills registers 0..124 densely with a mix of types:
// uint16, int16, float32 CDAB, uint32, int64, float64, and one register
// holding four bits — 14 registers and 9 values per round.
func mixedBlockTags(withString bool) []Tag {
	var tags []Tag
	r := 0
	add := func(a model.ModbusAddress) {
		tags = append(tags, Tag{Key: fmt.Sprintf("k%d", len(tags)), Addr: a})
	}
	if withString {
		s := holding(r, model.RawString)
		s.Length = 8
		add(s)
		r += 8
	}
	for r+14 <= MaxRegisters {
		add(holding(r, model.RawUint16))
		add(holding(r+1, model.RawInt16))
		f := holding(r+2, model.RawFloat32)
		f.Order = model.OrderCDAB
		add(f)
		add(holding(r+4, model.RawUint32))
		add(holding(r+6, model.RawInt64))
		add(holding(r+10, model.RawFloat64))
		for bit := range 4 {
			a := holding(r+13, model.RawBool)
			a.Bit = bit * 4
			add(a)
		}
		r += 14
	}
	return tags
}

func benchRegs() []uint16 {
	regs := make([]uint16, MaxRegisters)
	for i := range regs {
		regs[i] = uint16(i*2654435761>>7) | 0x4040&0x7F7F // printable where a string reads it
	}
	return regs
}

// BenchmarkDecodeBlock decodes every value of one dense 125-register
// request (numeric types only).
func BenchmarkDecodeBlock(b *testing.B) {
	reqs, err := Plan(Config{Name: "b", URL: "tcp://h:502", Tags: mixedBlockTags(false)})
	if err != nil || len(reqs) != 1 {
		b.Fatal(err, len(reqs))
	}
	r := &reqs[0]
	regs := benchRegs()
	b.ReportAllocs()
	for b.Loop() {
		for i := range r.Bindings {
			bd := &r.Bindings[i]
			if _, err := Decode(regs[bd.Offset:], &bd.Addr); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(r.Bindings)), "ns/value")
}

// BenchmarkHandleBlock is the per-response hot path of Run: decode every
// binding of a 125-register response (with an unchanged 8-register string)
// and build the sample batch.
func BenchmarkHandleBlock(b *testing.B) {
	src, err := New(Config{Name: "b", URL: "tcp://h:502", Tags: mixedBlockTags(true)})
	if err != nil || len(src.reqs) != 1 {
		b.Fatal(err)
	}
	ss := newSession(src, func([]model.Sample) {})
	st := ss.all[0]
	now := time.Now()
	rep := reply{regs: benchRegs(), sent: now, recv: now}
	b.ReportAllocs()
	for b.Loop() {
		if err := ss.handle(st, &rep); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(st.r.Bindings)), "ns/value")
}

// BenchmarkPollRoundTrip polls an in-process server over loopback as fast
// as one connection allows: one request per op.
func BenchmarkPollRoundTrip(b *testing.B) {
	for _, c := range []struct {
		name string
		tags []Tag
	}{
		{"holding125", mixedBlockTags(false)},
		{"holding1", tagsOf(holding(0, model.RawUint16))},
		{"coils2000", func() []Tag {
			var addrs []model.ModbusAddress
			for i := range MaxBits {
				addrs = append(addrs, coil(i))
			}
			return tagsOf(addrs...)
		}()},
	} {
		b.Run(c.name, func(b *testing.B) {
			bk := newBank()
			bk.set(1, func(r *unitRegs) { copy(r.holding[:], benchRegs()) })
			ts := startServer(b, bk)
			src, err := New(Config{Name: "b", URL: ts.url, Poll: time.Nanosecond, Tags: c.tags})
			if err != nil || len(src.reqs) != 1 {
				b.Fatal(err)
			}
			var n atomic.Int64
			target := int64(b.N) + 1
			first, done := make(chan struct{}), make(chan struct{})
			emit := func([]model.Sample) {
				switch n.Add(1) {
				case 1:
					close(first)
				case target:
					close(done)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			ended := make(chan error, 1)
			go func() { ended <- src.Run(ctx, emit) }()
			select {
			case <-first:
			case err := <-ended:
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			<-done
			b.StopTimer()
			cancel()
			if err := <-ended; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
