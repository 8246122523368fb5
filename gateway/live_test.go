package gateway

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

// liveTags makes n tags as a plan has them: sorted by topic, Index their
// position, every tenth one derived (no source).
func liveTags(n int) []*model.TagMeta {
	tags := make([]*model.TagMeta, n)
	for i := range tags {
		src := fmt.Sprintf("plc%d", i%3)
		if i%10 == 9 {
			src = ""
		}
		tags[i] = &model.TagMeta{Topic: fmt.Sprintf("acme/site/area/line1/cell%05d/speed", i), Source: src,
			Unit: "rpm", Datatype: model.KindFloat, Index: i}
	}
	return tags
}

func point(m *model.TagMeta, v model.Value, q model.Quality, t time.Time) model.Point {
	return model.Point{Meta: m, Value: v, Raw: model.IntValue(7), Quality: q, Time: t}
}

func topics(rows []tagRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.meta.Topic)
	}
	return out
}

func TestLiveStoreRowsAndChanges(t *testing.T) {
	tags := liveTags(5)
	s := newLiveStore(tags)
	t0 := time.UnixMilli(1_700_000_000_000)

	rows, seq0, gen, n := s.rowsSince(nil, 0, nil, 0)
	if n != 5 || len(rows) != 5 || rows[0].seen {
		t.Fatalf("empty store: %d rows (%d selected), first %+v", len(rows), n, rows[0])
	}
	s.Record([]model.Point{
		point(tags[1], model.FloatValue(1.5), model.QualityGood, t0),
		point(tags[3], model.Value{}, model.QualityBad, t0),
	})
	rows, seq1, _, n := s.rowsSince(nil, seq0, nil, 0)
	if got := topics(rows); n != 2 || !slices.Equal(got, []string{tags[1].Topic, tags[3].Topic}) {
		t.Fatalf("changes since %d: %v", seq0, got)
	}
	r := rows[0]
	if !r.seen || !r.value.Equal(model.FloatValue(1.5)) || !r.raw.Equal(model.IntValue(7)) || r.q != model.QualityGood ||
		r.t != t0.UnixNano() {
		t.Errorf("row %+v", r)
	}

	// A heartbeat repeats the latest point: no change. A new value is one.
	s.Record([]model.Point{point(tags[1], model.FloatValue(1.5), model.QualityGood, t0)})
	if rows, _, _, _ := s.rowsSince(nil, seq1, nil, 0); len(rows) != 0 {
		t.Errorf("a heartbeat showed as a change: %v", topics(rows))
	}
	s.Record([]model.Point{point(tags[1], model.FloatValue(2), model.QualityGood, t0.Add(time.Second))})
	rows, _, g2, _ := s.rowsSince(nil, seq1, nil, 0)
	if len(rows) != 1 || !rows[0].value.Equal(model.FloatValue(2)) || g2 != gen {
		t.Errorf("after a new value: %v, generation %d -> %d", topics(rows), gen, g2)
	}

	// Filter and limit: selected counts beyond the limit.
	rows, _, _, n = s.rowsSince(nil, 0, tagFilter("CELL0000"), 3)
	if n != 5 || len(rows) != 3 {
		t.Errorf("filter with limit 3: %d rows of %d", len(rows), n)
	}
	rows, _, _, n = s.rowsSince(nil, 0, tagFilter(" cell00003/ "), 0)
	if n != 1 || rows[0].meta != tags[3] {
		t.Errorf("filter cell00003/: %v", topics(rows))
	}

	if row, ok := s.row(tags[1].Topic); !ok || !row.value.Equal(model.FloatValue(2)) {
		t.Errorf("row(%s) = %+v, %v", tags[1].Topic, row, ok)
	}
	if _, ok := s.row("acme/nope"); ok {
		t.Error("row of an unknown topic")
	}
}

func TestLiveStoreHistoryRing(t *testing.T) {
	tags := liveTags(2)
	s := newLiveStore(tags)
	t0 := time.Now().Truncate(time.Second)
	for i := range historyLen + 5 {
		s.Record([]model.Point{point(tags[0], model.IntValue(int64(i)), model.QualityGood, t0.Add(time.Duration(i)*time.Second))})
	}
	// BAD and string values are not numbers to draw.
	s.Record([]model.Point{point(tags[0], model.Value{}, model.QualityBad, t0.Add(time.Hour))})
	s.Record([]model.Point{point(tags[1], model.StringValue("running"), model.QualityGood, t0)})

	meta, h, ok := s.history(tags[0].Topic)
	if !ok || meta != tags[0] || len(h) != historyLen {
		t.Fatalf("history: ok %v, %d values", ok, len(h))
	}
	for i, p := range h {
		want := i + 5 // the oldest five were overwritten
		if p.v != float64(want) || !p.t.Equal(t0.Add(time.Duration(want)*time.Second)) {
			t.Fatalf("value %d = %v at %v, want %d at %v", i, p.v, p.t, want, t0.Add(time.Duration(want)*time.Second))
		}
	}
	if _, h, _ := s.history(tags[1].Topic); len(h) != 0 {
		t.Errorf("string tag has history %v", h)
	}
	if _, _, ok := s.history("acme/nope"); ok {
		t.Error("history of an unknown topic")
	}
}

func TestLiveStoreCounts(t *testing.T) {
	tags := liveTags(20) // plc0, plc1, plc2 in turn; tags 9 and 19 derived
	s := newLiveStore(tags)
	now := time.Now()
	s.Record([]model.Point{
		point(tags[0], model.FloatValue(1), model.QualityGood, now),                               // plc0 good
		point(tags[3], model.FloatValue(1), model.QualityUncertain, now),                          // plc0 uncertain
		{Meta: tags[6], Value: model.FloatValue(1), Quality: model.QualityUncertain, Stale: true}, // plc0 stale
		point(tags[1], model.Value{}, model.QualityBad, now),                                      // plc1 bad
		point(tags[9], model.FloatValue(1), model.QualityGood, now),                               // derived
	})
	all, by := s.counts()
	if want := (tagCounts{Total: 20, Good: 2, Uncertain: 1, Bad: 1, Stale: 1, Waiting: 15}); all != want {
		t.Errorf("all: %+v, want %+v", all, want)
	}
	if want := (tagCounts{Total: 6, Good: 1, Uncertain: 1, Stale: 1, Waiting: 3}); by["plc0"] != want {
		t.Errorf("plc0: %+v, want %+v", by["plc0"], want)
	}
	if want := (tagCounts{Total: 6, Bad: 1, Waiting: 5}); by["plc1"] != want {
		t.Errorf("plc1: %+v, want %+v", by["plc1"], want)
	}
	if _, ok := by[""]; ok {
		t.Error("derived tags counted under a source")
	}
}

// A reload gives the store the new plan's tags: tags that stay keep their
// value and history, readers see a new generation, and late points of the
// old plan find their tag by topic.
func TestLiveStoreSetTags(t *testing.T) {
	old := liveTags(4)
	s := newLiveStore(old)
	now := time.Now()
	s.Record([]model.Point{point(old[2], model.FloatValue(42), model.QualityGood, now)})
	_, seq, gen, _ := s.rowsSince(nil, 0, nil, 0)

	// The new plan drops tag 0 and adds one at the end; its metas are new
	// pointers with new indices.
	next := liveTags(5)[1:]
	for i, m := range next {
		m.Index = i
	}
	s.SetTags(next)
	rows, _, gen2, n := s.rowsSince(nil, 0, nil, 0)
	if gen2 == gen || n != 4 || rows[1].meta != next[1] || !rows[1].value.Equal(model.FloatValue(42)) {
		t.Fatalf("after SetTags: generation %d -> %d, %d rows, row 1 %+v", gen, gen2, n, rows[1])
	}
	if _, h, _ := s.history(next[1].Topic); len(h) != 1 || h[0].v != 42 {
		t.Errorf("history not carried over: %v", h)
	}
	if rows, _, _, _ := s.rowsSince(nil, seq, nil, 0); len(rows) != 1 {
		t.Errorf("carried-over tags are a change for readers: %d rows", len(rows))
	}

	// Points of the old plan: by topic when it stays, dropped when gone.
	s.Record([]model.Point{
		point(old[3], model.FloatValue(3), model.QualityGood, now),
		point(old[0], model.FloatValue(9), model.QualityGood, now),
	})
	if r, _ := s.row(old[3].Topic); !r.value.Equal(model.FloatValue(3)) || r.meta != next[2] {
		t.Errorf("late point of the old plan: %+v", r)
	}
	if _, ok := s.row(old[0].Topic); ok {
		t.Error("a dropped tag came back")
	}
}

func TestLiveStoreRecordAllocs(t *testing.T) {
	tags := liveTags(100)
	s := newLiveStore(tags)
	batch := make([]model.Point, 50)
	now := time.Now()
	n := 0
	allocs := testing.AllocsPerRun(200, func() {
		n++
		for i := range batch {
			batch[i] = point(tags[i*2], model.FloatValue(float64(n)), model.QualityGood, now.Add(time.Duration(n)))
		}
		s.Record(batch)
	})
	if allocs != 0 {
		t.Errorf("Record allocates %v times per batch", allocs)
	}
}

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		s, sub string
		want   bool
	}{
		{"acme/Munich/line1", "munich", true},
		{"acme/munich/line1", "line1", true},
		{"acme/munich/line1", "", true},
		{"acme", "acme/x", false},
		{"acme/munich", "berlin", false},
	} {
		if got := containsFold(c.s, c.sub); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.s, c.sub, got)
		}
	}
}

// BenchmarkLiveRecord measures what the status page adds to the hot path:
// recording a batch of 500 points (a Modbus poll cycle's shape) into the
// live store of a 10k-tag plan, every point a new value. Reported per
// point.
func BenchmarkLiveRecord(b *testing.B) {
	tags := liveTags(10000)
	s := newLiveStore(tags)
	// Two rounds over every tag with different values, so that each
	// point is a change (a repeat is skipped, which is cheaper).
	const size = 500
	perRound := len(tags) / size
	var batches [2][][]model.Point
	now := time.Now()
	for r := range batches {
		for k := range perRound {
			batch := make([]model.Point, size)
			for j := range batch {
				batch[j] = point(tags[k*size+j], model.FloatValue(float64(r)), model.QualityGood, now.Add(time.Duration(r)))
			}
			batches[r] = append(batches[r], batch)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Record(batches[(i/perRound)%2][i%perRound])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/point")
}
